#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sbsconv/depth/DepthAnythingV2.h"
#include "sbsconv/depth/DepthModel.h"
#include "sbsconv/depth/DinoV2.h"
#include "sbsconv/depth/DptHead.h"

namespace sbsconv {

// The architecture of Apple's Depth Pro, general enough for the transformers port's
// configurations (the released model: ViT-L/16 at 384 px, a 1536 px input, a three-level
// pyramid of 1 + 9 + 25 tiles, hooks on blocks 11 and 5, a 256-channel decoder).
struct DepthProConfig {
  VitConfig patch_vit, image_vit, fov_vit;
  int64_t tile = 384; // the ViTs' input size (transformers: patch_size)
  int64_t image_size = 1536; // the network input (square)
  std::vector<double> ratios{0.25, 0.5, 1.0}; // pyramid levels, low to high resolution
  std::vector<double> overlaps{0.0, 0.5, 0.25}; // tile overlap per level
  std::vector<int64_t> scaled_dims{1024, 1024, 512}; // upsampled feature width per level
  std::vector<int64_t> hook_ids{11, 5}; // patch-encoder blocks whose raw outputs are used
  std::vector<int64_t> hook_dims{256, 256};
  int64_t merge_padding = 3;
  int64_t fusion = 256; // decoder width
  bool use_fov = true;
  int64_t fov_head_layers = 2;
  bool fusion_bias = true;
};

// Note [Depth Pro]
// Parameter names are the transformers port's (its layout is the general one), except inside
// the three ViTs, which keep DINOv2's original names (`...model.blocks.N.attn.qkv.weight`) so
// that DinoV2Encoder reads them; Python maps the original checkpoint (depth_pro.pt) onto them.
// forward() returns the canonical inverse depth at the network resolution; infer() resizes
// frames to the square input (aspect ratio not kept, as the reference), turns the canonical
// inverse depth into metres with the focal length from the field of view (the caller's, set
// with set_field_of_view, else the estimate, else 60 degrees for checkpoints without the
// field-of-view network) and returns depth at frame size with the field of view used.
class DepthPro : public DepthModel {
 public:
  DepthPro(std::string name, const DepthProConfig& config, const WeightMap& weights, const ModelOptions& options);

  const std::string& name() const override {
    return name_;
  }
  DepthKind kind() const override {
    return DepthKind::Metric;
  }
  // One frame is 35 ViT-L tiles at 384 px: several GB of activations already.
  int64_t preferred_batch(bool /*on_gpu*/) const override {
    return 1;
  }
  at::Device device() const override {
    return options_.device;
  }
  at::ScalarType dtype() const override {
    return options_.dtype;
  }

  // pixel_values: normalised [N,3,S,S] -> canonical inverse depth [N,1,S,S].
  at::Tensor forward(const at::Tensor& pixel_values) override;
  // Both outputs: canonical inverse depth and the field of view in degrees ([N], or
  // undefined without the field-of-view network).
  std::pair<at::Tensor, at::Tensor> forward_with_fov(const at::Tensor& pixel_values);
  DepthOutput infer(const at::Tensor& frames) override;
  std::map<std::string, at::Tensor> prepared_weights() const override;

  void set_field_of_view(std::optional<double> degrees) override {
    fov_degrees_ = degrees;
  }

 private:
  struct Conv {
    at::Tensor weight, bias;
  };
  struct Residual {
    Conv conv1, conv2;
  };
  struct Fusion {
    Residual res1, res2;
    Conv deconv; // undefined for the last
    Conv projection;
  };
  at::Tensor reconstruct(const at::Tensor& tokens, int64_t batch, int64_t padding, int64_t out_h, int64_t out_w) const;
  at::Tensor fuse(const Fusion& f, at::Tensor x, const at::Tensor* skip) const;

  std::string name_;
  DepthProConfig config_;
  ModelOptions options_;
  std::unique_ptr<DinoV2Encoder> patch_vit_, image_vit_, fov_vit_;
  Conv image_up_; // ConvT
  std::vector<std::vector<Conv>> scaled_up_, hook_up_; // [0]: 1x1 projection, then ConvTs
  Conv fuse_lowres_;
  std::vector<Conv> projections_; // undefined weight: identity
  std::vector<Fusion> fusions_;
  std::vector<Conv> head_; // conv, convT, conv, conv
  Conv fov_neck_, fov_conv_;
  std::vector<Conv> fov_head_;
  std::optional<double> fov_degrees_;
};

} // namespace sbsconv
