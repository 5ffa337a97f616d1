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

at::Tensor dilate_foreground(const at::Tensor& disparity, int64_t radius) {
  if (radius <= 0) {
    return disparity;
  }
  SBSCONV_CHECK(radius <= 32, Option, "stereo", "edge dilation must be within 0..32 pixels");
  return at::max_pool2d(disparity, {2 * radius + 1, 2 * radius + 1}, {1, 1}, {radius, radius});
}

} // namespace sbsconv
