#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace sbsconv {

// Quantiles along the last dimension with linear interpolation (as at::quantile's default),
// in float32 on the tensor's device: at::quantile computes its ranks in float64, which MPS
// lacks (Note [No float64 on devices]). Returns [..., qs.size()]. The ranks are known on the
// host from the length alone, so nothing is copied back to compute them. On a device the rows
// are sorted; on the CPU each rank is selected (nth_element: linear, where sorting 64k samples
// with their indices took 4-6 ms a call), NaN ordered last as at::sort orders it: the same
// values.
inline at::Tensor quantiles_last_dim_sorted(const at::Tensor& x, const std::vector<double>& qs) {
  at::Tensor sorted = std::get<0>(x.to(at::kFloat).sort(-1));
  const int64_t n = sorted.size(-1);
  std::vector<at::Tensor> out;
  out.reserve(qs.size());
  for (const double q : qs) {
    const double rank = std::clamp(q, 0.0, 1.0) * static_cast<double>(n - 1);
    const auto below = static_cast<int64_t>(std::floor(rank));
    const int64_t above = std::min<int64_t>(below + 1, n - 1);
    const double weight = rank - static_cast<double>(below);
    at::Tensor low = sorted.select(-1, below);
    out.push_back(weight == 0.0 ? low : low + (sorted.select(-1, above) - low) * weight);
  }
  return at::stack(out, -1);
}

inline at::Tensor quantiles_last_dim(const at::Tensor& x, const std::vector<double>& qs) {
  if (!x.is_cpu() || x.dim() == 0 || x.size(-1) == 0 || qs.empty()) {
    return quantiles_last_dim_sorted(x, qs);
  }
  const at::Tensor v = x.to(at::kFloat).contiguous();
  const int64_t n = v.size(-1);
  const int64_t rows = v.numel() / n;
  std::vector<int64_t> sizes = v.sizes().vec();
  sizes.back() = static_cast<int64_t>(qs.size());
  at::Tensor out = at::empty(sizes, v.options());
  const float* in = v.data_ptr<float>();
  float* o = out.data_ptr<float>();
  // a strict weak order with NaN after every number, as at::sort places it
  auto before = [](float a, float b) { return a < b || (!std::isnan(a) && std::isnan(b)); };
  std::vector<float> row(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(in + r * n, in + (r + 1) * n, row.begin());
    for (size_t j = 0; j < qs.size(); ++j) {
      const double rank = std::clamp(qs[j], 0.0, 1.0) * static_cast<double>(n - 1);
      const auto below = static_cast<int64_t>(std::floor(rank));
      const double weight = rank - static_cast<double>(below);
      std::nth_element(row.begin(), row.begin() + below, row.end(), before);
      const float low = row[static_cast<size_t>(below)];
      float value = low;
      if (weight != 0.0) {
        // the next in order: the least of those the selection put after it
        const float high = below + 1 < n ? *std::min_element(row.begin() + below + 1, row.end(), before) : low;
        value = low + (high - low) * static_cast<float>(weight);
      }
      o[r * static_cast<int64_t>(qs.size()) + static_cast<int64_t>(j)] = value;
    }
  }
  return out;
}

} // namespace sbsconv
