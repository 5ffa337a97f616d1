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

// Grows nearer regions by `radius` pixels (a max filter on disparity), so that a foreground
// object's soft edge moves with it instead of leaving a halo on the background.
at::Tensor dilate_foreground(const at::Tensor& disparity, int64_t radius);

} // namespace sbsconv
