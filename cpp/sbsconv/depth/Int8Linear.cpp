#include "sbsconv/depth/Int8Linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "sbsconv/common/Error.h"

// The two passes around the GEMM are plain loops: built once per instruction set (AVX-512,
// AVX2, baseline) and chosen when the program starts (target_clones), so the same binary runs
// everywhere and uses the widest vectors the CPU has. The file is compiled with finite-math
// flags (CMakeLists.txt) so that the max reduction and the rounding vectorise.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__APPLE__)
#define SBSCONV_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SBSCONV_CLONES
#endif

namespace sbsconv {

namespace {

// One row: its largest magnitude, then each value / (peak / 127) rounded to the nearest integer.
SBSCONV_CLONES float quantize_row(const float* a, int8_t* out, int64_t n) {
  float peak = 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    const float v = std::fabs(a[k]);
    peak = v > peak ? v : peak;
  }
  const float scale = peak > 0.0f ? peak / 127.0f : 1.0f;
  const float inv = 1.0f / scale;
  for (int64_t k = 0; k < n; ++k) {
    out[k] = static_cast<int8_t>(std::nearbyint(a[k] * inv)); // |.| <= 127
  }
  return scale;
}

SBSCONV_CLONES void rescale_row(const int32_t* acc, float row_scale, const float* channel_scale, const float* bias,
                                float* out, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    out[c] = static_cast<float>(acc[c]) * (row_scale * channel_scale[c]) + bias[c];
  }
}

} // namespace

Int8Linear::Int8Linear(const at::Tensor& weight, const at::Tensor& bias) {
  SBSCONV_CHECK(
      weight.dim() == 2 && weight.device().is_cpu(), Internal, "depth", "int8 layers take a CPU [out, in] weight");
  const at::Tensor w = weight.to(at::kFloat).contiguous(); // from float32 or bfloat16 weights
  const int64_t out = w.size(0);
  scale_ = w.abs().amax(1).clamp_min(1e-12).div(127.0); // [out]
  weight_t_ = (w / scale_.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar).t().contiguous();
  bias_ = bias.defined() ? bias.to(at::kFloat).contiguous() : at::zeros({out}, at::kFloat);
}

at::Tensor Int8Linear::operator()(const at::Tensor& x_in) const {
  const int64_t in = weight_t_.size(0);
  const int64_t out = weight_t_.size(1);
  SBSCONV_CHECK(x_in.size(-1) == in, Internal, "depth", "int8 layer input has the wrong width");
  const at::Tensor x = x_in.to(at::kFloat).reshape({-1, in}).contiguous();
  const int64_t rows = x.size(0);
  at::Tensor q = at::empty({rows, in}, at::kChar);
  at::Tensor row_scale = at::empty({rows}, at::kFloat);
  {
    const float* src = x.const_data_ptr<float>();
    int8_t* dst = q.mutable_data_ptr<int8_t>();
    float* scales = row_scale.mutable_data_ptr<float>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        scales[r] = quantize_row(src + r * in, dst + r * in, in);
      }
    });
  }
  const at::Tensor acc = at::_int_mm(q, weight_t_); // int32 [rows, out]
  at::Tensor y = at::empty({rows, out}, at::kFloat);
  {
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
  }
  std::vector<int64_t> shape(x_in.sizes().begin(), x_in.sizes().end());
  shape.back() = out;
  return x_in.scalar_type() == at::kFloat ? y.view(shape) : y.view(shape).to(x_in.scalar_type());
}

} // namespace sbsconv
