#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "sbsconv/common/Error.h"
#include "sbsconv/depth/DepthAnything3.h"
#include "sbsconv/depth/DepthAnythingV2.h"
#include "sbsconv/depth/Int8Linear.h"
#include "sbsconv/depth/Weights.h"

using namespace sbsconv;

TEST(DepthAnythingV2, InputSizeFollowsTheReferenceRule) {
  using Size = std::pair<int64_t, int64_t>;
  EXPECT_EQ(lower_bound_size(1080, 1920, 518, 14), Size(518, 924));
  EXPECT_EQ(lower_bound_size(1920, 1080, 518, 14), Size(924, 518));
  EXPECT_EQ(lower_bound_size(518, 518, 518, 14), Size(518, 518));
  // Rounding that would fall below the bound goes up instead.
  auto [h, w] = lower_bound_size(100, 3000, 518, 14);
  EXPECT_GE(h, 518);
  EXPECT_EQ(h % 14, 0);
  EXPECT_EQ(w % 14, 0);
}

TEST(Int8Attention, BlocksAreAsLargeAsTheCacheBudgetAllows) {
  // Note [int8 attention]: the query rows of a block; its int32 scores and bf16 (2 bytes) or
  // float (4) probabilities within 4 MB, 64 to 512 rows, a multiple of 16.
  constexpr int64_t kBudget = int64_t{4} << 20;
  for (int64_t tokens : {5, 70, 300, 1370, 2442, 9800, 40000}) {
    for (int64_t bytes : {2, 4}) {
      const int64_t rows = attention_block_rows(tokens, 12, 2, bytes);
      EXPECT_GE(rows, 64) << tokens;
      EXPECT_LE(rows, 512) << tokens;
      EXPECT_EQ(rows % 16, 0) << tokens;
      EXPECT_TRUE(rows == 64 || rows * tokens * (4 + bytes) <= kBudget) << tokens << " tokens, " << rows << " rows";
    }
  }
  // the default input (518 x 924: 2442 tokens) in bfloat16: 272 rows, not 64
  EXPECT_EQ(attention_block_rows(2442, 12, 2, 2), 272);
  // many threads and few groups: smaller blocks so that every thread has four
  const int64_t rows = attention_block_rows(2442, 6, 16, 2);
  EXPECT_GE(6 * ((2442 + rows - 1) / rows), 4 * 16);
  EXPECT_EQ(attention_block_rows(2442, 1, 64, 2), 64); // never below 64
}

TEST(DepthAnything3, InputSizeIsTheReferenceUpperBound) {
  using Size = std::pair<int64_t, int64_t>;
  // the longer side to 504, then each side to its nearest multiple of 14
  EXPECT_EQ(upper_bound_size(720, 1280, 504, 14), Size(280, 504));
  EXPECT_EQ(upper_bound_size(1280, 720, 504, 14), Size(504, 280));
  EXPECT_EQ(upper_bound_size(480, 640, 504, 14), Size(378, 504));
  EXPECT_EQ(upper_bound_size(504, 504, 504, 14), Size(504, 504));
  // a sliver never collapses below one patch
  EXPECT_EQ(upper_bound_size(2, 4000, 504, 14), Size(14, 504));
}

TEST(DepthAnything3, RelativeDepthEntersThePipelineInverted) {
  const at::Tensor depth = at::tensor({0.5f, 2.0f, 0.0f});
  const at::Tensor inverse = pipeline_depth(DepthKind::RelativeDepth, depth);
  EXPECT_FLOAT_EQ(inverse[0].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(inverse[1].item<float>(), 0.5f);
  EXPECT_TRUE(std::isfinite(inverse[2].item<float>())); // a zero depth is not an infinity
  EXPECT_TRUE(pipeline_depth(DepthKind::Relative, depth).equal(depth));
  EXPECT_TRUE(pipeline_depth(DepthKind::Metric, depth).equal(depth));
  EXPECT_STREQ(depth_kind_name(DepthKind::RelativeDepth), "relative-depth");
  EXPECT_NEAR(focal_from_fov(90.0, 1000), 500.0, 1e-9);
}

TEST(WeightReader, ReportsEveryProblemAtOnce) {
  WeightMap weights;
  weights["a"] = at::zeros({2, 3});
  weights["b"] = at::zeros({4});
  weights["stray"] = at::zeros({1});
  WeightReader reader(weights, at::kCPU, at::kFloat, "toy");
  at::Tensor a = reader.take("a", {2, 3});
  EXPECT_EQ(a.sizes(), (at::IntArrayRef{2, 3}));
  reader.take("b", {5});
  reader.take("c", {1});
  try {
    reader.check();
    FAIL() << "expected a Model error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Model);
    const std::string m = e.what();
    EXPECT_NE(m.find("Missing keys (1): c"), std::string::npos) << m;
    EXPECT_NE(m.find("Unexpected keys (1): stray"), std::string::npos) << m;
    EXPECT_NE(m.find("b: expected (5), found (4)"), std::string::npos) << m;
  }
}

TEST(WeightReader, ConvertsToTheModelsDtypeButKeepsFp32OnRequest) {
  WeightMap weights;
  weights["w"] = at::ones({3}, at::kDouble);
  weights["table"] = at::ones({3}, at::kDouble);
  WeightReader reader(weights, at::kCPU, at::kHalf, "toy");
  EXPECT_EQ(reader.take("w", {-1}).scalar_type(), at::kHalf);
  EXPECT_EQ(reader.take_fp32("table", {3}).scalar_type(), at::kFloat);
  EXPECT_NO_THROW(reader.check());
}

TEST(Devices, AutoFallsBackToTheCpuAndPrecisionFollowsTheDevice) {
  const at::Device device = resolve_device("auto");
  if (!at::hasCUDA() && !at::hasMPS()) {
    EXPECT_TRUE(device.is_cpu());
    EXPECT_THROW(resolve_device("cuda"), Error);
  }
  EXPECT_EQ(resolve_precision("auto", at::Device(at::kCPU)), at::kFloat);
  EXPECT_EQ(resolve_precision("auto", at::Device(at::kCUDA, 0)), at::kHalf);
  EXPECT_EQ(resolve_precision("bf16", at::Device(at::kCPU)), at::kBFloat16);
  EXPECT_THROW(resolve_precision("fp8", at::Device(at::kCPU)), Error);
  EXPECT_THROW(resolve_device("tpu"), Error);
}
