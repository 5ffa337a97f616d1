#pragma once

#include <memory>
#include <string>
#include <vector>

#include "sbsconv/depth/DepthAnythingV2.h" // ModelOptions
#include "sbsconv/depth/DepthModel.h"
#include "sbsconv/depth/Weights.h"

namespace sbsconv {

// Note [U2-Net salient-object masks]
// U²-Net (Qin et al., Pattern Recognition 2020; Apache-2.0) finds the salient object of an
// image: a nested U of "residual U-blocks" (RSU-L: a small U-Net of L levels inside a residual
// connection; RSU-4F replaces its pooling by dilation), six encoder stages and five decoder
// stages, a side output per stage, and a 1x1 convolution fusing the six into the mask. Two
// checkpoints: u2net (full, 176 MB) and u2netp (small, 4.7 MB; 16-channel blocks).
// - Weights: the reference's state dict names (stage1.rebnconvin.conv_s1.weight, ...,
//   side1..6, outconv). Each convolution's batch norm (running statistics, eps 1e-5) is folded
//   into it at load, in float32, before the cast to the model's dtype.
// - forward(pixel_values) returns the reference's first output, sigmoid(d0), [N,1,h,w]; any
//   input size works (each upsampling goes to its skip connection's size, bilinear without
//   corner alignment, as the reference's _upsample_like).
// - infer(frames): the reference's test pipeline. Each frame is resized to 320 x 320
//   (antialiased bilinear: the reference resizes with scikit-image's Gaussian prefilter; not
//   bit-equal), divided by its own maximum (RescaleT + ToTensorLab(flag=0)), ImageNet-
//   normalised; the network's d0 is min-max normalised per frame (normPRED) and resized to the
//   frame's size (bilinear). A frame of one colour gives an empty mask (the reference divides
//   a black frame by zero, and stretches whatever its padding draws on a flat one to [0,1]); a
//   flat prediction (max == min) gives an empty mask too.
// The mask is float [N,1,H,W] in [0,1], 1 on the subject; kind() is DepthKind::SalientMask.
struct U2NetConfig {
  bool small = false; // u2netp: 16-channel blocks, 64 channels between stages
  int64_t input_size = 320;
};

class U2Net : public DepthModel {
 public:
  U2Net(std::string name, const U2NetConfig& config, const WeightMap& weights, const ModelOptions& options);
  ~U2Net() override;

  const std::string& name() const override {
    return name_;
  }
  DepthKind kind() const override {
    return DepthKind::SalientMask;
  }
  at::Device device() const override {
    return options_.device;
  }
  at::ScalarType dtype() const override {
    return options_.dtype;
  }
  at::Tensor forward(const at::Tensor& pixel_values) override;
  DepthOutput infer(const at::Tensor& frames) override;
  int64_t preferred_batch(bool on_gpu) const override {
    return on_gpu ? 16 : 4;
  }

  // uint8 RGB [N,3,H,W] -> the normalised network input [N,3,320,320] in the model's dtype.
  at::Tensor preprocess(const at::Tensor& frames) const;

  struct Block; // one RSU block (U2Net.cpp)

 private:
  std::string name_;
  U2NetConfig config_;
  ModelOptions options_;
  std::vector<std::unique_ptr<Block>> encoder_; // stage1..stage6
  std::vector<std::unique_ptr<Block>> decoder_; // stage5d..stage1d
  std::vector<std::pair<at::Tensor, at::Tensor>> sides_; // side1..side6 (weight, bias)
  at::Tensor out_weight_;
  at::Tensor out_bias_;
};

} // namespace sbsconv
