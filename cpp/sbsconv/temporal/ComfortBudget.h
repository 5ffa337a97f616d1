#pragma once

#include <ATen/core/Tensor.h>

#include "sbsconv/common/DeviceSync.h"

#include <map>
#include <string>
#include <vector>

namespace sbsconv {

struct ComfortOptions {
  // The comfortable disparity, in percent of the eye width (positive or negative): frames
  // whose 99th-percentile |disparity| exceeds it are counted.
  double limit_percent = 3.0;
  // Scale disparity down smoothly in scenes that would exceed the limit.
  bool auto_strength = false;
  double decay = 0.9; // EMA of the scale factor (how gently it follows the scene)
};

struct SceneComfort {
  int64_t first_frame = 0;
  int64_t frames = 0;
  double max_percent = 0.0; // largest |disparity| of the scene, % of the eye width
  double p99_percent = 0.0; // largest per-frame 99th percentile of |disparity|
  int64_t frames_over_limit = 0;
  double min_scale = 1.0; // smallest automatic strength applied
};

// Measures disparity against a comfort limit, per scene, and optionally scales it down.
// Measurements use the disparity as given (before any automatic scaling), so the report says
// what the settings asked for.
//
// Threading: not thread-safe; one owner.
class ComfortBudget {
 public:
  explicit ComfortBudget(ComfortOptions options = {});

  // disparity: [N,1,H,W] pixels; starts_shot[i]: frame i begins a scene. Returns the
  // disparity to render (scaled when auto_strength is on).
  at::Tensor process(const at::Tensor& disparity, const std::vector<bool>& starts_shot);

  // The figures of every frame processed so far. They are read back from the device a batch
  // late (Note [Host synchronisation]); these calls first take what is still on its way.
  const std::vector<SceneComfort>& scenes();
  int64_t frames_over_limit();
  double max_percent();

  std::map<std::string, at::Tensor> state();
  void load_state(const std::map<std::string, at::Tensor>& state);

 private:
  ComfortOptions options_;
  std::vector<SceneComfort> scenes_;
  int64_t frame_ = 0;
  double scale_ = 1.0; // the last frame's automatic strength, as read back
  at::Tensor scale_now_; // the same on the device, ahead of the read-back; undefined: scale_
  HostReadback pending_; // [n, 3]: each frame's p99 %, max %, strength
  std::vector<bool> pending_starts_;
  void settle();
};

} // namespace sbsconv
