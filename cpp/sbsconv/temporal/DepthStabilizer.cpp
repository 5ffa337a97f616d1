#include "sbsconv/temporal/DepthStabilizer.h"

#include <ATen/ATen.h>

#include <cmath>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/common/Float64Guard.h"
#include "sbsconv/temporal/Quantile.h"

namespace sbsconv {

namespace {

constexpr double kEps = 1e-6;
constexpr int64_t kThumbDivisor = 8; // motion is judged on 1/8-size pictures

int64_t stride_for(int64_t h, int64_t w, int64_t pixels) {
  const double ratio = static_cast<double>(h * w) / static_cast<double>(std::max<int64_t>(pixels, 1));
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(ratio))));
}

// Least-squares scale and shift mapping x onto y, refitted once without the residual
// outliers (beyond 3 robust standard deviations). Returns [scale, shift] as a float32 tensor
// on the depth's device, or [1, 0] when x is flat or the fit is degenerate. Everything stays
// on the device: masks weight the sums instead of selecting (a selection's size would have to
// come to the host), and the degenerate cases are chosen with where() (Note [Host
// synchronisation]). Centred sums in float32 (Note [No float64 on devices]).
at::Tensor fit_affine(const at::Tensor& x_in, const at::Tensor& y_in) {
  const at::Tensor x = x_in.to(at::kFloat);
  const at::Tensor y = y_in.to(at::kFloat);
  const at::Tensor identity = device_values({1.0, 0.0}, x.options());
  at::Tensor keep = at::ones_like(x);
  at::Tensor fit = identity;
  at::Tensor valid = at::ones({}, x.options().dtype(at::kBool));
  for (int pass = 0; pass < 2; ++pass) {
    const at::Tensor count = keep.sum();
    const at::Tensor mx = (x * keep).sum() / count.clamp_min(1.0);
    const at::Tensor my = (y * keep).sum() / count.clamp_min(1.0);
    const at::Tensor dx = (x - mx) * keep;
    const at::Tensor var = dx.pow(2).sum() / count.clamp_min(1.0);
    const at::Tensor scale = (dx * (y - my)).sum() / count.clamp_min(1.0) / var.clamp_min(kEps * kEps);
    const at::Tensor shift = my - scale * mx;
    valid = valid.logical_and(count >= 16).logical_and(var > kEps * kEps).logical_and(at::isfinite(scale))
                .logical_and(scale > 0);
    fit = at::stack({scale, shift});
    if (pass == 0) {
      const at::Tensor residual = (x * scale + shift - y).abs();
      const at::Tensor mad = residual.median();
      keep = (residual <= mad * (3.0 * 1.4826) + kEps).to(at::kFloat);
    }
  }
  return at::where(valid, fit, identity);
}

} // namespace

DepthStabilizer::DepthStabilizer(StabilizerOptions options) : options_(options) {
  const auto& o = options_;
  SBSCONV_CHECK(
      o.low_percentile >= 0 && o.low_percentile < o.high_percentile && o.high_percentile <= 100,
      Option,
      "stabilise",
      "percentiles must satisfy 0 <= low < high <= 100");
  SBSCONV_CHECK(o.range_decay >= 0 && o.range_decay < 1, Option, "stabilise", "range_decay must be within [0, 1)");
  SBSCONV_CHECK(o.alpha >= 0 && o.alpha < 1, Option, "stabilise", "alpha must be within [0, 1)");
  SBSCONV_CHECK(o.motion_threshold > 0, Option, "stabilise", "motion_threshold must be > 0");
  SBSCONV_CHECK(o.sample_pixels >= 256, Option, "stabilise", "sample_pixels must be >= 256");
}

void DepthStabilizer::reset() {
  started_ = false;
  range_ = at::Tensor();
  previous_sample_ = at::Tensor();
  previous_out_ = at::Tensor();
  previous_thumb_ = at::Tensor();
}

at::Tensor DepthStabilizer::sample(const at::Tensor& d) const {
  const int64_t s = stride_for(d.size(-2), d.size(-1), options_.sample_pixels);
  return d.slice(-2, 0, d.size(-2), s).slice(-1, 0, d.size(-1), s).flatten();
}

at::Tensor DepthStabilizer::motion_weight(const at::Tensor& thumb) const {
  // 1 where nothing moved, 0 where the mean absolute change reaches the threshold.
  at::Tensor change = (thumb - previous_thumb_).abs().mean(1, /*keepdim=*/true);
  // Grown by a thumbnail pixel so that the edges of moving objects are not blended.
  change = at::max_pool2d(change, {3, 3}, {1, 1}, {1, 1});
  return (1.0 - change / options_.motion_threshold).clamp_(0.0, 1.0);
}

at::Tensor DepthStabilizer::process(
    const at::Tensor& depth,
    const at::Tensor& frames,
    const std::vector<bool>& starts_shot) {
  at::InferenceMode guard;
  SBSCONV_CHECK(depth.dim() == 4 && depth.size(1) == 1, Option, "stabilise", "depth must be [N,1,H,W]");
  const int64_t n = depth.size(0);
  SBSCONV_CHECK(
      static_cast<int64_t>(starts_shot.size()) == n, Option, "stabilise", "one cut flag per frame is needed");
  const bool smoothing = options_.alpha > 0;
  SBSCONV_CHECK(
      !smoothing || (frames.defined() && frames.size(0) == n && frames.size(2) == depth.size(2) &&
                     frames.size(3) == depth.size(3)),
      Option,
      "stabilise",
      "temporal smoothing needs the frames ([N,3,H,W] at the depth's size)");
  const int64_t h = depth.size(2);
  const int64_t w = depth.size(3);
  // A restored state arrives on the CPU; keep it with the depth.
  for (at::Tensor* t : {&previous_sample_, &previous_out_, &previous_thumb_, &range_}) {
    if (t->defined() && t->device() != depth.device()) {
      *t = t->to(depth.device());
    }
  }
  const std::vector<double> q{options_.low_percentile / 100.0, options_.high_percentile / 100.0};
  at::Tensor out = at::empty({n, 1, h, w}, depth.options().dtype(at::kFloat));
  const double k = options_.range_decay;

  for (int64_t i = 0; i < n; ++i) {
    at::Tensor raw = depth[i].unsqueeze(0).to(at::kFloat);
    // (metric values have no range: only relative depth needs one before it continues)
    const bool fresh = !started_ || starts_shot[i] || (options_.relative && !range_.defined());
    at::Tensor value;
    if (options_.relative) {
      at::Tensor aligned = raw;
      if (!fresh && options_.align && previous_sample_.defined()) {
        const at::Tensor fit = fit_affine(sample(raw), previous_sample_);
        aligned = raw * fit[0] + fit[1];
      }
      // The range ends stay on the device: [low, high], EMA-smoothed within a shot.
      const at::Tensor ends = quantiles_last_dim(sample(aligned), q);
      range_ = fresh ? ends : range_ * k + ends * (1 - k);
      const at::Tensor low = range_[0];
      const at::Tensor span = (range_[1] - low).clamp_min(kEps);
      at::Tensor normalised = (aligned - low) / span;
      previous_sample_ = sample(normalised);
      if (options_.align) {
        // The next frame is fitted to this output, in whose units the range just used is
        // [0, 1]: keep the range in those units so the EMA compares like with like.
        range_ = device_values({0.0, 1.0}, normalised.options());
      }
      value = normalised.clamp(0.0, 1.0);
    } else {
      value = raw;
    }
    at::Tensor thumb;
    if (smoothing) {
      thumb = at::avg_pool2d(frames[i].unsqueeze(0).to(at::kFloat).div(255.0), {kThumbDivisor, kThumbDivisor},
                             {kThumbDivisor, kThumbDivisor}, {0, 0}, /*ceil_mode=*/true, /*count_include_pad=*/false);
      if (!fresh && previous_out_.defined()) {
        at::Tensor a = at::upsample_bilinear2d(motion_weight(thumb), {h, w}, false).mul_(options_.alpha);
        value = value * (1.0 - a) + previous_out_ * a;
      }
      previous_thumb_ = thumb;
    }
    previous_out_ = value;
    started_ = true;
    out[i].copy_(value[0]);
  }
  return out;
}

std::map<std::string, at::Tensor> DepthStabilizer::state() const {
  // On the depth's device: the engine brings a stage's whole state to the host in one
  // transfer (Note [Host synchronisation]).
  std::map<std::string, at::Tensor> s;
  {
    HostFloat64Scope host; // CPU tensors, made here on purpose
    s["started"] = at::tensor({started_ ? 1.0 : 0.0}, at::kDouble);
  }
  s["range"] = range_.defined() ? range_ : at::tensor({0.0f, 1.0f});
  if (previous_sample_.defined()) {
    s["previous_sample"] = previous_sample_;
  }
  if (previous_out_.defined()) {
    s["previous_out"] = previous_out_;
  }
  if (previous_thumb_.defined()) {
    s["previous_thumb"] = previous_thumb_;
  }
  return s;
}

void DepthStabilizer::load_state(const std::map<std::string, at::Tensor>& s) {
  HostFloat64Scope host; // the state is on the CPU
  HostScope host_values;
  reset();
  auto get = [&](const char* key) -> at::Tensor {
    auto it = s.find(key);
    return it == s.end() ? at::Tensor() : it->second;
  };
  at::Tensor started = get("started");
  at::Tensor range = get("range");
  SBSCONV_CHECK(
      started.defined() && range.defined() && range.numel() == 2,
      Option,
      "stabilise",
      "not a DepthStabilizer state");
  started_ = started.item<double>() != 0.0;
  range_ = range.to(at::kCPU, at::kFloat).reshape({2}).clone();
  previous_sample_ = get("previous_sample");
  previous_out_ = get("previous_out");
  previous_thumb_ = get("previous_thumb");
}

} // namespace sbsconv
