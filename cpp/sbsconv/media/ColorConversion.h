#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "sbsconv/common/FFmpeg.h"

namespace sbsconv {

// Note [Matching FFmpeg's RGB]
// Decoded pictures become RGB the way FFmpeg's own command line makes them
// (`ffmpeg -i in -pix_fmt rgb24`): libswscale with bicubic filtering, the frame's colour
// matrix (BT.601 when the stream does not say, as FFmpeg assumes; BT.709, BT.2020, FCC,
// SMPTE 240M when tagged) and its range (limited unless tagged full or a yuvj format), into
// packed RGB24. That makes sbsconv's frames identical to the reference conversion for every
// input FFmpeg decodes, 10/12-bit and 4:4:4 included. The packed buffer is handed out as a
// channels-last [N,3,H,W] tensor, so no extra pass reorders the bytes.
// HDR sources (PQ, HLG) are the exception: Note [HDR to SDR].

// Note [HDR to SDR]
// sbsconv writes SDR BT.709 video (8-bit frames, every output tagged BT.709), so an HDR source
// (PQ, SMPTE ST 2084: HDR10 and Dolby Vision's base layer; HLG, ARIB STD-B67: what phones
// record) is tone-mapped as it becomes RGB, instead of Note [Matching FFmpeg's RGB]'s plain
// conversion, which shows its signal as if it were BT.709: dark and flat (16-21 dB from the
// SDR grade: benchmarks/RESULTS.md, "HDR sources"). libswscale converts the picture with its
// own matrix to 16-bit R'G'B' (BT.2020 primaries as a rule); then, per pixel (HdrToSdr):
// 1. To display light, in units of the HDR reference white (ITU-R BT.2408: 203 cd/m2, where
//    an SDR grade's white lies): PQ by its EOTF; HLG by its inverse OETF and the OOTF of a
//    1000 cd/m2 display (system gamma 1.2 on the BT.2020 luminance), which puts HLG's 75 %
//    reference level at 203 cd/m2 too.
// 2. BT.2020 primaries to BT.709 (the linear 3x3 of BT.2087), negative components clipped.
// 3. Highlights rolled off: where the largest component m exceeds the knee k = 0.8, the pixel
//    is scaled by f(m)/m with f(m) = k + (1-k) * t(1 + t/W^2)/(1 + t), t = (m-k)/(1-k), W the
//    same for the peak (1000 cd/m2): continuous at the knee, the peak lands on SDR white, the
//    hue is kept. Below the knee (most of a picture: SDR's 0.8 is code 233) nothing changes.
// 4. To 8-bit codes by the inverse of BT.1886's EOTF (gamma 2.4, black at 0), rounded: the
//    conversion is display-referred, so an SDR display shows the light the HDR display would
//    (as zimg's conversion between the two; the BT.709 OETF made pictures 17 codes darker).
// A source graded in SDR and carried as HDR (reference white at 203 cd/m2) comes back within
// a few codes of its SDR grade below the knee (tests/python/test_decode.py). Other transfers
// (BT.709, sRGB, BT.2020's SDR curves, unspecified) keep the plain conversion. The CUDA path
// decodes HDR frames on NVDEC and converts them here, on the CPU.

// Note [swscale over-reach]
// libswscale's SIMD paths read and write a few bytes past the end of a row, which is harmless
// inside a picture (the next row is written afterwards) but not past the end of a buffer. So
// every buffer swscale writes is allocated with kSwscalePadding spare bytes after its last
// picture (empty_padded_hwc), and a picture swscale reads is used in place only when its
// buffer extends that far beyond it.
constexpr int64_t kSwscalePadding = 1024;

// An uninitialised uint8 [n, h, w, 3] tensor whose storage has kSwscalePadding bytes to spare
// (or, with `channels` and `dtype`, [n, h, w, channels] of that type).
at::Tensor empty_padded_hwc(
    int64_t n,
    int64_t h,
    int64_t w,
    const at::TensorOptions& options,
    int64_t channels = 3,
    at::ScalarType dtype = at::kByte);

// Luma/chroma coefficients of a colour matrix, chosen as libswscale chooses them.
struct YuvMatrix {
  double kr;
  double kb;
};
YuvMatrix yuv_matrix_for(AVColorSpace space);

// True for the transfers Note [HDR to SDR] tone-maps (PQ, HLG).
bool is_hdr_transfer(AVColorTransferCharacteristic transfer);

// Note [HDR to SDR], steps 1-4, for one transfer and set of primaries.
class HdrToSdr {
 public:
  HdrToSdr(AVColorTransferCharacteristic transfer, AVColorPrimaries primaries);
  // Packed native-endian 16-bit R'G'B' (rows `src_stride` elements apart) -> packed RGB24.
  void convert(const uint16_t* src, int64_t src_stride, uint8_t* dst, int64_t dst_stride, int width, int height) const;
  AVColorTransferCharacteristic transfer() const {
    return transfer_;
  }
  AVColorPrimaries primaries() const {
    return primaries_;
  }

 private:
  AVColorTransferCharacteristic transfer_;
  AVColorPrimaries primaries_;
  std::vector<float> linear_; // 16-bit code -> light (PQ: display, in reference whites; HLG: scene)
  std::vector<float> ootf_; // HLG: scene luminance (4096 steps of [0, 1]) -> the OOTF's gain
  std::vector<uint8_t> encode_; // SDR light (kEncodeSteps steps of [0, 1]) -> BT.709 8-bit code
};

// Software frame (any pixel format FFmpeg decodes to) -> packed RGB24 (or, when made with
// AV_PIX_FMT_GRAY16, native-endian 16-bit grey: depth videos). RGB24 of a PQ or HLG frame is
// tone-mapped (Note [HDR to SDR]).
// Not thread-safe; one owner. Re-creates its swscale context when the input changes.
class RgbConverter {
 public:
  explicit RgbConverter(AVPixelFormat output = AV_PIX_FMT_RGB24) : output_(output) {}

  // Writes `frame` as RGB24 into `dst` (rows `dst_stride` bytes apart) at width x height,
  // scaling (bicubic) only if the frame's size differs, as after a mid-stream size change.
  void convert(const AVFrame* frame, uint8_t* dst, int dst_stride, int width, int height);

 private:
  UniqueSwsContext context_;
  int src_width_ = 0;
  int src_height_ = 0;
  int src_format_ = -1;
  int dst_width_ = 0;
  int dst_height_ = 0;
  int colorspace_ = -1;
  int range_ = -1;
  AVPixelFormat output_;
  AVPixelFormat sws_output_ = AV_PIX_FMT_NONE; // output_, or 16-bit RGB for an HDR frame
  std::vector<uint8_t> padded_rows_; // Note [swscale's rows of eight] (ColorConversion.cpp)
  std::unique_ptr<HdrToSdr> hdr_; // Note [HDR to SDR], for the last HDR frame's transfer
};

// Note [Device colour conversion]
// NVDEC's frames (NV12, P010) become RGB on the device the way the CPU path's libswscale makes
// RGB of the same pictures decoded in software, so that a conversion looks the same whichever
// decoder ran: the frame's matrix and range (as RgbConverter chooses them); for 8-bit 4:2:0,
// each chroma sample covers its 2x2 pixels (swscale's unscaled 4:2:0 -> RGB converter, which
// it uses for such frames); for 10/16-bit, chroma rows are interpolated with swscale's bicubic
// kernel (its general path) and columns repeated (swscale interpolates chroma horizontally
// only with SWS_FULL_CHR_H_INT, which FFmpeg does not set). Tensor operations, so the same code
// is tested on the CPU against libswscale (tests/python/test_decode.py).
//
// y: [H,W] uint8 (or int16 holding 16-bit words for wide), uv: [(H+1)/2, (W+1)/2, 2] of the
// same type; any device. Returns uint8 [H,W,3] RGB on that device.
at::Tensor semi_planar_to_rgb(
    const at::Tensor& y,
    const at::Tensor& uv,
    bool wide,
    AVColorSpace space,
    AVColorRange range);

// A hardware frame in device memory (CUDA NV12/P010/P016 from NVDEC) -> RGB on the same
// device, written into `out` ([H,W,3] uint8 view on that device), with tensor operations on
// the current stream. Returns false when the frame's layout is not one this handles (the
// caller then transfers the frame to the CPU).
bool device_yuv_to_rgb(const AVFrame* frame, at::Tensor& out);

// RGB frames -> the encoder's YUV format (BT.709, limited range, the tags the encoder writes).
// Not thread-safe; one owner.
class YuvConverter {
 public:
  YuvConverter(int width, int height, AVPixelFormat dst_format);
  // `rgb` is one uint8 frame [3,H,W] on the CPU, planar (contiguous) or channels-last
  // (packed); `dst` is an allocated frame of the encoder's size (H and W rounded up to even
  // numbers; the extra row/column repeats the last one).
  void convert(const at::Tensor& rgb, AVFrame* dst);

 private:
  UniqueSwsContext packed_;
  UniqueSwsContext planar_;
  at::Tensor staging_; // a padded copy of a frame that ends too close to its buffer's end
  int width_;
  int height_;
  AVPixelFormat dst_format_;
  SwsContext* context_for(AVPixelFormat src);
};

// RGB [3,H,W] uint8 on a CUDA device -> NV12 or P010 planes of a CUDA hardware frame, for
// NVENC without a round trip through host memory. Returns false when not possible.
bool device_rgb_to_yuv(const at::Tensor& rgb, AVFrame* hw_frame);

} // namespace sbsconv
