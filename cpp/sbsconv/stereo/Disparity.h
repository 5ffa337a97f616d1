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

// Note [Depth edges snapped to colour edges]
// A depth model draws an object's depth edge softer and often a pixel or two inside its
// colour edge; the edge's pixels, foreground-coloured (or blended), then stay behind on the
// background as a halo beside the revealed region. Within `radius` pixels of a depth edge
// (where the window's disparity spans more than a pixel), each pixel on the background side
// of the window's middle disparity that does not look like the background (farther than two
// standard deviations, and 10 levels, from its local mean colour) and is not much farther
// from the foreground's mean colour (squared distance under twice the background's) takes
// the window's foreground disparity, and so moves with the object; so does every pixel on a
// ramp between the two (above the middle). Background pixels that look like the background
// keep their disparity: where the depth edge is where the colour edge is (exact depth),
// nothing moves. The means are box averages over (4*radius+5)^2 pixels, each pixel classed
// against its own window's middle; the background's only from pixels more than `radius` from
// the foreground (not the blended edge pixels in question).
// frames: uint8 RGB [N,3,H,W]; disparity float [N,1,H,W]; radius 0 returns the disparity.
at::Tensor dilate_foreground(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius);

} // namespace sbsconv
