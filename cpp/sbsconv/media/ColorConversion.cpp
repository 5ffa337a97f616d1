#include "sbsconv/media/ColorConversion.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace sbsconv {

namespace {

// libswscale's choice of matrix for a frame's colour space: anything it has no coefficients
// for (unspecified, YCgCo, ICtCp ...) is treated as BT.601, as FFmpeg's scale filter does.
int sws_colorspace_for(AVColorSpace space) {
  const int cs = static_cast<int>(space);
  if (cs < 1 || cs > 10 || cs == AVCOL_SPC_YCGCO) {
    return AVCOL_SPC_BT470BG;
  }
  return cs;
}

struct SwsColorDetails {
  int* inv_table;
  int src_range;
  int* table;
  int dst_range;
  int brightness;
  int contrast;
  int saturation;
};

SwsColorDetails read_details(SwsContext* context) {
  SwsColorDetails d{};
  sws_getColorspaceDetails(
      context,
      &d.inv_table,
      &d.src_range,
      &d.table,
      &d.dst_range,
      &d.brightness,
      &d.contrast,
      &d.saturation);
  return d;
}

} // namespace

at::Tensor empty_padded_hwc(
    int64_t n,
    int64_t h,
    int64_t w,
    const at::TensorOptions& options,
    int64_t channels,
    at::ScalarType dtype) {
  const int64_t item = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t elements = n * h * w * channels;
  return at::empty({elements + (kSwscalePadding + item - 1) / item}, options.dtype(dtype))
      .narrow(0, 0, elements)
      .view({n, h, w, channels});
}

YuvMatrix yuv_matrix_for(AVColorSpace space) {
  switch (sws_colorspace_for(space)) {
    case AVCOL_SPC_BT709:
      return {0.2126, 0.0722};
    case AVCOL_SPC_FCC:
      return {0.30, 0.11};
    case AVCOL_SPC_SMPTE240M:
      return {0.212, 0.087};
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL:
      return {0.2627, 0.0593};
    default:
      return {0.299, 0.114};
  }
}

// ---- HDR to SDR (Note [HDR to SDR]) ----------------------------------------------------------

namespace {

constexpr double kReferenceWhite = 203.0; // cd/m2: BT.2408's HDR reference white, SDR's white
constexpr double kPeak = 1000.0; // cd/m2: the peak rolled onto SDR white; HLG's display
constexpr float kKnee = 0.8f;
constexpr int kOotfSteps = 4096;
constexpr int kEncodeSteps = 16384;

double pq_eotf(double e) { // SMPTE ST 2084: signal -> cd/m2
  constexpr double m1 = 2610.0 / 16384.0;
  constexpr double m2 = 2523.0 / 4096.0 * 128.0;
  constexpr double c1 = 3424.0 / 4096.0;
  constexpr double c2 = 2413.0 / 4096.0 * 32.0;
  constexpr double c3 = 2392.0 / 4096.0 * 32.0;
  const double p = std::pow(e, 1.0 / m2);
  return 10000.0 * std::pow(std::max(p - c1, 0.0) / (c2 - c3 * p), 1.0 / m1);
}

double hlg_inverse_oetf(double e) { // ARIB STD-B67: signal -> scene light [0, 1]
  constexpr double a = 0.17883277;
  constexpr double b = 1.0 - 4.0 * a;
  const double c = 0.5 - a * std::log(4.0 * a);
  return e <= 0.5 ? e * e / 3.0 : (std::exp((e - c) / a) + b) / 12.0;
}

double bt1886_inverse_eotf(double l) { // display light [0, 1] -> signal (black at 0)
  return std::pow(l, 1.0 / 2.4);
}

} // namespace

bool is_hdr_transfer(AVColorTransferCharacteristic transfer) {
  return transfer == AVCOL_TRC_SMPTE2084 || transfer == AVCOL_TRC_ARIB_STD_B67;
}

HdrToSdr::HdrToSdr(AVColorTransferCharacteristic transfer, AVColorPrimaries primaries)
    : transfer_(transfer), primaries_(primaries), linear_(65536), encode_(kEncodeSteps + 1) {
  const bool pq = transfer == AVCOL_TRC_SMPTE2084;
  for (int v = 0; v < 65536; ++v) {
    const double e = v / 65535.0;
    linear_[static_cast<size_t>(v)] = static_cast<float>(pq ? pq_eotf(e) / kReferenceWhite : hlg_inverse_oetf(e));
  }
  if (!pq) {
    // HLG's OOTF for a 1000 cd/m2 display: Fd = Lw * Ys^(gamma - 1) * E, in reference whites
    ootf_.resize(kOotfSteps + 1);
    for (int k = 0; k <= kOotfSteps; ++k) {
      const double ys = static_cast<double>(k) / kOotfSteps;
      ootf_[static_cast<size_t>(k)] = static_cast<float>(kPeak / kReferenceWhite * std::pow(ys, 0.2));
    }
  }
  for (int k = 0; k <= kEncodeSteps; ++k) {
    const double v = bt1886_inverse_eotf(static_cast<double>(k) / kEncodeSteps) * 255.0;
    encode_[static_cast<size_t>(k)] = static_cast<uint8_t>(std::min(std::floor(v + 0.5), 255.0));
  }
}

void HdrToSdr::convert(
    const uint16_t* src, int64_t src_stride, uint8_t* dst, int64_t dst_stride, int width, int height) const {
  const bool hlg = transfer_ == AVCOL_TRC_ARIB_STD_B67;
  // BT.2087's BT.2020 -> BT.709 matrix (linear light); other primaries are taken as BT.709's
  const bool wide = primaries_ == AVCOL_PRI_BT2020;
  static constexpr float m[9] = {
      1.6605f, -0.5876f, -0.0728f, -0.1246f, 1.1329f, -0.0083f, -0.0182f, -0.1006f, 1.1187f};
  const float w_top = static_cast<float>((kPeak / kReferenceWhite - kKnee) / (1.0 - kKnee));
  const float inv_w2 = 1.0f / (w_top * w_top);
  const float* lin = linear_.data();
  const uint8_t* enc = encode_.data();
  for (int y = 0; y < height; ++y) {
    const uint16_t* in = src + static_cast<int64_t>(y) * src_stride;
    uint8_t* out = dst + static_cast<int64_t>(y) * dst_stride;
    for (int x = 0; x < width; ++x) {
      float r = lin[in[3 * x]];
      float g = lin[in[3 * x + 1]];
      float b = lin[in[3 * x + 2]];
      if (hlg) {
        const float ys = std::min(std::max(0.2627f * r + 0.6780f * g + 0.0593f * b, 0.0f), 1.0f);
        const float gain = ootf_[static_cast<size_t>(ys * kOotfSteps + 0.5f)];
        r *= gain;
        g *= gain;
        b *= gain;
      }
      if (wide) {
        const float r2 = m[0] * r + m[1] * g + m[2] * b;
        const float g2 = m[3] * r + m[4] * g + m[5] * b;
        const float b2 = m[6] * r + m[7] * g + m[8] * b;
        r = std::max(r2, 0.0f);
        g = std::max(g2, 0.0f);
        b = std::max(b2, 0.0f);
      }
      const float top = std::max(r, std::max(g, b));
      if (top > kKnee) {
        const float t = (top - kKnee) / (1.0f - kKnee);
        const float f = kKnee + (1.0f - kKnee) * t * (1.0f + t * inv_w2) / (1.0f + t);
        const float scale = f / top;
        r *= scale;
        g *= scale;
        b *= scale;
      }
      out[3 * x] = enc[static_cast<int>(std::min(r, 1.0f) * kEncodeSteps + 0.5f)];
      out[3 * x + 1] = enc[static_cast<int>(std::min(g, 1.0f) * kEncodeSteps + 0.5f)];
      out[3 * x + 2] = enc[static_cast<int>(std::min(b, 1.0f) * kEncodeSteps + 0.5f)];
    }
  }
}

// ---- decode side --------------------------------------------------------------------------

void RgbConverter::convert(
    const AVFrame* frame,
    uint8_t* dst,
    int dst_stride,
    int width,
    int height) {
  const int colorspace = sws_colorspace_for(frame->colorspace);
  const int range = frame->color_range;
  // Note [HDR to SDR]: an HDR frame goes through 16-bit RGB and the tone mapping
  const bool hdr = output_ == AV_PIX_FMT_RGB24 && is_hdr_transfer(frame->color_trc);
  const AVPixelFormat sws_output = hdr ? AV_PIX_FMT_RGB48 : output_;
  if (!context_ || frame->width != src_width_ || frame->height != src_height_ ||
      frame->format != src_format_ || width != dst_width_ || height != dst_height_ ||
      colorspace != colorspace_ || range != range_ || sws_output != sws_output_) {
    // At the frame's own size, FFmpeg's default (bicubic) flags; shrinking averages areas.
    const bool shrink = width < frame->width || height < frame->height;
    const int flags = shrink ? SWS_AREA : SWS_BICUBIC;
    context_.reset(sws_getContext(
        frame->width,
        frame->height,
        static_cast<AVPixelFormat>(frame->format),
        width,
        height,
        sws_output,
        flags,
        nullptr,
        nullptr,
        nullptr));
    if (!context_) {
      throw Error(
          ErrorKind::Decode,
          "colour conversion",
          std::string("libswscale cannot convert ") +
              av_get_pix_fmt_name(static_cast<AVPixelFormat>(frame->format)) + " to " + av_get_pix_fmt_name(sws_output));
    }
    // See Note [Matching FFmpeg's RGB]: the same details FFmpeg's scale filter sets.
    SwsColorDetails d = read_details(context_.get());
    int src_full = d.src_range;
    if (range != AVCOL_RANGE_UNSPECIFIED) {
      src_full = range == AVCOL_RANGE_JPEG ? 1 : 0;
    }
    sws_setColorspaceDetails(
        context_.get(),
        sws_getCoefficients(colorspace),
        src_full,
        d.table,
        d.dst_range,
        d.brightness,
        d.contrast,
        d.saturation);
    src_width_ = frame->width;
    src_height_ = frame->height;
    src_format_ = frame->format;
    dst_width_ = width;
    dst_height_ = height;
    colorspace_ = colorspace;
    range_ = range;
    sws_output_ = sws_output;
  }
  if (hdr && (!hdr_ || hdr_->transfer() != frame->color_trc || hdr_->primaries() != frame->color_primaries)) {
    hdr_ = std::make_unique<HdrToSdr>(frame->color_trc, frame->color_primaries);
  }
  // Note [swscale's rows of eight]: libswscale's SIMD YUV -> RGB converters (the unscaled
  // 4:2:0 and 4:2:2 ones) convert whole groups of eight pixels, and where eight more pixels do
  // not fit in the destination's row stride they stop at the last whole group: a row packed as
  // tightly as a tensor's (854 pixels wide: 2562 bytes) would keep its last width % 8 pixels
  // unwritten. FFmpeg's own frames have padded rows, so its output is whole. Whatever the
  // conversion (the other converters need no such room, but a copy is cheap beside it), such
  // widths are converted into rows padded to 64 bytes and copied into place. An HDR frame's
  // 16-bit rows always go there first, and are tone-mapped into place (Note [HDR to SDR]).
  const int pixel_bytes = av_get_padded_bits_per_pixel(av_pix_fmt_desc_get(sws_output)) / 8;
  const int tight = width * pixel_bytes;
  const int whole = ((width + 7) / 8) * 8 * pixel_bytes;
  const bool padded = hdr || dst_stride < whole;
  const int stride = padded ? (whole + 63) / 64 * 64 : dst_stride;
  if (padded && padded_rows_.size() < static_cast<size_t>(stride) * height + kSwscalePadding) {
    padded_rows_.resize(static_cast<size_t>(stride) * height + kSwscalePadding);
  }
  uint8_t* dst_data[4] = {padded ? padded_rows_.data() : dst, nullptr, nullptr, nullptr};
  int dst_linesize[4] = {stride, 0, 0, 0};
  const int rows = sws_scale(
      context_.get(), frame->data, frame->linesize, 0, frame->height, dst_data, dst_linesize);
  if (rows != height) {
    throw Error(
        ErrorKind::Decode,
        "colour conversion",
        "libswscale produced " + std::to_string(rows) + " rows, expected " +
            std::to_string(height));
  }
  if (hdr) {
    // (the vector's storage is aligned for uint16, and the stride is a multiple of 64 bytes)
    hdr_->convert(reinterpret_cast<const uint16_t*>(padded_rows_.data()), stride / 2, dst, dst_stride, width, height);
  } else if (padded) {
    for (int row = 0; row < height; ++row) {
      std::memcpy(dst + static_cast<ptrdiff_t>(row) * dst_stride, padded_rows_.data() + static_cast<size_t>(row) * stride, tight);
    }
  }
}

namespace {

// swscale's bicubic kernel (its default parameter, C = 0.6, as a = -0.6).
double cubic(double x) {
  constexpr double a = -0.6;
  x = std::abs(x);
  if (x <= 1.0) {
    return (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0;
  }
  if (x < 2.0) {
    return a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a;
  }
  return 0.0;
}

// Chroma rows [h2, ...] -> [2*h2, ...] by the cubic kernel, sited between luma rows: output
// row 2m samples the chroma at m - 1/4, row 2m+1 at m + 1/4 (edges repeated).
at::Tensor upsample_rows_cubic(const at::Tensor& c) {
  const int64_t h2 = c.size(0);
  at::Tensor padded = at::cat({c.narrow(0, 0, 1), c.narrow(0, 0, 1), c, c.narrow(0, h2 - 1, 1), c.narrow(0, h2 - 1, 1)});
  auto row = [&](int64_t offset) { return padded.narrow(0, 2 + offset, h2); }; // chroma row m + offset
  const at::Tensor even = row(-2) * cubic(1.75) + row(-1) * cubic(0.75) + row(0) * cubic(0.25) + row(1) * cubic(1.25);
  const at::Tensor odd = row(-1) * cubic(1.25) + row(0) * cubic(0.25) + row(1) * cubic(0.75) + row(2) * cubic(1.75);
  std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
  shape[0] = 2 * h2;
  return at::stack({even, odd}, 1).reshape(shape);
}

} // namespace

at::Tensor semi_planar_to_rgb(
    const at::Tensor& y,
    const at::Tensor& uv,
    bool wide,
    AVColorSpace space,
    AVColorRange range) {
  const int64_t h = y.size(0);
  const int64_t w = y.size(1);
  auto to_8bit_scale = [&](const at::Tensor& t) {
    if (!wide) {
      return t.to(at::kFloat);
    }
    // 16-bit containers (P010 keeps its 10 bits in the high bits): value / 256 is the
    // sample on the 8-bit scale.
    return at::bitwise_and(t.to(at::kInt), 0xFFFF).to(at::kFloat).div_(256.0);
  };
  at::Tensor yf = to_8bit_scale(y);
  at::Tensor uvf = to_8bit_scale(uv); // [h2, w2, 2]
  // See Note [Device colour conversion]: rows by the cubic kernel for 10/16-bit, repeated for
  // 8-bit; columns repeated.
  uvf = wide ? upsample_rows_cubic(uvf) : uvf.repeat_interleave(2, 0);
  uvf = uvf.repeat_interleave(2, 1).narrow(0, 0, h).narrow(1, 0, w);
  at::Tensor cb = uvf.select(2, 0) - 128.0;
  at::Tensor cr = uvf.select(2, 1) - 128.0;
  if (range != AVCOL_RANGE_JPEG) {
    yf = (yf - 16.0) * (255.0 / 219.0);
    cb = cb * (255.0 / 224.0);
    cr = cr * (255.0 / 224.0);
  }
  const YuvMatrix m = yuv_matrix_for(space);
  const double kg = 1.0 - m.kr - m.kb;
  at::Tensor r = yf + cr * (2.0 * (1.0 - m.kr));
  at::Tensor b = yf + cb * (2.0 * (1.0 - m.kb));
  at::Tensor g = yf - cb * (2.0 * m.kb * (1.0 - m.kb) / kg) - cr * (2.0 * m.kr * (1.0 - m.kr) / kg);
  return at::stack({r, g, b}, 2).round_().clamp_(0.0, 255.0).to(at::kByte);
}

bool device_yuv_to_rgb(const AVFrame* frame, at::Tensor& out) {
  if (frame->hw_frames_ctx == nullptr) {
    return false;
  }
  const auto* frames = reinterpret_cast<const AVHWFramesContext*>(frame->hw_frames_ctx->data);
  const AVPixelFormat sw = frames->sw_format;
  const bool wide = sw == AV_PIX_FMT_P010LE || sw == AV_PIX_FMT_P016LE;
  if (sw != AV_PIX_FMT_NV12 && !wide) {
    return false;
  }
  const int64_t h = frame->height;
  const int64_t w = frame->width;
  const int64_t element = wide ? 2 : 1;
  const auto options =
      at::TensorOptions().device(out.device()).dtype(wide ? at::kShort : at::kByte);
  at::Tensor y = at::from_blob(frame->data[0], {h, w}, {frame->linesize[0] / element, 1}, options);
  at::Tensor uv = at::from_blob(
      frame->data[1], {(h + 1) / 2, (w + 1) / 2, 2}, {frame->linesize[1] / element, 2, 1}, options);
  out.copy_(semi_planar_to_rgb(y, uv, wide, frame->colorspace, frame->color_range));
  return true;
}

// ---- encode side --------------------------------------------------------------------------

YuvConverter::YuvConverter(int width, int height, AVPixelFormat dst_format)
    : width_(width), height_(height), dst_format_(dst_format) {}

SwsContext* YuvConverter::context_for(AVPixelFormat src) {
  UniqueSwsContext& slot = src == AV_PIX_FMT_RGB24 ? packed_ : planar_;
  if (!slot) {
    // Chroma is averaged over each 2x2 block (area filter over full-resolution chroma input,
    // accurately rounded): the subsampling that loses least against the chroma replication
    // decoders use, ~3 dB better round trip than the bicubic default.
    slot.reset(sws_getContext(
        width_,
        height_,
        src,
        width_,
        height_,
        dst_format_,
        SWS_AREA | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP,
        nullptr,
        nullptr,
        nullptr));
    if (!slot) {
      throw Error(
          ErrorKind::Encode,
          "colour conversion",
          std::string("libswscale cannot convert RGB to ") + av_get_pix_fmt_name(dst_format_));
    }
    SwsColorDetails d = read_details(slot.get());
    // RGB in -> BT.709 limited range out, the tags the encoder writes. The source range
    // stays 0 as FFmpeg leaves it for RGB input: a "full" RGB source would make swscale
    // compress luma a second time after its RGB->YUV table has already limited it.
    sws_setColorspaceDetails(
        slot.get(),
        d.inv_table,
        0,
        sws_getCoefficients(SWS_CS_ITU709),
        0,
        d.brightness,
        d.contrast,
        d.saturation);
  }
  return slot.get();
}

void YuvConverter::convert(const at::Tensor& rgb_in, AVFrame* dst) {
  SBSCONV_CHECK(
      rgb_in.dim() == 3 && rgb_in.size(0) == 3 && rgb_in.size(1) == height_ &&
          rgb_in.size(2) == width_ && rgb_in.scalar_type() == at::kByte && rgb_in.is_cpu(),
      Internal,
      "colour conversion",
      "encoder input must be one uint8 [3,H,W] CPU frame of the encoder's size");
  const bool packed = rgb_in.permute({1, 2, 0}).is_contiguous();
  at::Tensor rgb = packed || rgb_in.is_contiguous() ? rgb_in : rgb_in.contiguous();
  // See Note [swscale over-reach]. The encoder's RGB input is always read from a copy whose
  // padding is zeros: swscale's vector loops read a few bytes past a row's end, and whatever
  // lies there (the next frame of a batch, or uninitialised memory) must not reach the output,
  // which has to be the same for the same frames in every run.
  const int64_t frame_bytes = static_cast<int64_t>(width_) * height_ * 3;
  if (!staging_.defined()) {
    staging_ = at::zeros({frame_bytes + kSwscalePadding}, at::kByte).narrow(0, 0, frame_bytes).view({1, height_, width_, 3});
  }
  {
    at::Tensor target = packed ? staging_[0].permute({2, 0, 1})
                               : staging_.view({-1}).view({3, height_, width_});
    target.copy_(rgb);
    rgb = target;
  }
  uint8_t* base = rgb.data_ptr<uint8_t>();
  const uint8_t* src_data[4] = {nullptr, nullptr, nullptr, nullptr};
  int src_linesize[4] = {0, 0, 0, 0};
  SwsContext* context = nullptr;
  if (packed) {
    context = context_for(AV_PIX_FMT_RGB24);
    src_data[0] = base;
    src_linesize[0] = width_ * 3;
  } else {
    // GBRP's planes are G, B, R; the tensor's are R, G, B.
    const size_t plane = static_cast<size_t>(width_) * height_;
    context = context_for(AV_PIX_FMT_GBRP);
    src_data[0] = base + plane;
    src_data[1] = base + 2 * plane;
    src_data[2] = base;
    src_linesize[0] = src_linesize[1] = src_linesize[2] = width_;
  }
  sws_scale(context, src_data, src_linesize, 0, height_, dst->data, dst->linesize);

  // Odd sizes: the frame is one row/column larger; repeat the last one in every plane (4:2:0's
  // chroma already covers the rounded-up size; 4:4:4's and 4:2:2's do not, and what their
  // extra column held would otherwise reach the output).
  const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(dst_format_);
  for (int plane = 0; plane < 4 && dst->data[plane] != nullptr; ++plane) {
    int component = -1;
    for (int c = 0; c < desc->nb_components; ++c) {
      if (desc->comp[c].plane == plane) {
        component = c;
        break;
      }
    }
    if (component < 0) {
      continue;
    }
    const bool chroma = component == 1 || component == 2;
    const int shift_w = chroma ? desc->log2_chroma_w : 0;
    const int shift_h = chroma ? desc->log2_chroma_h : 0;
    const int step = desc->comp[component].step; // bytes from one pixel to the next in the plane
    const int filled_w = AV_CEIL_RSHIFT(width_, shift_w);
    const int filled_h = AV_CEIL_RSHIFT(height_, shift_h);
    const int full_w = AV_CEIL_RSHIFT(dst->width, shift_w);
    const int full_h = AV_CEIL_RSHIFT(dst->height, shift_h);
    uint8_t* data = dst->data[plane];
    const ptrdiff_t stride = dst->linesize[plane];
    for (int row = 0; row < filled_h && full_w > filled_w; ++row) {
      uint8_t* line = data + row * stride;
      for (int col = filled_w; col < full_w; ++col) {
        std::memcpy(line + static_cast<ptrdiff_t>(col) * step, line + static_cast<ptrdiff_t>(filled_w - 1) * step, step);
      }
    }
    for (int row = filled_h; row < full_h; ++row) {
      std::memcpy(data + row * stride, data + (filled_h - 1) * stride, static_cast<size_t>(full_w) * step);
    }
  }
}

bool device_rgb_to_yuv(const at::Tensor& rgb, AVFrame* hw_frame) {
  if (hw_frame->hw_frames_ctx == nullptr || !rgb.is_cuda()) {
    return false;
  }
  const auto* frames = reinterpret_cast<const AVHWFramesContext*>(hw_frame->hw_frames_ctx->data);
  const AVPixelFormat sw = frames->sw_format;
  const bool wide = sw == AV_PIX_FMT_P010LE;
  if (sw != AV_PIX_FMT_NV12 && !wide) {
    return false;
  }
  const int64_t h = hw_frame->height; // even
  const int64_t w = hw_frame->width;
  // Pad odd sizes by repeating the last row/column, as the CPU path does.
  at::Tensor x = rgb.to(at::kFloat).unsqueeze(0);
  const int64_t pad_w = w - rgb.size(2);
  const int64_t pad_h = h - rgb.size(1);
  if (pad_w > 0 || pad_h > 0) {
    x = at::replication_pad2d(x, {0, pad_w, 0, pad_h});
  }
  const YuvMatrix m = yuv_matrix_for(AVCOL_SPC_BT709);
  const double kg = 1.0 - m.kr - m.kb;
  at::Tensor r = x.select(1, 0);
  at::Tensor g = x.select(1, 1);
  at::Tensor b = x.select(1, 2);
  at::Tensor y = r * m.kr + g * kg + b * m.kb;
  at::Tensor cb = (b - y) / (2.0 * (1.0 - m.kb));
  at::Tensor cr = (r - y) / (2.0 * (1.0 - m.kr));
  at::Tensor chroma = at::avg_pool2d(at::stack({cb, cr}, 1), {2, 2}).squeeze(0); // [2,h/2,w/2]
  at::Tensor y_limited = (y.squeeze(0) * (219.0 / 255.0) + 16.0);
  at::Tensor c_limited = chroma * (224.0 / 255.0) + 128.0;
  const int64_t element = wide ? 2 : 1;
  const auto options = at::TensorOptions().device(rgb.device()).dtype(wide ? at::kShort : at::kByte);
  at::Tensor y_plane =
      at::from_blob(hw_frame->data[0], {h, w}, {hw_frame->linesize[0] / element, 1}, options);
  at::Tensor uv_plane = at::from_blob(
      hw_frame->data[1], {h / 2, w / 2, 2}, {hw_frame->linesize[1] / element, 2, 1}, options);
  if (wide) {
    // 10-bit samples in the high bits of 16-bit words.
    auto pack = [](const at::Tensor& v) {
      return at::bitwise_left_shift(v.mul(4.0).round_().clamp_(0, 1023).to(at::kInt), 6)
          .to(at::kShort);
    };
    y_plane.copy_(pack(y_limited));
    uv_plane.copy_(pack(c_limited.permute({1, 2, 0})));
  } else {
    y_plane.copy_(y_limited.round_().clamp_(0, 255).to(at::kByte));
    uv_plane.copy_(c_limited.permute({1, 2, 0}).round().clamp_(0, 255).to(at::kByte));
  }
  return true;
}

} // namespace sbsconv
