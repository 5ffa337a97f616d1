#include "sbsconv/temporal/SceneCutDetector.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/common/Float64Guard.h"

namespace sbsconv {

namespace {

constexpr int64_t kThumbWidth = 96;
constexpr int64_t kThumbHeight = 54;
constexpr int64_t kLevels = 6; // per channel: 216 bins
constexpr int64_t kBins = kLevels * kLevels * kLevels;
constexpr int64_t kLumaPool = 3; // the luma thumbnail is 32x18
constexpr double kLumaWeight = 2.0;
constexpr size_t kRecent = 24; // scores remembered for the adaptive test
constexpr double kAdaptiveFactor = 3.0;
constexpr size_t kLookahead = 2; // frames after a candidate cut that must keep the new look
constexpr size_t kBehind = 3; // frames before it that they are compared with (a flash and its fade)

// Features: the colour histogram (kBins values summing to 1) followed by the luma thumbnail
// (0..1). The distance adds the histogram's moved mass (0..1) and twice the mean luma change:
// the luma term catches cuts between shots of similar colours (two dark scenes).
double distance(const at::Tensor& a, const at::Tensor& b) {
  // host rows (Note [Host synchronisation]): plain arithmetic, nothing dispatched
  const float* x = a.const_data_ptr<float>();
  const float* y = b.const_data_ptr<float>();
  const int64_t n = a.numel();
  double moved = 0.0;
  for (int64_t i = 0; i < kBins; ++i) {
    moved += std::abs(static_cast<double>(x[i]) - y[i]);
  }
  double luma = 0.0;
  for (int64_t i = kBins; i < n; ++i) {
    luma += std::abs(static_cast<double>(x[i]) - y[i]);
  }
  return 0.5 * moved + kLumaWeight * luma / static_cast<double>(std::max<int64_t>(n - kBins, 1));
}

double median(std::deque<double> values) {
  if (values.empty()) {
    return 0.0;
  }
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

} // namespace

SceneCutDetector::SceneCutDetector(SceneCutOptions options) : options_(options) {
  SBSCONV_CHECK(
      options.sensitivity >= 0 && options.sensitivity <= 1, Option, "scene cuts", "sensitivity must be within 0..1");
  SBSCONV_CHECK(options.min_scene_length >= 1, Option, "scene cuts", "min_scene_length must be >= 1");
}

double SceneCutDetector::threshold() const {
  // sensitivity 0 -> 0.35, 0.5 -> 0.2, 1 -> 0.05. Continuous shots, fast motion included,
  // stay near 0.1; hard cuts score 0.25 (two dark shots) to 1.5.
  return 0.35 - 0.3 * options_.sensitivity;
}

at::Tensor SceneCutDetector::features(const std::vector<at::Tensor>& frames) const {
  at::InferenceMode guard;
  SBSCONV_CHECK(!frames.empty(), Internal, "scene cuts", "no frames to describe");
  std::vector<at::Tensor> thumbs;
  thumbs.reserve(frames.size());
  for (const at::Tensor& frame : frames) {
    SBSCONV_CHECK(
        frame.dim() == 3 && frame.size(0) == 3 && frame.scalar_type() == at::kByte,
        Option,
        "scene cuts",
        "frames must be uint8 RGB [3,H,W]");
    thumbs.push_back(at::_upsample_bilinear2d_aa(frame.unsqueeze(0).to(at::kFloat), {kThumbHeight, kThumbWidth}, false));
  }
  const auto n = static_cast<int64_t>(frames.size());
  at::Tensor thumb = at::cat(thumbs); // [N,3,h,w] on the frames' device
  // The joint histogram of every frame at once: each frame's bins offset by its number, one
  // scatter (no bincount, which reads its maximum back to the host on CUDA). float32
  // throughout (Note [No float64 on devices]).
  at::Tensor q = thumb.mul(kLevels / 256.0).floor_().clamp_(0, kLevels - 1).to(at::kLong);
  at::Tensor bins = (q.select(1, 0) * (kLevels * kLevels) + q.select(1, 1) * kLevels + q.select(1, 2)).flatten(1);
  bins = bins + at::arange(n, bins.options()).mul_(kBins).unsqueeze(1);
  at::Tensor counts = at::zeros({n * kBins}, thumb.options());
  counts.scatter_add_(0, bins.flatten(), at::ones({bins.numel()}, thumb.options()));
  at::Tensor luma = (thumb.select(1, 0) * 0.299 + thumb.select(1, 1) * 0.587 + thumb.select(1, 2) * 0.114) / 255.0;
  luma = at::avg_pool2d(luma.unsqueeze(1), {kLumaPool, kLumaPool}).flatten(1);
  at::Tensor all = at::cat({counts.view({n, kBins}) / static_cast<double>(kThumbWidth * kThumbHeight), luma}, 1);
  return to_host(all).contiguous(); // the batch's one transfer
}

std::vector<int64_t> SceneCutDetector::decide(bool final) {
  // window_ holds the features of frames window_first_ .. seen_-1. Frame i is decided once
  // frames up to i+kLookahead are in (or at the end of the stream, with what there is), using
  // frames i-kBehind .. i+kLookahead.
  std::vector<int64_t> cuts;
  auto at = [&](int64_t index) -> const at::Tensor& { return window_[static_cast<size_t>(index - window_first_)]; };
  while (next_ < seen_ && (next_ + static_cast<int64_t>(kLookahead) < seen_ || final)) {
    const int64_t i = next_;
    const double score = distance(at(i), at(i - 1));
    const double t = threshold();
    bool cut = score >= t && score >= kAdaptiveFactor * median(recent_) &&
        i - last_cut_ >= options_.min_scene_length;
    // Not a flash: the frames after keep away from the look before (a flash, even one that
    // fades over a frame, returns to it).
    for (int64_t after = i + 1; cut && after <= std::min(i + static_cast<int64_t>(kLookahead), seen_ - 1); ++after) {
      for (int64_t before = std::max(window_first_, i - static_cast<int64_t>(kBehind)); cut && before < i; ++before) {
        cut = distance(at(after), at(before)) >= 0.8 * t;
      }
    }
    if (cut) {
      cuts.push_back(i);
      last_cut_ = i;
      recent_.clear();
    } else {
      recent_.push_back(score);
      if (recent_.size() > kRecent) {
        recent_.pop_front();
      }
    }
    ++next_;
    while (window_first_ < next_ - static_cast<int64_t>(kBehind)) {
      window_.pop_front();
      ++window_first_;
    }
  }
  return cuts;
}

std::vector<int64_t> SceneCutDetector::push(const at::Tensor& frames) {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte,
      Option,
      "scene cuts",
      "frames must be uint8 RGB [N,3,H,W]");
  std::vector<int64_t> cuts;
  if (frames.size(0) == 0) {
    return cuts;
  }
  at::Tensor rows = features(frames.unbind(0));
  for (int64_t k = 0; k < rows.size(0); ++k) {
    std::vector<int64_t> found = push_features(rows[k]);
    cuts.insert(cuts.end(), found.begin(), found.end());
  }
  return cuts;
}

std::vector<int64_t> SceneCutDetector::push_features(const at::Tensor& row) {
  SBSCONV_CHECK(
      row.dim() == 1 && row.is_cpu() && row.scalar_type() == at::kFloat && row.size(0) > kBins,
      Internal,
      "scene cuts",
      "features must be one host float32 row");
  at::Tensor h = row.contiguous();
  scores_.push_back(window_.empty() ? 0.0 : distance(h, window_.back()));
  if (window_.empty()) {
    window_first_ = seen_;
    next_ = seen_ + 1; // the first frame starts the first shot
  }
  window_.push_back(h);
  ++seen_;
  return decide(false);
}

std::vector<int64_t> SceneCutDetector::flush() {
  return decide(true);
}

void SceneCutDetector::reset() {
  seen_ = 0;
  last_cut_ = 0;
  scores_.clear();
  window_.clear();
  window_first_ = 0;
  next_ = 1;
  recent_.clear();
}

std::map<std::string, at::Tensor> SceneCutDetector::state() const {
  HostFloat64Scope host; // CPU tensors, made here on purpose
  std::map<std::string, at::Tensor> s;
  s["counters"] = at::tensor({seen_, last_cut_, window_first_, next_}, at::kLong);
  s["recent"] = at::tensor(std::vector<double>(recent_.begin(), recent_.end()), at::kDouble);
  s["scores"] = at::tensor(scores_, at::kDouble);
  if (!window_.empty()) {
    s["window"] = at::stack(std::vector<at::Tensor>(window_.begin(), window_.end()));
  }
  return s;
}

std::map<std::string, at::Tensor> SceneCutDetector::state_through(int64_t last) const {
  SBSCONV_CHECK(next_ == last + 1, Internal, "scene cuts", "state_through must follow the frame's decision");
  SceneCutDetector copy(*this);
  while (!copy.window_.empty() && copy.window_first_ + static_cast<int64_t>(copy.window_.size()) - 1 > last) {
    copy.window_.pop_back();
  }
  copy.seen_ = last + 1;
  if (static_cast<int64_t>(copy.scores_.size()) > last + 1) {
    copy.scores_.resize(static_cast<size_t>(last + 1));
  }
  return copy.state();
}

void SceneCutDetector::load_state(const std::map<std::string, at::Tensor>& s) {
  HostFloat64Scope host; // the state is on the CPU
  HostScope host_values;
  reset();
  auto counters = s.find("counters");
  SBSCONV_CHECK(counters != s.end() && counters->second.numel() == 4, Option, "scene cuts", "not a SceneCutDetector state");
  seen_ = counters->second[0].item<int64_t>();
  last_cut_ = counters->second[1].item<int64_t>();
  window_first_ = counters->second[2].item<int64_t>();
  next_ = counters->second[3].item<int64_t>();
  if (auto it = s.find("recent"); it != s.end()) {
    for (int64_t i = 0; i < it->second.numel(); ++i) {
      recent_.push_back(it->second[i].item<double>());
    }
  }
  if (auto it = s.find("scores"); it != s.end()) {
    at::Tensor sc = it->second.to(at::kCPU, at::kDouble).contiguous();
    scores_.assign(sc.data_ptr<double>(), sc.data_ptr<double>() + sc.numel());
  }
  if (auto it = s.find("window"); it != s.end()) {
    for (int64_t i = 0; i < it->second.size(0); ++i) {
      window_.push_back(it->second[i].to(at::kCPU, at::kFloat).contiguous().clone());
    }
  }
}

} // namespace sbsconv
