#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace sbsconv {

// Disparity is in pixels of the eye's width, left to right: a point at x in the left view is
// at x - d in the right view; d > 0 in front of the screen (the convergence plane), < 0
// behind it.

// From relative inverse depth normalised to [0,1] (1 = nearest): d = m * (depth - c), where
// m is max_shift pixels, or divergence percent of the eye width, and c the convergence
// plane (0: everything in front of the screen, 1: everything behind it). Values outside
// [0,1] are clamped.
at::Tensor disparity_from_relative(
    const at::Tensor& depth,
    int64_t eye_width,
    double divergence_percent,
    double convergence,
    std::optional<double> max_shift = std::nullopt);

// As above with one convergence per frame ([N] on any device, clamped to [0,1]): the subject's
// plane (Note [Subject on the screen plane]).
at::Tensor disparity_from_relative(
    const at::Tensor& depth,
    int64_t eye_width,
    double divergence_percent,
    const at::Tensor& convergence,
    std::optional<double> max_shift = std::nullopt);

// From metric depth Z (metres): the disparity a parallel camera pair with the viewer's
// interpupillary distance b would see, re-converged so that the screen distance Zs lands on
// the screen: d = f * b * (1/Z - 1/Zs), with the focal length f = (W/2) / tan(fov/2) in pixels
// from the horizontal field of view. `fov_degrees` is one value, or one per frame ([N]).
at::Tensor disparity_from_metric(
    const at::Tensor& depth_metres,
    int64_t eye_width,
    double ipd_metres,
    const at::Tensor& fov_degrees,
    double screen_distance_metres);
// As above with one inverse screen distance 1/Zs per frame ([N], 1/m): the subject's plane.
at::Tensor disparity_from_metric(
    const at::Tensor& depth_metres,
    int64_t eye_width,
    double ipd_metres,
    const at::Tensor& fov_degrees,
    const at::Tensor& inverse_screen_distance);

// Note [Depth edges snapped to colour edges]
// A depth model draws an object's depth edge softer and often a pixel or two inside its
// colour edge; the edge's pixels, foreground-coloured (or blended), then stay behind on the
// background as a halo beside the revealed region. The eyes move pixels along the rows, so
// the edges are looked for along the rows: within `radius` pixels of a depth edge (where the
// disparity over [x - radius, x + radius] spans more than a pixel),
//   - every pixel above the window's middle disparity (the foreground and the ramp up to it)
//     takes the window's foreground disparity, and
//   - a pixel below it that does not look like the background (its colour farther than two
//     standard deviations, and 10 levels, from the background's mean) and is about as near
//     the foreground's mean colour (squared distance under 1.5 times the background's: an
//     even blend of the two sides qualifies) takes it too, and so moves with the object.
// Background pixels that look like the background keep their disparity: where the depth
// edge is where the colour edge is (exact depth), nothing moves. Each side's mean is taken
// over [x - (2r+2), x + (2r+2)]: the near side's pixels are those above the middle of the
// row's disparity over [x - (3r+2), x + (3r+2)], the background's those more than r from any
// of them (not the blended edge pixels in question).
// Two implementations compute this and agree (but for rounding in the sums): a native CPU
// kernel (rows in parallel; rows without an edge cost one pass) and LibTorch operations
// (any device); dilate_foreground picks the native one for CPU tensors.
// frames: uint8 RGB [N,3,H,W]; disparity float [N,1,H,W]; radius 0 returns the disparity.
at::Tensor dilate_foreground(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius);
at::Tensor dilate_foreground_tensor(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius);
at::Tensor dilate_foreground_cpu(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius);

} // namespace sbsconv
