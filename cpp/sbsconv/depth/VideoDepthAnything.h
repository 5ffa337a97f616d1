#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "sbsconv/depth/DepthAnythingV2.h"
#include "sbsconv/depth/DepthModel.h"
#include "sbsconv/depth/DinoV2.h"
#include "sbsconv/depth/DptHead.h"

namespace sbsconv {

// One motion module of Video-Depth-Anything's temporal head (head.motion_modules.M.*):
// group norm, a linear in, one transformer block whose two attention blocks attend across
// frames independently at each spatial position (fixed sinusoidal position table, 8 heads,
// no q/k/v bias), a GEGLU feed-forward, a linear out, and the residual.
//
// Threading: stateless after construction.
class TemporalModule {
 public:
  static constexpr int64_t kMaxFrames = 32;
  static constexpr int64_t kHeads = 8;

  TemporalModule(WeightReader& w, const std::string& prefix, int64_t channels);

  // x: [B*T, C, h, w] with each batch item's T frames consecutive. Without `cache` and
  // `inputs`, attention runs across the T frames. Streaming (T must be 1): `inputs` receives,
  // per attention block, the key and value projections of the current frame's (post-norm)
  // input without the position table ([B*h*w, 1, C] each: k0, v0, k1, v1); `cache`, when
  // given, holds the same four for earlier frames ([B*h*w, L, C], L < 32) and the frame
  // attends to them and itself. The projections are linear, so the position table's share
  // (a precomputed [32, C] table per projection) is added afterwards: this is the
  // reference's attention over cached inputs, without projecting 31 cached frames again.
  at::Tensor forward(
      const at::Tensor& x,
      int64_t frames,
      const std::vector<at::Tensor>* cache,
      std::vector<at::Tensor>* inputs) const;

 private:
  struct Attention {
    at::Tensor norm_w, norm_b, q, k, v, out_w, out_b, pe;
    at::Tensor pe_k, pe_v; // pe projected by k and v: [1, 32, C]
  };
  int64_t channels_;
  at::Tensor norm_w_, norm_b_, proj_in_w_, proj_in_b_, proj_out_w_, proj_out_b_;
  std::array<Attention, 2> attention_;
  at::Tensor ff_norm_w_, ff_norm_b_, ff_in_w_, ff_in_b_, ff_out_w_, ff_out_b_;
};

enum class VideoDepthMode {
  // The reference's 32-frame windows with 10 keyframe slots, scale/shift alignment and
  // cross-fade, streamed: depth is released as soon as its window allows.
  Windowed,
  // One frame at a time against cached attention inputs, the first frame of the shot kept
  // as a permanent keyframe (the reference's experimental streaming mode).
  Streaming,
};

struct VideoDepthAnythingConfig {
  VitConfig encoder;
  DptHeadConfig head; // relative output (ReLU); metric checkpoints output metres directly
  std::vector<int64_t> layers{2, 5, 8, 11};
  bool metric = false;
};

struct VideoDepthOptions {
  VideoDepthMode mode = VideoDepthMode::Windowed;
  int64_t window_batch = 1; // windows run through the network at once when enough frames wait
};

// Least-squares scale and shift taking `prediction` onto `target` (all elements), the
// reference's closed form; {1, 0} when the system is singular.
std::pair<double, double> align_scale_shift(const at::Tensor& prediction, const at::Tensor& target);

// Note [Video-Depth-Anything drivers]
// Windowed: frames are preprocessed as they arrive and held (inputs at network resolution,
// at most one window's worth). The first window of a sequence takes 32 frames; each next one
// takes 22 new frames after 10 slots copied from the previous window's input (slots 0, 12,
// 24..31: the shot's first frame, a mid keyframe, and the 8 frames before the new ones).
// Outputs are upsampled to frame size, aligned to the previous window by least squares on
// slots 0 and 1 (relative models only), the 8 overlapping frames cross-faded, and released
// except the last 8, which the next window cross-fades. flush() finishes the sequence as the
// reference finishes a video: the last windows are padded with copies of the last frame, and
// everything is released. Frames after a flush continue the sequence: the next window takes
// its keyframe slots from the last (padded) window, without a cross-fade.
// Streaming: per frame, the key and value projections of the 8 attention blocks' inputs are
// cached (16 tensors); each frame attends to the cached
// entries 0, 1 and the last 29 (entry 0 is the shot's first frame; the oldest others are
// dropped as the reference drops them). Nothing is held back.
// reset() starts a new sequence; state()/load_state() carry everything either driver holds.
class VideoDepthAnything : public DepthModel {
 public:
  VideoDepthAnything(
      std::string name,
      const VideoDepthAnythingConfig& config,
      const WeightMap& weights,
      const ModelOptions& options,
      const VideoDepthOptions& video);

  const std::string& name() const override {
    return name_;
  }
  DepthKind kind() const override {
    return config_.metric ? DepthKind::Metric : DepthKind::Relative;
  }
  at::Device device() const override {
    return options_.device;
  }
  at::ScalarType dtype() const override {
    return options_.dtype;
  }
  bool temporal() const override {
    return true;
  }
  VideoDepthMode mode() const {
    return video_.mode;
  }

  // One window: [T,3,h,w] (T <= 32) or [B,T,3,h,w]; returns [B*T,1,h,w] (the reference
  // network's output, without cache).
  at::Tensor forward(const at::Tensor& pixel_values) override;
  DepthOutput infer(const at::Tensor& frames) override;
  DepthOutput flush() override;
  void reset() override;
  std::map<std::string, at::Tensor> state() const override;
  void load_state(const std::map<std::string, at::Tensor>& state) override;
  std::map<std::string, at::Tensor> prepared_weights() const override;

  // Frames (uint8 [N,3,H,W]) -> normalised network input, with the reference's input size
  // rule for wide frames.
  at::Tensor preprocess(const at::Tensor& frames) const;

 private:
  class Hooks;
  at::Tensor network(
      const at::Tensor& x,
      int64_t frames,
      const std::vector<at::Tensor>* cache,
      std::vector<at::Tensor>* inputs);
  void check_frames(const at::Tensor& frames);
  at::Tensor to_frame_size(const at::Tensor& depth) const;
  // Windowed driver.
  std::vector<at::Tensor> run_windows(bool final);
  void take_window_output(const at::Tensor& depth, int64_t real_end, std::vector<at::Tensor>& out);
  // Streaming driver.
  at::Tensor stream_one(const std::vector<at::Tensor>& tokens, int64_t gh, int64_t gw);

  std::string name_;
  VideoDepthAnythingConfig config_;
  ModelOptions options_;
  VideoDepthOptions video_;
  std::unique_ptr<DinoV2Encoder> encoder_;
  std::unique_ptr<DptHead> head_;
  std::vector<TemporalModule> modules_;
  at::Tensor keyframes_;

  // Sequence state (both drivers).
  int64_t frame_h_ = 0, frame_w_ = 0; // 0: no sequence yet
  int64_t received_ = 0; // real frames given in this sequence
  int64_t released_ = 0; // depth frames returned
  // Windowed.
  std::vector<at::Tensor> pending_; // [3,h,w] inputs of frames fill_.. not yet in a window
  int64_t fill_ = 0; // sequence index of pending_[0]
  at::Tensor prev_input_; // [32,3,h,w] the last window's input
  at::Tensor last_input_; // [3,h,w] the last real frame's input (padding)
  at::Tensor tail_; // [8,1,H,W] aligned depth held for the next cross-fade
  at::Tensor ref_align_; // [2,1,H,W]
  // Streaming.
  struct CacheEntry {
    int64_t id = 0;
    std::vector<at::Tensor> inputs; // 16: 4 modules x 2 attention blocks x (key, value)
  };
  std::vector<CacheEntry> cache_;
  int64_t stream_id_ = -1;
};

} // namespace sbsconv
