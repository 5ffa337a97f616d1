#pragma once

#include <ATen/core/Tensor.h>

namespace sbsconv {

// Note [int8 linear layers]
// precision="int8" (CPU): the transformer's linear layers (qkv, projection, MLP) run as int8
// GEMMs, which CPUs with VNNI (AVX-512 VNNI, AVX-VNNI, AMX) execute at several times their fp32
// rate (LibTorch's _int_mm, through oneDNN). Weights are quantized once, at load: symmetric,
// one scale per output channel (the largest |w| of the row maps to 127). Activations are
// quantized as they arrive: symmetric, one scale per token (row), so that one token's large
// values (DINOv2's few outlier tokens) cost only that token's precision. The int32 products are
// scaled back by token scale x channel scale, and the bias added, in one pass. The quantize and
// rescale passes are plain loops built for AVX-512, AVX2 and baseline x86 and chosen at start-up, split over LibTorch's
// intra-op threads. The rest of the network (attention, norms, the DPT head) stays in float32:
// in bfloat16 its convolutions would run about twice as fast on CPUs with bf16 instructions,
// but the depth itself would carry bfloat16's 8-bit mantissa (see benchmarks/RESULTS.md).
//
// Not thread-safe to build; const calls may run concurrently.
class Int8Linear {
 public:
  Int8Linear() = default;
  // weight: float [out, in]; bias: float [out] or undefined. CPU only.
  Int8Linear(const at::Tensor& weight, const at::Tensor& bias);

  bool defined() const {
    return weight_t_.defined();
  }
  // [..., in] -> [..., out] in the input's floating type (computed in int8, rescaled in float32)
  at::Tensor operator()(const at::Tensor& x) const;

 private:
  at::Tensor weight_t_; // int8 [in, out], contiguous
  at::Tensor scale_; // float [out]
  at::Tensor bias_; // float [out]; zeros when the layer has none
};

} // namespace sbsconv
