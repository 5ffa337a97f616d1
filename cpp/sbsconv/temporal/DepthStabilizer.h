#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

namespace sbsconv {

struct StabilizerOptions {
  // Relative inverse depth is normalised to [0,1] (1 = nearest); metric depth (metres) keeps
  // its units and is only smoothed.
  bool relative = true;
  double low_percentile = 1.0; // the range ends, robust to outlier pixels
  double high_percentile = 99.0;
  double range_decay = 0.9; // EMA decay of the range ends (0 = per frame, no memory)
  // Fit each frame's scale and shift to the previous one before measuring its range:
  // relative depth models leave both free per frame, which is most of their flicker.
  bool align = true;
  // EMA of the normalised depth itself (0 = off): out = (1-a) * now + a * previous, with
  // a = alpha * (1 - motion / motion_threshold) clamped to [0, alpha] per pixel, so that
  // moving objects do not leave trails.
  double alpha = 0.0;
  double motion_threshold = 0.08; // mean absolute RGB change (0..1) where smoothing stops
  int64_t sample_pixels = 65536; // pixels sampled for the statistics
};

// Note [Depth stabilisation]
// Per frame: (1) on a sample grid, fit scale and shift that map the raw depth onto the
// previous frame's normalised depth (least squares, refitted without residual outliers);
// (2) the fitted depth's low/high percentiles, EMA-smoothed over time, set the range that
// maps it to [0,1]; (3) optionally blend with the previous output, less where the picture
// moved. A scene cut (or the first frame) starts afresh: no fit, the range is the frame's
// own, no blending. Everything stays on the depth's device; results are deterministic.
//
// Threading: not thread-safe; one owner (the engine's stabilise stage).
class DepthStabilizer {
 public:
  explicit DepthStabilizer(StabilizerOptions options = {});

  // depth: float [N,1,H,W] (raw model output); frames: uint8 [N,3,H,W] for the motion-
  // adaptive smoothing (may be undefined when alpha is 0); starts_shot[i]: frame i begins a
  // new shot. Returns [N,1,H,W] float: normalised relative depth or smoothed metres.
  at::Tensor process(
      const at::Tensor& depth,
      const at::Tensor& frames,
      const std::vector<bool>& starts_shot);

  void reset();
  std::map<std::string, at::Tensor> state() const;
  void load_state(const std::map<std::string, at::Tensor>& state);

  const StabilizerOptions& options() const {
    return options_;
  }

 private:
  at::Tensor sample(const at::Tensor& frame_depth) const;
  at::Tensor motion_weight(const at::Tensor& frame) const;

  StabilizerOptions options_;
  bool started_ = false;
  at::Tensor range_; // [low, high] float32 on the depth's device; undefined before the first frame
  at::Tensor previous_sample_; // the previous frame's normalised depth on the sample grid
  at::Tensor previous_out_; // [1,1,H,W]
  at::Tensor previous_thumb_; // the previous frame, downscaled, for motion
};

} // namespace sbsconv
