#include "sbsconv/stereo/Disparity.h"

#include <ATen/ATen.h>

#include <cmath>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {
void check_depth(const at::Tensor& depth) {
  SBSCONV_CHECK(
      depth.dim() == 4 && depth.size(1) == 1 && at::isFloatingType(depth.scalar_type()),
      Option,
      "stereo",
      "depth must be a floating-point tensor [N,1,H,W]");
}
} // namespace

at::Tensor disparity_from_relative(
    const at::Tensor& depth,
    int64_t eye_width,
    double divergence_percent,
    double convergence,
    std::optional<double> max_shift) {
  check_depth(depth);
  SBSCONV_CHECK(
      std::isfinite(convergence) && convergence >= 0 && convergence <= 1,
      Option,
      "stereo",
      "convergence must be within 0..1");
  double m = 0.0;
  if (max_shift) {
    SBSCONV_CHECK(std::isfinite(*max_shift) && *max_shift >= 0, Option, "stereo", "max_shift must be >= 0 pixels");
    m = *max_shift;
  } else {
    SBSCONV_CHECK(
        std::isfinite(divergence_percent) && divergence_percent >= 0 && divergence_percent <= 20,
        Option,
        "stereo",
        "divergence must be within 0..20 (percent of the eye width)");
    m = divergence_percent / 100.0 * static_cast<double>(eye_width);
  }
  return depth.to(at::kFloat).clamp(0.0, 1.0).sub(convergence).mul_(m);
}

at::Tensor disparity_from_metric(
    const at::Tensor& depth_metres,
    int64_t eye_width,
    double ipd_metres,
    const at::Tensor& fov_degrees,
    double screen_distance_metres) {
  check_depth(depth_metres);
  SBSCONV_CHECK(std::isfinite(ipd_metres) && ipd_metres > 0 && ipd_metres < 1, Option, "stereo",
                "ipd must be within 0..1 m");
  SBSCONV_CHECK(
      std::isfinite(screen_distance_metres) && screen_distance_metres > 0,
      Option,
      "stereo",
      "the screen distance must be > 0 m");
  SBSCONV_CHECK(
      fov_degrees.numel() == 1 || fov_degrees.numel() == depth_metres.size(0),
      Option,
      "stereo",
      "give one field of view, or one per frame");
  {
    // Checked on the host, where the engine keeps the field of view (Note [Host
    // synchronisation]).
    HostScope host;
    const at::Tensor f = fov_degrees.is_cpu() ? fov_degrees : to_host(fov_degrees);
    SBSCONV_CHECK(
        (f >= 1.0).all().item<bool>() && (f <= 179.0).all().item<bool>(),
        Option,
        "stereo",
        "the field of view must be within 1..179 degrees");
  }
  at::Tensor fov = to_device(fov_degrees.to(at::kFloat).flatten(), depth_metres.device());
  at::Tensor focal = (static_cast<double>(eye_width) / 2.0) / at::tan(fov * (M_PI / 360.0));
  focal = focal.view({-1, 1, 1, 1});
  at::Tensor inverse = depth_metres.to(at::kFloat).clamp_min(1e-3).reciprocal();
  return inverse.sub_(1.0 / screen_distance_metres).mul_(focal * ipd_metres);
}

at::Tensor dilate_foreground(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius) {
  if (radius <= 0) {
    return disparity;
  }
  SBSCONV_CHECK(radius <= 32, Option, "stereo", "edge dilation must be within 0..32 pixels");
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3 && frames.size(0) == disparity.size(0) &&
          frames.size(2) == disparity.size(2) && frames.size(3) == disparity.size(3),
      Option, "stereo", "the frames and their disparity must match");
  const int64_t k = 2 * radius + 1;
  const at::Tensor d = disparity.to(at::kFloat);
  const at::Tensor high = at::max_pool2d(d, {k, k}, {1, 1}, {radius, radius});
  const at::Tensor low = at::max_pool2d(d.neg(), {k, k}, {1, 1}, {radius, radius}).neg();
  const at::Tensor edge = (high - low) > 1.0;
  // near or far: against the middle of a window wide enough to reach the edge from every
  // pixel that the colour means below take in
  const int64_t c = 3 * radius + 2;
  const at::Tensor wide_high = at::max_pool2d(d, {2 * c + 1, 2 * c + 1}, {1, 1}, {c, c});
  const at::Tensor wide_low = at::max_pool2d(d.neg(), {2 * c + 1, 2 * c + 1}, {1, 1}, {c, c}).neg();
  const at::Tensor near = (d > (wide_high + wide_low) * 0.5).to(at::kFloat);
  const at::Tensor rgb = frames.to(at::kFloat);
  // each side's mean colour around each pixel (box sums; each pixel classed by its own
  // window), the background's from pixels more than `radius` away from the foreground, so
  // that the blended edge pixels in question do not count as background
  const at::Tensor far = (1.0 - at::max_pool2d(near, {k, k}, {1, 1}, {radius, radius}));
  const int64_t r = 2 * radius + 2;
  auto box = [&](const at::Tensor& v) {
    return at::avg_pool2d(v, {2 * r + 1, 2 * r + 1}, {1, 1}, {r, r}, false, /*count_include_pad*/ true);
  };
  const at::Tensor near_weight = box(near);
  const at::Tensor far_weight = box(far);
  const at::Tensor near_colour = box(rgb * near) / near_weight.clamp_min(1e-6);
  const at::Tensor far_colour = box(rgb * far) / far_weight.clamp_min(1e-6);
  const at::Tensor to_near = (rgb - near_colour).pow(2).sum(1, true);
  const at::Tensor to_far = (rgb - far_colour).pow(2).sum(1, true);
  // the background's spread: a pixel within two standard deviations (and 10 levels) of its
  // mean looks like the background, whatever the foreground looks like
  const at::Tensor far_spread =
      (box(rgb.pow(2) * far) / far_weight.clamp_min(1e-6) - far_colour.pow(2)).sum(1, true).clamp_min(0.0);
  const at::Tensor like_far = to_far <= far_spread * 4.0 + 300.0;
  const at::Tensor looks_near = like_far.logical_not() & (to_near < to_far * 2.0) & (near_weight > 0) &
      (far_weight > 0);
  // on the near side of the edge's own window: the foreground and the ramp up to it
  const at::Tensor ramp = d > (high + low) * 0.5;
  const at::Tensor moves = edge & (ramp | looks_near);
  return at::where(moves, high, d);
}

} // namespace sbsconv
