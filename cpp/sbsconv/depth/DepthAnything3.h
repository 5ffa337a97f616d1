#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sbsconv/depth/DepthAnythingV2.h"
#include "sbsconv/depth/DepthModel.h"
#include "sbsconv/depth/DinoV2.h"
#include "sbsconv/depth/DptHead.h"

namespace sbsconv {

// Depth Anything 3's two shapes (depth-anything/DA3* on Hugging Face, model.safetensors with
// the keys model.backbone.pretrained.*, model.head.*, model.cam_dec.*, model.cam_enc.*):
// - monocular (DA3MONO-LARGE, DA3METRIC-LARGE): a plain DINOv2 and a DPT head that predicts
//   depth (exp) and a sky map;
// - any-view (DA3-SMALL, DA3-BASE): a DINOv2 whose blocks alternate between attention within
//   each view and across all views (Note [Depth Anything 3 backbone]), a dual DPT head whose
//   main branch predicts depth and its confidence, and a camera decoder that reads each view's
//   camera token into a pose and a field of view.
struct DepthAnything3Config {
  VitConfig encoder;
  std::vector<int64_t> layers; // the blocks the head reads (0-based)
  int64_t features = 256;
  std::array<int64_t, 4> out_channels{256, 512, 1024, 1024};
  bool any_view = false; // dual DPT head + camera decoder
  bool metric = false; // DA3METRIC: metres = focal (pixels) x output / 300
};

struct DepthAnything3Options {
  // Any-view models on video: frames per network call and how many of them the previous
  // window shares (Note [Depth Anything 3 video windows]).
  int64_t window = 8;
  int64_t overlap = 2;
  ReferenceView reference = ReferenceView::SaddleBalanced;
};

// Everything one network call predicts, at network resolution.
struct DepthAnything3Output {
  at::Tensor depth; // [N,1,h,w] (the sky at the far plane for the monocular models)
  at::Tensor confidence; // [N,1,h,w] any-view: depth confidence (>= 1)
  at::Tensor sky; // [N,1,h,w] monocular: the sky map (ReLU; sky where >= 0.3)
  at::Tensor world_to_camera; // [N,3,4] any-view, the reference view's camera at the origin
  at::Tensor intrinsics; // [N,3,3] any-view, in pixels of the network input
};

// Note [Depth Anything 3 metric scale]
// DA3METRIC predicts depth for a camera of focal length 300 pixels at its input size: metres =
// focal x output / 300, the focal length in pixels of the network's input (horizontal field of
// view given by the user, else 60 degrees, said in a warning). The sky (sky map >= 0.3, as for
// Mono-Large) is put at the 99th percentile of the image's other depths; the reference takes
// that percentile over its whole batch of images (from a random sample above 100000 pixels),
// sbsconv per image, so that a frame's depth does not depend on its batch.
//
// Note [Depth Anything 3 video windows]
// The any-view models see `window` frames at a time. A sequence's first window takes that
// many frames; each later one re-reads the last `overlap` frames of the previous window
// before `window - overlap` new ones. The overlap ties the windows together: the new
// window's depth is scaled so that its overlapping frames match the depth already released
// for them (the median ratio over their pixels), and its camera path is moved so that the
// last overlapping frame keeps its pose (poses are camera-to-world, the sequence's first
// frame at the origin; translations scaled with the depth). A window is run as soon as its
// frames are there, so at most `window` frames are held; flush() runs what is left as a
// shorter window and keeps the overlap, so frames after it continue the sequence at the same
// scale (a resumed run gives what an uninterrupted one gives). reset() starts a new sequence
// (the engine calls it at scene cuts); state()/load_state() carry the overlap.
class DepthAnything3 : public DepthModel {
 public:
  DepthAnything3(
      std::string name,
      const DepthAnything3Config& config,
      const WeightMap& weights,
      const ModelOptions& options,
      const DepthAnything3Options& video);
  ~DepthAnything3() override;

  const std::string& name() const override {
    return name_;
  }
  // Depth, not inverse depth: in metres for the metric model, up to a scale for the others.
  DepthKind kind() const override {
    return config_.metric ? DepthKind::Metric : DepthKind::RelativeDepth;
  }
  at::Device device() const override {
    return options_.device;
  }
  at::ScalarType dtype() const override {
    return options_.dtype;
  }
  bool temporal() const override {
    return config_.any_view;
  }
  int64_t preferred_batch(bool on_gpu) const override;

  // The network's depth ([N,1,h,w]) on normalised input: the monocular models take N
  // separate images, the any-view models one group of N views. The metric model's output is
  // not yet metres (infer() scales it by the focal length).
  at::Tensor forward(const at::Tensor& pixel_values) override;
  // Everything the network predicts for `batch` groups of views ([B*S,3,h,w], S = N / batch).
  DepthAnything3Output predict(const at::Tensor& pixel_values, int64_t batch);
  DepthOutput infer(const at::Tensor& frames) override;
  DepthOutput flush() override;
  void reset() override;
  std::map<std::string, at::Tensor> state() const override;
  void load_state(const std::map<std::string, at::Tensor>& state) override;
  std::map<std::string, at::Tensor> prepared_weights() const override;
  void set_field_of_view(std::optional<double> degrees) override;

  // Frames (uint8 [N,3,H,W]) -> the normalised network input as the reference's
  // upper_bound_resize makes it: the longer side to input_size, then each side to its nearest
  // multiple of 14; each step OpenCV's INTER_AREA when shrinking, INTER_CUBIC when enlarging,
  // rounded to whole grey levels in between (the reference resizes uint8 pictures).
  at::Tensor preprocess(const at::Tensor& frames) const;

 private:
  class Head;
  class CameraDecoder;
  DepthOutput run_window(const at::Tensor& inputs, int64_t carried);
  at::Tensor to_frame_size(const at::Tensor& depth) const;
  void check_frames(const at::Tensor& frames);

  std::string name_;
  DepthAnything3Config config_;
  ModelOptions options_;
  DepthAnything3Options video_;
  std::unique_ptr<DinoV2Encoder> encoder_;
  std::unique_ptr<Head> head_;
  std::unique_ptr<CameraDecoder> camera_;
  std::optional<double> fov_degrees_; // metric model: the field of view the user gave
  bool warned_fov_ = false;

  // Any-view sequence state (Note [Depth Anything 3 video windows]).
  int64_t frame_h_ = 0, frame_w_ = 0;
  std::vector<at::Tensor> pending_; // [3,h,w] inputs of frames not yet in a window
  at::Tensor carry_input_; // [K,3,h,w] the overlap's inputs
  at::Tensor carry_depth_; // [K,1,h,w] their released depth (network resolution)
  at::Tensor carry_pose_; // [K,4,4] their camera-to-world poses in the sequence's frame
};

// The upper-bound input size of Depth Anything 3: {height, width}.
std::pair<int64_t, int64_t> upper_bound_size(int64_t height, int64_t width, int64_t input_size, int64_t multiple);

// Horizontal field of view in degrees -> focal length in pixels for an image `width` wide.
double focal_from_fov(double fov_degrees, int64_t width);

} // namespace sbsconv
