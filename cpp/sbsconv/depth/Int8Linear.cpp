#include "sbsconv/depth/Int8Linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "sbsconv/common/Clones.h"
#include "sbsconv/common/Error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__APPLE__)
#include <immintrin.h>
#endif

// The two passes around the GEMM are plain loops, built for each instruction set (Note
// [Instruction-set clones], Clones.h). The file is compiled with finite-math flags
// (CMakeLists.txt) so that the max reduction and the rounding vectorise.

namespace sbsconv {

namespace {

// A row whose largest magnitude is peak: each value / (peak / 127) rounded to the nearest
// integer; returns the scale (inlined into each caller's instruction-set clone).
inline float quantize_with_peak(const float* a, float peak, int8_t* out, int64_t n) {
  const float scale = peak > 0.0f ? peak / 127.0f : 1.0f;
  const float inv = 1.0f / scale;
  for (int64_t k = 0; k < n; ++k) {
    out[k] = static_cast<int8_t>(std::nearbyint(a[k] * inv)); // |.| <= 127
  }
  return scale;
}

// One row: its largest magnitude, then quantize_with_peak.
SBSCONV_CLONES float quantize_row(const float* a, int8_t* out, int64_t n) {
  float peak = 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    const float v = std::fabs(a[k]);
    peak = v > peak ? v : peak;
  }
  return quantize_with_peak(a, peak, out, n);
}

SBSCONV_CLONES void rescale_row(const int32_t* acc, float row_scale, const float* channel_scale, const float* bias,
                                float* out, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    out[c] = static_cast<float>(acc[c]) * (row_scale * channel_scale[c]) + bias[c];
  }
}

// One row of scores: s[j] * (row_scale * key_scale[j]) into x, returning the largest.
SBSCONV_CLONES float scale_scores(const int32_t* s, float row_scale, const float* key_scale, float* x, int64_t n) {
  float peak = -FLT_MAX;
  for (int64_t j = 0; j < n; ++j) {
    const float v = static_cast<float>(s[j]) * (row_scale * key_scale[j]);
    x[j] = v;
    peak = v > peak ? v : peak;
  }
  return peak;
}

// 2^y for y <= 0: y = i + f with i = floor(y) >= -126 and f in [0, 1); 2^f by a cubic fitted
// for the least largest relative error (7.5e-5: a 26th of bf16's half step, far below what the
// int8 scores carry; a quintic's 1.7e-7 cost a third more time in the row), 2^i by writing
// i + 127 into the float's exponent.
inline float exp2_nonpositive(float y) {
  y = y < -126.0f ? -126.0f : y;
  const float fl = std::floor(y);
  const float f = y - fl;
  const float p = 0.99992520f + f * (0.69583374f + f * (0.22606722f + f * 0.07802419f));
  const int32_t bits = (static_cast<int32_t>(fl) + 127) << 23;
  float two_i;
  std::memcpy(&two_i, &bits, sizeof two_i);
  return p * two_i;
}

// out[j] <- 2^(x[j] - peak) (the scores are in log2 units), returning their sum; out as float.
SBSCONV_CLONES float exp2_row(const float* x, float peak, float* out, int64_t n) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp2_nonpositive(x[j] - peak);
    out[j] = e;
    sum += e;
  }
  return sum;
}

// One row of an MLP's middle (Note [int8 MLP]): the first layer's int32 row rescaled (as
// rescale_row), the exact GELU 0.5 v (1 + erf(v / sqrt 2)) applied, then quantized for the
// second layer (quantize_with_peak, as quantize_row), without the row leaving the cache: g
// holds it between the two passes. erf by Abramowitz and Stegun 7.1.26 (absolute error 1.5e-7)
// with the exponential above (relative error 7.5e-5): far below the int8 step the result is
// rounded to.
SBSCONV_CLONES float gelu_quantize_row(const int32_t* acc,
                                       float row_scale,
                                       const float* channel_scale,
                                       const float* bias,
                                       float* g,
                                       int8_t* out,
                                       int64_t n) {
  float peak = 0.0f;
  for (int64_t c = 0; c < n; ++c) {
    const float v = static_cast<float>(acc[c]) * (row_scale * channel_scale[c]) + bias[c];
    const float z = std::fabs(v) * 0.70710678f; // |v| / sqrt(2)
    const float t = 1.0f / (1.0f + 0.3275911f * z);
    const float poly =
        t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float erf_abs = 1.0f - poly * exp2_nonpositive(-z * z * 1.44269504f); // erf(|v| / sqrt 2)
    const float erf_v = v < 0.0f ? -erf_abs : erf_abs;
    const float out_v = 0.5f * v * (1.0f + erf_v);
    g[c] = out_v;
    const float a = std::fabs(out_v);
    peak = a > peak ? a : peak;
  }
  return quantize_with_peak(g, peak, out, n);
}

// exp2_row written as bfloat16 (round to nearest even). Only CPUs with avx512_bf16 write the
// probabilities in bfloat16 (int8_attention_uses_bf16), so this row is written for them alone:
// the floor, the cubic and the exponent's scaling (vscalefps: p * 2^floor exactly, as writing
// the exponent does) and the rounding to bfloat16 (vcvtneps2bf16) are one instruction each, half
// the work of rounding to bfloat16 in integer arithmetic. 16 values a step; the row's tail masked.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__APPLE__)
#define SBSCONV_HAS_BF16_ROW 1
// GCC 12's AVX-512 headers fill unused lanes from a self-initialised "undefined" vector, which
// its own -Wuninitialized then reports at every use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) float exp2_row_bf16(const float* x,
                                                                                     float peak,
                                                                                     uint16_t* out,
                                                                                     int64_t n) {
  const __m512 top = _mm512_set1_ps(peak);
  const __m512 lowest = _mm512_set1_ps(-126.0f);
  const __m512 c0 = _mm512_set1_ps(0.99992520f);
  const __m512 c1 = _mm512_set1_ps(0.69583374f);
  const __m512 c2 = _mm512_set1_ps(0.22606722f);
  const __m512 c3 = _mm512_set1_ps(0.07802419f);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 live = n - j >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - j)) - 1u);
    const __m512 y = _mm512_max_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + j), top), lowest);
    const __m512 fl = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(y, fl);
    const __m512 p = _mm512_fmadd_ps(f, _mm512_fmadd_ps(f, _mm512_fmadd_ps(f, c3, c2), c1), c0);
    const __m512 e = _mm512_scalef_ps(p, fl);
    sum = _mm512_mask_add_ps(sum, live, sum, e);
    _mm256_mask_storeu_epi16(out + j, live, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(e)));
  }
  return _mm512_reduce_add_ps(sum);
}
#pragma GCC diagnostic pop
#endif

} // namespace

int64_t attention_block_rows(int64_t tokens, int64_t groups, int64_t threads, int64_t probability_bytes) {
  // Every block's two GEMMs pack their right-hand side (the group's keys, then its values: t x d
  // each) afresh, so rows few (64) repack them ten times more often than the work needs; rows
  // many (1024 at 2442 tokens, 15 MB a block) leave the cache. Measured on an AMD EPYC
  // (benchmarks/RESULTS.md, 2026-12-07 session 5): 64 rows 30-45 ms a layer at 2442 tokens and
  // six heads, 128 rows 26-34, 256 rows 24-25, 512 rows 23, 1024 rows 26-29. Rows of
  // scores and probabilities within kBlockBytes, 64-512 of them, and enough blocks that every
  // thread has four to share.
  constexpr int64_t kBlockBytes = int64_t{4} << 20;
  constexpr int64_t kFewest = 64;
  constexpr int64_t kMost = 512;
  int64_t rows = kBlockBytes / (std::max<int64_t>(tokens, 1) * (4 + probability_bytes));
  rows = std::clamp<int64_t>(rows / 16 * 16, kFewest, kMost);
  while (rows > kFewest && groups * ((tokens + rows - 1) / rows) < 4 * std::max<int64_t>(threads, 1)) {
    rows = std::max<int64_t>(kFewest, rows / 2 / 16 * 16);
  }
  return rows;
}

int64_t int8_attention_block_rows(const at::Tensor& q) {
  return attention_block_rows(
      q.size(2), q.size(0) * q.size(1), at::get_num_threads(), int8_attention_uses_bf16() ? 2 : 4);
}

bool cpu_has_bf16_dot_products() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false; // other CPUs: float32 (bf16 there not measured)
#endif
}

bool int8_attention_uses_bf16() {
#ifdef SBSCONV_HAS_BF16_ROW
  return cpu_has_bf16_dot_products();
#else
  return false;
#endif
}

at::Tensor int8_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, int64_t block_rows_asked) {
  SBSCONV_CHECK(
      q_in.dim() == 4 && k_in.sizes() == q_in.sizes() && v_in.sizes() == q_in.sizes() && q_in.device().is_cpu(),
      Internal,
      "depth",
      "int8 attention takes CPU q, k, v of one shape [n, heads, t, d]");
  const int64_t n = q_in.size(0);
  const int64_t heads = q_in.size(1);
  const int64_t t = q_in.size(2);
  const int64_t d = q_in.size(3);
  const int64_t groups = n * heads;
  const at::Tensor q = q_in.to(at::kFloat).reshape({groups, t, d}).contiguous();
  at::Tensor k = k_in.to(at::kFloat).reshape({groups, t, d});
  k = (k - k.mean(1, true)).contiguous();
  const bool bf16 = int8_attention_uses_bf16();
  const at::Tensor v = v_in.reshape({groups, t, d}).to(bf16 ? at::kBFloat16 : at::kFloat).contiguous();

  // Per-token int8 rows; the q scales also carry 1/sqrt(d) and log2(e), so that the scores
  // come out in log2 units.
  at::Tensor qi = at::empty({groups, t, d}, at::kChar);
  at::Tensor ki = at::empty({groups, t, d}, at::kChar);
  at::Tensor qs = at::empty({groups * t}, at::kFloat);
  at::Tensor ks = at::empty({groups * t}, at::kFloat);
  const float score_scale = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(d)));
  {
    const float* qp = q.const_data_ptr<float>();
    const float* kp = k.const_data_ptr<float>();
    int8_t* qo = qi.mutable_data_ptr<int8_t>();
    int8_t* ko = ki.mutable_data_ptr<int8_t>();
    float* qsp = qs.mutable_data_ptr<float>();
    float* ksp = ks.mutable_data_ptr<float>();
    at::parallel_for(0, groups * t, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        qsp[r] = quantize_row(qp + r * d, qo + r * d, d) * score_scale;
        ksp[r] = quantize_row(kp + r * d, ko + r * d, d);
      }
    });
  }

  // Blocks of query rows, each block's scores and probabilities a few MB (the rows chosen by
  // attention_block_rows, Note [int8 attention]).
  const int64_t block_rows = block_rows_asked > 0 ? block_rows_asked : int8_attention_block_rows(q_in);
  const int64_t blocks = (t + block_rows - 1) / block_rows;
  at::Tensor out = at::empty({groups, t, d}, at::kFloat);
  at::parallel_for(0, groups * blocks, 1, [&](int64_t begin, int64_t end) {
    // Buffers reused from block to block (fresh ones would be fresh pages, each faulted in).
    std::vector<float> row(static_cast<size_t>(t));
    std::vector<float> sums(static_cast<size_t>(block_rows));
    at::Tensor scores = at::empty({block_rows, t}, at::kInt);
    at::Tensor probs = at::empty({block_rows, t}, bf16 ? at::kBFloat16 : at::kFloat);
    at::Tensor block = at::empty({block_rows, d}, bf16 ? at::kBFloat16 : at::kFloat);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / blocks;
      const int64_t r0 = (item % blocks) * block_rows;
      const int64_t rows = std::min(block_rows, t - r0);
      at::Tensor s_rows = scores.narrow(0, 0, rows);
      at::_int_mm_out(s_rows, qi[g].narrow(0, r0, rows), ki[g].t()); // int32 [rows, t]
      const int32_t* sp = scores.const_data_ptr<int32_t>();
      const float* row_scale = qs.const_data_ptr<float>() + g * t + r0;
      const float* key_scale = ks.const_data_ptr<float>() + g * t;
      for (int64_t r = 0; r < rows; ++r) {
        const float peak = scale_scores(sp + r * t, row_scale[r], key_scale, row.data(), t);
#ifdef SBSCONV_HAS_BF16_ROW
        if (bf16) {
          uint16_t* probs_row = reinterpret_cast<uint16_t*>(probs.mutable_data_ptr<at::BFloat16>()) + r * t;
          sums[static_cast<size_t>(r)] = exp2_row_bf16(row.data(), peak, probs_row, t);
          continue;
        }
#endif
        sums[static_cast<size_t>(r)] = exp2_row(row.data(), peak, probs.mutable_data_ptr<float>() + r * t, t);
      }
      at::Tensor b_rows = block.narrow(0, 0, rows);
      at::mm_out(b_rows, probs.narrow(0, 0, rows), v[g]);
      float* op = out.mutable_data_ptr<float>() + (g * t + r0) * d;
      for (int64_t r = 0; r < rows; ++r) {
        const float inv = 1.0f / sums[static_cast<size_t>(r)];
        if (bf16) {
          const at::BFloat16* bp = block.const_data_ptr<at::BFloat16>() + r * d;
          for (int64_t c = 0; c < d; ++c) {
            op[r * d + c] = static_cast<float>(bp[c]) * inv;
          }
        } else {
          const float* bp = block.const_data_ptr<float>() + r * d;
          for (int64_t c = 0; c < d; ++c) {
            op[r * d + c] = bp[c] * inv;
          }
        }
      }
    }
  });
  return out.view({n, heads, t, d});
}

Int8Linear::Int8Linear(const at::Tensor& weight, const at::Tensor& bias) {
  SBSCONV_CHECK(
      weight.dim() == 2 && weight.device().is_cpu(), Internal, "depth", "int8 layers take a CPU [out, in] weight");
  const at::Tensor w = weight.to(at::kFloat).contiguous(); // from float32 or bfloat16 weights
  const int64_t out = w.size(0);
  scale_ = w.abs().amax(1).clamp_min(1e-12).div(127.0); // [out]
  weight_t_ = (w / scale_.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar).t().contiguous();
  bias_ = bias.defined() ? bias.to(at::kFloat).contiguous() : at::zeros({out}, at::kFloat);
}

Int8Linear Int8Linear::from_parts(const Parts& parts) {
  const at::Tensor& w = parts.weight_t;
  SBSCONV_CHECK(
      w.dim() == 2 && w.scalar_type() == at::kChar && w.device().is_cpu(),
      Model,
      "build model",
      "prepared int8 weights must be int8 [in, out] on the CPU");
  const int64_t out = w.size(1);
  for (const at::Tensor* t : {&parts.scale, &parts.bias}) {
    SBSCONV_CHECK(
        t->dim() == 1 && t->size(0) == out && t->scalar_type() == at::kFloat,
        Model,
        "build model",
        "a prepared int8 layer's scale and bias must be float32 [out]");
  }
  Int8Linear layer;
  layer.weight_t_ = w.contiguous();
  layer.scale_ = parts.scale.contiguous();
  layer.bias_ = parts.bias.contiguous();
  return layer;
}

Int8Linear::Quantized Int8Linear::quantize(const at::Tensor& x) {
  const int64_t rows = x.size(0);
  const int64_t in = x.size(1);
  Quantized q{at::empty({rows, in}, at::kChar), at::empty({rows}, at::kFloat)};
  const float* src = x.const_data_ptr<float>();
  int8_t* dst = q.values.mutable_data_ptr<int8_t>();
  float* scales = q.row_scale.mutable_data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      scales[r] = quantize_row(src + r * in, dst + r * in, in);
    }
  });
  return q;
}

at::Tensor Int8Linear::rescale(const at::Tensor& acc, const at::Tensor& row_scale) const {
  const int64_t rows = acc.size(0);
  const int64_t out = acc.size(1);
  at::Tensor y = at::empty({rows, out}, at::kFloat);
  const int32_t* a = acc.const_data_ptr<int32_t>();
  const float* rs = row_scale.const_data_ptr<float>();
  const float* cs = scale_.const_data_ptr<float>();
  const float* b = bias_.const_data_ptr<float>();
  float* o = y.mutable_data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      rescale_row(a + r * out, rs[r], cs, b, o + r * out, out);
    }
  });
  return y;
}

at::Tensor Int8Linear::operator()(const at::Tensor& x_in) const {
  const int64_t in = weight_t_.size(0);
  const int64_t out = weight_t_.size(1);
  SBSCONV_CHECK(x_in.size(-1) == in, Internal, "depth", "int8 layer input has the wrong width");
  const at::Tensor x = x_in.to(at::kFloat).reshape({-1, in}).contiguous();
  const Quantized q = quantize(x);
  const at::Tensor y = rescale(at::_int_mm(q.values, weight_t_), q.row_scale); // from int32 [rows, out]
  std::vector<int64_t> shape(x_in.sizes().begin(), x_in.sizes().end());
  shape.back() = out;
  return x_in.scalar_type() == at::kFloat ? y.view(shape) : y.view(shape).to(x_in.scalar_type());
}

at::Tensor Int8Linear::gelu_then(const Int8Linear& next, const at::Tensor& x_in) const {
  const int64_t in = weight_t_.size(0);
  const int64_t hidden = weight_t_.size(1);
  SBSCONV_CHECK(
      x_in.size(-1) == in && next.weight_t_.size(0) == hidden,
      Internal,
      "depth",
      "int8 MLP layers of mismatched widths");
  const at::Tensor x = x_in.to(at::kFloat).reshape({-1, in}).contiguous();
  const Quantized q = quantize(x);
  const at::Tensor acc = at::_int_mm(q.values, weight_t_); // int32 [rows, hidden]
  const int64_t rows = acc.size(0);
  Quantized mid{at::empty({rows, hidden}, at::kChar), at::empty({rows}, at::kFloat)};
  {
    const int32_t* a = acc.const_data_ptr<int32_t>();
    const float* rs = q.row_scale.const_data_ptr<float>();
    const float* cs = scale_.const_data_ptr<float>();
    const float* b = bias_.const_data_ptr<float>();
    int8_t* dst = mid.values.mutable_data_ptr<int8_t>();
    float* scales = mid.row_scale.mutable_data_ptr<float>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> g(static_cast<size_t>(hidden));
      for (int64_t r = begin; r < end; ++r) {
        scales[r] = gelu_quantize_row(a + r * hidden, rs[r], cs, b, g.data(), dst + r * hidden, hidden);
      }
    });
  }
  const at::Tensor y = next.rescale(at::_int_mm(mid.values, next.weight_t_), mid.row_scale);
  std::vector<int64_t> shape(x_in.sizes().begin(), x_in.sizes().end());
  shape.back() = next.weight_t_.size(1);
  return x_in.scalar_type() == at::kFloat ? y.view(shape) : y.view(shape).to(x_in.scalar_type());
}

} // namespace sbsconv
