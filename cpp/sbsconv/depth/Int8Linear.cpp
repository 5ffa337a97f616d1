#include "sbsconv/depth/Int8Linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "sbsconv/common/Error.h"

namespace sbsconv {

Int8Linear::Int8Linear(const at::Tensor& weight, const at::Tensor& bias) {
  SBSCONV_CHECK(
      weight.dim() == 2 && weight.device().is_cpu(), Internal, "depth", "int8 layers take a CPU [out, in] weight");
  const at::Tensor w = weight.to(at::kFloat).contiguous();
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
        const float* a = src + r * in;
        float peak = 0.0f;
        for (int64_t k = 0; k < in; ++k) {
          peak = std::max(peak, std::abs(a[k]));
        }
        const float s = peak > 0.0f ? peak / 127.0f : 1.0f;
        const float inv = 1.0f / s;
        int8_t* o = dst + r * in;
        for (int64_t k = 0; k < in; ++k) {
          // |a[k] * inv| <= 127 by construction; round half away from zero
          const float v = a[k] * inv;
          o[k] = static_cast<int8_t>(v >= 0.0f ? v + 0.5f : v - 0.5f);
        }
        scales[r] = s;
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
        const float s = rs[r];
        const int32_t* ar = a + r * out;
        float* orow = o + r * out;
        for (int64_t c = 0; c < out; ++c) {
          orow[c] = static_cast<float>(ar[c]) * (s * cs[c]) + b[c];
        }
      }
    });
  }
  std::vector<int64_t> shape(x_in.sizes().begin(), x_in.sizes().end());
  shape.back() = out;
  return y.view(shape);
}

} // namespace sbsconv
