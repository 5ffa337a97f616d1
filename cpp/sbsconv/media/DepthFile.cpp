#include "sbsconv/media/DepthFile.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "sbsconv/common/DurableFile.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/ImageFile.h"
#include "sbsconv/media/LosslessVideo.h"
#include "sbsconv/media/MediaWriter.h"
#include "sbsconv/media/VideoReader.h"

namespace fs = std::filesystem;

namespace sbsconv {

// A check whose error names the file.
#define DEPTH_CHECK(cond, kind, stage, reason, file)                       \
  do {                                                                     \
    if (!(cond)) {                                                         \
      throw ::sbsconv::Error(::sbsconv::ErrorKind::kind, stage, reason, file); \
    }                                                                      \
  } while (0)

namespace {

constexpr const char* kWriteStage = "write depth";
constexpr const char* kReadStage = "read depth";
// The toolboxes' scale (Note [Depth files]): 255^4 steps of a 32-bit value span max_depth and
// the file keeps its top 16 bits, so full scale is 255^4 / 65536 codes.
constexpr double kPackedFullScale = 255.0 * 255.0 * 255.0 * 255.0 / 65536.0;
constexpr int64_t kNpyHeaderBytes = 128;
constexpr const char* kSequenceSidecar = "depth.json";
// Note [Bounded inputs] (VideoReader.h), for depth: a frame may not hold more pixels than
// DepthSourceOptions::max_pixels (a video's bound unless set lower), and one read() returns no
// more than this many bytes of depth (at least one frame; an 8K float frame is 133 MB).
constexpr int64_t kMaxReadBytes = int64_t{256} << 20;

std::string numbered(const std::string& pattern, int64_t n) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer), pattern.c_str(), static_cast<long long>(n));
  return buffer;
}

bool is_sequence(DepthFormat f) {
  return f == DepthFormat::Png16 || f == DepthFormat::Exr;
}

const char* sequence_extension(DepthFormat f) {
  return f == DepthFormat::Png16 ? ".png" : ".exr";
}

// ---- JSON (the sidecar's writing side; Python reads it) ----------------------------------------

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v, int digits) {
  if (!std::isfinite(v)) {
    return "null";
  }
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*g", digits, v);
  return buffer;
}

template <typename T>
std::string json_array(const std::vector<T>& values, int digits) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) {
      out += ",";
    }
    out += json_number(static_cast<double>(values[i]), digits);
  }
  return out + "]";
}

std::string rational_text(Rational r) {
  return std::to_string(r.num) + "/" + std::to_string(r.den);
}

// ---- images ------------------------------------------------------------------------------------

std::string read_whole_file(const std::string& path, const char* stage) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw Error(ErrorKind::Input, stage, "cannot open the depth frame", path);
  }
  std::ostringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

// One frame of a sequence encoded as a PNG (16-bit grey codes) or an EXR (float depth).
std::string encode_image(DepthFormat format, const at::Tensor& frame, bool half, const std::string& path) {
  const AVCodecID id = format == DepthFormat::Png16 ? AV_CODEC_ID_PNG : AV_CODEC_ID_EXR;
  const int height = static_cast<int>(frame.size(0));
  const int width = static_cast<int>(frame.size(1));
  AVPixelFormat pix = AV_PIX_FMT_GRAY16BE;
  std::map<std::string, std::string> options;
  if (format == DepthFormat::Exr) {
    const AVCodec* codec = avcodec_find_encoder(id);
    SBSCONV_CHECK(codec != nullptr, Encode, kWriteStage, "this FFmpeg has no OpenEXR encoder");
    pix = encoder_supports_pixel_format(codec, AV_PIX_FMT_GRAYF32LE) ? AV_PIX_FMT_GRAYF32LE : AV_PIX_FMT_GBRPF32LE;
    options = {{"format", half ? "half" : "float"}, {"compression", "zip16"}};
  }
  const auto fill = [&](AVFrame* picture) {
    if (format == DepthFormat::Png16) {
      const int32_t* codes = frame.data_ptr<int32_t>();
      for (int y = 0; y < height; ++y) {
        uint8_t* row = picture->data[0] + static_cast<ptrdiff_t>(y) * picture->linesize[0];
        for (int x = 0; x < width; ++x) {
          const uint32_t v = static_cast<uint32_t>(codes[static_cast<ptrdiff_t>(y) * width + x]);
          row[2 * x] = static_cast<uint8_t>(v >> 8); // big-endian
          row[2 * x + 1] = static_cast<uint8_t>(v & 0xFF);
        }
      }
      return;
    }
    const float* values = frame.data_ptr<float>();
    const int planes = pix == AV_PIX_FMT_GRAYF32LE ? 1 : 3;
    for (int p = 0; p < planes; ++p) {
      for (int y = 0; y < height; ++y) {
        std::memcpy(
            picture->data[p] + static_cast<ptrdiff_t>(y) * picture->linesize[p],
            values + static_cast<ptrdiff_t>(y) * width,
            sizeof(float) * width);
      }
    }
  };
  return encode_picture(id, pix, width, height, fill, options, kWriteStage, path);
}

// A PNG of 16-bit grey codes -> int32 [H,W]; an EXR -> float [H,W]. Where `into` is given
// (an [H,W] slot of a batch, int32 for a PNG, float for an EXR), the frame is written there
// and its size must match; otherwise a tensor is made. An 8K EXR is 133 MB a frame, so a batch
// is filled in place rather than stacked from copies.
at::Tensor decode_image(DepthFormat format, const std::string& path, int64_t max_pixels, const at::Tensor& into = at::Tensor()) {
  const std::string bytes = read_whole_file(path, kReadStage);
  const AVCodecID id = format == DepthFormat::Png16 ? AV_CODEC_ID_PNG : AV_CODEC_ID_EXR;
  const AVCodec* codec = avcodec_find_decoder(id);
  SBSCONV_CHECK(codec != nullptr, Input, kReadStage, "this FFmpeg cannot decode the depth frames");
  UniqueAVCodecContext context(avcodec_alloc_context3(codec));
  SBSCONV_CHECK(context != nullptr, Internal, kReadStage, "avcodec_alloc_context3 failed");
  context->thread_count = 1;
  // FFmpeg refuses larger pictures before allocating them; it counts its aligned (padded)
  // picture, so it is given room for that, and the exact bound is checked below.
  context->max_pixels = max_pixels > (int64_t{1} << 60) ? max_pixels : 2 * max_pixels + (int64_t{1} << 16);
  SBSCONV_CHECK_AV(avcodec_open2(context.get(), codec, nullptr), Input, kReadStage, "cannot open the image decoder", path);
  UniqueAVPacket packet = make_packet();
  SBSCONV_CHECK_AV(av_new_packet(packet.get(), static_cast<int>(bytes.size())), Internal, kReadStage, "packet", path);
  std::memcpy(packet->data, bytes.data(), bytes.size());
  SBSCONV_CHECK_AV(avcodec_send_packet(context.get(), packet.get()), Input, kReadStage, "not a readable depth frame", path);
  avcodec_send_packet(context.get(), nullptr);
  UniqueAVFrame picture = make_frame();
  SBSCONV_CHECK_AV(avcodec_receive_frame(context.get(), picture.get()), Input, kReadStage, "not a readable depth frame", path);
  const int w = picture->width;
  const int h = picture->height;
  const auto fmt = static_cast<AVPixelFormat>(picture->format);
  const char* format_name = av_get_pix_fmt_name(fmt) != nullptr ? av_get_pix_fmt_name(fmt) : "?";
  DEPTH_CHECK(
      w <= max_pixels / std::max(h, 1), Input, kReadStage,
      "the frame is " + std::to_string(w) + "x" + std::to_string(h) + ", more than the " + std::to_string(max_pixels) +
          " pixels a depth frame may hold here",
      path);
  if (into.defined() && (into.size(0) != h || into.size(1) != w)) {
    throw Error(ErrorKind::Input, kReadStage, "the depth frames differ in size", path);
  }
  if (format == DepthFormat::Png16) {
    DEPTH_CHECK(
        fmt == AV_PIX_FMT_GRAY16BE || fmt == AV_PIX_FMT_GRAY16LE || fmt == AV_PIX_FMT_GRAY8, Input, kReadStage,
        std::string("not a grey depth PNG (its pixels are ") + format_name + ")", path);
    at::Tensor codes = into.defined() ? into : at::empty({h, w}, at::kInt);
    int32_t* out = codes.data_ptr<int32_t>();
    for (int y = 0; y < h; ++y) {
      const uint8_t* row = picture->data[0] + static_cast<ptrdiff_t>(y) * picture->linesize[0];
      int32_t* dst = out + static_cast<ptrdiff_t>(y) * w;
      if (fmt == AV_PIX_FMT_GRAY16BE) {
        for (int x = 0; x < w; ++x) {
          dst[x] = (row[2 * x] << 8) | row[2 * x + 1];
        }
      } else if (fmt == AV_PIX_FMT_GRAY16LE) {
        for (int x = 0; x < w; ++x) {
          dst[x] = row[2 * x] | (row[2 * x + 1] << 8);
        }
      } else {
        for (int x = 0; x < w; ++x) {
          dst[x] = row[x] * 257;
        }
      }
    }
    return codes;
  }
  DEPTH_CHECK(
      fmt == AV_PIX_FMT_GRAYF32LE || fmt == AV_PIX_FMT_GBRPF32LE || fmt == AV_PIX_FMT_GBRAPF32LE, Input, kReadStage,
      std::string("not a float depth EXR (its pixels decode as ") + format_name + ")", path);
  at::Tensor values = into.defined() ? into : at::empty({h, w}, at::kFloat);
  float* out = values.data_ptr<float>();
  for (int y = 0; y < h; ++y) {
    // grey, or the green plane (plane 0 of gbrp) of an RGB EXR
    std::memcpy(
        out + static_cast<ptrdiff_t>(y) * w,
        picture->data[0] + static_cast<ptrdiff_t>(y) * picture->linesize[0],
        sizeof(float) * w);
  }
  return values;
}

// ---- npy ---------------------------------------------------------------------------------------

std::string npy_header(bool half, int64_t frames, int64_t height, int64_t width) {
  std::string dict = std::string("{'descr': '") + (half ? "<f2" : "<f4") + "', 'fortran_order': False, 'shape': (" +
      std::to_string(frames) + ", " + std::to_string(height) + ", " + std::to_string(width) + "), }";
  const size_t body = kNpyHeaderBytes - 10;
  SBSCONV_CHECK(dict.size() < body, Internal, kWriteStage, "npy header too long");
  dict.append(body - 1 - dict.size(), ' ');
  dict += '\n';
  std::string header = "\x93NUMPY";
  header += static_cast<char>(1);
  header += static_cast<char>(0);
  header += static_cast<char>(body & 0xFF);
  header += static_cast<char>((body >> 8) & 0xFF);
  return header + dict;
}

struct NpyLayout {
  bool half = false;
  int64_t frames = 0, height = 0, width = 0;
  int64_t data_offset = 0;
};

NpyLayout read_npy_header(std::FILE* f, const std::string& path) {
  char magic[10];
  DEPTH_CHECK(std::fread(magic, 1, 10, f) == 10 && std::memcmp(magic, "\x93NUMPY", 6) == 0, Input, kReadStage,
                "not a .npy file", path);
  const int major = static_cast<unsigned char>(magic[6]);
  int64_t length = static_cast<unsigned char>(magic[8]) | (static_cast<unsigned char>(magic[9]) << 8);
  int64_t offset = 10;
  if (major >= 2) {
    unsigned char more[2];
    DEPTH_CHECK(std::fread(more, 1, 2, f) == 2, Input, kReadStage, "truncated .npy header", path);
    length |= (static_cast<int64_t>(more[0]) << 16) | (static_cast<int64_t>(more[1]) << 24);
    offset = 12;
  }
  DEPTH_CHECK(length > 0 && length < (1 << 20), Input, kReadStage, "damaged .npy header", path);
  std::string dict(static_cast<size_t>(length), '\0');
  DEPTH_CHECK(std::fread(dict.data(), 1, dict.size(), f) == dict.size(), Input, kReadStage, "truncated .npy header", path);
  NpyLayout layout;
  layout.data_offset = offset + length;
  if (dict.find("'<f4'") != std::string::npos) {
    layout.half = false;
  } else if (dict.find("'<f2'") != std::string::npos) {
    layout.half = true;
  } else {
    throw Error(ErrorKind::Input, kReadStage, "a depth .npy must hold little-endian float32 or float16", path);
  }
  DEPTH_CHECK(dict.find("'fortran_order': False") != std::string::npos, Input, kReadStage,
                "a depth .npy must be in C order", path);
  const size_t shape = dict.find("'shape': (");
  DEPTH_CHECK(shape != std::string::npos, Input, kReadStage, "the .npy header has no shape", path);
  long long n = 0, h = 0, w = 0;
  DEPTH_CHECK(std::sscanf(dict.c_str() + shape, "'shape': (%lld, %lld, %lld)", &n, &h, &w) == 3, Input, kReadStage,
                "a depth .npy must be [frames, height, width]", path);
  // bounded so that every size computed from them fits in 64 bits (a header can say anything)
  DEPTH_CHECK(n >= 0 && n <= (int64_t{1} << 24) && h > 0 && w > 0 && h <= 32768 && w <= 32768, Input, kReadStage,
              "the .npy shape is not a depth stack", path);
  layout.frames = n;
  layout.height = h;
  layout.width = w;
  return layout;
}

// Note [Lossy packed depth]
// Packed depth's blue channel is a sawtooth (the low byte wraps every 256 codes), which a lossy
// codec cannot keep: its errors spread into red and green (through YUV, or the codec's own
// colour transform), so a lossy file's high byte is noisy by several steps on steep depth.
// Depth itself is piecewise smooth, so a decoded frame is denoised where the noise is: each
// pixel takes the median of its 5x5 neighbourhood when that median lies within 16 high-byte
// steps of it (noise), and keeps its own value otherwise (a depth edge, which a median would
// move). Measured on synthetic scenes packed as the toolboxes pack them (6 m full scale, steep
// floors, a nearer object): H.264 4:4:4 at CRF 16 goes from 28 % to 1.4 % of pixels off by
// more than 1 % of max_depth, HEVC 4:4:4 from 12 % to 1 %; lossless files are left as they are.
at::Tensor denoise_lossy_packed(const at::Tensor& depth, double max_depth) {
  const double high_step = 256.0 * max_depth / kPackedFullScale;
  at::Tensor out = depth.clone();
  const int64_t h = depth.size(2);
  const int64_t w = depth.size(3);
  for (int64_t n = 0; n < depth.size(0); ++n) {
    at::Tensor frame = depth.narrow(0, n, 1);
    at::Tensor padded = at::replication_pad2d(frame, {2, 2, 2, 2});
    at::Tensor windows = padded.unfold(2, 5, 1).unfold(3, 5, 1).reshape({1, 1, h, w, 25});
    at::Tensor median = std::get<0>(windows.median(-1));
    out.narrow(0, n, 1).copy_(at::where((median - frame).abs() < 16.0 * high_step, median, frame));
  }
  return out;
}

bool lossless_codec(const std::string& codec) {
  for (const char* name : {"ffv1", "huffyuv", "ffvhuff", "utvideo", "rawvideo", "png", "apng", "qtrle", "magicyuv"}) {
    if (codec == name) {
      return true;
    }
  }
  return false;
}

} // namespace

// ---- formats and codes --------------------------------------------------------------------------

DepthFormat parse_depth_format(const std::string& name) {
  if (name == "gray16") {
    return DepthFormat::Gray16;
  }
  if (name == "gray8") {
    return DepthFormat::Gray8;
  }
  if (name == "rgb-packed") {
    return DepthFormat::RgbPacked;
  }
  if (name == "png16") {
    return DepthFormat::Png16;
  }
  if (name == "exr") {
    return DepthFormat::Exr;
  }
  if (name == "npy") {
    return DepthFormat::Npy;
  }
  throw Error(ErrorKind::Option, "depth format", "unknown depth format '" + name + "' (gray16, gray8, rgb-packed, png16, exr, npy)");
}

const char* depth_format_name(DepthFormat format) {
  switch (format) {
    case DepthFormat::Gray16:
      return "gray16";
    case DepthFormat::Gray8:
      return "gray8";
    case DepthFormat::RgbPacked:
      return "rgb-packed";
    case DepthFormat::Png16:
      return "png16";
    case DepthFormat::Exr:
      return "exr";
    case DepthFormat::Npy:
      return "npy";
  }
  return "?";
}

at::Tensor pack_rgb_depth(const at::Tensor& depth, double max_depth, int64_t* clipped) {
  SBSCONV_CHECK(max_depth > 0 && std::isfinite(max_depth), Option, kWriteStage, "max_depth must be a positive number");
  SBSCONV_CHECK(depth.dim() == 4 && depth.size(1) == 1, Option, kWriteStage, "depth must be [N,1,H,W]");
  // NaN and -inf as 0; +inf (a metric model's sky) as beyond max_depth: clipped to it, and counted
  at::Tensor d = at::nan_to_num(depth.to(at::kCPU, at::kFloat), 0.0, 2.0 * max_depth + 1.0, 0.0);
  if (clipped != nullptr) {
    *clipped = d.gt(max_depth).sum().item<int64_t>();
  }
  at::Tensor code = d.clamp(0.0, max_depth).mul(kPackedFullScale / max_depth).round().to(at::kInt);
  at::Tensor high = code.div(256, "floor");
  at::Tensor low = code.remainder(256);
  return at::cat({high, high, low}, 1).to(at::kByte);
}

at::Tensor unpack_rgb_depth(const at::Tensor& rgb, double max_depth) {
  SBSCONV_CHECK(max_depth > 0 && std::isfinite(max_depth), Option, kReadStage, "max_depth must be a positive number");
  SBSCONV_CHECK(rgb.dim() == 4 && rgb.size(1) == 3 && rgb.scalar_type() == at::kByte, Option, kReadStage,
                "packed depth must be uint8 [N,3,H,W]");
  at::Tensor c = rgb.to(at::kCPU).to(at::kFloat);
  at::Tensor high = (c.narrow(1, 0, 1) + c.narrow(1, 1, 1)) * 0.5;
  at::Tensor low = c.narrow(1, 2, 1);
  // the high byte whose code lies nearest the averaged high byte's centre (Note [Depth files])
  at::Tensor k = (high + (127.5 - low) / 256.0).round().clamp(0, 255);
  return (k * 256.0 + low) * (max_depth / kPackedFullScale);
}

at::Tensor depth_to_codes(const at::Tensor& depth, const at::Tensor& low, const at::Tensor& high, double full_scale) {
  const int64_t n = depth.size(0);
  at::Tensor lo = low.to(at::kCPU, at::kFloat).reshape({n, 1, 1, 1});
  at::Tensor span = (high.to(at::kCPU, at::kFloat).reshape({n, 1, 1, 1}) - lo).clamp_min(1e-12);
  at::Tensor d = at::nan_to_num(depth.to(at::kCPU, at::kFloat), 0.0, std::numeric_limits<float>::max(), 0.0);
  return ((d - lo) / span).clamp(0.0, 1.0).mul(full_scale).round().to(at::kInt);
}

at::Tensor codes_to_depth(const at::Tensor& codes, const at::Tensor& low, const at::Tensor& high, double full_scale) {
  const int64_t n = codes.size(0);
  at::Tensor lo = low.to(at::kCPU, at::kFloat).reshape({n, 1, 1, 1});
  at::Tensor hi = high.to(at::kCPU, at::kFloat).reshape({n, 1, 1, 1});
  // in place on the one float copy: an 8K batch is hundreds of MB
  return codes.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).div_(full_scale).mul_(hi - lo).add_(lo);
}

// ---- DepthWriter -------------------------------------------------------------------------------

struct DepthWriter::Impl {
  DepthWriterOptions o;
  bool folder = false;
  std::string temp; // the file or folder being written
  std::unique_ptr<LosslessVideoWriter> video;
  std::FILE* npy = nullptr;
  std::vector<double> times;
  std::vector<float> low, high, fov;
  std::vector<float> camera; // 12 per frame (3x4 row-major), when the model estimates poses
  int64_t clipped = 0;
  int64_t pixels = 0;
  int64_t count = 0;
  bool done = false;

  // the formats that store codes on a linear range, and their full scale
  bool linear() const {
    return o.format == DepthFormat::Gray16 || o.format == DepthFormat::Gray8 || o.format == DepthFormat::Png16;
  }
  double full_scale() const {
    return o.format == DepthFormat::Gray8 ? 255.0 : 65535.0;
  }

  void check_cancel() const {
    if (o.cancel != nullptr && o.cancel->load()) {
      throw Error(ErrorKind::Cancelled, kWriteStage, "cancelled", o.path);
    }
  }

  void discard() {
    if (done) {
      return;
    }
    video.reset();
    if (npy != nullptr) {
      std::fclose(npy);
      npy = nullptr;
    }
    std::error_code ec;
    if (!temp.empty()) {
      fs::remove_all(temp, ec);
    }
  }

  std::string sidecar_path() const {
    return folder ? (fs::path(o.path) / kSequenceSidecar).string() : o.path + ".json";
  }

  std::string sidecar(const std::vector<int64_t>& cuts) const {
    const bool constant_range = !linear() || o.relative;
    std::string encoding;
    switch (o.format) {
      case DepthFormat::Gray16:
      case DepthFormat::Gray8:
      case DepthFormat::Png16:
        encoding = o.format == DepthFormat::Gray8
            ? R"J({"type": "linear8", "depth": "low + code / 255 * (high - low)")J"
            : R"J({"type": "linear16", "depth": "low + code / 65535 * (high - low)")J";
        if (constant_range) {
          encoding += R"J(, "low": 0, "high": 1)J";
        } else {
          encoding += R"J(, "per_frame_range": true)J";
        }
        encoding += "}";
        break;
      case DepthFormat::RgbPacked:
        encoding = R"({"type": "rgb_packed", "high_byte": ["red", "green"], "low_byte": "blue", )"
                   R"("code": "256 * high_byte + low_byte", "depth": "code * 65536 / 255^4 * max_depth", "max_depth": )" +
            json_number(o.relative ? 1.0 : o.max_depth, 9) + "}";
        break;
      case DepthFormat::Exr:
      case DepthFormat::Npy:
        encoding = std::string(R"({"type": ")") + (o.half ? "float16" : "float32") + R"(", "depth": "value"})";
        break;
    }
    std::string s = "{\n";
    s += R"(  "sbsconv_depth": 1,)" "\n";
    s += R"(  "format": )" + json_string(depth_format_name(o.format)) + ",\n";
    if (folder) {
      s += R"(  "files": )" + json_string(std::string("depth_%06d") + sequence_extension(o.format)) + ",\n";
      s += R"(  "first_file_number": 1,)" "\n";
    } else {
      s += R"(  "file": )" + json_string(fs::path(o.path).filename().string()) + ",\n";
    }
    s += R"(  "units": )" + json_string(o.relative ? "relative inverse depth" : "metres") + ",\n";
    s += std::string(R"(  "relative": )") + (o.relative ? "true" : "false") + ",\n";
    if (o.relative) {
      s += R"J(  "relative_meaning": "normalised inverse depth in [0, 1]: 1 is the nearest, 0 the farthest (affine-invariant, not metres)",)J"
           "\n";
    }
    s += R"(  "encoding": )" + encoding + ",\n";
    s += R"(  "width": )" + std::to_string(o.width) + ",\n";
    s += R"(  "height": )" + std::to_string(o.height) + ",\n";
    s += R"(  "frame_count": )" + std::to_string(count) + ",\n";
    s += R"(  "fps": )" + json_string(rational_text(o.frame_rate)) + ",\n";
    s += R"(  "time_base": )" + json_string(rational_text(o.time_base)) + ",\n";
    s += R"J(  "time_zero": "the source video's first frame (its start time on the source clock is source_start seconds)",)J"
         "\n";
    s += R"(  "source_start": )" + json_number(o.source_start, 12) + ",\n";
    s += R"(  "window_start": )" + json_number(o.time_origin - o.source_start, 12) + ",\n";
    if (o.fov_degrees) {
      s += R"(  "fov_degrees": )" + json_number(*o.fov_degrees, 9) + ",\n";
      s += R"(  "fov_source": "given",)" "\n";
    } else if (!fov.empty()) {
      double sum = 0.0;
      for (float f : fov) {
        sum += f;
      }
      s += R"(  "fov_degrees": )" + json_number(sum / static_cast<double>(fov.size()), 9) + ",\n";
      s += R"J(  "fov_source": "estimated by the model, per frame in frames.fov (horizontal, degrees)",)J" "\n";
    } else {
      s += R"(  "fov_degrees": null,)" "\n";
    }
    if (!camera.empty()) {
      s += R"J(  "camera_source": "estimated by the model: frames.intrinsics [fx, fy, cx, cy] in pixels of this file, frames.camera_to_world 3x4 row-major (OpenCV axes: x right, y down, z forward), each shot's first frame at the origin, translations in the model's depth units",)J" "\n";
    }
    s += R"(  "scene_cuts": )" + json_array(cuts, 17) + ",\n";
    if (!o.sidecar_extra.empty()) {
      s += "  " + o.sidecar_extra + ",\n";
    }
    s += R"(  "frames": {)" "\n";
    s += R"(    "time": )" + json_array(times, 12);
    if (!constant_range) {
      s += ",\n" R"(    "low": )" + json_array(low, 9);
      s += ",\n" R"(    "high": )" + json_array(high, 9);
    }
    if (!fov.empty() && !o.fov_degrees) {
      s += ",\n" R"(    "fov": )" + json_array(fov, 9);
    }
    if (!camera.empty() && camera.size() == 12 * times.size()) {
      // Per frame: the pinhole camera at this file's size (from the field of view: given,
      // else the model's estimate, square pixels, centred) and its pose.
      s += ",\n" R"(    "intrinsics": [)";
      for (size_t i = 0; i < times.size(); ++i) {
        const double degrees = o.fov_degrees ? *o.fov_degrees : (fov.size() == times.size() ? fov[i] : 60.0);
        const double f = static_cast<double>(o.width) / 2.0 / std::tan(degrees * 3.14159265358979323846 / 360.0);
        s += (i > 0 ? "," : "") +
            json_array(std::vector<double>{f, f, static_cast<double>(o.width) / 2.0, static_cast<double>(o.height) / 2.0}, 9);
      }
      s += "],\n" R"(    "camera_to_world": [)";
      for (size_t i = 0; i < times.size(); ++i) {
        s += (i > 0 ? "," : "") + json_array(std::vector<float>(camera.begin() + 12 * i, camera.begin() + 12 * (i + 1)), 9);
      }
      s += "]";
    }
    s += "\n  }\n}\n";
    return s;
  }
};

DepthWriter::DepthWriter(DepthWriterOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.o = std::move(options);
  install_ffmpeg_log_handler();
  SBSCONV_CHECK(!d.o.path.empty(), Option, kWriteStage, "no depth output path");
  SBSCONV_CHECK(
      d.o.width > 0 && d.o.height > 0 && d.o.width <= 32768 && d.o.height <= 32768,
      Option,
      kWriteStage,
      "the depth size must be within 1..32768");
  SBSCONV_CHECK(d.o.time_base.num > 0 && d.o.time_base.den > 0, Option, kWriteStage, "the time base must be positive");
  SBSCONV_CHECK(
      d.o.format != DepthFormat::RgbPacked || (d.o.max_depth > 0 && std::isfinite(d.o.max_depth)),
      Option,
      kWriteStage,
      "max_depth must be a positive number of metres");
  d.folder = is_sequence(d.o.format);
  const fs::path target(d.o.path);
  const fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) {
    throw Error(ErrorKind::Output, kWriteStage, "the output folder does not exist", d.o.path);
  }
  if (d.folder) {
    // Checked before anything is written: the folder may be replaced only if it is empty or an
    // earlier sbsconv depth export.
    if (fs::exists(target, ec)) {
      const bool ours = fs::is_directory(target, ec) &&
          (fs::is_empty(target, ec) || fs::exists(target / kSequenceSidecar, ec));
      if (!ours) {
        throw Error(
            ErrorKind::Output,
            kWriteStage,
            "exists and is not an sbsconv depth folder (image sequences are written into a folder of their own)",
            d.o.path);
      }
    }
    d.temp = temporary_path(d.o.path);
    fs::remove_all(d.temp, ec);
    if (!fs::create_directory(d.temp, ec)) {
      throw Error(ErrorKind::Output, kWriteStage, "cannot create a folder beside the output: " + ec.message(), d.o.path);
    }
  } else if (d.o.format == DepthFormat::Npy) {
    d.temp = temporary_path(d.o.path);
    d.npy = std::fopen(d.temp.c_str(), "wb");
    if (d.npy == nullptr) {
      throw Error(ErrorKind::Output, kWriteStage, std::string("cannot create the file: ") + std::strerror(errno), d.o.path);
    }
    const std::string header = npy_header(d.o.half, 0, d.o.height, d.o.width);
    if (std::fwrite(header.data(), 1, header.size(), d.npy) != header.size()) {
      d.discard();
      throw Error(ErrorKind::Output, kWriteStage, "cannot write the file", d.o.path);
    }
  } else {
    LosslessVideoOptions v;
    v.path = d.o.path;
    v.width = d.o.width;
    v.height = d.o.height;
    v.pixels = d.o.format == DepthFormat::Gray16 ? FramePixels::Gray16
        : d.o.format == DepthFormat::Gray8       ? FramePixels::Gray8
                                                 : FramePixels::Rgb;
    v.time_base = d.o.time_base;
    v.frame_rate = d.o.frame_rate;
    v.time_origin = d.o.time_origin;
    v.metadata["comment"] = std::string("sbsconv depth (") + depth_format_name(d.o.format) + "); see " +
        fs::path(d.o.path).filename().string() + ".json";
    v.cancel = d.o.cancel;
    d.video = std::make_unique<LosslessVideoWriter>(v);
  }
}

DepthWriter::~DepthWriter() {
  impl_->discard();
}

void DepthWriter::write(
    const at::Tensor& depth,
    const std::vector<int64_t>& pts,
    const std::vector<double>& times,
    const at::Tensor& fov,
    const at::Tensor& camera) {
  Impl& d = *impl_;
  SBSCONV_CHECK(
      depth.dim() == 4 && depth.size(1) == 1 && depth.size(2) == d.o.height && depth.size(3) == d.o.width &&
          depth.size(0) == static_cast<int64_t>(pts.size()) && pts.size() == times.size(),
      Option,
      kWriteStage,
      "depth must be [N,1," + std::to_string(d.o.height) + "," + std::to_string(d.o.width) + "] with one pts and time each");
  try {
    d.check_cancel();
    const int64_t n = depth.size(0);
    at::Tensor host = depth.to(at::kCPU, at::kFloat).contiguous();
    d.times.insert(d.times.end(), times.begin(), times.end());
    if (fov.defined() && fov.numel() == n) {
      at::Tensor f = fov.to(at::kCPU, at::kFloat).contiguous();
      d.fov.insert(d.fov.end(), f.data_ptr<float>(), f.data_ptr<float>() + n);
    }
    if (camera.defined() && camera.dim() == 3 && camera.size(0) == n && camera.size(1) == 3 && camera.size(2) == 4) {
      at::Tensor c = camera.to(at::kCPU, at::kFloat).contiguous();
      d.camera.insert(d.camera.end(), c.data_ptr<float>(), c.data_ptr<float>() + n * 12);
    }
    at::Tensor low, high;
    if (d.linear()) {
      if (d.o.relative) {
        low = at::zeros({n}, at::kFloat);
        high = at::ones({n}, at::kFloat);
      } else {
        // the range of the finite values (infinite depth, a sky, is stored at the far end)
        at::Tensor flat = host.flatten(1);
        at::Tensor finite = at::isfinite(flat);
        const float big = std::numeric_limits<float>::max();
        low = at::where(finite, flat, big).amin(1);
        high = at::where(finite, flat, -big).amax(1);
        at::Tensor none = finite.any(1).logical_not();
        low = at::where(none, at::zeros_like(low), low);
        high = at::maximum(at::where(none, at::ones_like(high), high), low + 1e-3f).contiguous();
        low = low.contiguous();
      }
      d.low.insert(d.low.end(), low.data_ptr<float>(), low.data_ptr<float>() + n);
      d.high.insert(d.high.end(), high.data_ptr<float>(), high.data_ptr<float>() + n);
    }
    switch (d.o.format) {
      case DepthFormat::Gray16:
      case DepthFormat::Gray8:
        d.video->write(depth_to_codes(host, low, high, d.full_scale()), pts);
        break;
      case DepthFormat::RgbPacked: {
        int64_t clipped = 0;
        at::Tensor rgb = pack_rgb_depth(host, d.o.relative ? 1.0 : d.o.max_depth, &clipped);
        d.clipped += clipped;
        d.pixels += host.numel();
        d.video->write(rgb, pts);
        break;
      }
      case DepthFormat::Png16:
      case DepthFormat::Exr: {
        at::Tensor frames = d.o.format == DepthFormat::Png16 ? depth_to_codes(host, low, high).contiguous() : host;
        for (int64_t k = 0; k < n; ++k) {
          d.check_cancel();
          const std::string name = numbered("depth_%06lld", d.count + k + 1) + sequence_extension(d.o.format);
          const std::string bytes = encode_image(d.o.format, frames[k][0].contiguous(), d.o.half, d.o.path);
          std::ofstream file(fs::path(d.temp) / name, std::ios::binary);
          file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
          if (!file) {
            throw Error(ErrorKind::Output, kWriteStage, "cannot write " + name + " (disk full?)", d.o.path);
          }
        }
        break;
      }
      case DepthFormat::Npy: {
        at::Tensor values = d.o.half ? host.to(at::kHalf).contiguous() : host;
        const size_t bytes = static_cast<size_t>(values.numel()) * values.element_size();
        if (std::fwrite(values.data_ptr(), 1, bytes, d.npy) != bytes) {
          throw Error(ErrorKind::Output, kWriteStage, "cannot write the file (disk full?)", d.o.path);
        }
        break;
      }
    }
    d.count += n;
  } catch (...) {
    d.discard();
    throw;
  }
}

DepthExportSummary DepthWriter::finish(const std::vector<int64_t>& cuts) {
  Impl& d = *impl_;
  DepthExportSummary summary;
  try {
    d.check_cancel();
    DEPTH_CHECK(d.count > 0, Input, kWriteStage, "no depth frames were written", d.o.path);
    if (d.o.format == DepthFormat::RgbPacked && d.pixels > 0 && d.clipped * 100 > d.pixels) {
      char text[256];
      std::snprintf(
          text,
          sizeof(text),
          "%.1f%% of the depth lies beyond max_depth (%g m) and was stored as %g m; give a larger max_depth",
          100.0 * static_cast<double>(d.clipped) / static_cast<double>(d.pixels),
          d.o.max_depth,
          d.o.max_depth);
      summary.warnings.push_back(text);
    }
    const std::string sidecar = d.sidecar(cuts);
    if (d.folder) {
      write_file_durably((fs::path(d.temp) / kSequenceSidecar).string(), sidecar, kWriteStage);
      std::error_code ec;
      const fs::path target(d.o.path);
      std::string old;
      if (fs::exists(target, ec)) {
        old = d.temp + ".old.part"; // still a temporary of this output (remove_abandoned_temporaries)
        fs::remove_all(old, ec);
        fs::rename(target, old, ec);
        if (ec) {
          throw Error(ErrorKind::Output, kWriteStage, "cannot replace the earlier export: " + ec.message(), d.o.path);
        }
      }
      durable_rename(d.temp, d.o.path, kWriteStage);
      if (!old.empty()) {
        fs::remove_all(old, ec);
      }
    } else {
      write_file_durably(d.sidecar_path(), sidecar, kWriteStage);
      if (d.video) {
        d.video->finish();
      } else {
        const std::string header = npy_header(d.o.half, d.count, d.o.height, d.o.width);
        if (std::fseek(d.npy, 0, SEEK_SET) != 0 || std::fwrite(header.data(), 1, header.size(), d.npy) != header.size() ||
            std::fclose(d.npy) != 0) {
          d.npy = nullptr;
          throw Error(ErrorKind::Output, kWriteStage, "cannot finish the file", d.o.path);
        }
        d.npy = nullptr;
        durable_rename(d.temp, d.o.path, kWriteStage);
      }
    }
    d.done = true;
  } catch (...) {
    d.discard();
    throw;
  }
  summary.path = d.o.path;
  summary.sidecar = d.sidecar_path();
  summary.frames = d.count;
  return summary;
}

// ---- DepthReader -------------------------------------------------------------------------------

struct DepthReader::Impl {
  DepthSourceOptions o;
  std::unique_ptr<VideoReader> video;
  std::FILE* npy = nullptr;
  NpyLayout npy_layout;
  int width = 0;
  int height = 0;
  int64_t frames = -1;
  double rate = 0.0;
  double video_start = 0.0;
  double time_base = 0.0;
  int64_t next = 0; // frames handed out
  bool lossy = false; // an rgb-packed video from a lossy codec (Note [Lossy packed depth])
  DepthFrames pending; // read while opening (the red/green check)

  ~Impl() {
    if (npy != nullptr) {
      std::fclose(npy);
    }
  }

  bool sidecar_times() const {
    return !o.times.empty();
  }

  at::Tensor range(const std::vector<float>& v, int64_t first, int64_t n, float fallback) const {
    at::Tensor out = at::empty({n}, at::kFloat);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = first + k;
      out[k] = v.empty() ? fallback : v.size() == 1 ? v[0] : v[static_cast<size_t>(std::min<int64_t>(i, static_cast<int64_t>(v.size()) - 1))];
    }
    return out;
  }

  DepthFrames read_frames(int max_frames) {
    DepthFrames out;
    const int64_t first = next;
    if (video) {
      FrameBatch b = video->read(max_frames);
      const int64_t n = b.size();
      if (n == 0) {
        return out;
      }
      if (o.format == DepthFormat::Gray16) {
        at::Tensor codes = b.frames.to(at::kInt).bitwise_and(0xFFFF);
        out.depth = codes_to_depth(codes, range(o.low, first, n, 0.0f), range(o.high, first, n, 1.0f));
      } else if (o.format == DepthFormat::Gray8) {
        out.depth = codes_to_depth(b.frames.to(at::kInt), range(o.low, first, n, 0.0f), range(o.high, first, n, 1.0f), 255.0);
      } else {
        out.depth = unpack_rgb_depth(b.frames, o.relative ? 1.0 : o.max_depth);
        if (lossy) {
          out.depth = denoise_lossy_packed(out.depth, o.relative ? 1.0 : o.max_depth);
        }
      }
      for (int64_t k = 0; k < n; ++k) {
        out.times.push_back(
            sidecar_times() ? o.times[static_cast<size_t>(std::min<int64_t>(first + k, static_cast<int64_t>(o.times.size()) - 1))]
                            : static_cast<double>(b.pts[k]) * time_base - video_start);
      }
      if (sidecar_times() && first + n > static_cast<int64_t>(o.times.size())) {
        throw Error(
            ErrorKind::Input,
            kReadStage,
            "the depth video holds more frames than its sidecar lists (" + std::to_string(o.times.size()) + ")",
            o.path);
      }
    } else {
      const int64_t total = static_cast<int64_t>(o.times.size());
      const int64_t n = std::min<int64_t>(max_frames, total - first);
      if (n <= 0) {
        return out;
      }
      if (npy != nullptr) {
        const int64_t item = npy_layout.half ? 2 : 4;
        at::Tensor values = at::empty({n, 1, height, width}, npy_layout.half ? at::kHalf : at::kFloat);
        const size_t bytes = static_cast<size_t>(values.numel() * item);
        const int64_t offset = npy_layout.data_offset + first * height * width * item;
        if (fseeko(npy, static_cast<off_t>(offset), SEEK_SET) != 0 || std::fread(values.data_ptr(), 1, bytes, npy) != bytes) {
          throw Error(ErrorKind::Input, kReadStage, "the .npy file is shorter than its header says", o.path);
        }
        out.depth = values.to(at::kFloat);
      } else {
        // each frame decoded straight into its place in the batch
        at::Tensor stacked = at::empty({n, 1, height, width}, o.format == DepthFormat::Png16 ? at::kInt : at::kFloat);
        for (int64_t k = 0; k < n; ++k) {
          const std::string file =
              (fs::path(o.path) / (numbered(o.pattern, first + k + 1) + sequence_extension(o.format))).string();
          decode_image(o.format, file, o.max_pixels, stacked[k][0]);
        }
        out.depth = o.format == DepthFormat::Png16
            ? codes_to_depth(stacked, range(o.low, first, n, 0.0f), range(o.high, first, n, 1.0f))
            : stacked;
      }
      out.times.assign(o.times.begin() + first, o.times.begin() + first + n);
    }
    const int64_t n = out.size();
    if (!o.fov.empty()) {
      out.fov = range(o.fov, first, n, 0.0f);
    }
    next += n;
    return out;
  }
};

DepthReader::DepthReader(DepthSourceOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.o = std::move(options);
  install_ffmpeg_log_handler();
  std::error_code ec;
  if (!fs::exists(d.o.path, ec)) {
    throw Error(ErrorKind::InputNotFound, kReadStage, "no such depth file", d.o.path);
  }
  const size_t listed = d.o.times.size();
  auto check_ranges = [&] {
    for (const auto* v : {&d.o.low, &d.o.high}) {
      DEPTH_CHECK(
          v->empty() || v->size() == 1 || v->size() == listed, Input, kReadStage,
          "the sidecar's per-frame ranges do not match its frame list", d.o.path);
    }
  };
  check_ranges();
  DEPTH_CHECK(d.o.max_pixels > 0, Option, kReadStage, "max_pixels must be > 0", d.o.path);
  auto check_frame_size = [&](int64_t width, int64_t height) {
    DEPTH_CHECK(
        width <= d.o.max_pixels / std::max<int64_t>(height, 1), Input, kReadStage,
        "its frames are " + std::to_string(width) + "x" + std::to_string(height) + ", more than the " +
            std::to_string(d.o.max_pixels) + " pixels a depth frame may hold here",
        d.o.path);
  };
  switch (d.o.format) {
    case DepthFormat::Gray16:
    case DepthFormat::Gray8:
    case DepthFormat::RgbPacked: {
      DEPTH_CHECK(
          d.o.format == DepthFormat::RgbPacked || listed > 0, Input, kReadStage,
          "a grey depth video needs its sidecar (the range its values map to)", d.o.path);
      DEPTH_CHECK(
          d.o.format != DepthFormat::RgbPacked || d.o.relative || (d.o.max_depth > 0 && std::isfinite(d.o.max_depth)),
          Option, kReadStage, "reading RGB-packed depth needs max_depth (metres at full scale)", d.o.path);
      ReaderOptions ro;
      ro.hwaccel = "none";
      ro.pixels = d.o.format == DepthFormat::Gray16 ? FramePixels::Gray16
          : d.o.format == DepthFormat::Gray8       ? FramePixels::Gray8
                                                   : FramePixels::Rgb;
      d.video = std::make_unique<VideoReader>(d.o.path, ro);
      const VideoStreamDescription& desc = d.video->stream();
      check_frame_size(desc.width, desc.height);
      d.width = desc.width;
      d.height = desc.height;
      d.frames = listed > 0 ? static_cast<int64_t>(listed) : desc.num_frames;
      d.rate = static_cast<double>(desc.frame_rate.num) / std::max(desc.frame_rate.den, 1);
      d.video_start = desc.start_time;
      d.lossy = d.o.format == DepthFormat::RgbPacked && !lossless_codec(desc.codec);
      d.time_base = static_cast<double>(desc.time_base.num) / desc.time_base.den;
      if (d.o.format == DepthFormat::RgbPacked) {
        // A video that is not packed depth: an ordinary video has red and green apart; a grey
        // one has blue with them too, where packed depth's blue is an unrelated low byte. Medians,
        // so that a lossy file's ringing at depth edges does not count.
        FrameBatch first = d.video->read(1);
        DEPTH_CHECK(first.size() == 1, Input, kReadStage, "the depth video holds no frames", d.o.path);
        const at::Tensor c = first.frames.to(at::kFloat);
        const double red_green = (c.select(1, 0) - c.select(1, 1)).abs().median().item<double>();
        const double red_blue = (c.select(1, 0) - c.select(1, 2)).abs().median().item<double>();
        const double spread = (c.select(1, 2) - c.select(1, 2).mean()).abs().mean().item<double>();
        if (red_green > 4.0) {
          char text[220];
          std::snprintf(
              text, sizeof(text),
              "not an RGB-packed depth video: its red and green channels differ (median %.0f), where packed depth repeats its high byte in both",
              red_green);
          throw Error(ErrorKind::Input, kReadStage, text, d.o.path);
        }
        if (red_blue <= 2.0 && spread > 4.0) {
          throw Error(
              ErrorKind::Input,
              kReadStage,
              "not an RGB-packed depth video: it is grey (red, green and blue agree), where packed depth's blue holds the low byte",
              d.o.path);
        }
        d.video = std::make_unique<VideoReader>(d.o.path, ro); // from the start again
      }
      break;
    }
    case DepthFormat::Png16:
    case DepthFormat::Exr: {
      DEPTH_CHECK(listed > 0, Input, kReadStage, "an image sequence needs its sidecar (depth.json)", d.o.path);
      const std::string file =
          (fs::path(d.o.path) / (numbered(d.o.pattern, 1) + sequence_extension(d.o.format))).string();
      at::Tensor image = decode_image(d.o.format, file, d.o.max_pixels);
      d.height = static_cast<int>(image.size(0));
      d.width = static_cast<int>(image.size(1));
      d.frames = static_cast<int64_t>(listed);
      const std::string last =
          (fs::path(d.o.path) / (numbered(d.o.pattern, static_cast<int64_t>(listed)) + sequence_extension(d.o.format))).string();
      DEPTH_CHECK(fs::exists(last, ec), Input, kReadStage,
                    "the sequence is shorter than its sidecar says (" + std::to_string(listed) + " frames)", last);
      break;
    }
    case DepthFormat::Npy: {
      DEPTH_CHECK(listed > 0, Input, kReadStage, "a depth .npy needs its sidecar (the frames' times)", d.o.path);
      d.npy = std::fopen(d.o.path.c_str(), "rb");
      DEPTH_CHECK(d.npy != nullptr, Input, kReadStage, "cannot open the file", d.o.path);
      d.npy_layout = read_npy_header(d.npy, d.o.path);
      check_frame_size(d.npy_layout.width, d.npy_layout.height);
      DEPTH_CHECK(
          d.npy_layout.frames == static_cast<int64_t>(listed), Input, kReadStage,
          "the array holds " + std::to_string(d.npy_layout.frames) + " frames, its sidecar lists " + std::to_string(listed),
          d.o.path);
      const int64_t item = d.npy_layout.half ? 2 : 4;
      const uintmax_t size = fs::file_size(d.o.path, ec);
      DEPTH_CHECK(
          !ec && size >= static_cast<uintmax_t>(d.npy_layout.data_offset + d.npy_layout.frames * d.npy_layout.height *
                                                                            d.npy_layout.width * item),
          Input, kReadStage, "the .npy file is shorter than its header says", d.o.path);
      d.height = static_cast<int>(d.npy_layout.height);
      d.width = static_cast<int>(d.npy_layout.width);
      d.frames = d.npy_layout.frames;
      break;
    }
  }
  if (listed > 1) {
    const double span = d.o.times.back() - d.o.times.front();
    d.rate = span > 0 ? static_cast<double>(listed - 1) / span : d.rate;
  }
}

DepthReader::~DepthReader() = default;

int DepthReader::width() const {
  return impl_->width;
}

int DepthReader::height() const {
  return impl_->height;
}

int64_t DepthReader::frame_count() const {
  return impl_->frames;
}

double DepthReader::frame_rate() const {
  return impl_->rate;
}

DepthFrames DepthReader::read(int max_frames) {
  SBSCONV_CHECK(max_frames > 0, Option, kReadStage, "max_frames must be > 0");
  const int64_t frame_bytes = std::max<int64_t>(int64_t{4} * impl_->width * impl_->height, 1);
  const int64_t fit = std::max<int64_t>(kMaxReadBytes / frame_bytes, 1);
  return impl_->read_frames(static_cast<int>(std::min<int64_t>(max_frames, fit)));
}

void DepthReader::set_cancel_flag(const std::atomic<bool>* flag) {
  if (impl_->video) {
    impl_->video->set_cancel_flag(flag);
  }
}

// ---- DepthMatcher ------------------------------------------------------------------------------

DepthMatcher::DepthMatcher(std::unique_ptr<DepthReader> reader, double tolerance)
    : reader_(std::move(reader)), tolerance_(tolerance) {}

bool DepthMatcher::fill() {
  if (ended_) {
    return false;
  }
  DepthFrames more = reader_->read(8);
  if (more.size() == 0) {
    ended_ = true;
    return false;
  }
  // keep what is not consumed yet, then the new frames
  const int64_t keep = buffer_.size() - position_;
  DepthFrames merged;
  if (keep > 0) {
    merged.depth = at::cat({buffer_.depth.narrow(0, position_, keep), more.depth});
    merged.times.assign(buffer_.times.begin() + position_, buffer_.times.end());
    if (buffer_.fov.defined() && more.fov.defined()) {
      merged.fov = at::cat({buffer_.fov.narrow(0, position_, keep), more.fov});
    }
  } else {
    merged.depth = more.depth;
    merged.fov = more.fov;
  }
  merged.times.insert(merged.times.end(), more.times.begin(), more.times.end());
  buffer_ = std::move(merged);
  position_ = 0;
  return true;
}

at::Tensor DepthMatcher::depth_for(const std::vector<double>& times, at::Tensor* fov) {
  std::vector<at::Tensor> out;
  std::vector<at::Tensor> out_fov;
  for (const double t : times) {
    // skip depth frames before this time's tolerance window
    while (true) {
      if (position_ >= buffer_.size() && !fill()) {
        break;
      }
      if (buffer_.times[static_cast<size_t>(position_)] < t - tolerance_) {
        ++position_;
        continue;
      }
      break;
    }
    if (position_ >= buffer_.size()) {
      char text[256];
      std::snprintf(
          text, sizeof(text),
          "the depth file ends before the video: no depth for the frame at %.3f s (its last frame is at %.3f s)", t,
          buffer_.times.empty() ? 0.0 : buffer_.times.back());
      throw Error(ErrorKind::Input, kReadStage, text, "");
    }
    // the nearest of this frame and the next one
    if (position_ + 1 >= buffer_.size()) {
      fill();
    }
    int64_t best = position_;
    if (position_ + 1 < buffer_.size() &&
        std::abs(buffer_.times[static_cast<size_t>(position_ + 1)] - t) < std::abs(buffer_.times[static_cast<size_t>(position_)] - t)) {
      best = position_ + 1;
      position_ = best;
    }
    const double found = buffer_.times[static_cast<size_t>(best)];
    if (std::abs(found - t) > tolerance_) {
      char text[256];
      std::snprintf(
          text, sizeof(text),
          "no depth frame within %.1f ms of the video frame at %.3f s (the nearest is at %.3f s): the depth file was made from another video or at another frame rate",
          tolerance_ * 1000.0, t, found);
      throw Error(ErrorKind::Input, kReadStage, text, "");
    }
    out.push_back(buffer_.depth.narrow(0, best, 1));
    if (buffer_.fov.defined()) {
      out_fov.push_back(buffer_.fov.narrow(0, best, 1));
    }
  }
  if (fov != nullptr) {
    *fov = out_fov.size() == out.size() && !out_fov.empty() ? at::cat(out_fov) : at::Tensor();
  }
  return at::cat(out);
}

} // namespace sbsconv
