#pragma once

#include <memory>
#include <string>
#include <vector>

#include "sbsconv/depth/DepthModel.h"
#include "sbsconv/depth/DinoV2.h"
#include "sbsconv/depth/DptHead.h"

namespace sbsconv {

struct DepthAnythingV2Config {
  VitConfig encoder;
  DptHeadConfig head;
  std::vector<int64_t> layers{2, 5, 8, 11}; // 0-based blocks the head reads
};

struct ModelOptions {
  at::Device device{at::kCPU};
  at::ScalarType dtype = at::kFloat;
  bool int8 = false; // Note [int8 linear layers]: the encoder's linear layers in int8 (CPU, dtype float32)
  int64_t input_size = 518; // the shorter side after resizing (lower bound), as the reference
};

// The input size rule of Depth-Anything-V2's reference preprocessing: scale so that both
// sides are at least `input_size` keeping the aspect ratio, then round each side to a
// multiple of `multiple` (half to even, as NumPy; up when rounding would drop below
// input_size). Returns {height, width}.
std::pair<int64_t, int64_t> lower_bound_size(int64_t height, int64_t width, int64_t input_size, int64_t multiple);

// The Depth-Anything family's network input (Depth-Anything-V2, Video-Depth-Anything): uint8
// RGB frames [N,3,H,W] resized bicubically (in float32, no antialiasing, as the reference's
// OpenCV resize) to lower_bound_size(input_size, patch), ImageNet-normalised, in `dtype`.
at::Tensor depth_anything_input(
    const at::Tensor& frames,
    int64_t input_size,
    int64_t patch,
    at::Device device,
    at::ScalarType dtype);

// Throws a Model error unless `layers` names four blocks of an encoder `depth` blocks deep.
void check_head_layers(const std::vector<int64_t>& layers, int64_t depth);

// Note [bf16 on the CPU: the depth in float32]
// precision="bf16" on the CPU (what "auto" picks on CPUs with AMX-BF16, sbsconv.models.precision)
// runs the encoder and the DPT head in bfloat16, but output_conv2 (the head's last two
// convolutions) in float32, as Video-Depth-Anything's reference does, and returns the depth in
// float32: the depth is a weighted sum of the features, and rounded to bfloat16's 8-bit mantissa
// it would move in steps of 0.4 % of its value (the tests' model, whose depth is 0.5 +- 1e-6,
// came out as one flat value). The cost is one 3x3 convolution at the input resolution in
// float32.

// Note [int8 with the head in bfloat16]
// precision="int8" (what "auto" picks on CPUs with VNNI but no AMX) runs the encoder's linear
// layers and attention in int8 (Note [int8 linear layers]); its DPT head ran in float32, about a
// third of the model's time at input 518 on two cores. Where the CPU has bf16 dot products
// (avx512_bf16: AMD Zen 4 and later, Intel since Cooper Lake) the head's convolutions run in
// bfloat16 instead, at about twice float32's rate there (oneDNN), but for output_conv2 and the
// depth, which stay in float32 as under precision="bf16" (the Note above). Elsewhere the head
// stays in float32 (bfloat16 without the instructions is emulated, and slower). Measured in
// benchmarks/RESULTS.md ("int8 with the head in bfloat16").

// Depth-Anything-V2 (relative and metric, any encoder size): DINOv2 + DPT head.
// See Note [DepthModel contract].
class DepthAnythingV2 : public DepthModel {
 public:
  DepthAnythingV2(std::string name, const DepthAnythingV2Config& config, const WeightMap& weights, const ModelOptions& options);

  const std::string& name() const override {
    return name_;
  }
  DepthKind kind() const override {
    return config_.head.metric ? DepthKind::Metric : DepthKind::Relative;
  }
  at::Device device() const override {
    return options_.device;
  }
  at::ScalarType dtype() const override {
    return options_.dtype;
  }
  at::ScalarType head_dtype() const override {
    return head_->dtype();
  }
  at::Tensor forward(const at::Tensor& pixel_values) override;
  DepthOutput infer(const at::Tensor& frames) override;
  std::map<std::string, at::Tensor> prepared_weights() const override;

  // Frames (uint8 [N,3,H,W]) -> the normalised network input at the model's resolution.
  at::Tensor preprocess(const at::Tensor& frames) const;

 private:
  std::string name_;
  DepthAnythingV2Config config_;
  ModelOptions options_;
  std::unique_ptr<DinoV2Encoder> encoder_;
  std::unique_ptr<DptHead> head_;
};

// Validates and resolves ModelOptions from user strings.
ModelOptions make_model_options(const std::string& device, const std::string& precision, int64_t input_size);

} // namespace sbsconv
