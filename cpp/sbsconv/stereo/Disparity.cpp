#include "sbsconv/stereo/Disparity.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include <cmath>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {
void check_depth(const at::Tensor& depth) {
  SBSCONV_CHECK(
      depth.dim() == 4 && depth.size(1) == 1 && at::isFloatingType(depth.scalar_type()),
      Option,
      "stereo",
      "depth must be a floating-point tensor [N,1,H,W]");
}
} // namespace

namespace {

// m: the largest shift in pixels, from max_shift or the divergence.
double shift_scale(int64_t eye_width, double divergence_percent, std::optional<double> max_shift) {
  if (max_shift) {
    SBSCONV_CHECK(std::isfinite(*max_shift) && *max_shift >= 0, Option, "stereo", "max_shift must be >= 0 pixels");
    return *max_shift;
  }
  SBSCONV_CHECK(
      std::isfinite(divergence_percent) && divergence_percent >= 0 && divergence_percent <= 20,
      Option,
      "stereo",
      "divergence must be within 0..20 (percent of the eye width)");
  return divergence_percent / 100.0 * static_cast<double>(eye_width);
}

// One value per frame ([N]) as [N,1,1,1] on the depth's device, or one for all.
at::Tensor per_frame(const at::Tensor& values, const at::Tensor& depth, const char* what) {
  SBSCONV_CHECK(values.numel() == 1 || values.numel() == depth.size(0), Option, "stereo",
                std::string("give one ") + what + ", or one per frame");
  return to_device(values.to(at::kFloat).flatten(), depth.device()).view({-1, 1, 1, 1});
}

} // namespace

at::Tensor disparity_from_relative(
    const at::Tensor& depth,
    int64_t eye_width,
    double divergence_percent,
    double convergence,
    std::optional<double> max_shift) {
  check_depth(depth);
  SBSCONV_CHECK(
      std::isfinite(convergence) && convergence >= 0 && convergence <= 1,
      Option,
      "stereo",
      "convergence must be within 0..1");
  const double m = shift_scale(eye_width, divergence_percent, max_shift);
  return depth.to(at::kFloat).clamp(0.0, 1.0).sub(convergence).mul_(m);
}

at::Tensor disparity_from_relative(
    const at::Tensor& depth,
    int64_t eye_width,
    double divergence_percent,
    const at::Tensor& convergence,
    std::optional<double> max_shift) {
  check_depth(depth);
  const double m = shift_scale(eye_width, divergence_percent, max_shift);
  // values outside 0..1 are clamped there, as the depth is (checking them would need the host)
  const at::Tensor c = per_frame(convergence, depth, "convergence").clamp(0.0, 1.0);
  return depth.to(at::kFloat).clamp(0.0, 1.0).sub(c).mul_(m);
}

at::Tensor disparity_from_metric(
    const at::Tensor& depth_metres,
    int64_t eye_width,
    double ipd_metres,
    const at::Tensor& fov_degrees,
    double screen_distance_metres) {
  SBSCONV_CHECK(
      std::isfinite(screen_distance_metres) && screen_distance_metres > 0,
      Option,
      "stereo",
      "the screen distance must be > 0 m");
  return disparity_from_metric(
      depth_metres, eye_width, ipd_metres, fov_degrees,
      at::full({1}, 1.0 / screen_distance_metres, depth_metres.options().dtype(at::kFloat)));
}

at::Tensor disparity_from_metric(
    const at::Tensor& depth_metres,
    int64_t eye_width,
    double ipd_metres,
    const at::Tensor& fov_degrees,
    const at::Tensor& inverse_screen_distance) {
  check_depth(depth_metres);
  SBSCONV_CHECK(std::isfinite(ipd_metres) && ipd_metres > 0 && ipd_metres < 1, Option, "stereo",
                "ipd must be within 0..1 m");
  SBSCONV_CHECK(
      fov_degrees.numel() == 1 || fov_degrees.numel() == depth_metres.size(0),
      Option,
      "stereo",
      "give one field of view, or one per frame");
  {
    // Checked on the host, where the engine keeps the field of view (Note [Host
    // synchronisation]).
    HostScope host;
    const at::Tensor f = fov_degrees.is_cpu() ? fov_degrees : to_host(fov_degrees);
    SBSCONV_CHECK(
        (f >= 1.0).all().item<bool>() && (f <= 179.0).all().item<bool>(),
        Option,
        "stereo",
        "the field of view must be within 1..179 degrees");
  }
  at::Tensor fov = to_device(fov_degrees.to(at::kFloat).flatten(), depth_metres.device());
  at::Tensor focal = (static_cast<double>(eye_width) / 2.0) / at::tan(fov * (M_PI / 360.0));
  focal = focal.view({-1, 1, 1, 1});
  at::Tensor inverse = depth_metres.to(at::kFloat).clamp_min(1e-3).reciprocal();
  return inverse.sub_(per_frame(inverse_screen_distance, depth_metres, "screen distance")).mul_(focal * ipd_metres);
}

namespace {

void check_dilation(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius) {
  SBSCONV_CHECK(radius <= 32, Option, "stereo", "edge dilation must be within 0..32 pixels");
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3 && disparity.dim() == 4 && disparity.size(1) == 1 &&
          frames.size(0) == disparity.size(0) && frames.size(2) == disparity.size(2) &&
          frames.size(3) == disparity.size(3),
      Option, "stereo", "the frames and their disparity must match");
}

// The thresholds of Note [Depth edges snapped to colour edges].
constexpr float kEdge = 1.0f; // a depth edge: the window's disparity spans more than this
constexpr float kSpread = 4.0f; // two standard deviations, squared
constexpr float kSlack = 300.0f; // and 10 levels (squared, over three channels)
constexpr int kSums = 11; // a window's: near, far, rgb * near, rgb * far, rgb^2 * far
constexpr float kNearer = 1.5f; // squared distance to the foreground's mean under 1.5 times the background's

} // namespace

at::Tensor dilate_foreground_tensor(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius) {
  if (radius <= 0) {
    return disparity;
  }
  check_dilation(disparity, frames, radius);
  at::InferenceMode guard;
  // windows along the rows: [x - r, x + r], clipped
  auto row_max = [](const at::Tensor& v, int64_t r) {
    return at::max_pool2d(v, {1, 2 * r + 1}, {1, 1}, {0, r});
  };
  auto row_sum = [](const at::Tensor& v, int64_t r) {
    return at::avg_pool2d(v, {1, 2 * r + 1}, {1, 1}, {0, r}, false, /*count_include_pad*/ true) *
        static_cast<double>(2 * r + 1);
  };
  const at::Tensor d = disparity.to(at::kFloat);
  const at::Tensor high = row_max(d, radius);
  const at::Tensor low = row_max(d.neg(), radius).neg();
  const at::Tensor edge = (high - low) > kEdge;
  const int64_t c = 3 * radius + 2;
  const at::Tensor near = (d > (row_max(d, c) - row_max(d.neg(), c)) * 0.5).to(at::kFloat);
  const at::Tensor far = 1.0 - row_max(near, radius);
  const at::Tensor rgb = frames.to(at::kFloat);
  const at::Tensor sums = row_sum(at::cat({near, far, rgb * near, rgb * far, rgb * rgb * far}, 1), 2 * radius + 2);
  const at::Tensor near_count = sums.narrow(1, 0, 1);
  const at::Tensor far_count = sums.narrow(1, 1, 1);
  const at::Tensor near_colour = sums.narrow(1, 2, 3) / near_count.clamp_min(1.0);
  const at::Tensor far_colour = sums.narrow(1, 5, 3) / far_count.clamp_min(1.0);
  const at::Tensor far_square = sums.narrow(1, 8, 3) / far_count.clamp_min(1.0);
  const at::Tensor to_near = (rgb - near_colour).pow(2).sum(1, true);
  const at::Tensor to_far = (rgb - far_colour).pow(2).sum(1, true);
  const at::Tensor spread = (far_square - far_colour.pow(2)).sum(1, true).clamp_min(0.0);
  const at::Tensor looks_near = (to_far > spread * kSpread + kSlack) & (to_near < to_far * kNearer) &
      (near_count > 0.5) & (far_count > 0.5);
  const at::Tensor ramp = d > (high + low) * 0.5;
  return at::where(edge & (ramp | looks_near), high, d);
}

namespace {

// The largest (and, when `smallest` is given, the smallest) of v over [x - r, x + r], clipped
// to the row's w values, for every x: the windows of Note [Depth edges snapped to colour
// edges]. Windows of up to 5 values are scanned directly; wider ones by van Herk / Gil-Werman:
// in blocks of k = 2r+1 values, the running extreme from each block's start (`ahead`) and from
// its end (`behind`); a window spans at most two blocks, so its extreme is that of behind[x - r]
// and ahead[x + r] (three comparisons a value for any r). `scratch` holds 3 (w + 2r) floats.
template <typename Better>
void window_extreme(const float* v, int64_t w, int64_t r, float pad, Better better, float* out, float* scratch) {
  const int64_t k = 2 * r + 1;
  const int64_t n = w + 2 * r; // v padded by r on each side with values that never win
  float* p = scratch;
  float* ahead = scratch + n;
  float* behind = scratch + 2 * n;
  std::fill(p, p + r, pad);
  std::copy(v, v + w, p + r);
  std::fill(p + r + w, p + n, pad);
  for (int64_t start = 0; start < n; start += k) {
    const int64_t stop = std::min(start + k, n);
    ahead[start] = p[start];
    for (int64_t i = start + 1; i < stop; ++i) {
      ahead[i] = better(ahead[i - 1], p[i]);
    }
    behind[stop - 1] = p[stop - 1];
    for (int64_t i = stop - 2; i >= start; --i) {
      behind[i] = better(behind[i + 1], p[i]);
    }
  }
  for (int64_t x = 0; x < w; ++x) { // the window of x is padded [x, x + 2r]
    out[x] = better(behind[x], ahead[x + 2 * r]);
  }
}

// The extremes of the windows [x - R, x + R] that lie wholly within the row (x in [R, w - R)),
// R fixed so that the compiler unrolls the taps and vectorises over x. Returns w - R (or R when
// the row has no such window).
template <int R>
int64_t fixed_window_extremes(const float* v, int64_t w, float* largest, float* smallest) {
  const int64_t end = std::max<int64_t>(w - R, R);
  for (int64_t x = R; x < end; ++x) {
    float mx = v[x - R];
    for (int i = 1; i <= 2 * R; ++i) {
      mx = std::max(mx, v[x - R + i]);
    }
    largest[x] = mx;
  }
  if (smallest != nullptr) {
    for (int64_t x = R; x < end; ++x) {
      float mn = v[x - R];
      for (int i = 1; i <= 2 * R; ++i) {
        mn = std::min(mn, v[x - R + i]);
      }
      smallest[x] = mn;
    }
  }
  return end;
}

void sliding_extremes(const float* v, int64_t w, int64_t r, float* largest, float* smallest, float* scratch) {
  if (r > 2) {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    window_extreme(v, w, r, -kInf, [](float a, float b) { return std::max(a, b); }, largest, scratch);
    if (smallest != nullptr) {
      window_extreme(v, w, r, kInf, [](float a, float b) { return std::min(a, b); }, smallest, scratch);
    }
    return;
  }
  // windows of 3 or 5 values: the inner ones with their taps fixed (the loop vectorises),
  // the clipped ones at the ends below
  int64_t inner_end = 0;
  if (r == 1) {
    inner_end = fixed_window_extremes<1>(v, w, largest, smallest);
  } else if (r == 2) {
    inner_end = fixed_window_extremes<2>(v, w, largest, smallest);
  }
  for (int64_t x = 0; x < w; ++x) {
    if (x == r && inner_end > r) {
      x = inner_end - 1; // [r, inner_end) done
      continue;
    }
    const int64_t lo = std::max<int64_t>(x - r, 0);
    const int64_t hi = std::min<int64_t>(x + r, w - 1);
    float mx = v[lo];
    float mn = v[lo];
    for (int64_t i = lo + 1; i <= hi; ++i) {
      mx = std::max(mx, v[i]);
      mn = std::min(mn, v[i]);
    }
    largest[x] = mx;
    if (smallest != nullptr) {
      smallest[x] = mn;
    }
  }
}

} // namespace

at::Tensor dilate_foreground_cpu(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius) {
  if (radius <= 0) {
    return disparity;
  }
  check_dilation(disparity, frames, radius);
  SBSCONV_CHECK(frames.is_cpu() && disparity.is_cpu(), Option, "stereo", "dilate_foreground_cpu needs CPU tensors");
  const at::Tensor d_all = disparity.to(at::kFloat).contiguous();
  at::Tensor out = d_all.clone();
  const int64_t n = frames.size(0);
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  const int64_t fs[4] = {frames.stride(0), frames.stride(1), frames.stride(2), frames.stride(3)};
  const uint8_t* rgb_base = frames.data_ptr<uint8_t>();
  const float* d_base = d_all.data_ptr<float>();
  float* out_base = out.data_ptr<float>();
  const int64_t c = 3 * radius + 2;
  const int64_t s = 2 * radius + 2;
  at::parallel_for(0, n * h, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> high(w), low(w), wide_high(w), wide_low(w), near(w), far(w);
    std::vector<float> scratch(static_cast<size_t>(3 * (w + 2 * c)));
    std::vector<uint32_t> totals(static_cast<size_t>((w + 1) * kSums));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / h;
      const int64_t y = row % h;
      const float* d = d_base + row * w;
      float* o = out_base + row * w;
      sliding_extremes(d, w, radius, high.data(), low.data(), scratch.data());
      bool any_edge = false;
      for (int64_t x = 0; x < w; ++x) {
        any_edge = any_edge || (high[x] - low[x] > kEdge);
      }
      if (!any_edge) {
        continue; // the row keeps its disparity
      }
      sliding_extremes(d, w, c, wide_high.data(), wide_low.data(), scratch.data());
      for (int64_t x = 0; x < w; ++x) {
        near[x] = d[x] > (wide_high[x] + wide_low[x]) * 0.5f ? 1.0f : 0.0f;
      }
      sliding_extremes(near.data(), w, radius, far.data(), nullptr, scratch.data());
      for (int64_t x = 0; x < w; ++x) {
        far[x] = 1.0f - far[x]; // no near pixel within the radius
      }
      const uint8_t* px = rgb_base + b * fs[0] + y * fs[2];
      auto channel = [&](int64_t x, int ch) { return static_cast<float>(px[x * fs[3] + ch * fs[1]]); };
      // The side sums of a window: directly where few pixels need them, else from running
      // totals over the row (one pass, then two reads a window). Both are sums of integers:
      // a window's (4r+5 <= 133 pixels of at most 255^2) is exact in float, and the running
      // totals' differences are exact in uint32 (wrapping), so both ways give the same values.
      int64_t asked = 0;
      for (int64_t x = 0; x < w; ++x) {
        const bool edge = high[x] - low[x] > kEdge;
        const bool below_middle = !(d[x] > (high[x] + low[x]) * 0.5f);
        asked += static_cast<int64_t>(edge) & static_cast<int64_t>(below_middle); // no branch
      }
      const bool running = asked * (2 * s + 1) > 2 * w;
      if (running) {
        uint32_t* t = totals.data(); // 11 totals a position, position x holding [0, x)
        std::fill(t, t + kSums, 0);
        for (int64_t i = 0; i < w; ++i) {
          const uint32_t nr = near[i] != 0.0f;
          const uint32_t fr = far[i] != 0.0f;
          const uint32_t* prev = t + i * kSums;
          uint32_t* cur = t + (i + 1) * kSums;
          cur[0] = prev[0] + nr;
          cur[1] = prev[1] + fr;
          for (int ch = 0; ch < 3; ++ch) {
            const uint32_t v = px[i * fs[3] + ch * fs[1]];
            cur[2 + ch] = prev[2 + ch] + v * nr;
            cur[5 + ch] = prev[5 + ch] + v * fr;
            cur[8 + ch] = prev[8 + ch] + v * v * fr;
          }
        }
      }
      for (int64_t x = 0; x < w; ++x) {
        if (!(high[x] - low[x] > kEdge)) {
          continue;
        }
        if (d[x] > (high[x] + low[x]) * 0.5f) {
          o[x] = high[x]; // the foreground and the ramp up to it
          continue;
        }
        // the two sides' colours over [x - s, x + s]: near, far, rgb*near, rgb*far, rgb^2*far
        const int64_t lo = std::max<int64_t>(x - s, 0);
        const int64_t hi = std::min<int64_t>(x + s, w - 1) + 1;
        float sum[kSums] = {};
        if (running) {
          const uint32_t* a = totals.data() + lo * kSums;
          const uint32_t* z = totals.data() + hi * kSums;
          for (int k = 0; k < kSums; ++k) {
            sum[k] = static_cast<float>(z[k] - a[k]);
          }
        } else {
          for (int64_t i = lo; i < hi; ++i) {
            if (near[i] == 0.0f && far[i] == 0.0f) {
              continue;
            }
            sum[0] += near[i];
            sum[1] += far[i];
            for (int ch = 0; ch < 3; ++ch) {
              const float v = channel(i, ch);
              sum[2 + ch] += v * near[i];
              sum[5 + ch] += v * far[i];
              sum[8 + ch] += v * v * far[i];
            }
          }
        }
        if (!(sum[0] > 0.5f && sum[1] > 0.5f)) {
          continue;
        }
        float to_near = 0.0f;
        float to_far = 0.0f;
        float spread = 0.0f;
        for (int ch = 0; ch < 3; ++ch) {
          const float v = channel(x, ch);
          const float near_mean = sum[2 + ch] / sum[0];
          const float far_mean = sum[5 + ch] / sum[1];
          to_near += (v - near_mean) * (v - near_mean);
          to_far += (v - far_mean) * (v - far_mean);
          spread += sum[8 + ch] / sum[1] - far_mean * far_mean;
        }
        spread = std::max(spread, 0.0f);
        if (to_far > spread * kSpread + kSlack && to_near < to_far * kNearer) {
          o[x] = high[x];
        }
      }
    }
  });
  return out;
}

at::Tensor dilate_foreground(const at::Tensor& disparity, const at::Tensor& frames, int64_t radius) {
  return frames.is_cpu() ? dilate_foreground_cpu(disparity, frames, radius)
                         : dilate_foreground_tensor(disparity, frames, radius);
}

} // namespace sbsconv
