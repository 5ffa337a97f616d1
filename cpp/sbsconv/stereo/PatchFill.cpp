#include "sbsconv/stereo/PatchFill.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

constexpr int64_t kStripPixels = kPatchWidth * (2 * kPatchRows + 1);
// the fewest background pairs a candidate's strip must hold (a third of it)
constexpr int64_t kFewestPairs = (kStripPixels + 2) / 3;

void check_eye(const at::Tensor& frames, const at::Tensor& disparity, const EyeResult& eye) {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte && disparity.dim() == 4 &&
          disparity.size(1) == 1 && disparity.size(0) == frames.size(0) && disparity.size(2) == frames.size(2) &&
          disparity.size(3) == frames.size(3),
      Option, "stereo", "the patch fill needs frames uint8 [N,3,H,W] and their disparity [N,1,H,W]");
  SBSCONV_CHECK(
      eye.hole_sides.defined() && eye.image.sizes() == frames.sizes() && eye.holes.defined(), Internal, "stereo",
      "the patch fill needs an eye rendered with its holes described");
}

// The rounded colour the warp writes for a linear sample v (v >= 0 after the offset):
// floor(v + 1/2) within [0, 255], as a truncation once clamped (no libm call per value on
// baseline x86-64, which has no rounding instruction; the same bytes).
inline uint8_t to_byte(float v) {
  return static_cast<uint8_t>(std::min(std::max(v + 0.5f, 0.0f), 255.0f));
}

// One row of the native kernel: the frame's source pixels, the eye's row.
struct row_view {
  const uint8_t* src; // the frame's first byte
  const int64_t* ss; // its strides [N,3,H,W], planar (ss[3] == 1)
  uint8_t* out; // the eye's row
  const int64_t* os;
  const float* disparity; // the frame's [H,W]
  int64_t h;
  int64_t w;
  int64_t y;
};

// The Note's step 6 for the run x..last (continuing the background pixel e, on side s, whose
// pixels show the hidden points p - shift): each pixel fades from the warp's colour (the
// edge's) to the mean of the background's strip.
void fade_run(
    const row_view& r,
    float bg_d,
    float tolerance,
    int64_t ei,
    int64_t s,
    float e,
    float side,
    float shift,
    int64_t x,
    int64_t last) {
  // One pass over the strip, in integers (exact): the background pixels' channel sums, their
  // greys' (R+G+B) sum and sum of squares, and over the pairs of neighbouring background pixels
  // along a row the sums of their products and of the pair's two greys. The strip is the
  // kFadeWidth pixels from the edge into the background, [lo, lo + kFadeWidth) in either
  // direction; the pairs are the same whichever way they are walked.
  const int64_t lo = s > 0 ? ei : ei - (kFadeWidth - 1);
  const int64_t x0 = std::max<int64_t>(lo, 0);
  const int64_t x1 = std::min<int64_t>(lo + kFadeWidth, r.w);
  const int64_t len = x1 - x0;
  int64_t sum[3] = {0, 0, 0};
  int64_t count = 0;
  int64_t grey_sum = 0;
  int64_t grey_square = 0;
  int64_t pair_product = 0;
  int64_t pair_sum = 0;
  int64_t pairs = 0;
  // one row's pixels as int32 lanes (every sum of a row fits: 48 x 765^2 < 2^31), so that the
  // loops below vectorise
  int32_t on[kFadeWidth];
  int32_t red[kFadeWidth];
  int32_t green[kFadeWidth];
  int32_t blue[kFadeWidth];
  int32_t grey[kFadeWidth];
  for (int64_t yy = std::max<int64_t>(r.y - kFadeRows, 0); yy <= std::min<int64_t>(r.y + kFadeRows, r.h - 1); ++yy) {
    const float* d = r.disparity + yy * r.w + x0;
    const uint8_t* px = r.src + yy * r.ss[2] + x0 * r.ss[3];
    for (int64_t j = 0; j < len; ++j) { // planar (ss[3] == 1)
      red[j] = px[j];
      green[j] = px[r.ss[1] + j];
      blue[j] = px[2 * r.ss[1] + j];
    }
    int32_t row_count = 0;
    int32_t row_sum[3] = {0, 0, 0};
    int32_t row_grey = 0;
    int32_t row_square = 0;
    for (int64_t j = 0; j < len; ++j) {
      on[j] = std::fabs(d[j] - bg_d) <= tolerance ? 1 : 0; // the caller's background test (step 3)
      grey[j] = on[j] * (red[j] + green[j] + blue[j]);
      row_count += on[j];
      row_sum[0] += on[j] * red[j];
      row_sum[1] += on[j] * green[j];
      row_sum[2] += on[j] * blue[j];
      row_grey += grey[j];
      row_square += grey[j] * grey[j];
    }
    int32_t row_pairs = 0;
    int32_t row_product = 0;
    int32_t row_pair_sum = 0;
    for (int64_t j = 1; j < len; ++j) {
      const int32_t both = on[j] & on[j - 1];
      row_pairs += both;
      row_product += grey[j] * grey[j - 1]; // zero unless both are background
      row_pair_sum += both * (grey[j] + grey[j - 1]);
    }
    count += row_count;
    for (int ch = 0; ch < 3; ++ch) {
      sum[ch] += row_sum[ch];
    }
    grey_sum += row_grey;
    grey_square += row_square;
    pairs += row_pairs;
    pair_product += row_product;
    pair_sum += row_pair_sum;
  }
  if (count < kFadeWidth) {
    return; // too little background to know its mean: the streak stays
  }
  const double n = static_cast<double>(count);
  const double grey_mean = static_cast<double>(grey_sum) / n;
  // the variance, and the mean product of neighbours' deviations from the mean
  const double variance = static_cast<double>(grey_square) / n - grey_mean * grey_mean;
  float length = kFadeLongest; // no variance or no neighbouring pairs: the edge's colour is kept
  if (variance > 1e-9 && pairs > 0) {
    const double product = (static_cast<double>(pair_product) - grey_mean * static_cast<double>(pair_sum)) /
            static_cast<double>(pairs) +
        grey_mean * grey_mean;
    const double correlation = std::min(std::max(product / variance, 0.0), 0.999);
    length = static_cast<float>(std::min(std::max(correlation / (1.0 - correlation), 1.0), double{kFadeLongest}));
  }
  const float mean[3] = {
      static_cast<float>(static_cast<double>(sum[0]) / n), static_cast<float>(static_cast<double>(sum[1]) / n),
      static_cast<float>(static_cast<double>(sum[2]) / n)};
  for (int64_t p = x; p <= last; ++p) {
    const float delta = std::max((static_cast<float>(p) - shift - e) * -side, 0.0f);
    const float rho = 1.0f / (1.0f + delta / length);
    for (int ch = 0; ch < 3; ++ch) {
      uint8_t& o = r.out[ch * r.os[1] + p * r.os[3]];
      o = to_byte(mean[ch] + rho * (static_cast<float>(o) - mean[ch]));
    }
  }
}

} // namespace

void fill_from_patches(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    const std::vector<std::pair<double, EyeResult*>>& eyes) {
  if (frames.is_cpu()) {
    fill_from_patches_cpu(frames, disparity, eyes);
  } else {
    for (const auto& [share, eye] : eyes) {
      fill_from_patches_tensor(frames, disparity, share, *eye);
    }
  }
}

// ---- the native CPU kernel ---------------------------------------------------------------------

namespace {

// One eye's native fill, from the frames as the strips read them: planar RGB, each pixel's grey
// (R+G+B) and the disparity in float, [N,...,H,W] each.
void fill_eye_cpu(
    const at::Tensor& planar,
    const at::Tensor& greys,
    const at::Tensor& d_all,
    double share,
    EyeResult& eye) {
  const int64_t n = planar.size(0);
  const int64_t h = planar.size(2);
  const int64_t w = planar.size(3);
  const int64_t plane = h * w;
  const float* disparity = d_all.const_data_ptr<float>();
  const at::Tensor sides = eye.hole_sides.contiguous();
  const float* side_ptr = sides.data_ptr<float>();
  const at::Tensor holes = eye.holes.contiguous();
  const bool* hole_ptr = holes.data_ptr<bool>();
  const int32_t* grey_ptr = greys.const_data_ptr<int32_t>();
  const uint8_t* src = planar.const_data_ptr<uint8_t>();
  const int64_t ss[4] = {planar.stride(0), planar.stride(1), planar.stride(2), planar.stride(3)};
  uint8_t* out = eye.image.data_ptr<uint8_t>();
  const int64_t os[4] = {eye.image.stride(0), eye.image.stride(1), eye.image.stride(2), eye.image.stride(3)};
  const auto k = static_cast<float>(share);

  at::parallel_for(0, n * h, 4, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row / h;
      const int64_t y = row % h;
      const float* at_row = side_ptr + i * 4 * plane + y * w;
      const bool* hole_row = hole_ptr + row * w;
      const float* d_frame = disparity + i * plane;
      const uint8_t* s_frame = src + i * ss[0];
      auto colour = [&](int64_t yy, int64_t xx, int c) { return s_frame[c * ss[1] + yy * ss[2] + xx * ss[3]]; };
      int64_t x = 0;
      while ((x = next_hole(hole_row, x, w)) < w) {
        const float side = at_row[3 * plane + x];
        if (side == 0.0f) {
          ++x;
          continue;
        }
        // the run: the pixels that continue this background pixel
        const float e = at_row[x];
        const float bg_d = at_row[plane + x];
        int64_t last = x;
        while (last + 1 < w && hole_row[last + 1] && at_row[3 * plane + last + 1] == side &&
               at_row[last + 1] == e && at_row[plane + last + 1] == bg_d) {
          ++last;
        }
        const float fg_d = at_row[2 * plane + x];
        const float tolerance = background_tolerance(fg_d, bg_d);
        const auto s = static_cast<int64_t>(side);
        const float u_first = static_cast<float>(x) - k * bg_d;
        const float u_last = static_cast<float>(last) - k * bg_d;
        const float depth_beyond = std::max((u_first - e) * -side, (u_last - e) * -side);
        const int64_t p_min = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(depth_beyond)) + 1);
        const int64_t ei = std::min<int64_t>(std::max<int64_t>(static_cast<int64_t>(std::floor(e + 0.5f)), 0), w - 1);
        auto background = [&](int64_t yy, int64_t xx) {
          return xx >= 0 && xx < w && std::fabs(d_frame[yy * w + xx] - bg_d) <= tolerance;
        };
        // the background beside the hole: how many pixels from the edge on are background
        const int64_t limit = p_min + kPatchCandidates + 2;
        int64_t reach = 0;
        while (reach < limit && background(y, ei + s * reach)) {
          ++reach;
        }
        // every pixel the run copies from lies within it (the two taps of each end's sample)
        auto farthest_tap = [&](float u, int64_t p) {
          const auto q0 = static_cast<int64_t>(std::floor(u + static_cast<float>(s * p)));
          return std::max((q0 - ei) * s, (std::min<int64_t>(q0 + 1, w - 1) - ei) * s);
        };
        auto copy_source_ok = [&](float u, int64_t p) { return farthest_tap(u, p) < reach; };
        const int32_t* g_frame = grey_ptr + i * plane;
        auto grey = [&](int64_t yy, int64_t xx) { return static_cast<float>(g_frame[yy * w + xx]); };
        const int64_t y0 = std::max<int64_t>(y - kPatchRows, 0);
        const int64_t y1 = std::min<int64_t>(y + kPatchRows, h - 1);
        // A copy from P reaches farther into the background the larger P is: where the least
        // P's copy would leave the unbroken background, so would every other's, and nothing is
        // copied (the usual case beside a short background: a slope's small steps).
        const bool copies = copy_source_ok(u_first, p_min) && copy_source_ok(u_last, p_min);
        // the strip's spread: what a copy from an unrelated place of it would differ by
        float strip_sum = 0.0f;
        float strip_square = 0.0f;
        int64_t strip_count = 0;
        for (int64_t yy = y0; yy <= y1 && copies; ++yy) {
          for (int64_t a = 0; a < kPatchWidth; ++a) {
            const int64_t xa = ei + s * a;
            if (background(yy, xa)) {
              const float g = grey(yy, xa);
              strip_sum += g;
              strip_square += g * g;
              ++strip_count;
            }
          }
        }
        int64_t best_p = -1;
        // a copy must beat this: the background demonstrably repeats (the Note's step 4)
        float best_cost = 0.0f;
        if (strip_count >= kFewestPairs) {
          const float mean = strip_sum / static_cast<float>(strip_count);
          best_cost = kPatchRepeats * 2.0f * std::max(strip_square / static_cast<float>(strip_count) - mean * mean, 0.0f);
        }
        for (int64_t c = 0; c < kPatchCandidates && best_cost > 0.0f; ++c) {
          const int64_t p = p_min + c;
          if (!copy_source_ok(u_first, p) || !copy_source_ok(u_last, p)) {
            break; // nor will any larger P's
          }
          float sum = 0.0f;
          int64_t count = 0;
          bool beaten = false;
          for (int64_t yy = y0; yy <= y1 && !beaten; ++yy) {
            for (int64_t a = 0; a < kPatchWidth; ++a) {
              const int64_t xa = ei + s * a;
              const int64_t xb = xa + s * p;
              if (!background(yy, xa) || !background(yy, xb)) {
                continue;
              }
              const float diff = grey(yy, xa) - grey(yy, xb);
              sum += diff * diff;
              ++count;
            }
            // the mean cannot come under the best any more (at most kStripPixels pairs)
            beaten = sum >= best_cost * static_cast<float>(kStripPixels);
          }
          if (beaten || count < kFewestPairs) {
            continue;
          }
          const float cost = sum / static_cast<float>(count);
          if (cost < best_cost) {
            best_cost = cost;
            best_p = p;
          }
        }
        if (best_p > 0) {
          // the strip's mean difference between the edge and its copy
          float offset[3] = {0.0f, 0.0f, 0.0f};
          int64_t count = 0;
          for (int64_t yy = std::max<int64_t>(y - kPatchRows, 0); yy <= std::min<int64_t>(y + kPatchRows, h - 1); ++yy) {
            for (int64_t a = 0; a < kPatchWidth; ++a) {
              const int64_t xa = ei + s * a;
              const int64_t xb = xa + s * best_p;
              if (!background(yy, xa) || !background(yy, xb)) {
                continue;
              }
              for (int ch = 0; ch < 3; ++ch) {
                offset[ch] += static_cast<float>(colour(yy, xa, ch)) - static_cast<float>(colour(yy, xb, ch));
              }
              ++count;
            }
          }
          for (float& o : offset) {
            o /= static_cast<float>(count);
          }
          uint8_t* o_row = out + i * os[0] + y * os[2];
          for (int64_t p = x; p <= last; ++p) {
            const float q = static_cast<float>(p) - k * bg_d + static_cast<float>(s * best_p);
            const float q_clamped = std::min(std::max(q, 0.0f), static_cast<float>(w - 1));
            const auto q0 = static_cast<int64_t>(std::floor(q_clamped));
            const int64_t q1 = std::min<int64_t>(q0 + 1, w - 1);
            const float frac = q_clamped - static_cast<float>(q0);
            for (int ch = 0; ch < 3; ++ch) {
              const float v = static_cast<float>(colour(y, q0, ch)) * (1.0f - frac) +
                  static_cast<float>(colour(y, q1, ch)) * frac + offset[ch];
              o_row[ch * os[1] + p * os[3]] = to_byte(v);
            }
          }
        } else {
          fade_run(
              row_view{s_frame, ss, out + i * os[0] + y * os[2], os, d_frame, h, w, y}, bg_d, tolerance, ei, s, e, side,
              k * bg_d, x, last);
        }
        x = last + 1;
      }
    }
  });
}

} // namespace

void fill_from_patches_cpu(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    const std::vector<std::pair<double, EyeResult*>>& eyes) {
  for (const auto& [share, eye] : eyes) {
    check_eye(frames, disparity, *eye);
  }
  SBSCONV_CHECK(frames.is_cpu(), Internal, "stereo", "the native patch fill needs CPU tensors");
  if (eyes.empty()) {
    return;
  }
  // once for all the eyes: the frames planar (the engine's are channels-last) and each pixel's
  // grey, which the strips read a row at a time
  const at::Tensor planar = frames.contiguous();
  const int64_t plane = planar.size(2) * planar.size(3);
  at::Tensor greys = at::empty({planar.size(0), planar.size(2), planar.size(3)}, at::kInt);
  {
    const uint8_t* rgb = planar.const_data_ptr<uint8_t>();
    int32_t* g = greys.mutable_data_ptr<int32_t>();
    at::parallel_for(0, planar.size(0), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const uint8_t* r = rgb + i * 3 * plane;
        int32_t* gi = g + i * plane;
        for (int64_t p = 0; p < plane; ++p) {
          gi[p] = int32_t{r[p]} + r[plane + p] + r[2 * plane + p];
        }
      }
    });
  }
  const at::Tensor d_all = disparity.to(at::kFloat).contiguous();
  for (const auto& [share, eye] : eyes) {
    fill_eye_cpu(planar, greys, d_all, share, *eye);
  }
}

// ---- the tensor version (any device) -----------------------------------------------------------

void fill_from_patches_tensor(const at::Tensor& frames, const at::Tensor& disparity_in, double share, EyeResult& eye) {
  at::InferenceMode guard;
  check_eye(frames, disparity_in, eye);
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  const auto dev = frames.device();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(dev);
  const at::Tensor side_all = eye.hole_sides.select(1, 3); // [N,H,W]
  const at::Tensor e_all = eye.hole_sides.select(1, 0);
  const at::Tensor bgd_all = eye.hole_sides.select(1, 1);
  const at::Tensor pending = eye.holes.select(1, 0) & (side_all != 0);
  // a run starts where the pixel to the left is not part of the same run
  at::Tensor same_as_left = at::zeros_like(pending);
  same_as_left.narrow(2, 1, w - 1)
      .copy_(
          pending.narrow(2, 0, w - 1) & pending.narrow(2, 1, w - 1) &
          (side_all.narrow(2, 0, w - 1) == side_all.narrow(2, 1, w - 1)) &
          (e_all.narrow(2, 0, w - 1) == e_all.narrow(2, 1, w - 1)) &
          (bgd_all.narrow(2, 0, w - 1) == bgd_all.narrow(2, 1, w - 1)));
  const at::Tensor where = pending.nonzero(); // [M,3]: frame, y, x, in row order
  const int64_t m = where.size(0);
  if (m == 0) {
    return;
  }
  const at::Tensor fi = where.select(1, 0);
  const at::Tensor yi = where.select(1, 1);
  const at::Tensor xi = where.select(1, 2);
  const at::Tensor pixel = (fi * h + yi) * w + xi;
  const at::Tensor starts = same_as_left.view(-1).index_select(0, pixel).logical_not();
  const at::Tensor run_of = starts.to(at::kLong).cumsum(0) - 1; // [M]
  const at::Tensor first_pixel = starts.nonzero().squeeze(1); // [R], indices into the M pixels
  const int64_t runs = first_pixel.size(0);
  const at::Tensor described = eye.hole_sides.permute({0, 2, 3, 1}).reshape({-1, 4});
  const at::Tensor run_desc = described.index_select(0, pixel.index_select(0, first_pixel)); // [R,4]
  const at::Tensor e = run_desc.select(1, 0);
  const at::Tensor bg_d = run_desc.select(1, 1);
  const at::Tensor tolerance = background_tolerance(run_desc.select(1, 2), bg_d);
  const at::Tensor s = run_desc.select(1, 3);
  const at::Tensor run_frame = fi.index_select(0, first_pixel);
  const at::Tensor run_y = yi.index_select(0, first_pixel);
  const double k = share;
  // each pixel's hidden point and the run's deepest
  const at::Tensor s_pixel = s.index_select(0, run_of);
  const at::Tensor u = xi.to(at::kFloat) - k * bgd_all.reshape(-1).index_select(0, pixel);
  const at::Tensor beyond = (u - e.index_select(0, run_of)) * -s_pixel;
  const at::Tensor deepest = at::full({runs}, -std::numeric_limits<float>::infinity(), f32)
                                 .scatter_reduce(0, run_of, beyond, "amax", true);
  const at::Tensor p_min = (at::ceil(deepest) + 1).clamp_min(1).to(at::kLong); // [R]
  const at::Tensor ei = at::floor(e + 0.5).clamp(0, static_cast<double>(w - 1)).to(at::kLong);
  const at::Tensor s_long = s.to(at::kLong);
  // the last pixel of each run: its hidden point
  const at::Tensor last_pixel = at::cat({first_pixel.narrow(0, 1, runs - 1) - 1, at::full({1}, m - 1, i64)});
  const at::Tensor u_first = u.index_select(0, first_pixel);
  const at::Tensor u_last = u.index_select(0, last_pixel);

  const at::Tensor d_flat = disparity_in.to(at::kFloat).reshape(-1);
  const at::Tensor rgb = frames.permute({0, 2, 3, 1}).reshape({-1, 3}); // uint8 [N*H*W,3]
  const at::Tensor dy = at::arange(-kPatchRows, kPatchRows + 1, i64); // [Y]
  const at::Tensor a = at::arange(kPatchWidth, i64); // [A]
  const at::Tensor cands = at::arange(kPatchCandidates, i64); // [C]
  // whether (frame, row, column) is inside and at the run's background disparity, and its flat index
  auto lookup = [&](const at::Tensor& f, const at::Tensor& yy, const at::Tensor& xx, const at::Tensor& bg,
                    const at::Tensor& tol) {
    const at::Tensor inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w);
    const at::Tensor flat = (f * h + yy.clamp(0, h - 1)) * w + xx.clamp(0, w - 1);
    const at::Tensor d = d_flat.index_select(0, flat.reshape(-1)).view(flat.sizes());
    return std::make_pair(inside & ((d - bg).abs() <= tol), flat);
  };
  // chunks of runs: [r, C, Y, A] elements each
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 22) / (kPatchCandidates * kStripPixels));
  at::Tensor best_p = at::empty({runs}, i64);
  at::Tensor offsets = at::empty({runs, 3}, f32);
  for (int64_t r0 = 0; r0 < runs; r0 += chunk) {
    const int64_t rn = std::min(chunk, runs - r0);
    auto sel = [&](const at::Tensor& t) { return t.narrow(0, r0, rn); };
    const at::Tensor f = sel(run_frame).view({rn, 1, 1, 1});
    const at::Tensor sr = sel(s_long).view({rn, 1, 1, 1});
    const at::Tensor bg = sel(bg_d).view({rn, 1, 1, 1});
    const at::Tensor tol = sel(tolerance).view({rn, 1, 1, 1});
    const at::Tensor p = sel(p_min).view({rn, 1}) + cands.view({1, -1}); // [r,C]
    const at::Tensor yy = sel(run_y).view({rn, 1, 1, 1}) + dy.view({1, 1, -1, 1}); // [r,1,Y,1]
    const at::Tensor xa = sel(ei).view({rn, 1, 1, 1}) + sr * a.view({1, 1, 1, -1}); // [r,1,1,A]
    const at::Tensor xb = xa + sr * p.view({rn, -1, 1, 1}); // [r,C,1,A]
    const auto [ok_a, flat_a] = lookup(f, yy.expand({rn, 1, -1, kPatchWidth}), xa.expand({rn, 1, 2 * kPatchRows + 1, -1}), bg, tol);
    const auto [ok_b, flat_b] = lookup(f, yy.expand({rn, kPatchCandidates, -1, kPatchWidth}), xb.expand({rn, -1, 2 * kPatchRows + 1, -1}), bg, tol);
    const at::Tensor pair = ok_a & ok_b; // [r,C,Y,A]
    const int64_t rows = 2 * kPatchRows + 1;
    // the background beside the hole: how many pixels from the edge on are background
    const int64_t limit = sel(p_min).max().item<int64_t>() + kPatchCandidates + 2;
    const at::Tensor steps = at::arange(limit, i64).view({1, -1}); // [1,L]
    const at::Tensor along = sel(ei).view({rn, 1}) + sel(s_long).view({rn, 1}) * steps; // [r,L]
    const at::Tensor row_r = sel(run_y).view({rn, 1}).expand({rn, limit});
    const at::Tensor on_background =
        lookup(sel(run_frame).view({rn, 1}), row_r, along, sel(bg_d).view({rn, 1}), sel(tolerance).view({rn, 1})).first;
    const at::Tensor reach = on_background.to(at::kLong).cumprod(1).sum(1).view({rn, 1}); // [r,1]
    // every pixel the run copies from lies within it (the two taps of each end's sample)
    auto source_ok = [&](const at::Tensor& uu) {
      const at::Tensor q0 = at::floor(sel(uu).view({rn, 1}) + sel(s).view({rn, 1}) * p.to(at::kFloat)).to(at::kLong);
      const at::Tensor sr2 = sel(s_long).view({rn, 1});
      const at::Tensor e2 = sel(ei).view({rn, 1});
      const at::Tensor far = at::maximum((q0 - e2) * sr2, ((q0 + 1).clamp_max(w - 1) - e2) * sr2);
      return far < reach;
    };
    auto grey_at = [&](const at::Tensor& flat) {
      return rgb.index_select(0, flat.reshape(-1)).to(at::kFloat).sum(1).view(flat.sizes());
    };
    const at::Tensor grey_a = grey_at(flat_a); // [r,1,Y,A]
    const at::Tensor grey_b = grey_at(flat_b); // [r,C,Y,A]
    // the strip's spread: what a copy from an unrelated place of it would differ by
    const at::Tensor strip = ok_a.to(at::kFloat);
    const at::Tensor strip_count = strip.sum({1, 2, 3});
    const at::Tensor strip_mean = (grey_a * strip).sum({1, 2, 3}) / strip_count.clamp_min(1);
    const at::Tensor strip_var =
        ((grey_a * grey_a * strip).sum({1, 2, 3}) / strip_count.clamp_min(1) - strip_mean * strip_mean).clamp_min(0);
    const at::Tensor threshold = at::where(strip_count >= static_cast<double>(kFewestPairs),
                                           strip_var * (2.0 * kPatchRepeats), 0.0f); // [r]
    const at::Tensor diff = grey_a - grey_b;
    const at::Tensor count = pair.sum({2, 3}).to(at::kFloat); // [r,C]
    const at::Tensor sum = (diff * diff * pair.to(at::kFloat)).sum({2, 3});
    const at::Tensor valid = (count >= static_cast<double>(kFewestPairs)) & source_ok(u_first) & source_ok(u_last);
    const at::Tensor cost = at::where(valid, sum / count.clamp_min(1), std::numeric_limits<float>::infinity());
    const at::Tensor choice = cost.argmin(1); // the first: the smallest P among equals
    const at::Tensor best = cost.gather(1, choice.unsqueeze(1)).squeeze(1);
    const at::Tensor any = valid.any(1) & (best < threshold); // the background demonstrably repeats
    best_p.narrow(0, r0, rn).copy_(at::where(any, p.gather(1, choice.unsqueeze(1)).squeeze(1), -1));
    // the strip's mean RGB difference between the edge and the chosen copy
    const at::Tensor chosen_b = flat_b.gather(1, choice.view({rn, 1, 1, 1}).expand({rn, 1, rows, kPatchWidth}));
    const at::Tensor chosen_pair = pair.gather(1, choice.view({rn, 1, 1, 1}).expand({rn, 1, rows, kPatchWidth}));
    const at::Tensor rgb_a = rgb.index_select(0, flat_a.reshape(-1)).to(at::kFloat).view({rn, rows * kPatchWidth, 3});
    const at::Tensor rgb_b = rgb.index_select(0, chosen_b.reshape(-1)).to(at::kFloat).view({rn, rows * kPatchWidth, 3});
    const at::Tensor w_chosen = chosen_pair.reshape({rn, rows * kPatchWidth, 1}).to(at::kFloat);
    offsets.narrow(0, r0, rn).copy_(((rgb_a - rgb_b) * w_chosen).sum(1) / w_chosen.sum(1).clamp_min(1));
  }
  // the Note's step 6 for the runs that found none: the strip's mean and the fade's length
  at::Tensor fade_mean = at::zeros({runs, 3}, f32);
  at::Tensor fade_length = at::full({runs}, kFadeLongest, f32);
  at::Tensor fades = at::zeros({runs}, at::TensorOptions().dtype(at::kBool).device(dev));
  {
    constexpr int64_t rows = 2 * kFadeRows + 1;
    const at::Tensor fade_dy = at::arange(-kFadeRows, kFadeRows + 1, i64); // [Y]
    const at::Tensor fade_a = at::arange(kFadeWidth, i64); // [A]
    const int64_t fade_chunk = std::max<int64_t>(1, (int64_t{1} << 22) / (rows * kFadeWidth * 3));
    for (int64_t r0 = 0; r0 < runs; r0 += fade_chunk) {
      const int64_t rn = std::min(fade_chunk, runs - r0);
      auto sel = [&](const at::Tensor& t) { return t.narrow(0, r0, rn); };
      const at::Tensor yy = (sel(run_y).view({rn, 1, 1}) + fade_dy.view({1, -1, 1})).expand({rn, rows, kFadeWidth});
      const at::Tensor xx = (sel(ei).view({rn, 1, 1}) + sel(s_long).view({rn, 1, 1}) * fade_a.view({1, 1, -1})).expand({rn, rows, kFadeWidth});
      const auto [on, flat] = lookup(sel(run_frame).view({rn, 1, 1}), yy, xx, sel(bg_d).view({rn, 1, 1}), sel(tolerance).view({rn, 1, 1}));
      const at::Tensor weight = on.to(at::kFloat); // [r,Y,A]
      const at::Tensor colours = rgb.index_select(0, flat.reshape(-1)).to(at::kFloat).view({rn, rows, kFadeWidth, 3});
      const at::Tensor count = weight.sum({1, 2}); // [r]
      const at::Tensor n = count.clamp_min(1).unsqueeze(1);
      const at::Tensor sum = (colours * weight.unsqueeze(3)).sum({1, 2}); // [r,3]
      const at::Tensor mean = sum / n;
      const at::Tensor grey_mean = sum.sum(1) / n.squeeze(1); // [r]
      const at::Tensor centred = (colours.sum(3) - grey_mean.view({rn, 1, 1})) * weight; // [r,Y,A]
      const at::Tensor variance = (centred * centred).sum({1, 2}) / n.squeeze(1);
      const at::Tensor pair = weight.narrow(2, 0, kFadeWidth - 1) * weight.narrow(2, 1, kFadeWidth - 1);
      const at::Tensor pairs = pair.sum({1, 2});
      const at::Tensor product = (centred.narrow(2, 0, kFadeWidth - 1) * centred.narrow(2, 1, kFadeWidth - 1)).sum({1, 2});
      const at::Tensor correlation = (product / pairs.clamp_min(1) / variance.clamp_min(1e-30)).clamp(0.0, 0.999);
      const at::Tensor length = at::where(
          (variance > 0) & (pairs > 0), (correlation / (1 - correlation)).clamp(1.0, kFadeLongest), kFadeLongest);
      fade_mean.narrow(0, r0, rn).copy_(mean);
      fade_length.narrow(0, r0, rn).copy_(length);
      fades.narrow(0, r0, rn).copy_((count >= static_cast<double>(kFadeWidth)) & (sel(best_p) <= 0));
    }
  }
  // the colours of the runs that found a P
  const at::Tensor p_pixel = best_p.index_select(0, run_of);
  const at::Tensor q = (u + s_pixel * p_pixel.to(at::kFloat)).clamp(0, static_cast<double>(w - 1));
  const at::Tensor q0 = at::floor(q).to(at::kLong);
  const at::Tensor q1 = (q0 + 1).clamp_max(w - 1);
  const at::Tensor frac = (q - q0.to(at::kFloat)).unsqueeze(1);
  const at::Tensor base = (fi * h + yi) * w;
  const at::Tensor value = rgb.index_select(0, base + q0).to(at::kFloat) * (1 - frac) + rgb.index_select(0, base + q1).to(at::kFloat) * frac +
      offsets.index_select(0, run_of);
  const at::Tensor image = eye.image.permute({0, 2, 3, 1}); // [N,H,W,3] view
  const at::Tensor current = image.reshape({-1, 3}).index_select(0, pixel).to(at::kFloat);
  // and of those that fade
  const at::Tensor rho = (1 / (1 + beyond.clamp_min(0) / fade_length.index_select(0, run_of))).unsqueeze(1);
  const at::Tensor mean = fade_mean.index_select(0, run_of);
  const at::Tensor faded = at::where(fades.index_select(0, run_of).unsqueeze(1), at::floor(mean + rho * (current - mean) + 0.5).clamp(0, 255), current);
  const at::Tensor written = at::where((p_pixel > 0).unsqueeze(1), at::floor(value + 0.5).clamp(0, 255), faded);
  // index_put_ through the (possibly strided) view
  image.index_put_({fi, yi, xi}, written.to(at::kByte));
}

} // namespace sbsconv
