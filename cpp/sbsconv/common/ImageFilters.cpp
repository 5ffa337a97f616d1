#include "sbsconv/common/ImageFilters.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace sbsconv {

namespace {

// Sums over [i - r, i + r] (clipped) along `dim`, and how many elements each took.
std::pair<at::Tensor, at::Tensor> window_sums(const at::Tensor& v, int64_t dim, int64_t r) {
  const int64_t n = v.size(dim);
  std::vector<int64_t> shape(v.dim(), 1);
  shape[dim] = 1;
  std::vector<int64_t> zeros_shape = v.sizes().vec();
  zeros_shape[dim] = 1;
  const at::Tensor running = at::cat({at::zeros(zeros_shape, v.options()), v.cumsum(dim)}, dim); // n + 1
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(v.device());
  const at::Tensor index = at::arange(n, i64);
  const at::Tensor hi = (index + r + 1).clamp_max(n);
  const at::Tensor lo = (index - r).clamp_min(0);
  const at::Tensor sums = running.index_select(dim, hi) - running.index_select(dim, lo);
  std::vector<int64_t> count_shape(v.dim(), 1);
  count_shape[dim] = n;
  return {sums, (hi - lo).to(v.scalar_type()).view(count_shape)};
}

} // namespace

at::Tensor box_mean(const at::Tensor& image, int64_t radius) {
  if (radius <= 0) {
    return image;
  }
  auto [along_w, count_w] = window_sums(image, 3, radius);
  auto [both, count_h] = window_sums(along_w, 2, radius);
  return both / (count_w * count_h);
}

at::Tensor max_filter(const at::Tensor& image, int64_t radius) {
  if (radius <= 0) {
    return image;
  }
  const int64_t k = 2 * radius + 1;
  const at::Tensor rows = at::max_pool2d(image, {1, k}, {1, 1}, {0, radius});
  return at::max_pool2d(rows, {k, 1}, {1, 1}, {radius, 0});
}

at::Tensor min_filter(const at::Tensor& image, int64_t radius) {
  return max_filter(image.neg(), radius).neg();
}

} // namespace sbsconv
