#include "sbsconv/temporal/ComfortBudget.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/Float64Guard.h"
#include "sbsconv/temporal/Quantile.h"

namespace sbsconv {

ComfortBudget::ComfortBudget(ComfortOptions options) : options_(options) {
  SBSCONV_CHECK(
      options.limit_percent > 0 && options.limit_percent <= 50, Option, "comfort", "the comfort limit must be within 0..50 %");
  SBSCONV_CHECK(options.decay >= 0 && options.decay < 1, Option, "comfort", "decay must be within [0, 1)");
}

at::Tensor ComfortBudget::process(const at::Tensor& disparity, const std::vector<bool>& starts_shot) {
  at::InferenceMode guard;
  SBSCONV_CHECK(disparity.dim() == 4 && disparity.size(1) == 1, Option, "comfort", "disparity must be [N,1,H,W]");
  const int64_t n = disparity.size(0);
  SBSCONV_CHECK(static_cast<int64_t>(starts_shot.size()) == n, Option, "comfort", "one cut flag per frame is needed");
  settle(); // the previous batch's figures, long since copied
  const double width = static_cast<double>(disparity.size(3));
  at::Tensor magnitude = disparity.abs().flatten(1).to(at::kFloat);
  // Statistics on at most ~64k samples per frame, all on the device.
  const int64_t stride = std::max<int64_t>(1, magnitude.size(1) / 65536);
  at::Tensor sampled = magnitude.slice(1, 0, magnitude.size(1), stride);
  at::Tensor p99 = quantiles_last_dim(sampled, {0.99}).select(-1, 0).mul(100.0 / width);
  at::Tensor peak = magnitude.amax(1).mul(100.0 / width);
  at::Tensor factors;
  if (options_.auto_strength) {
    // The strength follows the frames in order on the device: down at once to what a frame
    // needs, back up gently, 1 again at each scene's start.
    const auto opts = p99.options();
    if (!scale_now_.defined()) {
      scale_now_ = at::full({}, scale_, opts);
    }
    std::vector<at::Tensor> each;
    each.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      if (starts_shot[i] || (scenes_.empty() && i == 0)) {
        scale_now_ = at::ones({}, opts);
      }
      const at::Tensor p = p99[i];
      const at::Tensor wanted = at::where(p > options_.limit_percent, options_.limit_percent / p.clamp_min(1e-9), at::ones_like(p));
      scale_now_ = at::where(wanted < scale_now_, wanted, scale_now_ * options_.decay + wanted * (1 - options_.decay));
      each.push_back(scale_now_);
    }
    factors = at::stack(each);
  } else {
    factors = at::ones({n}, p99.options());
  }
  pending_.submit(at::stack({p99, peak, factors}, 1)); // read a batch later
  pending_starts_ = starts_shot;
  if (!options_.auto_strength) {
    return disparity;
  }
  return disparity * factors.to(disparity.scalar_type()).view({n, 1, 1, 1});
}

void ComfortBudget::settle() {
  if (!pending_.pending()) {
    return;
  }
  HostScope host; // host values from here on
  const at::Tensor rows = pending_.take().to(at::kFloat).contiguous(); // finished in C++ doubles
  const float* v = rows.const_data_ptr<float>();
  for (int64_t i = 0; i < rows.size(0); ++i, ++frame_) {
    if (scenes_.empty() || pending_starts_[static_cast<size_t>(i)]) {
      scenes_.push_back(SceneComfort{frame_, 0, 0.0, 0.0, 0, 1.0});
    }
    SceneComfort& scene = scenes_.back();
    const double p = v[3 * i];
    const double m = v[3 * i + 1];
    ++scene.frames;
    scene.max_percent = std::max(scene.max_percent, m);
    scene.p99_percent = std::max(scene.p99_percent, p);
    if (p > options_.limit_percent) {
      ++scene.frames_over_limit;
    }
    if (options_.auto_strength) {
      scale_ = v[3 * i + 2];
      scene.min_scale = std::min(scene.min_scale, scale_);
    }
  }
  pending_starts_.clear();
}

const std::vector<SceneComfort>& ComfortBudget::scenes() {
  settle();
  return scenes_;
}

int64_t ComfortBudget::frames_over_limit() {
  settle();
  int64_t total = 0;
  for (const auto& s : scenes_) {
    total += s.frames_over_limit;
  }
  return total;
}

double ComfortBudget::max_percent() {
  settle();
  double m = 0.0;
  for (const auto& s : scenes_) {
    m = std::max(m, s.max_percent);
  }
  return m;
}

std::map<std::string, at::Tensor> ComfortBudget::state() {
  settle();
  HostFloat64Scope host; // CPU tensors, made here on purpose
  std::vector<double> rows;
  for (const auto& s : scenes_) {
    rows.insert(rows.end(), {static_cast<double>(s.first_frame), static_cast<double>(s.frames), s.max_percent,
                             s.p99_percent, static_cast<double>(s.frames_over_limit), s.min_scale});
  }
  std::map<std::string, at::Tensor> out;
  out["scenes"] = at::tensor(rows, at::kDouble).view({-1, 6});
  out["counters"] = at::tensor({static_cast<double>(frame_), scale_}, at::kDouble);
  return out;
}

void ComfortBudget::load_state(const std::map<std::string, at::Tensor>& state) {
  HostFloat64Scope host; // the state is on the CPU
  HostScope host_values;
  pending_ = HostReadback();
  pending_starts_.clear();
  scale_now_ = at::Tensor();
  auto scenes = state.find("scenes");
  auto counters = state.find("counters");
  SBSCONV_CHECK(scenes != state.end() && counters != state.end(), Option, "comfort", "not a ComfortBudget state");
  scenes_.clear();
  SBSCONV_CHECK(
      scenes->second.dim() == 2 && scenes->second.size(1) == 6 && counters->second.numel() == 2,
      Option,
      "comfort",
      "not a ComfortBudget state");
  at::Tensor rows = scenes->second.to(at::kCPU, at::kDouble).contiguous();
  for (int64_t i = 0; i < rows.size(0); ++i) {
    scenes_.push_back(SceneComfort{
        static_cast<int64_t>(rows[i][0].item<double>()), static_cast<int64_t>(rows[i][1].item<double>()),
        rows[i][2].item<double>(), rows[i][3].item<double>(), static_cast<int64_t>(rows[i][4].item<double>()),
        rows[i][5].item<double>()});
  }
  frame_ = static_cast<int64_t>(counters->second[0].item<double>());
  scale_ = counters->second[1].item<double>();
}

} // namespace sbsconv
