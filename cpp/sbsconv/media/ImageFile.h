#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace sbsconv {

// Writes one RGB picture (uint8 [3,H,W], any device and layout) as a PNG file, under a
// temporary name first and renamed when complete.
void write_png(const std::string& path, const at::Tensor& rgb);

// The same picture as PNG file bytes, in memory.
std::string encode_png(const at::Tensor& rgb);

} // namespace sbsconv
