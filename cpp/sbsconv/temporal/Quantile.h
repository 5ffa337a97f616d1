#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace sbsconv {

// Quantiles along the last dimension with linear interpolation (as at::quantile's default),
// in float32 on the tensor's device: at::quantile computes its ranks in float64, which MPS
// lacks (Note [No float64 on devices]). Returns [..., qs.size()]. The ranks are known on the
// host from the length alone, so nothing is copied back to compute them.
inline at::Tensor quantiles_last_dim(const at::Tensor& x, const std::vector<double>& qs) {
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

} // namespace sbsconv
