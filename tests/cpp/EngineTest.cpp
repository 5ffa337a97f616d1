// The engine: the float64 guard (Note [No float64 on devices]), frame selection, the
// frame-count estimate, the device-neutral quantiles, and whole runs with a stand-in model.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <thread>

#include <unistd.h>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/Float64Guard.h"
#include "sbsconv/depth/DepthModel.h"
#include "sbsconv/pipeline/BatchAssembler.h"
#include "sbsconv/pipeline/FrameSelector.h"
#include "sbsconv/temporal/Quantile.h"

using namespace sbsconv;

TEST(Float64Guard, CatchesFloat64AndHonoursHostScopes) {
  Float64Guard guard(/*cpu_counts_as_device=*/true);
  at::Tensor f = at::ones({4});
  (void)(f * 2); // float32: fine
  EXPECT_TRUE(guard.take_violations().empty());
  (void)f.to(at::kDouble);
  const auto seen = guard.take_violations();
  ASSERT_FALSE(seen.empty());
  EXPECT_NE(std::find(seen.begin(), seen.end(), "aten::to"), seen.end()) << seen.front();
  {
    HostFloat64Scope host;
    (void)at::tensor({1.0, 2.0}, at::kDouble).sum();
  }
  EXPECT_TRUE(guard.take_violations().empty());
  (void)at::zeros({2}, at::kDouble);
  EXPECT_THROW(guard.check("stabilise"), Error);
  guard.check("stabilise"); // the violations were taken by the throw
}

TEST(Float64Guard, WithoutCpuCountingOnlyDeviceTensorsCount) {
  Float64Guard guard(/*cpu_counts_as_device=*/false);
  (void)at::ones({3}, at::kDouble).mul(2);
  EXPECT_TRUE(guard.take_violations().empty());
}

TEST(Float64Guard, ObservesOnlyItsOwnThread) {
  Float64Guard guard(/*cpu_counts_as_device=*/true);
  std::thread other([] { (void)at::ones({3}, at::kDouble); });
  other.join();
  EXPECT_TRUE(guard.take_violations().empty());
}

TEST(Quantile, MatchesAtQuantileWithoutFloat64) {
  at::manual_seed(3);
  at::Tensor x = at::randn({5, 1001});
  const std::vector<double> qs{0.0, 0.01, 0.5, 0.99, 1.0};
  at::Tensor mine;
  {
    Float64Guard guard(/*cpu_counts_as_device=*/true);
    mine = quantiles_last_dim(x, qs);
    EXPECT_TRUE(guard.take_violations().empty());
  }
  at::Tensor reference = at::quantile(x, at::tensor(qs, at::kFloat), /*dim=*/1).permute({1, 0});
  EXPECT_TRUE(at::allclose(mine, reference, 1e-5, 1e-6)) << (mine - reference).abs().max();
}

TEST(Quantile, SelectingOnTheCpuGivesWhatSortingGives) {
  at::manual_seed(5);
  // ties (values rounded to tenths), a NaN (ordered last, as at::sort orders it), one value
  at::Tensor x = at::randn({4, 2001}).mul(10).round().div(10);
  x.index_put_({1, 7}, NAN);
  const std::vector<double> qs{0.0, 0.01, 0.3333, 0.5, 0.99, 1.0};
  const at::Tensor selected = quantiles_last_dim(x, qs);
  const at::Tensor sorted = quantiles_last_dim_sorted(x, qs);
  ASSERT_EQ(selected.sizes(), sorted.sizes());
  EXPECT_TRUE(at::equal(selected.narrow(0, 0, 1), sorted.narrow(0, 0, 1)));
  EXPECT_TRUE(at::equal(selected.narrow(0, 2, 2), sorted.narrow(0, 2, 2)));
  // the NaN's row: the same numbers, and NaN where the top rank reaches it
  EXPECT_TRUE(at::equal(selected[1].narrow(0, 0, 5), sorted[1].narrow(0, 0, 5)));
  EXPECT_TRUE(std::isnan(selected[1][5].item<float>()) && std::isnan(sorted[1][5].item<float>()));
  const at::Tensor one = at::full({1}, 2.5f);
  EXPECT_TRUE(at::equal(quantiles_last_dim(one, qs), quantiles_last_dim_sorted(one, qs)));
}

namespace {
at::Tensor frame(int64_t value) {
  return at::full({3, 2, 2}, value, at::kByte);
}
} // namespace

TEST(FrameSelector, EveryFrameKeepsItsTimestamp) {
  FrameSelector s({Rational{1, 90000}, Rational{30, 1}, 0.0, std::nullopt, std::nullopt, 0.0});
  std::vector<SelectedFrame> out;
  for (int64_t k = 0; k < 4; ++k) {
    s.push(frame(k), 3000 * k + 7, out);
  }
  s.finish(out);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[2].pts, 6007);
  EXPECT_EQ(out[2].source_pts, 6007);
  EXPECT_EQ(s.time_base().den, 90000);
}

TEST(FrameSelector, FpsResamplingRepeatsAndDropsByTime) {
  // 10 fps source resampled to 25 fps: each source frame fills 2 or 3 slots; the last frame
  // lasts its 0.1 s.
  FrameSelector s({Rational{1, 1000}, Rational{10, 1}, 0.0, std::nullopt, Rational{25, 1}, 0.0});
  std::vector<SelectedFrame> out;
  for (int64_t k = 0; k < 10; ++k) {
    s.push(frame(k), 100 * k, out);
  }
  s.finish(out);
  ASSERT_EQ(out.size(), 25u);
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].pts, static_cast<int64_t>(i));
    // slot i at i/25 s shows the frame on screen then: floor(i * 0.04 / 0.1)
    EXPECT_EQ(out[i].source_pts, 100 * static_cast<int64_t>(std::floor(i * 0.4 + 1e-9))) << i;
  }
}

TEST(FrameSelector, PreviewTakesTheFirstFrameAtEachSlot) {
  FrameSelector s({Rational{1, 1000}, Rational{10, 1}, 0.0, std::nullopt, std::nullopt, 1.5});
  std::vector<SelectedFrame> out;
  for (int64_t k = 0; k < 40; ++k) { // 4 s at 10 fps
    s.push(frame(k), 100 * k, out);
  }
  s.finish(out);
  ASSERT_EQ(out.size(), 3u); // 0, 1.5, 3.0 s
  EXPECT_EQ(out[1].source_pts, 1500);
  EXPECT_EQ(out[2].pts, 2);
}

TEST(FrameCountEstimate, LearnsAVariableRate) {
  // The container says 30 fps over 40 s (1200 frames); the frames come at 18.75 fps.
  FrameCountEstimate e(40.0, 1200);
  EXPECT_EQ(e.current(), 1200);
  int64_t last = 0;
  for (int64_t k = 0; k < 200; ++k) {
    last = e.observe(static_cast<double>(k) / 18.75);
  }
  EXPECT_NEAR(static_cast<double>(last), 750.0, 750.0 * 0.02);
  // Unknown length: the nominal count, and never below what was seen.
  FrameCountEstimate unknown(-1.0, -1);
  EXPECT_EQ(unknown.current(), -1);
  FrameCountEstimate small(-1.0, 3, /*before=*/10);
  EXPECT_EQ(small.observe(0.0), 11);
}

// ---- the whole engine, with a stand-in depth model -------------------------------------------
// The threads, queues, journal, segments and assembly are what is under test here (and under
// the sanitizers: cmake --preset sanitize / tsan), not a network: depth is the frame's
// brightness, which the real stages treat like any model's output.

#include <filesystem>

#include "sbsconv/pipeline/Engine.h"

namespace {

class BrightnessDepth : public DepthModel {
 public:
  const std::string& name() const override {
    return name_;
  }
  DepthKind kind() const override {
    return DepthKind::Relative;
  }
  at::Device device() const override {
    return at::kCPU;
  }
  at::ScalarType dtype() const override {
    return at::kFloat;
  }
  at::Tensor forward(const at::Tensor& pixel_values) override {
    return pixel_values.mean(1, true);
  }
  DepthOutput infer(const at::Tensor& frames) override {
    return DepthOutput{frames.to(at::kFloat).mean(1, true).div(255.0), std::nullopt};
  }

 private:
  std::string name_ = "brightness";
};

std::string data_file(const char* name) {
  const char* dir = std::getenv("SBSCONV_TEST_DATA_DIR");
  return (std::filesystem::path(dir != nullptr ? dir : SBSCONV_TEST_DATA_DIR) / name).string();
}

EngineOptions engine_options(const std::filesystem::path& output, bool resume) {
  EngineOptions o;
  o.input = data_file("bt601_limited_range.mp4");
  o.model = std::make_shared<BrightnessDepth>();
  o.batch_size = 3;
  o.writer.path = output.string();
  o.writer.preset = "ultrafast";
  o.resume = resume;
  o.fingerprint = "engine-test";
  o.segment_frames = 10;
  o.check_float64 = true;
  return o;
}

std::filesystem::path scratch_dir(const char* name) {
  auto dir = std::filesystem::temp_directory_path() / ("sbsconv_engine_test_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

} // namespace

TEST(Engine, ConvertsResumablyAcrossThreadsWithoutFloat64) {
  const auto dir = scratch_dir("resumable");
  Engine engine(engine_options(dir / "out.mp4", /*resume=*/true));
  engine.start();
  ASSERT_TRUE(engine.wait(300));
  const EngineResult r = engine.result();
  EXPECT_EQ(r.frames, 60);
  EXPECT_EQ(r.width, 640); // full side by side of 320x240
  EXPECT_TRUE(std::filesystem::exists(dir / "out.mp4"));
  EXPECT_FALSE(std::filesystem::exists(dir / ".out.mp4.sbsconv-resume"));
  EXPECT_FALSE(std::filesystem::exists(dir / ".out.mp4.sbsconv-lock"));
}

TEST(Engine, AFailingStageStopsEveryStageAndNamesItself) {
  for (const char* stage : {"decode", "depth", "stabilise", "stereo", "encode"}) {
    const auto dir = scratch_dir(stage);
    EngineOptions o = engine_options(dir / "out.mp4", /*resume=*/false);
    o.fault = std::string(stage) + ":2";
    Engine engine(std::move(o));
    engine.start();
    ASSERT_TRUE(engine.wait(120)) << stage << " hangs";
    try {
      engine.result();
      ADD_FAILURE() << stage << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.stage(), stage);
      EXPECT_EQ(e.kind(), ErrorKind::Internal);
    }
    EXPECT_TRUE(std::filesystem::is_empty(dir)) << stage << " left files behind";
  }
}

TEST(Engine, CancelStopsPromptlyAndLeavesNothing) {
  const auto dir = scratch_dir("cancel");
  EngineOptions o = engine_options(dir / "out.mp4", /*resume=*/false);
  o.input = data_file("Tokyo-Walk_rgb.mp4");
  Engine engine(std::move(o));
  engine.start();
  while (engine.progress().frames_done < 3) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  engine.cancel();
  ASSERT_TRUE(engine.wait(60));
  EXPECT_THROW(engine.result(), Error);
  EXPECT_EQ(engine.progress().phase, "cancelled");
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

namespace {

// Metric depth with a field-of-view estimate that goes wrong: NaN, then out of range.
class BadFovDepth : public BrightnessDepth {
 public:
  DepthKind kind() const override {
    return DepthKind::Metric;
  }
  DepthOutput infer(const at::Tensor& frames) override {
    const int64_t n = frames.size(0);
    at::Tensor fov = at::full({n}, 50.0f);
    if (calls_++ == 1) {
      fov[0] = std::numeric_limits<float>::quiet_NaN();
      fov[n - 1] = 250.0f;
    }
    return DepthOutput{at::full({n, 1, frames.size(2), frames.size(3)}, 2.0f), fov};
  }

 private:
  int calls_ = 0;
};

} // namespace

TEST(Engine, AFieldOfViewEstimateThatIsNotANumberIsReplacedWithAWarning) {
  const auto dir = scratch_dir("fov");
  EngineOptions o = engine_options(dir / "out.mp4", /*resume=*/false);
  o.model = std::make_shared<BadFovDepth>();
  o.stabilizer.relative = false;
  Engine engine(std::move(o));
  engine.start();
  ASSERT_TRUE(engine.wait(300));
  const EngineResult r = engine.result();
  EXPECT_EQ(r.frames, 60);
  ASSERT_TRUE(r.fov_degrees.has_value());
  EXPECT_TRUE(std::isfinite(*r.fov_degrees));
  EXPECT_GT(*r.fov_degrees, 50.0); // 179 for the clamped frame lifts the mean
  EXPECT_LT(*r.fov_degrees, 179.0);
  const auto mentions = std::count_if(r.warnings.begin(), r.warnings.end(), [](const std::string& w) {
    return w.find("field-of-view") != std::string::npos;
  });
  EXPECT_EQ(mentions, 1); // one warning, not one per frame
}

// Note [Batches without copies]
TEST(BatchAssembler, ABatchOfOneReadIsAViewOfTheDecodersBuffer) {
  // two reads of 4 frames, channels-last as the decoder makes them
  auto read = [](int64_t first) {
    at::Tensor hwc = at::arange(4 * 6 * 8 * 3, at::kInt).add(first).to(at::kByte).view({4, 6, 8, 3});
    return hwc.permute({0, 3, 1, 2});
  };
  const at::Tensor a = read(0);
  const at::Tensor b = read(7);
  BatchAssembler batches({/*batch_size=*/4, /*first_index=*/0, /*segment_frames=*/0}, nullptr);
  std::vector<SelectedFrame> all;
  for (int64_t k = 0; k < 4; ++k) {
    all.push_back(SelectedFrame{a[k], k, k});
  }
  batches.add_all(all);
  all.clear();
  for (int64_t k = 0; k < 2; ++k) {
    all.push_back(SelectedFrame{b[k], 4 + k, 4 + k});
  }
  batches.add_all(all);
  std::optional<Batch> first = batches.next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->frames.data_ptr(), a.data_ptr()); // the same memory, no copy
  EXPECT_TRUE(at::equal(first->frames, a));
  // frames 4, 5 and two more from a third read straddle two buffers: copied, same values,
  // laid out channels-last like the decoder's
  const at::Tensor c = read(21);
  batches.add_all({SelectedFrame{c[0], 6, 6}, SelectedFrame{c[1], 7, 7}});
  batches.finish();
  std::optional<Batch> second = batches.next();
  ASSERT_TRUE(second.has_value());
  EXPECT_NE(second->frames.data_ptr(), b.data_ptr());
  EXPECT_TRUE(at::equal(second->frames, at::cat({b.narrow(0, 0, 2), c.narrow(0, 0, 2)})));
  EXPECT_TRUE(second->frames.permute({0, 2, 3, 1}).is_contiguous());
}

TEST(BatchAssembler, BatchesNeverCrossASegmentEndAndWaitForTheNextTimestamp) {
  BatchAssembler batches({/*batch_size=*/3, /*first_index=*/0, /*segment_frames=*/4}, nullptr);
  std::vector<Batch> out;
  for (int64_t k = 0; k < 10; ++k) {
    batches.add(SelectedFrame{frame(k), 10 * k, 100 + 10 * k});
    while (auto b = batches.next()) {
      out.push_back(std::move(*b));
    }
    if (k == 3) {
      // frame 3 ends a segment: its batch waits for frame 4's timestamp
      EXPECT_EQ(out.size(), 1u);
    }
  }
  batches.finish();
  while (auto b = batches.next()) {
    out.push_back(std::move(*b));
  }
  std::vector<int64_t> firsts;
  std::vector<int64_t> sizes;
  for (const Batch& b : out) {
    firsts.push_back(b.first_index);
    sizes.push_back(b.size());
  }
  EXPECT_EQ(firsts, (std::vector<int64_t>{0, 3, 4, 7, 8}));
  EXPECT_EQ(sizes, (std::vector<int64_t>{3, 1, 3, 1, 2}));
  EXPECT_TRUE(out[1].segment_end);
  EXPECT_EQ(out[1].next_source_pts, 140);
  EXPECT_TRUE(out[3].segment_end);
  EXPECT_FALSE(out[4].segment_end);
  EXPECT_TRUE(out[0].starts_shot[0]);
  EXPECT_FALSE(out[2].starts_shot[0]);
  EXPECT_EQ(out[2].frames.size(0), 3);
  EXPECT_EQ(out[2].pts, (std::vector<int64_t>{40, 50, 60}));
}

TEST(BatchAssembler, ShorterSegmentsTakeEffectWithoutMovingWhatWasAdded) {
  // Note [Chunk-parallel encoding]: segments of 10, shortened to 3 once 5 frames were added:
  // the open segment ends 3 frames after the last added (frame 7), then every 3
  BatchAssembler batches({/*batch_size=*/2, /*first_index=*/0, /*segment_frames=*/10}, nullptr);
  std::vector<Batch> out;
  for (int64_t k = 0; k < 16; ++k) {
    if (k == 5) {
      batches.set_segment_frames(3);
    }
    batches.add(SelectedFrame{frame(k), k, k});
    while (auto b = batches.next()) {
      out.push_back(std::move(*b));
    }
  }
  batches.finish();
  while (auto b = batches.next()) {
    out.push_back(std::move(*b));
  }
  std::vector<int64_t> ends;
  int64_t frames = 0;
  for (const Batch& b : out) {
    frames += b.size();
    if (b.segment_end) {
      ends.push_back(b.first_index + b.size() - 1);
    }
  }
  EXPECT_EQ(frames, 16);
  EXPECT_EQ(ends, (std::vector<int64_t>{7, 10, 13}));
  // a longer length never lengthens the open segment; a resumed run counts from its start
  BatchAssembler resumed({/*batch_size=*/4, /*first_index=*/20, /*segment_frames=*/4}, nullptr);
  resumed.set_segment_frames(8);
  std::vector<int64_t> resumed_ends;
  for (int64_t k = 0; k < 14; ++k) {
    resumed.add(SelectedFrame{frame(k), k, k});
    while (auto b = resumed.next()) {
      if (b->segment_end) {
        resumed_ends.push_back(b->first_index + b->size() - 1);
      }
    }
  }
  EXPECT_EQ(resumed_ends, (std::vector<int64_t>{23, 31}));
}

TEST(BatchAssembler, AResumedRunStartsNoShotAndCountsOn) {
  BatchAssembler batches({/*batch_size=*/2, /*first_index=*/12, /*segment_frames=*/0}, nullptr);
  batches.add(SelectedFrame{frame(0), 0, 0});
  batches.add(SelectedFrame{frame(1), 1, 1});
  EXPECT_FALSE(batches.next().has_value()); // the last frame waits for its successor
  batches.add(SelectedFrame{frame(2), 2, 2});
  auto b = batches.next();
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->first_index, 12);
  EXPECT_FALSE(b->starts_shot[0]);
  EXPECT_EQ(batches.next_index(), 15);
  EXPECT_TRUE(batches.cuts().empty());
}
