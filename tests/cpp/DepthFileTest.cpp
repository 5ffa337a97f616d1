// Depth files (Note [Depth files]): the RGB-packed and 16-bit code mappings, DepthWriter and
// DepthReader in every format, the writer's all-or-nothing output, the reader's refusals,
// DepthMatcher, and the lossless FFV1 videos underneath.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "sbsconv/common/Error.h"
#include "sbsconv/media/DepthFile.h"
#include "sbsconv/media/LosslessVideo.h"
#include "sbsconv/media/MediaWriter.h"
#include "sbsconv/media/VideoReader.h"

namespace fs = std::filesystem;
using namespace sbsconv;

namespace {

constexpr double kFullScale = 255.0 * 255.0 * 255.0 * 255.0 / 65536.0; // codes spanning max_depth
constexpr int kW = 48;
constexpr int kH = 32;
constexpr int kFrames = 5;

// One step of the packed code in metres, for max_depth.
double packed_step(double max_depth) {
  return max_depth / kFullScale;
}

// A fresh, empty folder of this process for one test.
fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("sbsconv_depthfile_tests_" + std::to_string(::getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string file_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The sbsconv::Error f throws (a test failure when it throws none).
std::optional<Error> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no sbsconv::Error thrown";
  return std::nullopt;
}

std::vector<double> frame_times(int n) {
  std::vector<double> t;
  for (int k = 0; k < n; ++k) {
    t.push_back(k / 25.0);
  }
  return t;
}

std::vector<int64_t> frame_pts(int first, int n) {
  std::vector<int64_t> p;
  for (int k = first; k < first + n; ++k) {
    p.push_back(k);
  }
  return p;
}

// Smooth depth [n,1,kH,kW]: frame k spans [lo + 0.1k, hi - 0.2k] (its exact minimum and
// maximum are reached), so every frame has its own range.
at::Tensor smooth_depth(int n, double lo, double hi) {
  at::Tensor y = at::linspace(0.0, 1.0, kH, at::kDouble).reshape({kH, 1});
  at::Tensor x = at::linspace(0.0, 1.0, kW, at::kDouble).reshape({1, kW});
  at::Tensor shape = (0.5 + 0.5 * at::sin(x * 5.0 + y * 3.0) * at::cos(y * 2.0 - x));
  shape = (shape - shape.min()) / (shape.max() - shape.min()); // exactly 0..1
  std::vector<at::Tensor> frames;
  for (int k = 0; k < n; ++k) {
    const double a = lo + 0.1 * k;
    const double b = hi - 0.2 * k;
    frames.push_back((a + (b - a) * shape).unsqueeze(0).unsqueeze(0));
  }
  return at::cat(frames).to(at::kFloat);
}

DepthWriterOptions writer_options(const fs::path& path, DepthFormat format, bool relative) {
  DepthWriterOptions o;
  o.path = path.string();
  o.format = format;
  o.relative = relative;
  o.width = kW;
  o.height = kH;
  o.time_base = Rational{1, 25};
  o.frame_rate = Rational{25, 1};
  return o;
}

// Writes depth (kFrames frames, in two calls) with pts k, times k/25; returns the summary.
// What is under the output name must not change before finish(): nothing, or an earlier
// export folder as it was.
DepthExportSummary write_depth(const DepthWriterOptions& o, const at::Tensor& depth) {
  const bool existed = fs::exists(o.path);
  const std::vector<std::string> before = existed && fs::is_directory(o.path) ? entries(o.path) : std::vector<std::string>{};
  DepthWriter writer(o);
  const std::vector<double> times = frame_times(kFrames);
  writer.write(depth.narrow(0, 0, 3), frame_pts(0, 3), {times.begin(), times.begin() + 3});
  writer.write(depth.narrow(0, 3, kFrames - 3), frame_pts(3, kFrames - 3), {times.begin() + 3, times.end()});
  EXPECT_EQ(fs::exists(o.path), existed) << "the output must not appear before finish()";
  if (existed) {
    EXPECT_EQ(entries(o.path), before) << "an earlier export stays as it was until finish()";
  }
  return writer.finish({});
}

DepthFrames read_all(DepthReader& reader, int batch) {
  DepthFrames all;
  std::vector<at::Tensor> depth;
  while (true) {
    DepthFrames b = reader.read(batch);
    if (b.size() == 0) {
      break;
    }
    EXPECT_LE(b.size(), batch);
    depth.push_back(b.depth);
    all.times.insert(all.times.end(), b.times.begin(), b.times.end());
  }
  if (!depth.empty()) {
    all.depth = at::cat(depth);
  }
  return all;
}

// The sidecar's per-frame range of metric linear16 depth (each frame's minimum and maximum).
void frame_ranges(const at::Tensor& depth, std::vector<float>* low, std::vector<float>* high) {
  for (int64_t k = 0; k < depth.size(0); ++k) {
    const float lo = depth[k].min().item<float>();
    const float hi = depth[k].max().item<float>();
    low->push_back(lo);
    high->push_back(std::max(hi, lo + 1e-3f));
  }
}

// uint8 [1,3,1,n] from per-pixel red, green and blue.
at::Tensor rgb_of(const std::vector<int>& r, const std::vector<int>& g, const std::vector<int>& b) {
  const int64_t n = static_cast<int64_t>(r.size());
  at::Tensor rgb = at::empty({1, 3, 1, n}, at::kByte);
  auto a = rgb.accessor<uint8_t, 4>();
  for (int64_t i = 0; i < n; ++i) {
    a[0][0][0][i] = static_cast<uint8_t>(r[i]);
    a[0][1][0][i] = static_cast<uint8_t>(g[i]);
    a[0][2][0][i] = static_cast<uint8_t>(b[i]);
  }
  return rgb;
}

} // namespace

// ---- the packed and 16-bit mappings -------------------------------------------------------------

TEST(DepthFilePacking, PackUsesTheToolboxScaleAndUnpackInvertsIt) {
  for (const double max_depth : {6.0, 100.0}) {
    SCOPED_TRACE("max_depth " + std::to_string(max_depth));
    const int64_t n = 200001; // about three samples per code
    at::Tensor d = at::linspace(0.0, max_depth, n, at::kFloat).reshape({1, 1, 1, n});
    int64_t clipped = -1;
    at::Tensor rgb = pack_rgb_depth(d, max_depth, &clipped);
    EXPECT_EQ(clipped, 0);
    ASSERT_EQ(rgb.scalar_type(), at::kByte);
    ASSERT_EQ(rgb.sizes(), (at::IntArrayRef{1, 3, 1, n}));
    EXPECT_TRUE(at::equal(rgb.select(1, 0), rgb.select(1, 1))) << "red and green must both hold the high byte";

    at::Tensor c = rgb.to(at::kInt);
    at::Tensor code = (c.select(1, 0) * 256 + c.select(1, 2)).flatten();
    const int32_t* got = code.data_ptr<int32_t>();
    const float* df = d.data_ptr<float>();
    // The code is computed in float32, so a value within float rounding (~0.006 codes at
    // full scale) of .5 may round either way; every other code is exactly the formula's.
    int64_t near_ties = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(df[i]) / max_depth * kFullScale;
      const int64_t want = std::llround(x);
      const double from_tie = std::abs(x - std::floor(x) - 0.5);
      if (got[i] == want) {
        continue;
      }
      if (from_tie < 0.01 && std::abs(got[i] - want) == 1) {
        ++near_ties;
      } else {
        ADD_FAILURE() << "d=" << df[i] << ": code " << got[i] << ", expected " << want << " (" << x << ")";
        break;
      }
    }
    EXPECT_LT(near_ties, n / 200) << "codes off by one at near-ties";
    EXPECT_EQ(got[0], 0);
    EXPECT_EQ(got[n - 1], std::llround(kFullScale)); // 64518: full scale
    // every code 0..full scale is used by the ramp
    EXPECT_EQ(std::get<0>(at::_unique(code)).numel(), std::llround(kFullScale) + 1);

    at::Tensor back = unpack_rgb_depth(rgb, max_depth);
    ASSERT_EQ(back.sizes(), d.sizes());
    const double tolerance = packed_step(max_depth) / 2 + 1e-6 * max_depth;
    EXPECT_LE((back - d).abs().max().item<double>(), tolerance);

    // beyond max_depth: clipped to it and counted; NaN is 0; negative depth is 0 (not counted)
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float m = static_cast<float>(max_depth);
    at::Tensor odd = at::tensor({m * 1.5f, m + 1.0f, 1e6f, nan, -1.0f, m, 0.0f}, at::kFloat).reshape({1, 1, 1, 7});
    at::Tensor packed = pack_rgb_depth(odd, max_depth, &clipped);
    EXPECT_EQ(clipped, 3);
    at::Tensor p = packed.to(at::kInt);
    at::Tensor codes = (p.select(1, 0) * 256 + p.select(1, 2)).flatten();
    const int64_t full = std::llround(kFullScale);
    EXPECT_EQ(codes[0].item<int64_t>(), full);
    EXPECT_EQ(codes[1].item<int64_t>(), full);
    EXPECT_EQ(codes[2].item<int64_t>(), full);
    EXPECT_EQ(codes[3].item<int64_t>(), 0) << "NaN must be stored as 0";
    EXPECT_EQ(codes[4].item<int64_t>(), 0);
    EXPECT_EQ(codes[5].item<int64_t>(), full);
    at::Tensor unpacked = unpack_rgb_depth(packed, max_depth).flatten();
    for (int i : {0, 1, 2, 5}) {
      EXPECT_NEAR(unpacked[i].item<double>(), max_depth, tolerance) << "pixel " << i;
    }
    EXPECT_EQ(unpacked[3].item<float>(), 0.0f);
    EXPECT_EQ(unpacked[6].item<float>(), 0.0f);
  }
}

TEST(DepthFilePacking, UnpackReadsTheToolboxesOwnFiles) {
  // The toolboxes write v32 = floor(d * 255^4 / max_depth) (d clipped to [0, max_depth]) and
  // keep its top 16 bits: R = G = bits 24..31, B = bits 16..23.
  for (const double max_depth : {6.0, 100.0}) {
    SCOPED_TRACE("max_depth " + std::to_string(max_depth));
    const int64_t n = 100003;
    at::Tensor d = at::linspace(0.0, max_depth * 1.02, n, at::kFloat); // a little beyond max too
    std::vector<int> r(n), g(n), b(n);
    const float* df = d.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const double x = std::clamp(static_cast<double>(df[i]), 0.0, max_depth);
      const uint32_t v32 = static_cast<uint32_t>(std::floor(x * (255.0 * 255.0 * 255.0 * 255.0) / max_depth));
      r[i] = g[i] = static_cast<int>((v32 >> 24) & 255);
      b[i] = static_cast<int>((v32 >> 16) & 255);
    }
    at::Tensor theirs = rgb_of(r, g, b);
    at::Tensor back = unpack_rgb_depth(theirs, max_depth).flatten().to(at::kDouble);
    at::Tensor truth = d.to(at::kDouble).clamp(0.0, max_depth);
    const double slack = 1e-6 * max_depth;
    EXPECT_LE((back - truth).abs().max().item<double>(), packed_step(max_depth) + slack);
    EXPECT_LE((back - truth).max().item<double>(), slack) << "floor: their stored depth never exceeds the true one";

    // sbsconv's own code for the same depth is theirs or one more (round against floor)
    at::Tensor ours = pack_rgb_depth(d.reshape({1, 1, 1, n}), max_depth).to(at::kInt);
    at::Tensor t = theirs.to(at::kInt);
    at::Tensor diff = (ours.select(1, 0) * 256 + ours.select(1, 2)) - (t.select(1, 0) * 256 + t.select(1, 2));
    EXPECT_GE(diff.min().item<int>(), 0);
    EXPECT_LE(diff.max().item<int>(), 1);
  }
}

TEST(DepthFilePacking, UnpackToleratesLossyNoise) {
  const double max_depth = 6.0;
  const int64_t h = 256, w = 256; // one code per pixel or so: every low-byte wrap is in it
  at::Tensor d = at::linspace(0.0, max_depth, h * w, at::kFloat).reshape({1, 1, h, w});
  at::Tensor packed = pack_rgb_depth(d, max_depth).to(at::kInt);
  at::manual_seed(20240611);
  at::Tensor noise = at::randint(-2, 3, {1, 3, h, w}, at::kInt);
  at::Tensor noisy = (packed + noise).clamp(0, 255).to(at::kByte);

  at::Tensor error = (unpack_rgb_depth(noisy, max_depth) - d).abs();
  const double limit = 0.01 * max_depth;
  const double within = error.le(limit).to(at::kDouble).mean().item<double>();
  EXPECT_GE(within, 0.999) << "max error " << error.max().item<double>();
  // +-2 on each byte moves the averaged high byte by at most 2: 2 * 256 + 2 codes, 0.8%
  EXPECT_LE(error.max().item<double>(), limit);

  // The naive decode, red * 256 + blue, against the averaged and re-centred one: with
  // independent noise both stay within 0.8%, but averaging the two copies of the high byte
  // lowers the mean error by about a third, near low-byte wraps as elsewhere.
  at::Tensor n = noisy.to(at::kFloat);
  at::Tensor naive = (n.narrow(1, 0, 1) * 256.0 + n.narrow(1, 2, 1)) * (max_depth / kFullScale);
  at::Tensor naive_error = (naive - d).abs();
  at::Tensor low_byte = packed.narrow(1, 2, 1);
  at::Tensor at_wrap = low_byte.le(2).logical_or(low_byte.ge(253));
  const double ours_mean = error.mean().item<double>();
  const double naive_mean = naive_error.mean().item<double>();
  const double ours_wrap = error.masked_select(at_wrap).mean().item<double>();
  const double naive_wrap = naive_error.masked_select(at_wrap).mean().item<double>();
  EXPECT_LT(ours_mean, 0.8 * naive_mean) << "unpack " << ours_mean << " m, naive " << naive_mean << " m";
  EXPECT_LT(ours_wrap, 0.8 * naive_wrap) << "near low-byte wraps: unpack " << ours_wrap << " m, naive " << naive_wrap << " m";
}

TEST(DepthFileCodes, PerFrameRangesRoundTripAndClamp) {
  const std::vector<float> lows = {0.5f, -2.0f, 0.0f};
  const std::vector<float> highs = {3.7f, 2.0f, 1.0f};
  const int64_t n = 3, h = 16, w = 16;
  std::vector<at::Tensor> frames;
  for (int64_t k = 0; k < n; ++k) {
    frames.push_back(at::linspace(lows[k], highs[k], h * w, at::kFloat).reshape({1, 1, h, w}));
  }
  at::Tensor depth = at::cat(frames);
  at::Tensor low = at::tensor(lows, at::kFloat);
  at::Tensor high = at::tensor(highs, at::kFloat);
  at::Tensor codes = depth_to_codes(depth, low, high);
  ASSERT_EQ(codes.scalar_type(), at::kInt);
  ASSERT_EQ(codes.sizes(), depth.sizes());
  at::Tensor back = codes_to_depth(codes, low, high);
  for (int64_t k = 0; k < n; ++k) {
    SCOPED_TRACE("frame " + std::to_string(k));
    EXPECT_EQ(codes[k].min().item<int>(), 0);
    EXPECT_EQ(codes[k].max().item<int>(), 65535);
    const double half_step = (highs[k] - lows[k]) / 65535.0 / 2.0;
    const double slack = 1e-6 * std::max(std::abs(lows[k]), std::abs(highs[k]));
    EXPECT_LE((back[k] - depth[k]).abs().max().item<double>(), half_step + slack);
    // the codes are the documented ones: round((d - low) / (high - low) * 65535)
    at::Tensor want = ((depth[k].to(at::kDouble) - lows[k]) / (static_cast<double>(highs[k]) - lows[k]) * 65535.0).round();
    EXPECT_LE((codes[k].to(at::kDouble) - want).abs().max().item<double>(), 1.0);
    EXPECT_GE(codes[k].to(at::kDouble).eq(want).to(at::kDouble).mean().item<double>(), 0.99);
  }
  // outside the range: clamped to 0 and 65535
  at::Tensor outside = depth.clone();
  for (int64_t k = 0; k < n; ++k) {
    outside[k][0][0][0] = lows[k] - 1.0f;
    outside[k][0][0][1] = lows[k] - 1000.0f;
    outside[k][0][1][0] = highs[k] + 1.0f;
    outside[k][0][1][1] = highs[k] + 1000.0f;
  }
  at::Tensor oc = depth_to_codes(outside, low, high);
  for (int64_t k = 0; k < n; ++k) {
    EXPECT_EQ(oc[k][0][0][0].item<int>(), 0);
    EXPECT_EQ(oc[k][0][0][1].item<int>(), 0);
    EXPECT_EQ(oc[k][0][1][0].item<int>(), 65535);
    EXPECT_EQ(oc[k][0][1][1].item<int>(), 65535);
    at::Tensor ends = codes_to_depth(oc[k].narrow(1, 0, 2).narrow(2, 0, 1).unsqueeze(0), low.narrow(0, k, 1), high.narrow(0, k, 1));
    EXPECT_NEAR(ends.flatten()[0].item<double>(), lows[k], 1e-6);
    EXPECT_NEAR(ends.flatten()[1].item<double>(), highs[k], 1e-6);
  }
}

// ---- writing and reading back, every format -----------------------------------------------------

namespace {

struct RoundTrip {
  DepthFormat format;
  bool relative;
  bool half;
  const char* name; // the file or folder
};

std::string describe(const RoundTrip& c) {
  return std::string(depth_format_name(c.format)) + (c.relative ? " relative" : " metric") + (c.half ? " half" : "");
}

} // namespace

TEST(DepthFileRoundTrip, EveryFormatReadsBackWhatWasWritten) {
  const std::vector<RoundTrip> cases = {
      {DepthFormat::Gray16, true, false, "rel.mkv"},
      {DepthFormat::Gray16, false, false, "metric.mkv"},
      {DepthFormat::RgbPacked, true, false, "packed_rel.mkv"},
      {DepthFormat::RgbPacked, false, false, "packed_metric.mkv"},
      {DepthFormat::Png16, true, false, "png_rel"},
      {DepthFormat::Png16, false, false, "png_metric"},
      {DepthFormat::Exr, false, false, "exr32"},
      {DepthFormat::Exr, false, true, "exr16"},
      {DepthFormat::Npy, false, false, "f32.npy"},
      {DepthFormat::Npy, false, true, "f16.npy"},
  };
  const fs::path dir = fresh_dir("round_trip");
  const std::vector<double> times = frame_times(kFrames);
  const double max_depth = 6.0;
  for (const RoundTrip& c : cases) {
    SCOPED_TRACE(describe(c));
    // relative: inverse depth in [0, 1]; metric: metres within max_depth
    at::Tensor depth = c.relative ? smooth_depth(kFrames, 0.0, 1.0) : smooth_depth(kFrames, 0.5, 5.5);
    const fs::path path = dir / c.name;
    DepthWriterOptions o = writer_options(path, c.format, c.relative);
    o.max_depth = max_depth;
    o.half = c.half;
    const DepthExportSummary summary = write_depth(o, depth);
    EXPECT_EQ(summary.frames, kFrames);
    EXPECT_EQ(summary.path, path.string());
    const bool folder = c.format == DepthFormat::Png16 || c.format == DepthFormat::Exr;
    const fs::path sidecar = folder ? path / "depth.json" : fs::path(path.string() + ".json");
    EXPECT_EQ(summary.sidecar, sidecar.string());
    ASSERT_TRUE(fs::exists(path));
    ASSERT_TRUE(fs::exists(sidecar));
    const std::string json = file_text(sidecar);
    EXPECT_NE(json.find("\"format\""), std::string::npos);
    EXPECT_NE(json.find("\"frames\""), std::string::npos);
    EXPECT_NE(json.find(std::string("\"") + depth_format_name(c.format) + "\""), std::string::npos);
    if (folder) {
      EXPECT_EQ(entries(path).size(), static_cast<size_t>(kFrames + 1)) << "the frames and depth.json";
    }

    // Read as the sidecar describes it.
    const bool linear16 = c.format == DepthFormat::Gray16 || c.format == DepthFormat::Png16;
    DepthSourceOptions s;
    s.path = path.string();
    s.format = c.format;
    s.relative = c.relative;
    s.max_depth = c.relative ? 1.0 : max_depth;
    s.times = times;
    if (linear16) {
      if (c.relative) {
        s.low = {0.0f};
        s.high = {1.0f};
      } else {
        frame_ranges(depth, &s.low, &s.high);
      }
    }
    DepthReader reader(s);
    EXPECT_EQ(reader.width(), kW);
    EXPECT_EQ(reader.height(), kH);
    EXPECT_EQ(reader.frame_count(), kFrames);
    EXPECT_NEAR(reader.frame_rate(), 25.0, 1e-9);
    DepthFrames back = read_all(reader, 2);
    ASSERT_TRUE(back.depth.defined());
    ASSERT_EQ(back.depth.sizes(), depth.sizes());
    EXPECT_EQ(back.depth.scalar_type(), at::kFloat);
    EXPECT_EQ(back.times, times);

    at::Tensor error = (back.depth.to(at::kDouble) - depth.to(at::kDouble)).abs();
    switch (c.format) {
      case DepthFormat::Gray16:
      case DepthFormat::Png16:
        for (int64_t k = 0; k < kFrames; ++k) {
          const double range = c.relative ? 1.0 : static_cast<double>(s.high[k]) - s.low[k];
          const double tolerance = c.relative ? 1.0 / 65535.0 / 2.0 + 1e-6 : range / 65535.0;
          EXPECT_LE(error[k].max().item<double>(), tolerance) << "frame " << k;
        }
        break;
      case DepthFormat::RgbPacked: {
        const double m = c.relative ? 1.0 : max_depth;
        EXPECT_LE(error.max().item<double>(), packed_step(m) / 2 + 1e-6 * m);
        break;
      }
      case DepthFormat::Exr:
      case DepthFormat::Npy:
        if (c.half) {
          EXPECT_LE((error / depth.to(at::kDouble).abs()).max().item<double>(), 1e-3);
        } else {
          EXPECT_TRUE(at::equal(back.depth, depth)) << "float32 must read back exactly; max error "
                                                    << error.max().item<double>();
        }
        break;
    }

    // RGB-packed as the toolboxes write it: no sidecar, times from the video's own clock
    if (c.format == DepthFormat::RgbPacked) {
      DepthSourceOptions bare;
      bare.path = path.string();
      bare.format = DepthFormat::RgbPacked;
      bare.relative = false;
      bare.max_depth = c.relative ? 1.0 : max_depth;
      DepthReader plain(bare);
      EXPECT_NEAR(plain.frame_rate(), 25.0, 1e-6);
      DepthFrames again = read_all(plain, 3);
      ASSERT_EQ(again.size(), kFrames);
      for (int k = 0; k < kFrames; ++k) {
        EXPECT_NEAR(again.times[k], times[k], 1e-6);
      }
      EXPECT_TRUE(at::equal(again.depth, back.depth));
    }
  }
}

// ---- nothing under the output name before finish() ----------------------------------------------

TEST(DepthFileWriter, NothingAppearsBeforeFinishAndAnAbandonedWriterLeavesNothing) {
  const at::Tensor depth = smooth_depth(kFrames, 0.0, 1.0);
  const std::vector<std::pair<DepthFormat, std::string>> cases = {
      {DepthFormat::Gray16, "d.mkv"},
      {DepthFormat::RgbPacked, "p.mkv"},
      {DepthFormat::Npy, "d.npy"},
      {DepthFormat::Png16, "png"},
      {DepthFormat::Exr, "exr"},
  };
  for (const auto& [format, name] : cases) {
    SCOPED_TRACE(depth_format_name(format));
    const fs::path dir = fresh_dir(std::string("abandon_") + depth_format_name(format));
    const fs::path path = dir / name;
    const std::string temp = "." + name + ".sbsconv-" + std::to_string(::getpid()) + ".part";
    EXPECT_EQ(temporary_path(path.string()), (dir / temp).string());
    {
      DepthWriter writer(writer_options(path, format, true));
      writer.write(depth.narrow(0, 0, 2), frame_pts(0, 2), {0.0, 0.04});
      EXPECT_FALSE(fs::exists(path)) << "the output must not appear before finish()";
      EXPECT_TRUE(fs::exists(dir / temp)) << "written under its temporary name";
    } // destroyed without finish()
    EXPECT_EQ(entries(dir), std::vector<std::string>{}) << "an unfinished writer must remove what it wrote";

    // and a finished one leaves exactly the output (and a file's sidecar)
    {
      DepthWriter writer(writer_options(path, format, true));
      writer.write(depth.narrow(0, 0, 2), frame_pts(0, 2), {0.0, 0.04});
      EXPECT_FALSE(fs::exists(path));
      writer.finish({});
    }
    const bool folder = format == DepthFormat::Png16 || format == DepthFormat::Exr;
    const std::vector<std::string> expected = folder ? std::vector<std::string>{name} : std::vector<std::string>{name, name + ".json"};
    EXPECT_EQ(entries(dir), expected);
  }
}

TEST(DepthFileWriter, SequenceFolderReplacesOnlyAnEarlierExport) {
  const fs::path dir = fresh_dir("folders");
  const at::Tensor depth = smooth_depth(kFrames, 0.0, 1.0);

  // a folder of someone else's: refused before anything is written, and left as it was
  const fs::path theirs = dir / "theirs";
  fs::create_directories(theirs);
  std::ofstream(theirs / "notes.txt") << "keep me\n";
  for (const DepthFormat format : {DepthFormat::Png16, DepthFormat::Exr}) {
    const auto e = error_of([&] { DepthWriter writer(writer_options(theirs, format, true)); });
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->kind(), ErrorKind::Output) << e->what();
  }
  EXPECT_EQ(entries(theirs), std::vector<std::string>{"notes.txt"});
  EXPECT_EQ(file_text(theirs / "notes.txt"), "keep me\n");
  // a file where the folder would go: refused too
  std::ofstream(dir / "plain") << "a file\n";
  const auto file_in_the_way = error_of([&] { DepthWriter writer(writer_options(dir / "plain", DepthFormat::Png16, true)); });
  ASSERT_TRUE(file_in_the_way.has_value());
  EXPECT_EQ(file_in_the_way->kind(), ErrorKind::Output);
  EXPECT_EQ(file_text(dir / "plain"), "a file\n");
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"plain", "theirs"})) << "no temporary left beside";

  // an empty folder is taken
  const fs::path empty = dir / "empty";
  fs::create_directories(empty);
  write_depth(writer_options(empty, DepthFormat::Png16, true), depth);
  EXPECT_TRUE(fs::exists(empty / "depth.json"));

  // an earlier export (depth.json inside) is replaced as a whole
  const fs::path ours = dir / "ours";
  write_depth(writer_options(ours, DepthFormat::Png16, true), depth);
  std::ofstream(ours / "depth_000099.png") << "left over\n";
  ASSERT_EQ(entries(ours).size(), static_cast<size_t>(kFrames + 2));
  const at::Tensor second = 1.0f - depth.narrow(0, 0, 2);
  {
    DepthWriter writer(writer_options(ours, DepthFormat::Png16, true));
    writer.write(second, frame_pts(0, 2), {0.0, 0.04});
    EXPECT_EQ(entries(ours).size(), static_cast<size_t>(kFrames + 2)) << "the earlier export stays until finish()";
    writer.finish({});
  }
  EXPECT_EQ(entries(ours), (std::vector<std::string>{"depth.json", "depth_000001.png", "depth_000002.png"}));
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"empty", "ours", "plain", "theirs"}));
  DepthSourceOptions s;
  s.path = ours.string();
  s.format = DepthFormat::Png16;
  s.times = {0.0, 0.04};
  s.low = {0.0f};
  s.high = {1.0f};
  DepthReader reader(s);
  DepthFrames back = read_all(reader, 8);
  ASSERT_EQ(back.size(), 2);
  EXPECT_LE((back.depth - second).abs().max().item<double>(), 1.0 / 65535.0 / 2.0 + 1e-6);
}

// ---- the reader's refusals ----------------------------------------------------------------------

namespace {

// How to read kFrames frames of relative depth (codes spanning 0..1) written by write_depth.
DepthSourceOptions relative_source(const fs::path& path, DepthFormat format) {
  DepthSourceOptions s;
  s.path = path.string();
  s.format = format;
  s.times = frame_times(kFrames);
  s.low = {0.0f};
  s.high = {1.0f};
  return s;
}

} // namespace

TEST(DepthFileReader, RefusesWhatIsNotTheDepthItWasToldOf) {
  const fs::path dir = fresh_dir("refusals");

  // an ordinary RGB video is not packed depth: its red and green differ
  const fs::path colours = dir / "colours.mkv";
  {
    LosslessVideoOptions o;
    o.path = colours.string();
    o.width = kW;
    o.height = kH;
    o.time_base = Rational{1, 25};
    o.frame_rate = Rational{25, 1};
    LosslessVideoWriter writer(o);
    at::manual_seed(7);
    writer.write(at::randint(0, 256, {2, 3, kH, kW}, at::kByte), {0, 1});
    writer.finish();
  }
  DepthSourceOptions packed;
  packed.path = colours.string();
  packed.format = DepthFormat::RgbPacked;
  packed.relative = false;
  packed.max_depth = 6.0;
  const auto not_packed = error_of([&] { DepthReader reader(packed); });
  ASSERT_TRUE(not_packed.has_value());
  EXPECT_EQ(not_packed->kind(), ErrorKind::Input);
  EXPECT_NE(std::string(not_packed->what()).find("red and green"), std::string::npos) << not_packed->what();

  // gray16 without its sidecar's times (and so its range)
  const at::Tensor depth = smooth_depth(kFrames, 0.0, 1.0);
  const fs::path gray = dir / "gray.mkv";
  write_depth(writer_options(gray, DepthFormat::Gray16, true), depth);
  DepthSourceOptions g;
  g.path = gray.string();
  g.format = DepthFormat::Gray16;
  const auto no_times = error_of([&] { DepthReader reader(g); });
  ASSERT_TRUE(no_times.has_value());
  EXPECT_EQ(no_times->kind(), ErrorKind::Input) << no_times->what();

  // npy whose header's frame count is not the number of times given
  const fs::path npy = dir / "d.npy";
  write_depth(writer_options(npy, DepthFormat::Npy, true), depth);
  for (const int listed : {kFrames - 1, kFrames + 1}) {
    DepthSourceOptions n;
    n.path = npy.string();
    n.format = DepthFormat::Npy;
    n.times = frame_times(listed);
    const auto mismatch = error_of([&] { DepthReader reader(n); });
    ASSERT_TRUE(mismatch.has_value());
    EXPECT_EQ(mismatch->kind(), ErrorKind::Input) << mismatch->what();
  }
  DepthSourceOptions right;
  right.path = npy.string();
  right.format = DepthFormat::Npy;
  right.times = frame_times(kFrames);
  DepthReader reader(right); // the same file with the right count opens
  EXPECT_EQ(reader.frame_count(), kFrames);

  // an image sequence whose third frame has another size: refused when that frame is read
  for (const DepthFormat format : {DepthFormat::Png16, DepthFormat::Exr}) {
    const std::string name = depth_format_name(format);
    const fs::path sequence = dir / ("seq_" + name);
    const fs::path other = dir / ("other_" + name);
    write_depth(writer_options(sequence, format, true), depth);
    DepthWriterOptions small = writer_options(other, format, true);
    small.width = kW / 2;
    small.height = kH / 2;
    write_depth(small, at::rand({kFrames, 1, kH / 2, kW / 2}));
    const std::string third = std::string("depth_000003") + (format == DepthFormat::Png16 ? ".png" : ".exr");
    fs::copy_file(other / third, sequence / third, fs::copy_options::overwrite_existing);
    DepthReader mixed(relative_source(sequence, format));
    EXPECT_EQ(mixed.read(2).size(), 2) << name;
    const auto differs = error_of([&] { mixed.read(2); });
    ASSERT_TRUE(differs.has_value()) << name;
    EXPECT_EQ(differs->kind(), ErrorKind::Input) << differs->what();
    EXPECT_NE(std::string(differs->what()).find("differ in size"), std::string::npos) << differs->what();
    EXPECT_NE(std::string(differs->what()).find(third), std::string::npos) << differs->what();
  }
}

// Note [Bounded inputs]: one read() holds at most 256 MB of depth, and a frame larger than
// max_pixels is refused when the file is opened, in every format.
TEST(DepthFileReader, BoundsWhatOneReadHoldsAndTheFramesItAccepts) {
  const fs::path dir = fresh_dir("bounds");
  // three 8192x4096 float frames (128 MiB each), written as a sparse file of zeros
  const fs::path big = dir / "big.npy";
  {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4096, 8192), }";
    while ((10 + dict.size() + 1) % 64 != 0) {
      dict += ' ';
    }
    dict += '\n';
    std::ofstream f(big, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    const uint16_t length = static_cast<uint16_t>(dict.size());
    f.put(static_cast<char>(length & 0xFF));
    f.put(static_cast<char>(length >> 8));
    f << dict;
  }
  fs::resize_file(big, fs::file_size(big) + uintmax_t{3} * 4096 * 8192 * 4);
  DepthSourceOptions o;
  o.path = big.string();
  o.format = DepthFormat::Npy;
  o.relative = false;
  o.times = frame_times(3);
  {
    DepthReader reader(o);
    EXPECT_EQ(reader.read(3).size(), 2) << "two frames are 256 MiB";
    DepthFrames last = reader.read(3);
    ASSERT_EQ(last.size(), 1);
    EXPECT_EQ(last.times, std::vector<double>{frame_times(3)[2]});
    EXPECT_EQ(reader.read(3).size(), 0);
  }
  o.max_pixels = int64_t{4096} * 8192 - 1;
  const auto too_big = error_of([&] { DepthReader reader(o); });
  ASSERT_TRUE(too_big.has_value());
  EXPECT_EQ(too_big->kind(), ErrorKind::Input);
  EXPECT_NE(std::string(too_big->what()).find("8192x4096"), std::string::npos) << too_big->what();

  // the image sequences and the videos too
  const at::Tensor depth = smooth_depth(kFrames, 0.0, 1.0);
  for (const DepthFormat format : {DepthFormat::Png16, DepthFormat::Exr, DepthFormat::Gray16}) {
    const fs::path path = dir / (std::string("small_") + depth_format_name(format) + (format == DepthFormat::Gray16 ? ".mkv" : ""));
    write_depth(writer_options(path, format, true), depth);
    DepthSourceOptions s = relative_source(path, format);
    s.max_pixels = kW * kH;
    EXPECT_EQ(DepthReader(s).width(), kW) << depth_format_name(format) << ": a frame of max_pixels opens";
    s.max_pixels = kW * kH - 1;
    const auto refused = error_of([&] { DepthReader reader(s); });
    ASSERT_TRUE(refused.has_value()) << depth_format_name(format);
    EXPECT_EQ(refused->kind(), ErrorKind::Input) << refused->what();
    EXPECT_NE(std::string(refused->what()).find(std::to_string(kW) + "x" + std::to_string(kH)), std::string::npos)
        << refused->what();
  }
}

// ---- DepthMatcher -------------------------------------------------------------------------------

namespace {

// An npy of 10 frames at k/25 s, frame k holding k + 1 everywhere, with fov 50 + k.
std::unique_ptr<DepthReader> ten_frames(const fs::path& path) {
  if (!fs::exists(path)) {
    DepthWriterOptions o = writer_options(path, DepthFormat::Npy, false);
    DepthWriter writer(o);
    at::Tensor depth = (at::arange(1, 11, at::kFloat).reshape({10, 1, 1, 1}) * at::ones({10, 1, kH, kW}, at::kFloat));
    writer.write(depth, frame_pts(0, 10), frame_times(10));
    writer.finish({});
  }
  DepthSourceOptions s;
  s.path = path.string();
  s.format = DepthFormat::Npy;
  s.relative = false;
  s.times = frame_times(10);
  for (int k = 0; k < 10; ++k) {
    s.fov.push_back(50.0f + k);
  }
  return std::make_unique<DepthReader>(s);
}

// The frame numbers of matched depth (frame k holds k + 1).
std::vector<int> frame_numbers(const at::Tensor& depth) {
  std::vector<int> out;
  for (int64_t i = 0; i < depth.size(0); ++i) {
    const float v = depth[i].min().item<float>();
    EXPECT_EQ(v, depth[i].max().item<float>());
    out.push_back(static_cast<int>(v) - 1);
  }
  return out;
}

} // namespace

TEST(DepthFileMatcher, TakesTheNearestFrameWithinTheTolerance) {
  const fs::path path = fresh_dir("matcher") / "ten.npy";
  {
    DepthMatcher matcher(ten_frames(path), 0.5 / 25);
    at::Tensor fov;
    at::Tensor d = matcher.depth_for({0.0, 0.04, 0.08}, &fov);
    ASSERT_EQ(d.sizes(), (at::IntArrayRef{3, 1, kH, kW}));
    EXPECT_EQ(frame_numbers(d), (std::vector<int>{0, 1, 2}));
    ASSERT_TRUE(fov.defined());
    EXPECT_TRUE(at::equal(fov, at::tensor({50.0f, 51.0f, 52.0f}, at::kFloat)));
    // later calls go on from there, across the reader's batches
    EXPECT_EQ(frame_numbers(matcher.depth_for({0.2, 0.32, 0.36}, nullptr)), (std::vector<int>{5, 8, 9}));
  }
  {
    // times between frames: the nearer frame (the same one twice when two times are nearest it)
    DepthMatcher matcher(ten_frames(path), 0.5 / 25);
    EXPECT_EQ(frame_numbers(matcher.depth_for({0.012, 0.028, 0.052, 0.07, 0.37}, nullptr)),
              (std::vector<int>{0, 1, 1, 2, 9}));
  }
  {
    // exactly half a frame (0.02 s) lies as near to frame 0 as to frame 1, within the tolerance
    DepthMatcher matcher(ten_frames(path), 0.5 / 25);
    const std::vector<int> tie = frame_numbers(matcher.depth_for({0.02}, nullptr));
    ASSERT_EQ(tie.size(), 1u);
    EXPECT_TRUE(tie[0] == 0 || tie[0] == 1) << tie[0];
  }
  {
    // half a second past the last frame (0.36 s)
    DepthMatcher matcher(ten_frames(path), 0.5 / 25);
    const auto e = error_of([&] { matcher.depth_for({0.36 + 0.5}, nullptr); });
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->kind(), ErrorKind::Input);
    EXPECT_NE(std::string(e->what()).find("ends before"), std::string::npos) << e->what();
  }
  {
    // between two frames, farther than the tolerance from both
    DepthMatcher matcher(ten_frames(path), 0.25 / 25);
    EXPECT_EQ(frame_numbers(matcher.depth_for({0.0, 0.045}, nullptr)), (std::vector<int>{0, 1}));
    const auto e = error_of([&] { matcher.depth_for({0.06}, nullptr); });
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->kind(), ErrorKind::Input);
    EXPECT_NE(std::string(e->what()).find("no depth frame within"), std::string::npos) << e->what();
  }
}

// ---- LosslessVideoWriter ------------------------------------------------------------------------

TEST(DepthFileLosslessVideo, Gray16AndRgbReadBackExactly) {
  const fs::path dir = fresh_dir("lossless");
  {
    // every 16-bit value, forwards and backwards
    const fs::path path = dir / "gray16.mkv";
    at::Tensor ramp = at::arange(0, 65536, at::kInt).reshape({1, 1, 256, 256});
    at::Tensor frames = at::cat({ramp, 65535 - ramp});
    LosslessVideoOptions o;
    o.path = path.string();
    o.width = 256;
    o.height = 256;
    o.pixels = FramePixels::Gray16;
    o.time_base = Rational{1, 25};
    o.frame_rate = Rational{25, 1};
    LosslessVideoWriter writer(o);
    writer.write(frames, {0, 1});
    EXPECT_EQ(writer.frames(), 2);
    EXPECT_FALSE(fs::exists(path));
    writer.finish();
    ASSERT_TRUE(fs::exists(path));
    ReaderOptions ro;
    ro.pixels = FramePixels::Gray16;
    VideoReader reader(path.string(), ro);
    FrameBatch b = reader.read(8);
    ASSERT_EQ(b.size(), 2);
    EXPECT_EQ(b.frames.scalar_type(), at::kShort);
    ASSERT_EQ(b.frames.sizes(), (at::IntArrayRef{2, 1, 256, 256}));
    EXPECT_TRUE(at::equal(b.frames.to(at::kInt).bitwise_and(0xFFFF), frames));
    EXPECT_EQ(reader.read(8).size(), 0);
  }
  {
    // random colours
    const fs::path path = dir / "rgb.mkv";
    at::manual_seed(11);
    at::Tensor frames = at::randint(0, 256, {3, 3, kH, kW}, at::kByte);
    LosslessVideoOptions o;
    o.path = path.string();
    o.width = kW;
    o.height = kH;
    o.time_base = Rational{1, 25};
    o.frame_rate = Rational{25, 1};
    LosslessVideoWriter writer(o);
    writer.write(frames, {0, 1, 2});
    writer.finish();
    VideoReader reader(path.string());
    FrameBatch b = reader.read(8);
    ASSERT_EQ(b.size(), 3);
    EXPECT_EQ(b.frames.scalar_type(), at::kByte);
    EXPECT_TRUE(at::equal(b.frames.contiguous(), frames));
    const double tb = static_cast<double>(b.time_base.num) / b.time_base.den;
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(b.pts[k] * tb - reader.stream().start_time, k / 25.0, 1e-6);
    }
  }
}

// A metric model's sky comes out as +inf: stored at the far end (clipped, and counted), never as
// the nearest depth; NaN and -inf as 0. Per-frame ranges of metric frames ignore the infinities.
TEST(DepthFilePacking, InfiniteDepthIsTheFarEnd) {
  const float inf = std::numeric_limits<float>::infinity();
  at::Tensor d = at::tensor({inf, -inf, 7.0f, std::nanf("")}, at::kFloat).view({1, 1, 1, 4});
  int64_t clipped = 0;
  at::Tensor back = unpack_rgb_depth(pack_rgb_depth(d, 6.0, &clipped), 6.0).flatten();
  EXPECT_EQ(clipped, 2);
  EXPECT_NEAR(back[0].item<float>(), 6.0f, 1e-4);
  EXPECT_NEAR(back[1].item<float>(), 0.0f, 1e-6);
  EXPECT_NEAR(back[2].item<float>(), 6.0f, 1e-4);
  EXPECT_NEAR(back[3].item<float>(), 0.0f, 1e-6);
  at::Tensor codes = depth_to_codes(d, at::zeros({1}), at::full({1}, 6.0f)).flatten();
  EXPECT_EQ(codes[0].item<int>(), 65535);
  EXPECT_EQ(codes[1].item<int>(), 0);
}
