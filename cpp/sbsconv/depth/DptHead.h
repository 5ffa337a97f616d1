#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <vector>

#include "sbsconv/depth/Weights.h"

namespace sbsconv {

struct DptHeadConfig {
  int64_t in_channels = 384; // the encoder's embedding size
  int64_t features = 64;
  std::array<int64_t, 4> out_channels{48, 96, 192, 384};
  int64_t head_hidden = 32;
  int64_t patch_size = 14;
  bool metric = false; // sigmoid x max_depth instead of ReLU
  double max_depth = 1.0;
  bool fp32_output = false; // output_conv2 in float32 whatever the model's dtype (VDA)
  // with fp32_output, the depth returned in float32 too (Note [bf16 on the CPU: the depth in
  // float32]); otherwise it is returned in the model's dtype
  bool fp32_depth = false;
};

// Where Video-Depth-Anything's temporal head inserts its motion modules into the DPT head:
// apply(i, x) replaces the feature map x ([N,C,h,w], N = batch x frames) at place i:
// 0 layer_3 after resize, 1 layer_4 after resize, 2 path_4, 3 path_3.
class DptHooks {
 public:
  virtual ~DptHooks() = default;
  virtual at::Tensor apply(int place, const at::Tensor& x) = 0;
};

// The DPT head of Depth-Anything-V2 (depth_head.* in the original checkpoints): reassemble
// four token maps at 4x, 2x, 1x and 1/2x the patch grid, fuse them coarse to fine with
// residual conv units, and regress one channel at the input resolution.
//
// Convolutions run in the channels-last layout, which oneDNN (CPU) and cuDNN (fp16) run
// fastest; the result is the same.
//
// Threading: stateless after construction; forward() may be called from one thread at a time.
class DptHead {
 public:
  DptHead(const DptHeadConfig& config, WeightReader& weights, const std::string& prefix);

  // tokens: four [N, gh*gw, C] maps; returns [N,1,gh*p,gw*p].
  // `hooks` (optional) inserts the temporal modules; `micro_batch` > 0 runs the fine stages
  // (refinenet2, refinenet1, output) that many frames at a time, to bound memory.
  at::Tensor forward(
      const std::vector<at::Tensor>& tokens,
      int64_t gh,
      int64_t gw,
      DptHooks* hooks = nullptr,
      int64_t micro_batch = 0) const;

  // Converts the head's convolutions to `dtype`, all but output_conv2 where fp32_output keeps
  // it in float32 (Note [int8 with the head in bfloat16], DepthAnythingV2.h); forward() then
  // takes its token maps in any floating type and computes in `dtype`.
  void convert_convolutions(at::ScalarType dtype);
  // The type the head's convolutions compute in (its weights').
  at::ScalarType dtype() const {
    return trunk_.projects[0].weight.scalar_type();
  }

  // The fused feature map before the output convolutions ([N,features,8gh,8gw]); the temporal
  // head of Video-Depth-Anything builds on the same stages.
  struct Conv {
    at::Tensor weight;
    at::Tensor bias;
  };
  struct ResidualUnit {
    Conv conv1, conv2;
  };
  struct Fusion {
    ResidualUnit unit1, unit2;
    Conv out;
  };
  // projects, resize_layers, scratch.layerN_rn, scratch.refinenetN (take_dpt_trunk)
  struct Trunk {
    std::array<Conv, 4> projects;
    std::array<Conv, 4> resize; // [2] unused (identity)
    std::array<Conv, 4> layer_rn;
    std::array<Fusion, 4> refine; // refinenet1..4 at [0..3]
  };

 private:
  at::Tensor output(const at::Tensor& path1, int64_t gh, int64_t gw) const;

  DptHeadConfig config_;
  Trunk trunk_;
  Conv output1_, output2a_, output2b_;
};

// Shared building blocks (also used by the temporal head).
at::Tensor conv(const DptHead::Conv& c, const at::Tensor& x, int64_t stride = 1, int64_t padding = 0);
at::Tensor residual_unit(const DptHead::ResidualUnit& u, const at::Tensor& x);
// The layers every DPT head shares, read under `prefix`; refinenet4's first residual unit,
// which it never uses (one input), is ignored where a checkpoint has it.
using DptTrunk = DptHead::Trunk;
DptTrunk take_dpt_trunk(
    WeightReader& w,
    const std::string& prefix,
    int64_t in_channels,
    int64_t features,
    const std::array<int64_t, 4>& out_channels);

// One fusion block: `x` (plus a residual unit of `skip`, when given) through a residual unit,
// upsampled (bilinear, corners aligned) to `size` (empty: twice its size), then out_conv.
at::Tensor fuse_block(const DptHead::Fusion& f, const at::Tensor& x, const at::Tensor* skip, at::IntArrayRef size);
DptHead::Conv take_conv(
    WeightReader& w,
    const std::string& name,
    int64_t out,
    int64_t in,
    int64_t k,
    bool bias = true,
    bool transposed = false);

} // namespace sbsconv
