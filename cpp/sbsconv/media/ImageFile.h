#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>

#include "sbsconv/common/FFmpeg.h"

namespace sbsconv {

// Writes one RGB picture (uint8 [3,H,W], any device and layout) as a PNG file, under a
// temporary name first and renamed when complete.
void write_png(const std::string& path, const at::Tensor& rgb);

// The same picture as PNG file bytes, in memory.
std::string encode_png(const at::Tensor& rgb);

// One picture through one of FFmpeg's image encoders (PNG, OpenEXR ...): opens `codec` for a
// `width`x`height` picture in `format` with `options` (encoder options), lets `fill` write the
// allocated frame's planes, and returns the encoded file's bytes. Errors name `stage` and
// `path`. What encode_png and the depth products' image sequences (DepthFile) share.
std::string encode_picture(
    AVCodecID codec,
    AVPixelFormat format,
    int width,
    int height,
    const std::function<void(AVFrame* picture)>& fill,
    const std::map<std::string, std::string>& options,
    const char* stage,
    const std::string& path);

} // namespace sbsconv
