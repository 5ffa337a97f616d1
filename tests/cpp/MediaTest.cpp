#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "sbsconv/common/Error.h"
#include "sbsconv/media/ColorConversion.h"
#include "sbsconv/media/MediaWriter.h"
#include "sbsconv/media/Probe.h"
#include "sbsconv/media/VideoReader.h"

namespace fs = std::filesystem;
using namespace sbsconv;

namespace {

std::string data(const std::string& name) {
  const char* dir = std::getenv("SBSCONV_TEST_DATA_DIR");
  return (fs::path(dir != nullptr ? dir : SBSCONV_TEST_DATA_DIR) / name).string();
}

fs::path scratch(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("sbsconv_cpp_tests_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

ErrorKind kind_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no sbsconv::Error thrown";
  return ErrorKind::Internal;
}

} // namespace

TEST(Probe, DescribesEveryStream) {
  MediaInfo info = probe(data("nasa_13013.mp4"));
  ASSERT_EQ(info.streams.size(), 6u);
  EXPECT_EQ(info.video_stream, 3); // the larger of the two pictures
  EXPECT_EQ(info.streams[3].width, 480);
  EXPECT_EQ(info.streams[3].avg_frame_rate.num, 30000);
  EXPECT_EQ(info.streams[1].type, "audio");
  EXPECT_EQ(info.streams[1].language, "eng");
  EXPECT_EQ(info.streams[2].codec, "mov_text");
}

TEST(Probe, BadInputsRaiseTheirKinds) {
  EXPECT_EQ(kind_of([] { probe(data("does_not_exist.mp4")); }), ErrorKind::InputNotFound);
  const fs::path text = scratch("notes.mp4");
  std::ofstream(text) << "this is not a video\n";
  EXPECT_EQ(kind_of([&] { probe(text.string()); }), ErrorKind::Input);
  const fs::path empty = scratch("empty.mp4");
  std::ofstream(empty).close();
  EXPECT_EQ(kind_of([&] { probe(empty.string()); }), ErrorKind::Input);
  EXPECT_EQ(kind_of([&] { probe(fs::temp_directory_path().string()); }), ErrorKind::Input);
}

TEST(VideoReader, ReadsEveryFrameInOrder) {
  VideoReader reader(data("bt601_limited_range.mp4"));
  EXPECT_EQ(reader.stream().width, 320);
  EXPECT_EQ(reader.stream().height, 240);
  int64_t total = 0;
  int64_t last = -1;
  while (true) {
    FrameBatch batch = reader.read(7);
    if (batch.size() == 0) {
      break;
    }
    EXPECT_EQ(batch.frames.sizes(), (at::IntArrayRef{batch.size(), 3, 240, 320}));
    for (int64_t pts : batch.pts) {
      EXPECT_GT(pts, last);
      last = pts;
    }
    total += batch.size();
  }
  EXPECT_EQ(total, 60);
  EXPECT_TRUE(reader.finished());
}

TEST(VideoReader, RejectsBadOptions) {
  ReaderOptions bad_start;
  bad_start.start = -1.0;
  EXPECT_EQ(kind_of([&] { VideoReader(data("bt601_limited_range.mp4"), bad_start); }), ErrorKind::Option);
  ReaderOptions bad_stream;
  bad_stream.stream_index = 1; // nasa's stream 1 is audio
  EXPECT_EQ(kind_of([&] { VideoReader(data("nasa_13013.mp4"), bad_stream); }), ErrorKind::Option);
  ReaderOptions bad_hw;
  bad_hw.hwaccel = "no-such-accelerator";
  EXPECT_EQ(kind_of([&] { VideoReader(data("bt601_limited_range.mp4"), bad_hw); }), ErrorKind::Option);
}

TEST(VideoReader, UnavailableHardwareDecoderFallsBackToSoftware) {
  ReaderOptions o;
  o.hwaccel = "cuda"; // no GPU on the test machines; with one, this decodes in hardware
  VideoReader reader(data("bt601_limited_range.mp4"), o);
  FrameBatch batch = reader.read(4);
  EXPECT_EQ(batch.size(), 4);
  if (reader.hardware_decoder().empty()) {
    EXPECT_FALSE(reader.hardware_fallback_reason().empty());
  }
}

namespace {

// Decodes `name`, encodes up to `limit` frames with the software encoder, returns the path.
struct Transcoded {
  fs::path path;
  at::Tensor first;
  int64_t frames = 0;
  WriterResult result;
};

Transcoded transcode(const std::string& name, const std::string& out_name, int limit) {
  Transcoded t;
  t.path = scratch(out_name);
  VideoReader reader(data(name));
  WriterOptions o;
  o.path = t.path.string();
  o.width = reader.stream().width;
  o.height = reader.stream().height;
  o.time_base = reader.stream().time_base;
  o.frame_rate = reader.stream().frame_rate;
  o.encoder = "software";
  o.preset = "veryfast";
  MediaWriter writer(o);
  while (t.frames < limit) {
    FrameBatch batch = reader.read(4);
    if (batch.size() == 0) {
      break;
    }
    if (!t.first.defined()) {
      t.first = batch.frames[0].clone();
    }
    writer.write(batch.frames, batch.pts);
    t.frames += batch.size();
  }
  EXPECT_FALSE(fs::exists(t.path)) << "the output must not appear before finish()";
  t.result = writer.finish();
  return t;
}

double psnr(const at::Tensor& a, const at::Tensor& b) {
  const double mse = (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).mean().item<double>();
  return 10.0 * std::log10(255.0 * 255.0 / std::max(mse, 1e-12));
}

} // namespace

TEST(MediaWriter, RoundTripKeepsCountAndPicture) {
  Transcoded t = transcode("Tokyo-Walk_rgb.mp4", "round_trip.mp4", 8);
  EXPECT_EQ(t.result.frames, t.frames);
  EXPECT_EQ(t.result.encoder, "libx264");
  ASSERT_TRUE(fs::exists(t.path));
  VideoReader back(t.path.string());
  FrameBatch decoded = back.read(64);
  EXPECT_EQ(decoded.size(), t.frames);
  EXPECT_GT(psnr(t.first, decoded.frames[0]), 38.0);
}

TEST(MediaWriter, OddSizesArePaddedToEven) {
  Transcoded t = transcode("testsrc2_odd_height_and_width_444.mp4", "odd.mp4", 4);
  VideoReader back(t.path.string());
  EXPECT_EQ(back.stream().width, 322);
  EXPECT_EQ(back.stream().height, 242);
  FrameBatch decoded = back.read(64);
  EXPECT_EQ(decoded.size(), t.frames);
  // The padding repeats the last column: it matches its neighbour.
  at::Tensor frame = decoded.frames[0].to(at::kInt);
  EXPECT_LT((frame.select(2, 321) - frame.select(2, 320)).abs().max().item<int>(), 24);
}

// The encoder's frame is even-sized; an odd picture's extra row and column repeat the last
// ones in every plane, whatever the frame's memory held before (4:4:4 and 4:2:2 chroma too).
TEST(YuvConverter, OddSizesRepeatTheLastRowAndColumnInEveryPlane) {
  const int width = 7;
  const int height = 5;
  const at::Tensor rgb = at::randint(0, 256, {3, height, width}, at::TensorOptions().dtype(at::kByte));
  for (AVPixelFormat format : {AV_PIX_FMT_YUV444P, AV_PIX_FMT_YUV422P, AV_PIX_FMT_YUV420P, AV_PIX_FMT_NV12,
                               AV_PIX_FMT_YUV444P10LE, AV_PIX_FMT_P010LE}) {
    AVFrame* frame = av_frame_alloc();
    frame->format = format;
    frame->width = width + 1;
    frame->height = height + 1;
    ASSERT_EQ(av_frame_get_buffer(frame, 0), 0);
    const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(format);
    for (int p = 0; p < 4 && frame->data[p] != nullptr; ++p) {
      const int rows = p == 0 ? frame->height : AV_CEIL_RSHIFT(frame->height, desc->log2_chroma_h);
      std::memset(frame->data[p], 0xAB, static_cast<size_t>(frame->linesize[p]) * rows); // stale memory
    }
    YuvConverter(width, height, format).convert(rgb, frame);
    for (int c = 0; c < desc->nb_components; ++c) {
      const AVComponentDescriptor& comp = desc->comp[c];
      const bool chroma = c == 1 || c == 2;
      const int filled_w = AV_CEIL_RSHIFT(width, chroma ? desc->log2_chroma_w : 0);
      const int filled_h = AV_CEIL_RSHIFT(height, chroma ? desc->log2_chroma_h : 0);
      const int full_w = AV_CEIL_RSHIFT(width + 1, chroma ? desc->log2_chroma_w : 0);
      const int full_h = AV_CEIL_RSHIFT(height + 1, chroma ? desc->log2_chroma_h : 0);
      auto sample = [&](int x, int y) { // one component's value, 8 or 16 bits (little-endian)
        const uint8_t* p = frame->data[comp.plane] + y * frame->linesize[comp.plane] + x * comp.step + comp.offset;
        return comp.depth > 8 ? p[0] | (p[1] << 8) : p[0];
      };
      for (int y = 0; y < full_h; ++y) {
        for (int x = filled_w; x < full_w; ++x) {
          EXPECT_EQ(sample(x, y), sample(filled_w - 1, std::min(y, filled_h - 1)))
              << av_get_pix_fmt_name(format) << " component " << c << " column " << x << " row " << y;
        }
      }
      for (int y = filled_h; y < full_h; ++y) {
        for (int x = 0; x < full_w; ++x) {
          EXPECT_EQ(sample(x, y), sample(x, filled_h - 1)) << av_get_pix_fmt_name(format) << " component " << c << " row " << y;
        }
      }
    }
    av_frame_free(&frame);
  }
}

TEST(MediaWriter, NothingIsLeftWhenAbandoned) {
  const fs::path out = scratch("abandoned.mp4");
  WriterOptions o;
  o.path = out.string();
  o.width = 64;
  o.height = 48;
  o.time_base = Rational{1, 25};
  o.frame_rate = Rational{25, 1};
  o.encoder = "software";
  {
    MediaWriter writer(o);
    writer.write(at::zeros({2, 3, 48, 64}, at::kByte), {0, 1});
  } // destroyed without finish()
  EXPECT_FALSE(fs::exists(out));
  for (const auto& entry : fs::directory_iterator(out.parent_path())) {
    EXPECT_EQ(entry.path().string().find("abandoned.mp4.sbsconv"), std::string::npos)
        << "temporary file left behind: " << entry.path();
  }
}

TEST(MediaWriter, RejectsBadOptions) {
  WriterOptions o;
  o.width = 64;
  o.height = 48;
  o.time_base = Rational{1, 25};
  o.frame_rate = Rational{25, 1};
  o.path = scratch("x.avi").string();
  EXPECT_EQ(kind_of([&] { MediaWriter w(o); }), ErrorKind::Option);
  o.path = (scratch("x").parent_path() / "missing_folder" / "x.mp4").string();
  EXPECT_EQ(kind_of([&] { MediaWriter w(o); }), ErrorKind::Output);
  o.path = scratch("x.mp4").string();
  o.bit_depth = 10; // needs HEVC
  EXPECT_EQ(kind_of([&] { MediaWriter w(o); }), ErrorKind::Option);
  o.bit_depth = 8;
  o.encoder = "no_such_encoder";
  EXPECT_EQ(kind_of([&] { MediaWriter w(o); }), ErrorKind::Encode);
}

// Note [HDR to SDR]: the tone mapping's anchors, from the transfers' own formulas.
namespace {

uint16_t pq_code(double nits) { // SMPTE ST 2084's inverse EOTF, as a 16-bit code
  const double m1 = 2610.0 / 16384.0, m2 = 2523.0 / 4096.0 * 128.0;
  const double c1 = 3424.0 / 4096.0, c2 = 2413.0 / 4096.0 * 32.0, c3 = 2392.0 / 4096.0 * 32.0;
  const double y = std::pow(nits / 10000.0, m1);
  return static_cast<uint16_t>(std::lround(65535.0 * std::pow((c1 + c2 * y) / (1.0 + c3 * y), m2)));
}

std::vector<uint8_t> tone_map(const HdrToSdr& t, const std::vector<std::array<uint16_t, 3>>& pixels) {
  std::vector<uint16_t> in;
  for (const auto& p : pixels) {
    in.insert(in.end(), p.begin(), p.end());
  }
  std::vector<uint8_t> out(in.size());
  const int n = static_cast<int>(pixels.size());
  t.convert(in.data(), 3 * n, out.data(), 3 * n, n, 1);
  return out;
}

} // namespace

TEST(HdrToSdr, ReferenceWhiteMidtonesAndPeakLandWhereTheNoteSays) {
  EXPECT_TRUE(is_hdr_transfer(AVCOL_TRC_SMPTE2084));
  EXPECT_TRUE(is_hdr_transfer(AVCOL_TRC_ARIB_STD_B67));
  EXPECT_FALSE(is_hdr_transfer(AVCOL_TRC_BT709));
  EXPECT_FALSE(is_hdr_transfer(AVCOL_TRC_UNSPECIFIED));
  // a midtone below the knee keeps its light on a BT.1886 display: 50 cd/m2 of 203 is
  // (50/203)^(1/2.4) of SDR's signal; the knee's 0.8 is rolled by nothing
  const auto code = [](double light) { return static_cast<int>(std::lround(255.0 * std::pow(light, 1.0 / 2.4))); };
  const HdrToSdr pq(AVCOL_TRC_SMPTE2084, AVCOL_PRI_BT2020);
  auto grey = [](uint16_t v) { return std::array<uint16_t, 3>{v, v, v}; };
  const auto out = tone_map(pq, {grey(0), grey(pq_code(50)), grey(pq_code(0.8 * 203)), grey(pq_code(203)),
                                 grey(pq_code(1000)), grey(pq_code(10000))});
  EXPECT_EQ(out[0], 0);
  EXPECT_NEAR(out[3], code(50.0 / 203.0), 1);
  EXPECT_NEAR(out[6], code(0.8), 1);
  // reference white rolls off below SDR white, the peak lands on it, beyond it clips
  EXPECT_GT(out[9], code(0.8));
  EXPECT_LT(out[9], 250);
  EXPECT_EQ(out[12], 255);
  EXPECT_EQ(out[15], 255);
  for (int k = 0; k < 18; k += 3) { // greys stay grey
    EXPECT_EQ(out[k], out[k + 1]);
    EXPECT_EQ(out[k + 1], out[k + 2]);
  }
  // HLG: the 75 % signal is reference white on a 1000 cd/m2 display (BT.2408): as PQ's 203
  const HdrToSdr hlg(AVCOL_TRC_ARIB_STD_B67, AVCOL_PRI_BT2020);
  const auto white = tone_map(hlg, {grey(static_cast<uint16_t>(std::lround(0.75 * 65535)))});
  EXPECT_NEAR(white[0], out[9], 2);
  // BT.2020's green primary is outside BT.709: clipped to BT.709's gamut, still green
  const auto green = tone_map(pq, {{0, pq_code(100), 0}});
  EXPECT_GT(green[1], 150);
  EXPECT_EQ(green[0], 0);
  EXPECT_LT(green[2], green[1] / 4);
}
