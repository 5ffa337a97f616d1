#pragma once

#include <ATen/core/Tensor.h>

namespace sbsconv {

// Window filters on float images [N,C,H,W] that cost the same whatever the window's size:
// the window is the (2r+1)^2 square around each pixel, clipped at the image's borders.
// LibTorch operations, any device.

// The mean over the window (running sums along each axis).
at::Tensor box_mean(const at::Tensor& image, int64_t radius);

// The maximum / minimum over the window (one pass along each axis).
at::Tensor max_filter(const at::Tensor& image, int64_t radius);
at::Tensor min_filter(const at::Tensor& image, int64_t radius);

} // namespace sbsconv
