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
// rescale passes are plain loops built for AVX-512, AVX2 and baseline x86 and chosen at start-up,
// split over LibTorch's intra-op threads. Before quantization each LayerNorm's wide channels
// are balanced into the weights that read them (DinoV2.cpp, balance_layer_norm). Attention is
// int8 too (Note [int8 attention]); the norms stay in float32, and so does the DPT head but
// where the CPU has bf16 dot products (Note [int8 with the head in bfloat16], DepthAnythingV2.h).
//
// Not thread-safe to build; const calls may run concurrently.
class Int8Linear {
 public:
  Int8Linear() = default;
  // weight: float [out, in]; bias: float [out] or undefined. CPU only.
  Int8Linear(const at::Tensor& weight, const at::Tensor& bias);

  // Note [Prepared int8 weights] (DinoV2.h): a layer quantized earlier, from its parts.
  struct Parts {
    at::Tensor weight_t; // int8 [in, out]
    at::Tensor scale; // float [out]
    at::Tensor bias; // float [out]
  };
  static Int8Linear from_parts(const Parts& parts);
  Parts parts() const {
    return {weight_t_, scale_, bias_};
  }

  bool defined() const {
    return weight_t_.defined();
  }
  // [..., in] -> [..., out] in the input's floating type (computed in int8, rescaled in float32)
  at::Tensor operator()(const at::Tensor& x) const;

  // Note [int8 MLP]: next(GELU(this(x))) with the exact (erf) GELU, the middle never written as
  // float32: each row of this layer's int32 output is rescaled, passed through the GELU and
  // quantized for `next` in one pass while it is in the cache, not in three passes over a
  // [tokens, 4 x width] float tensor (DA-V2 Small at input 518: the model 4-6 % faster).
  // The GELU's erf is a polynomial (absolute error below 1e-4, under the int8 step).
  at::Tensor gelu_then(const Int8Linear& next, const at::Tensor& x) const;

 private:
  struct Quantized {
    at::Tensor values; // int8 [rows, width]
    at::Tensor row_scale; // float [rows]
  };
  static Quantized quantize(const at::Tensor& x); // float [rows, width], contiguous
  at::Tensor rescale(const at::Tensor& acc, const at::Tensor& row_scale) const; // int32 -> float + bias

  at::Tensor weight_t_; // int8 [in, out], contiguous
  at::Tensor scale_; // float [out]
  at::Tensor bias_; // float [out]; zeros when the layer has none
};

// Note [int8 attention]
// Under precision="int8" the transformer's attention (CPU) is computed in blocks of query rows,
// each block one int8 GEMM for the scores, one pass for the softmax and one GEMM for the values:
//   - scores: q and k quantized per token (symmetric, one scale per row) after the mean key is
//     subtracted from every key (the same vector subtracted from each key shifts all of a query's
//     scores by one constant, which the softmax ignores, and leaves the keys centred so that
//     their int8 scales are small). The int32 products times q-scale x k-scale are exact up to
//     that rounding, the 1/sqrt(d) and log2(e) folded into the q scale.
//   - softmax: 2^(s - max) by a cubic on the fraction and the exponent written into the float's
//     bits (relative error 7.5e-5, a 26th of bfloat16's half step; a degree-5 polynomial's 2e-7
//     cost a third more time in that loop, 2 % of the model's), summed in the same pass; plain
//     loops built per instruction set like the linear layers' passes, and where the
//     probabilities are bfloat16 (below) AVX-512 BF16's own instructions for the floor, the
//     exponent and the rounding. The normalisation is applied to the block's output rows (d
//     values each) rather than to the probabilities (t values each).
//   - values: the unnormalised probabilities (all in (0, 1]) times v in bfloat16 where the CPU
//     has bf16 dot products (avx512_bf16, AMX), float32 elsewhere. Probabilities in int8 were
//     measured at 4x the error of bfloat16 (benchmarks/RESULTS.md), so they are not used.
// Each block of query rows runs on one thread (the blocks are split over LibTorch's intra-op
// threads): with t tokens a block of r rows holds r x t int32 scores and as many probabilities.
// Each block's two GEMMs pack the group's keys and values afresh, so the blocks are as large as
// the cache allows (attention_block_rows: 272 rows at 2442 tokens, the whole model 18-30 %
// faster than with 64).
// Relative error against float32 attention: about 0.2-1.7 % on random inputs, most of it the
// scores' int8 rounding (benchmarks/bench_cpu_precision.py measures the whole network).
//
// q, k, v: float [n, heads, t, d] (views allowed); returns float [n, heads, t, d]. block_rows:
// the query rows of a block; 0 = attention_block_rows's (others for its benchmark).
at::Tensor int8_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t block_rows = 0);

// The query rows of one block of int8_attention: [64, 512], the block's scores (int32) and
// probabilities (probability_bytes each) within 4 MB, and at least four blocks a thread where
// that leaves 64 rows or more.
int64_t attention_block_rows(int64_t tokens, int64_t groups, int64_t threads, int64_t probability_bytes);
// The rows int8_attention uses for q [n, heads, t, d] on this CPU and thread count.
int64_t int8_attention_block_rows(const at::Tensor& q);

// Whether int8_attention multiplies the probabilities by v in bfloat16 on this CPU.
bool int8_attention_uses_bf16();

// Whether this CPU has bf16 dot products (avx512_bf16; every CPU with AMX-BF16 has it too).
bool cpu_has_bf16_dot_products();

} // namespace sbsconv
