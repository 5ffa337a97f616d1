#include "sbsconv/temporal/SubjectPlane.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

constexpr double kNearestMetres = 0.1;
constexpr double kFarthestMetres = 1000.0;

// Every s-th row and column of x [N,1,H,W] at the rows and columns of a H x W grid with
// stride s, x resized to H x W first when it has another size (nearest: a mask's values stay).
at::Tensor sampled(const at::Tensor& x, int64_t h, int64_t w, int64_t stride) {
  at::Tensor f = x.to(at::kFloat);
  if (f.size(2) != h || f.size(3) != w) {
    f = at::upsample_nearest2d(f, {h, w});
  }
  return f.slice(2, 0, h, stride).slice(3, 0, w, stride).flatten(1);
}

} // namespace

SubjectPlane::SubjectPlane(SubjectPlaneOptions options) : options_(options) {
  SBSCONV_CHECK(options.smoothing >= 0 && options.smoothing < 1, Option, "subject", "the plane's smoothing must be within 0..1");
  SBSCONV_CHECK(options.threshold > 0 && options.threshold <= 1, Option, "subject", "the mask threshold must be within (0, 1]");
  SBSCONV_CHECK(std::isfinite(options.fallback), Option, "subject", "the fallback plane must be finite");
}

void SubjectPlane::reset() {
  plane_ = at::Tensor();
}

at::Tensor SubjectPlane::process(const at::Tensor& depth, const at::Tensor& masks, const std::vector<bool>& starts_shot) {
  SBSCONV_CHECK(depth.dim() == 4 && depth.size(1) == 1 && masks.dim() == 4 && masks.size(1) == 1 &&
                    masks.size(0) == depth.size(0) && static_cast<int64_t>(starts_shot.size()) == depth.size(0),
                Option, "subject", "depth [N,1,H,W], masks [N,1,h,w] and one shot flag per frame");
  const int64_t n = depth.size(0);
  const int64_t h = depth.size(2);
  const int64_t w = depth.size(3);
  const auto options = depth.options().dtype(at::kFloat);
  if (n == 0) {
    return at::empty({0}, options);
  }
  const int64_t stride = std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(h * w) / static_cast<double>(options_.sample_pixels)))));
  at::Tensor values = sampled(depth, h, w, stride);
  if (!options_.relative) {
    values = values.clamp(kNearestMetres, kFarthestMetres).reciprocal(); // inverse metres
  }
  const at::Tensor weights = sampled(masks.to(depth.device()), h, w, stride).ge(options_.threshold).to(at::kFloat);
  // The weighted median of each row: sorted values, the running sum of their weights, the
  // first at or past half the subject's weight.
  const auto [sorted, order] = values.sort(1);
  const at::Tensor running = weights.gather(1, order).cumsum(1);
  const at::Tensor total = running.narrow(1, running.size(1) - 1, 1); // [N,1]
  const at::Tensor at_half = at::searchsorted(running.contiguous(), (total * 0.5).contiguous()).clamp_max_(running.size(1) - 1);
  const at::Tensor median = sorted.gather(1, at_half).squeeze(1); // [N]
  const at::Tensor present = total.squeeze(1) >= options_.min_area * static_cast<double>(values.size(1));
  double low = 0.0;
  double high = 1.0;
  if (!options_.relative) {
    low = 1.0 / kFarthestMetres;
    high = 1.0 / kNearestMetres;
  }
  const at::Tensor fallback = at::full({1}, std::clamp(options_.fallback, low, high), options);
  if (plane_.defined() && plane_.device() != depth.device()) {
    plane_ = plane_.to(depth.device()); // a restored state arrives on the CPU
  }
  const double k = options_.smoothing;
  std::vector<at::Tensor> planes;
  planes.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor seen = median.narrow(0, i, 1).clamp(low, high);
    const at::Tensor here = present.narrow(0, i, 1);
    if (starts_shot[i] || !plane_.defined()) {
      plane_ = at::where(here, seen, fallback); // a new shot: its own subject, else the fallback
    } else {
      plane_ = at::where(here, plane_ * k + seen * (1.0 - k), plane_); // no subject: the plane stays
    }
    planes.push_back(plane_);
  }
  return at::cat(planes);
}

std::map<std::string, at::Tensor> SubjectPlane::state() const {
  std::map<std::string, at::Tensor> s;
  if (plane_.defined()) {
    s["plane"] = plane_; // on the device: the engine moves a stage's state in one transfer
  }
  return s;
}

void SubjectPlane::load_state(const std::map<std::string, at::Tensor>& s) {
  reset();
  auto it = s.find("plane");
  if (it != s.end()) {
    SBSCONV_CHECK(it->second.numel() == 1, Input, "resume", "the subject plane's saved state is damaged");
    plane_ = it->second.to(at::kFloat).reshape({1}).clone();
  }
}

} // namespace sbsconv
