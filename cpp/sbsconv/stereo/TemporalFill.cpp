#include "sbsconv/stereo/TemporalFill.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <ATen/Parallel.h>

#include <cmath>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/Logging.h"

namespace sbsconv {

namespace {

// Note [Temporal fill], step 5: how far along a row the colours taken from other frames are
// continued into the pixels beside them that no frame saw.
constexpr int64_t kEdgeSteps = 2;

// The four pixels a bilinear sample at (x, y) weighs in an h x w plane, positions clamped to
// it: the top-left one's index, the steps to its right and lower neighbours (0 in a plane one
// pixel wide or high) and the fractions towards them. Every sampler below reads its pixels here.
struct Taps {
  int64_t base;
  int64_t dx;
  int64_t dy;
  float fx;
  float fy;
  // the nearest of the four (a fraction of one half or more rounds up)
  int64_t nearest() const {
    return base + (fx >= 0.5f ? dx : 0) + (fy >= 0.5f ? dy : 0);
  }
};

// floor() of a value in [0, 2^31): the truncation, without a libm call per value (baseline
// x86-64 has no rounding instruction), and equal to it there.
inline float floor_nonnegative(float v) {
  return static_cast<float>(static_cast<int32_t>(v));
}

inline Taps taps_at(int64_t h, int64_t w, float x, float y) {
  const float xc = std::min(std::max(x, 0.0f), static_cast<float>(w - 1));
  const float yc = std::min(std::max(y, 0.0f), static_cast<float>(h - 1));
  const float x0 = std::min(floor_nonnegative(xc), static_cast<float>(std::max<int64_t>(w - 2, 0)));
  const float y0 = std::min(floor_nonnegative(yc), static_cast<float>(std::max<int64_t>(h - 2, 0)));
  return {static_cast<int64_t>(y0) * w + static_cast<int64_t>(x0), w > 1 ? 1 : 0, h > 1 ? w : 0, xc - x0, yc - y0};
}

// Taps per point (slot `slot` of a ring [S,H,W,...]): base [M] (counting the slot's pixels).
struct TapTensors {
  at::Tensor base;
  int64_t dx;
  int64_t dy;
  at::Tensor fx;
  at::Tensor fy;
  at::Tensor nearest() const {
    return base + (fx >= 0.5).to(at::kLong) * dx + (fy >= 0.5).to(at::kLong) * dy;
  }
};

TapTensors taps_at(int64_t h, int64_t w, const at::Tensor& slot, const at::Tensor& x, const at::Tensor& y) {
  const at::Tensor xc = x.clamp(0, static_cast<double>(w - 1));
  const at::Tensor yc = y.clamp(0, static_cast<double>(h - 1));
  const at::Tensor x0 = at::floor(xc).clamp(0, static_cast<double>(std::max<int64_t>(w - 2, 0)));
  const at::Tensor y0 = at::floor(yc).clamp(0, static_cast<double>(std::max<int64_t>(h - 2, 0)));
  return {slot * (h * w) + y0.to(at::kLong) * w + x0.to(at::kLong), w > 1 ? 1 : 0, h > 1 ? w : 0, xc - x0, yc - y0};
}

// Bilinear samples of ring [S,H,W,C] (channels last, contiguous) at (x, y) of slot `slot`
// for each of M points: float [M,C]. Positions are clamped to the image.
at::Tensor sample_points(const at::Tensor& ring, const at::Tensor& slot, const at::Tensor& x, const at::Tensor& y) {
  const TapTensors t = taps_at(ring.size(1), ring.size(2), slot, x, y);
  const at::Tensor flat = ring.view({-1, ring.size(3)});
  const at::Tensor fx = t.fx.unsqueeze(1);
  const at::Tensor fy = t.fy.unsqueeze(1);
  auto at_offset = [&](int64_t offset) { return flat.index_select(0, t.base + offset).to(at::kFloat); };
  const at::Tensor top = at_offset(0) * (1 - fx) + at_offset(t.dx) * fx;
  const at::Tensor bottom = at_offset(t.dy) * (1 - fx) + at_offset(t.dy + t.dx) * fx;
  return top * (1 - fy) + bottom * fy;
}

// Bilinear sample of plane [h,w] (channel `c` of `channels`, channels last) at (x, y), clamped
// as sample_points does.
template <typename T>
inline float bilinear(const T* plane, int64_t h, int64_t w, int64_t channels, int64_t c, float x, float y) {
  const Taps t = taps_at(h, w, x, y);
  auto v = [&](int64_t i) { return static_cast<float>(plane[i * channels + c]); };
  const float top = v(t.base) * (1 - t.fx) + v(t.base + t.dx) * t.fx;
  const float bottom = v(t.base + t.dy) * (1 - t.fx) + v(t.base + t.dy + t.dx) * t.fx;
  return top * (1 - t.fy) + bottom * t.fy;
}

// bilinear() of the three channels of an interleaved RGB plane, the taps found once.
template <typename T>
inline void bilinear_rgb(const T* plane, int64_t h, int64_t w, float x, float y, float colour[3]) {
  const Taps t = taps_at(h, w, x, y);
  for (int64_t c = 0; c < 3; ++c) {
    auto v = [&](int64_t i) { return static_cast<float>(plane[i * 3 + c]); };
    const float top = v(t.base) * (1 - t.fx) + v(t.base + t.dx) * t.fx;
    const float bottom = v(t.base + t.dy) * (1 - t.fx) + v(t.base + t.dy + t.dx) * t.fx;
    colour[c] = top * (1 - t.fy) + bottom * t.fy;
  }
}

// Step 3: how far above the anchor's disparity a point seen in another frame may lie and still
// be the anchor's surface: a sixth of the way to the hole's foreground disparity
// (background_tolerance(fg, bg, kPointParts)), at least half a pixel. The anchor's own checks
// allow a third: a surface between the two, such as the trucking scene's panel at 4 m between a
// 1.4 m square and a 12 m wall, would pass that, and its colour be taken for the wall's it hides
// (at 720p this stricter test gains that scene 0.2-0.3 dB in its disocclusions and lowers their
// flicker, benchmarks/RESULTS.md).
constexpr float kPointParts = 6.0f;

// The largest of the four values bilinear() weighs at (x, y): a sample that mixes in none of
// a nearer surface has all four at the background's disparity.
inline float largest_tap(const float* plane, int64_t h, int64_t w, float x, float y) {
  const Taps t = taps_at(h, w, x, y);
  return std::max(
      std::max(plane[t.base], plane[t.base + t.dx]), std::max(plane[t.base + t.dy], plane[t.base + t.dy + t.dx]));
}

// The value at the pixel nearest (x, y) among the four bilinear() weighs.
inline float nearest_tap(const float* plane, int64_t h, int64_t w, float x, float y) {
  return plane[taps_at(h, w, x, y).nearest()];
}

// Note [Temporal fill], step 3 at a surface's edge: frame (channels last, uint8) sampled at (x, y)
// from those of the four bilinear taps whose disparity is at most `limit` (the background's),
// their weights renormalised; the nearest tap is one of them.
inline void background_sample(
    const uint8_t* frame,
    const float* disparity,
    int64_t h,
    int64_t w,
    float x,
    float y,
    float limit,
    float colour[3]) {
  const Taps t = taps_at(h, w, x, y);
  const int64_t taps[4] = {t.base, t.base + t.dx, t.base + t.dy, t.base + t.dy + t.dx};
  const float weights[4] = {(1 - t.fx) * (1 - t.fy), t.fx * (1 - t.fy), (1 - t.fx) * t.fy, t.fx * t.fy};
  float total = 0.0f;
  float sum[3] = {0.0f, 0.0f, 0.0f};
  for (int i = 0; i < 4; ++i) {
    const float weight = disparity[taps[i]] <= limit ? weights[i] : 0.0f;
    total += weight;
    for (int c = 0; c < 3; ++c) {
      sum[c] += weight * static_cast<float>(frame[taps[i] * 3 + c]);
    }
  }
  for (int c = 0; c < 3; ++c) {
    colour[c] = sum[c] / total; // total >= 1/4: the nearest tap is the background's
  }
}

// nearest_tap() per point ([M]; ring [S,H,W,1]).
at::Tensor nearest_taps(const at::Tensor& ring, const at::Tensor& slot, const at::Tensor& x, const at::Tensor& y) {
  return ring.view({-1}).index_select(0, taps_at(ring.size(1), ring.size(2), slot, x, y).nearest());
}

// background_sample() per point: frames [S,H,W,3] uint8, disparity [S,H,W,1]; [M,3] float.
at::Tensor background_samples(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    const at::Tensor& slot,
    const at::Tensor& x,
    const at::Tensor& y,
    const at::Tensor& limit) {
  const TapTensors t = taps_at(frames.size(1), frames.size(2), slot, x, y);
  const at::Tensor colours = frames.view({-1, 3});
  const at::Tensor d = disparity.view({-1});
  const std::array<int64_t, 4> offsets{0, t.dx, t.dy, t.dy + t.dx};
  const std::array<at::Tensor, 4> weights{(1 - t.fx) * (1 - t.fy), t.fx * (1 - t.fy), (1 - t.fx) * t.fy, t.fx * t.fy};
  at::Tensor total = at::zeros_like(t.fx);
  at::Tensor sum = at::zeros({t.fx.size(0), 3}, t.fx.options());
  for (size_t i = 0; i < offsets.size(); ++i) {
    const at::Tensor tap = t.base + offsets[i];
    const at::Tensor weight = at::where(d.index_select(0, tap) <= limit, weights[i], at::zeros_like(weights[i]));
    total = total + weight;
    sum = sum + weight.unsqueeze(1) * colours.index_select(0, tap).to(at::kFloat);
  }
  return sum / total.clamp_min(1e-12).unsqueeze(1);
}

// The largest of the four values sample_points() weighs, per point ([M]; ring [S,H,W,1]).
at::Tensor largest_taps(const at::Tensor& ring, const at::Tensor& slot, const at::Tensor& x, const at::Tensor& y) {
  const TapTensors t = taps_at(ring.size(1), ring.size(2), slot, x, y);
  const at::Tensor flat = ring.view({-1});
  return at::maximum(
      at::maximum(flat.index_select(0, t.base), flat.index_select(0, t.base + t.dx)),
      at::maximum(flat.index_select(0, t.base + t.dy), flat.index_select(0, t.base + t.dy + t.dx)));
}

} // namespace

TemporalFill::TemporalFill(TemporalFillOptions options) : o_(std::move(options)) {
  SBSCONV_CHECK(
      o_.past >= 0 && o_.ahead >= 0 && o_.flow_width >= 16 && o_.batch_size >= 1, Option, "stereo",
      "the temporal fill's window must not be negative and its flow at least 16 pixels wide");
}

int64_t TemporalFill::ahead() const {
  return capacity_ == 0 ? o_.ahead : ahead_;
}

void TemporalFill::allocate(const at::Tensor& frames) {
  const int64_t batch = o_.batch_size;
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  const int64_t per_frame = h * w * 7; // RGB + float disparity (the flows are small beside them)
  past_ = o_.past;
  ahead_ = o_.ahead;
  const int64_t fits = o_.memory_bytes / std::max<int64_t>(per_frame, 1) - 2 * batch - 1;
  if (past_ + ahead_ > fits) {
    const int64_t each = std::max<int64_t>(fits, 0) / 2;
    log(LogLevel::Warning,
        "the temporal fill looks " + std::to_string(each) + " frames back and ahead instead of " +
            std::to_string(o_.past) + " and " + std::to_string(o_.ahead) + ": " + std::to_string(w) + "x" +
            std::to_string(h) + " frames would need more than " + std::to_string(o_.memory_bytes >> 20) +
            " MiB" + (each == 0 ? " (holes are filled from the frame itself)" : ""));
    past_ = std::min(past_, each);
    ahead_ = std::min(ahead_, each);
  }
  capacity_ = past_ + ahead_ + 2 * batch + 1;
  const at::Tensor gray = flow_gray(frames.narrow(0, 0, 1), o_.flow_width);
  const int64_t gh = gray.size(2);
  const int64_t gw = gray.size(3);
  const auto dev = frames.device();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  // (a slot is read only once it holds a frame; the flows are read before that check, so they
  // start at zero)
  frames_ = at::empty({capacity_, h, w, 3}, at::TensorOptions().dtype(at::kByte).device(dev));
  disparity_ = at::empty({capacity_, h, w, 1}, f32);
  gray_ = at::empty({capacity_, gh, gw, 1}, f32);
  flow_next_ = at::zeros({capacity_, gh, gw, 2}, f32);
  flow_prev_ = at::zeros({capacity_, gh, gw, 2}, f32);
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(dev);
  slot_index_ = at::full({capacity_}, -1, i64);
  slot_shot_ = at::full({capacity_}, -1, i64);
  slot_segment_ = at::full({capacity_}, -1, i64);
  host_index_.assign(static_cast<size_t>(capacity_), -1);
  host_shot_.assign(static_cast<size_t>(capacity_), -1);
  host_segment_.assign(static_cast<size_t>(capacity_), -1);
}

void TemporalFill::push(
    int64_t first,
    const at::Tensor& frames,
    const at::Tensor& disparity,
    const std::vector<bool>& starts_shot,
    bool starts_segment) {
  at::InferenceMode guard;
  const int64_t n = frames.size(0);
  if (n == 0) {
    return;
  }
  if (capacity_ == 0) {
    allocate(frames);
  }
  SBSCONV_CHECK(
      frames.size(2) == frames_.size(1) && frames.size(3) == frames_.size(2) && n <= o_.batch_size,
      Internal, "stereo", "the temporal fill takes frames of one size, in batches of one size");
  // frames that do not follow the last ones (none in the engine) start afresh
  const bool continues = next_index_ >= 0 && first == next_index_;
  const at::Tensor rendered = disparity.to(at::kFloat);
  at::Tensor gray = flow_gray(frames, o_.flow_width); // [N,1,h,w]
  // the flows between neighbours: the previous batch's last frame and these
  at::Tensor a = gray.narrow(0, 0, n - 1);
  at::Tensor b = gray.narrow(0, 1, n - 1);
  if (continues) {
    const at::Tensor last = gray_.select(0, slot(first - 1)).permute({2, 0, 1}).unsqueeze(0);
    a = at::cat({last, a}, 0);
    b = gray;
  }
  at::Tensor forward;
  at::Tensor backward;
  if (a.size(0) > 0) {
    const at::Tensor flow = dense_flow(a, b, o_.flow);
    forward = flow.permute({0, 2, 3, 1}); // of frames first-1.. (or first..)
    backward = invert_flow(flow).permute({0, 2, 3, 1});
  }
  std::vector<int64_t> shots(n);
  std::vector<int64_t> segments(n);
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 && !continues) {
      ++shot_;
      ++segment_;
    } else {
      shot_ += starts_shot.at(i) ? 1 : 0;
      segment_ += (i == 0 && starts_segment) ? 1 : 0;
    }
    shots[i] = shot_;
    segments[i] = segment_;
  }
  at::Tensor slots = at::empty({n}, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    slots[i] = slot(first + i);
  }
  slots = slots.to(frames_.device());
  // Frame by frame into its slot: copy_ reorders a frame to channels last in blocks, where
  // index_copy_ from the permuted batch went element by element (13 ms of the 30 a 1080p frame
  // took here on one thread, benchmarks/RESULTS.md)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t to = slot(first + i);
    frames_.select(0, to).copy_(frames[i].permute({1, 2, 0}));
    disparity_.select(0, to).copy_(rendered[i].permute({1, 2, 0}));
    gray_.select(0, to).copy_(gray[i].permute({1, 2, 0}));
  }
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  slot_index_.index_copy_(0, slots, at::arange(first, first + n, i64).to(slots.device()));
  slot_shot_.index_copy_(0, slots, at::tensor(shots, i64).to(slots.device()));
  slot_segment_.index_copy_(0, slots, at::tensor(segments, i64).to(slots.device()));
  for (int64_t i = 0; i < n; ++i) {
    const auto to = static_cast<size_t>(slot(first + i));
    host_index_[to] = first + i;
    host_shot_[to] = shots[static_cast<size_t>(i)];
    host_segment_[to] = segments[static_cast<size_t>(i)];
  }
  if (forward.defined()) {
    // forward[i] goes from frame (continues ? first-1+i : first+i) to the next one
    const int64_t from = continues ? first - 1 : first;
    for (int64_t i = 0; i < forward.size(0); ++i) {
      flow_next_.select(0, slot(from + i)).copy_(forward[i]);
      flow_prev_.select(0, slot(from + i + 1)).copy_(backward[i]);
    }
  }
  next_index_ = first + n;
}

void TemporalFill::fill(int64_t first, const std::vector<std::pair<double, EyeResult*>>& eyes, Impl impl) {
  if (eyes.empty() || capacity_ == 0 || (past_ == 0 && ahead_ == 0)) {
    return;
  }
  if (native(impl)) {
    fill_cpu(first, eyes);
  } else {
    fill_tensor(first, eyes);
  }
}

void TemporalFill::fill_tensor(int64_t first, const std::vector<std::pair<double, EyeResult*>>& eyes) {
  at::InferenceMode guard;
  const int64_t n = eyes.front().second->image.size(0);
  const int64_t h = frames_.size(1);
  const int64_t w = frames_.size(2);
  const int64_t gh = gray_.size(1);
  const int64_t gw = gray_.size(2);
  const auto dev = frames_.device();
  const int64_t e_count = static_cast<int64_t>(eyes.size());
  std::vector<at::Tensor> holes;
  std::vector<at::Tensor> sides;
  std::vector<double> share_values;
  for (const auto& [share, eye] : eyes) {
    SBSCONV_CHECK(
        eye->hole_sides.defined() && eye->image.size(0) == n, Internal, "stereo",
        "the temporal fill needs eyes rendered with their holes described");
    holes.push_back(eye->holes.view({n, h, w}));
    sides.push_back(eye->hole_sides);
    share_values.push_back(share);
  }
  // the one host synchronisation: which pixels are holes, in every eye of the batch
  const at::Tensor where = at::stack(holes, 0).nonzero(); // [M,4]: eye, frame, y, x
  if (where.size(0) == 0) {
    return;
  }
  const at::Tensor e = where.select(1, 0);
  const at::Tensor fi = where.select(1, 1);
  const at::Tensor yi = where.select(1, 2);
  const at::Tensor xi = where.select(1, 3);
  // the hole's description, gathered from [E,N,4,H,W]
  const at::Tensor described = at::stack(sides, 0).permute({0, 1, 3, 4, 2}).reshape({-1, 4});
  const at::Tensor flat = ((e * n + fi) * h + yi) * w + xi;
  const at::Tensor d = described.index_select(0, flat); // [M,4]
  const at::Tensor bg_x = d.select(1, 0);
  const at::Tensor bg_d = d.select(1, 1);
  const at::Tensor fg_d = d.select(1, 2);
  const at::Tensor side = d.select(1, 3);
  const at::Tensor k = at::tensor(share_values, at::kFloat).to(dev).index_select(0, e);
  const at::Tensor p = xi.to(at::kFloat);
  const at::Tensor y = yi.to(at::kFloat);
  const at::Tensor t = fi + first; // each point's frame
  const at::Tensor t_slot = at::remainder(t, capacity_);
  const at::Tensor t_shot = slot_shot_.index_select(0, t_slot);
  const at::Tensor t_segment = slot_segment_.index_select(0, t_slot);

  // 1. the hidden point and its anchor on the background
  const double sx = static_cast<double>(w) / gw; // full-resolution pixels per flow pixel
  const double sy = static_cast<double>(h) / gh;
  const double margin = (o_.flow.window_radius + 1) * sx * 5 / 2.0 + 1.0;
  const at::Tensor u = p - k * bg_d;
  const at::Tensor tolerance = background_tolerance(fg_d, bg_d);
  const at::Tensor seen_tolerance = background_tolerance(fg_d, bg_d, kPointParts);
  const at::Tensor inside = bg_x + side * margin;
  const at::Tensor d_inside = sample_points(disparity_, t_slot, inside, y).squeeze(1);
  const at::Tensor anchor = at::where((d_inside - bg_d).abs() <= tolerance, inside, bg_x);
  const at::Tensor offset = u - anchor;
  auto to_flow = [&](const at::Tensor& v, double s) { return (v + 0.5) / s - 0.5; };
  const at::Tensor anchor_gray = sample_points(gray_, t_slot, to_flow(anchor, sx), to_flow(y, sy)).squeeze(1);
  const at::Tensor anchor_d = sample_points(disparity_, t_slot, anchor, y).squeeze(1);

  // 2.-3. the chains, back and ahead, one step at a time: the nearest frame first
  const int64_t m = where.size(0);
  at::Tensor found = at::zeros({m}, at::TensorOptions().dtype(at::kBool).device(dev));
  // where each point was seen: the frame's slot and the position there
  at::Tensor seen_slot = t_slot.clone();
  at::Tensor seen_x = u;
  at::Tensor seen_y = y;
  // where the nearest frame whose pixel nearest the point is the background saw it, when no
  // frame had all four taps there (a point at a surface's edge): sampled from the background's
  // taps only
  at::Tensor edge_found = at::zeros_like(found);
  at::Tensor edge_slot = t_slot.clone();
  at::Tensor edge_x = u;
  at::Tensor edge_y = y;
  at::Tensor edge_limit = at::zeros_like(u);
  struct Chain {
    int direction;
    at::Tensor x, y, d, alive;
  };
  std::vector<Chain> chains;
  const at::Tensor usable = side != 0; // a hole with no neighbour in its row: nothing to start from
  if (past_ > 0) {
    chains.push_back({-1, anchor, y, anchor_d, usable});
  }
  if (ahead_ > 0) {
    chains.push_back({+1, anchor, y, anchor_d, usable});
  }
  const int64_t steps = std::max(past_, ahead_);
  for (int64_t s = 1; s <= steps; ++s) {
    for (Chain& c : chains) {
      if (s > (c.direction < 0 ? past_ : ahead_)) {
        continue;
      }
      const at::Tensor from_slot = at::remainder(t + c.direction * (s - 1), capacity_);
      const at::Tensor j = t + c.direction * s;
      const at::Tensor j_slot = at::remainder(j, capacity_);
      const at::Tensor& flows = c.direction > 0 ? flow_next_ : flow_prev_;
      const at::Tensor motion = sample_points(flows, from_slot, to_flow(c.x, sx), to_flow(c.y, sy));
      c.x = c.x + motion.select(1, 0) * sx;
      c.y = c.y + motion.select(1, 1) * sy;
      at::Tensor held = (slot_index_.index_select(0, j_slot) == j) & (slot_shot_.index_select(0, j_slot) == t_shot);
      if (c.direction < 0) {
        held = held & (slot_segment_.index_select(0, j_slot) == t_segment);
      }
      const at::Tensor d_anchor = sample_points(disparity_, j_slot, c.x, c.y).squeeze(1);
      const at::Tensor g_anchor = sample_points(gray_, j_slot, to_flow(c.x, sx), to_flow(c.y, sy)).squeeze(1);
      const at::Tensor in_frame = (c.x >= 0) & (c.x <= w - 1) & (c.y >= 0) & (c.y <= h - 1);
      // the anchor is still the same background: no jump towards the foreground, no change of
      // brightness
      c.alive = c.alive & held & in_frame & (d_anchor <= c.d + tolerance) & ((g_anchor - anchor_gray).abs() < 0.08);
      c.d = d_anchor;
      const at::Tensor ux = c.x + offset;
      const at::Tensor uy = c.y;
      const at::Tensor u_inside = (ux >= 0) & (ux <= w - 1) & (uy >= 0) & (uy <= h - 1);
      const at::Tensor d_point = largest_taps(disparity_, j_slot, ux, uy);
      const at::Tensor limit = d_anchor + seen_tolerance;
      const at::Tensor seen = c.alive & u_inside & (d_point <= limit) & found.logical_not();
      seen_slot = at::where(seen, j_slot, seen_slot);
      seen_x = at::where(seen, ux, seen_x);
      seen_y = at::where(seen, uy, seen_y);
      const at::Tensor edge = c.alive & u_inside & found.logical_not() & seen.logical_not() &
          edge_found.logical_not() & (nearest_taps(disparity_, j_slot, ux, uy) <= limit);
      edge_slot = at::where(edge, j_slot, edge_slot);
      edge_x = at::where(edge, ux, edge_x);
      edge_y = at::where(edge, uy, edge_y);
      edge_limit = at::where(edge, limit, edge_limit);
      edge_found = edge_found | edge;
      found = found | seen;
    }
  }

  // write the colours found; the other hole pixels keep the spatial fill
  std::vector<at::Tensor> images;
  for (const auto& [share, eye] : eyes) {
    images.push_back(eye->image.permute({0, 2, 3, 1})); // [N,H,W,3] views
  }
  at::Tensor stacked = at::stack(images, 0).contiguous(); // [E,N,H,W,3]
  const at::Tensor current = stacked.view({-1, 3}).index_select(0, flat).to(at::kFloat);
  const at::Tensor from_edge = edge_found & found.logical_not();
  const at::Tensor colour = at::where(
      from_edge.unsqueeze(1),
      background_samples(frames_, disparity_, edge_slot, edge_x, edge_y, edge_limit),
      sample_points(frames_, seen_slot, seen_x, seen_y));
  found = found | from_edge;
  const at::Tensor value = at::where(found.unsqueeze(1), at::floor(colour + 0.5).clamp(0, 255), current).to(at::kByte);
  stacked.view({-1, 3}).index_copy_(0, flat, value);
  // side 0 marks the pixels filled here: not the patch fill's (Note [Depth-guided patch fill])
  std::vector<at::Tensor> side_planes;
  for (const auto& [share, eye] : eyes) {
    side_planes.push_back(eye->hole_sides.select(1, 3));
  }
  at::Tensor side_all = at::stack(side_planes, 0).contiguous(); // [E,N,H,W]
  // 5. the row's pixels beside those, towards their background, kEdgeSteps at most: on the hole
  // points themselves (a neighbour is the point one index along the row)
  at::Tensor point_side = at::where(found, at::zeros_like(side), side);
  {
    at::Tensor known = at::zeros({side_all.numel()}, found.options());
    known.index_copy_(0, flat, found);
    const at::Tensor step = at::where(side > 0, at::ones_like(flat), at::full_like(flat, -1));
    const at::Tensor column = at::remainder(flat, w) + step;
    const at::Tensor in_row = (side != 0) & (column >= 0) & (column < w);
    const at::Tensor neighbour = at::where(in_row, flat + step, flat);
    at::Tensor colours = stacked.view({-1, 3});
    for (int64_t pass = 0; pass < kEdgeSteps; ++pass) {
      const at::Tensor known_here = known.index_select(0, flat);
      const at::Tensor take = in_row & known_here.logical_not() & known.index_select(0, neighbour);
      const at::Tensor taken = at::where(take.unsqueeze(1), colours.index_select(0, neighbour), colours.index_select(0, flat));
      colours.index_copy_(0, flat, taken);
      known.index_copy_(0, flat, known_here | take);
      point_side = at::where(take, at::zeros_like(point_side), point_side);
    }
  }
  side_all.view({-1}).index_copy_(0, flat, point_side);
  for (int64_t i = 0; i < e_count; ++i) {
    images[i].copy_(stacked.select(0, i));
    side_planes[i].copy_(side_all.select(0, i));
  }
}

void TemporalFill::fill_cpu(int64_t first, const std::vector<std::pair<double, EyeResult*>>& eyes) {
  SBSCONV_CHECK(frames_.is_cpu(), Internal, "stereo", "the native temporal fill needs the window on the CPU");
  const int64_t n = eyes.front().second->image.size(0);
  const int64_t h = frames_.size(1);
  const int64_t w = frames_.size(2);
  const int64_t gh = gray_.size(1);
  const int64_t gw = gray_.size(2);
  const float sx = static_cast<float>(static_cast<double>(w) / gw);
  const float sy = static_cast<float>(static_cast<double>(h) / gh);
  const float margin = static_cast<float>((o_.flow.window_radius + 1) * static_cast<double>(w) / gw * 5 / 2.0 + 1.0);
  const uint8_t* frames = frames_.data_ptr<uint8_t>();
  const float* disparity = disparity_.data_ptr<float>();
  const float* gray = gray_.data_ptr<float>();
  const float* flow_next = flow_next_.data_ptr<float>();
  const float* flow_prev = flow_prev_.data_ptr<float>();
  const int64_t* slot_index = slot_index_.data_ptr<int64_t>();
  const int64_t* slot_shot = slot_shot_.data_ptr<int64_t>();
  const int64_t* slot_segment = slot_segment_.data_ptr<int64_t>();
  const int64_t plane = h * w;
  const int64_t small = gh * gw;
  auto to_flow = [](float v, float s) { return (v + 0.5f) / s - 0.5f; };
  for (const auto& [share, eye] : eyes) {
    SBSCONV_CHECK(
        eye->hole_sides.defined() && eye->image.size(0) == n && eye->image.is_cpu(), Internal, "stereo",
        "the temporal fill needs eyes rendered with their holes described");
    SBSCONV_CHECK(eye->hole_sides.is_contiguous(), Internal, "stereo", "the hole description must be contiguous");
    float* side_ptr = eye->hole_sides.data_ptr<float>(); // side 0 marks the pixels filled here
    const at::Tensor holes = eye->holes.contiguous();
    const bool* hole_ptr = holes.data_ptr<bool>();
    at::Tensor image = eye->image;
    uint8_t* out = image.data_ptr<uint8_t>();
    const int64_t os[4] = {image.stride(0), image.stride(1), image.stride(2), image.stride(3)};
    const float k = static_cast<float>(share);
    at::parallel_for(0, n * h, 4, [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> known(static_cast<size_t>(w));
      std::vector<int32_t> frontier;
      std::vector<int32_t> taken;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t i = row / h;
        const int64_t yi = row % h;
        const int64_t t = first + i;
        const int64_t t_slot = slot(t);
        const int64_t t_shot = slot_shot[t_slot];
        const int64_t t_segment = slot_segment[t_slot];
        const float* d_t = disparity + t_slot * plane;
        const float* g_t = gray + t_slot * small;
        std::fill(known.begin(), known.end(), uint8_t{0}); // taken from another frame, or beside
        frontier.clear(); // the pixels taken last: from other frames, then by the pass before
        // The pixels of a run (one background pixel continued) share their anchor and so their
        // chains: each chain's steps are computed once per run.
        struct Run {
          float bg_x = std::nanf("");
          float bg_d = 0.0f;
          float fg_d = 0.0f;
          float side = 0.0f;
          float anchor = 0.0f;
          float gray = 0.0f;
          float d = 0.0f;
        } run;
        struct Step {
          float x, y, d;
          bool alive;
          int64_t slot;
        };
        std::vector<Step> steps_of[2];
        const bool* hole_row = hole_ptr + (i * h + yi) * w;
        for (int64_t xi = next_hole(hole_row, 0, w); xi < w; xi = next_hole(hole_row, xi + 1, w)) {
          float* at_p = side_ptr + i * 4 * plane + yi * w + xi;
          const float side = at_p[3 * plane];
          if (side == 0.0f) {
            continue; // a hole with no neighbour in its row: nothing to start from
          }
          const float bg_x = at_p[0];
          const float bg_d = at_p[plane];
          const float fg_d = at_p[2 * plane];
          const float y = static_cast<float>(yi);
          const float u = static_cast<float>(xi) - k * bg_d;
          const float tolerance = background_tolerance(fg_d, bg_d);
          const float seen_tolerance = background_tolerance(fg_d, bg_d, kPointParts);
          if (run.bg_x != bg_x || run.bg_d != bg_d || run.fg_d != fg_d || run.side != side) {
            // a new run: its anchor, and its chains from scratch
            const float inside = bg_x + side * margin;
            const float d_inside = bilinear(d_t, h, w, 1, 0, inside, y);
            run = Run{bg_x, bg_d, fg_d, side, std::fabs(d_inside - bg_d) <= tolerance ? inside : bg_x};
            run.gray = bilinear(g_t, gh, gw, 1, 0, to_flow(run.anchor, sx), to_flow(y, sy));
            run.d = bilinear(d_t, h, w, 1, 0, run.anchor, y);
            steps_of[0].clear();
            steps_of[1].clear();
          }
          const float offset = u - run.anchor;
          // step s of chain c (0 back, 1 ahead): computed once per run, as the first pixel
          // that needs it reaches it
          auto chain_step = [&](int c, int64_t s) -> const Step& {
            std::vector<Step>& steps = steps_of[c];
            const int direction = c == 0 ? -1 : +1;
            // (step s is asked for only while step s - 1 was alive)
            while (static_cast<int64_t>(steps.size()) < s) {
              const int64_t at = static_cast<int64_t>(steps.size()) + 1;
              const Step previous = steps.empty() ? Step{run.anchor, y, run.d, true, 0} : steps.back();
              const int64_t from_slot = slot(t + direction * (at - 1));
              const int64_t j = t + direction * at;
              const int64_t j_slot = slot(j);
              const float* flows = (direction > 0 ? flow_next : flow_prev) + from_slot * small * 2;
              const float fx = to_flow(previous.x, sx);
              const float fy = to_flow(previous.y, sy);
              Step next;
              next.x = previous.x + bilinear(flows, gh, gw, 2, 0, fx, fy) * sx;
              next.y = previous.y + bilinear(flows, gh, gw, 2, 1, fx, fy) * sy;
              next.slot = j_slot;
              const bool held = slot_index[j_slot] == j && slot_shot[j_slot] == t_shot &&
                  (direction > 0 || slot_segment[j_slot] == t_segment);
              const float* d_j = disparity + j_slot * plane;
              const float d_anchor = bilinear(d_j, h, w, 1, 0, next.x, next.y);
              const float g_anchor =
                  bilinear(gray + j_slot * small, gh, gw, 1, 0, to_flow(next.x, sx), to_flow(next.y, sy));
              const bool in_frame = next.x >= 0 && next.x <= w - 1 && next.y >= 0 && next.y <= h - 1;
              next.alive = held && in_frame && d_anchor <= previous.d + tolerance && std::fabs(g_anchor - run.gray) < 0.08f;
              next.d = d_anchor;
              steps.push_back(next);
            }
            return steps[static_cast<size_t>(s - 1)];
          };
          const int64_t limits[2] = {past_, ahead_};
          bool found = false;
          int64_t seen_slot = 0;
          float seen_x = 0.0f;
          float seen_y = 0.0f;
          bool edge_found = false; // as in fill_tensor: a point at a surface's edge
          int64_t edge_slot = 0;
          float edge_x = 0.0f;
          float edge_y = 0.0f;
          float edge_limit = 0.0f;
          const int64_t steps = std::max(past_, ahead_);
          bool alive[2] = {past_ > 0, ahead_ > 0};
          for (int64_t s = 1; s <= steps && !found && (alive[0] || alive[1]); ++s) {
            for (int c = 0; c < 2; ++c) {
              if (!alive[c] || s > limits[c] || found) {
                continue;
              }
              const Step& step = chain_step(c, s);
              alive[c] = step.alive;
              if (!step.alive) {
                continue;
              }
              const float ux = step.x + offset;
              const float uy = step.y;
              if (!(ux >= 0 && ux <= w - 1 && uy >= 0 && uy <= h - 1)) {
                continue;
              }
              const float* d_j = disparity + step.slot * plane;
              const float limit = step.d + seen_tolerance;
              if (largest_tap(d_j, h, w, ux, uy) <= limit) {
                found = true;
                seen_slot = step.slot;
                seen_x = ux;
                seen_y = uy;
              } else if (!edge_found && nearest_tap(d_j, h, w, ux, uy) <= limit) {
                edge_found = true;
                edge_slot = step.slot;
                edge_x = ux;
                edge_y = uy;
                edge_limit = limit;
              }
            }
          }
          if (!found && !edge_found) {
            continue;
          }
          uint8_t* o = out + i * os[0] + yi * os[2] + xi * os[3];
          float colour[3];
          if (found) {
            bilinear_rgb(frames + seen_slot * plane * 3, h, w, seen_x, seen_y, colour);
          } else {
            background_sample(
                frames + edge_slot * plane * 3, disparity + edge_slot * plane, h, w, edge_x, edge_y, edge_limit, colour);
          }
          for (int ch = 0; ch < 3; ++ch) {
            // (colours are weighted means of levels: not negative)
            o[ch * os[1]] = static_cast<uint8_t>(std::min(floor_nonnegative(std::max(colour[ch], 0.0f) + 0.5f), 255.0f));
          }
          at_p[3 * plane] = 0.0f; // taken from another frame: not the patch fill's
          known[static_cast<size_t>(xi)] = 1;
          frontier.push_back(static_cast<int32_t>(xi));
        }
        // step 5: the row's pixels beside those, towards their background, kEdgeSteps at most.
        // A hole takes its background-side neighbour's colour once that is known: in the pass
        // after it became known, so each pass looks only beside the pixels the last one took.
        for (int64_t pass = 0; pass < kEdgeSteps && !frontier.empty(); ++pass) {
          taken.clear();
          for (const int32_t k : frontier) {
            for (const int64_t xi : {int64_t{k} - 1, int64_t{k} + 1}) {
              if (xi < 0 || xi >= w || known[static_cast<size_t>(xi)] || !hole_row[xi]) {
                continue;
              }
              float* at_p = side_ptr + i * 4 * plane + yi * w + xi;
              const float side = at_p[3 * plane];
              if (side == 0.0f || xi + (side > 0.0f ? 1 : -1) != k) {
                continue; // no background side, or it is the other neighbour
              }
              uint8_t* o = out + i * os[0] + yi * os[2];
              for (int ch = 0; ch < 3; ++ch) {
                o[ch * os[1] + xi * os[3]] = o[ch * os[1] + k * os[3]];
              }
              at_p[3 * plane] = 0.0f;
              known[static_cast<size_t>(xi)] = 1;
              taken.push_back(static_cast<int32_t>(xi));
            }
          }
          frontier.swap(taken);
        }
      }
    });
  }
}

bool TemporalFill::continues_from_previous(int64_t t) const {
  if (capacity_ == 0) {
    return false;
  }
  const auto now = static_cast<size_t>(slot(t));
  const auto before = static_cast<size_t>(slot(t - 1));
  return host_index_[now] == t && host_index_[before] == t - 1 && host_shot_[before] == host_shot_[now] &&
      host_segment_[before] == host_segment_[now];
}

void TemporalFill::steady(int64_t first, const std::vector<std::pair<double, EyeResult*>>& eyes, Impl impl) {
  at::InferenceMode guard;
  if (eyes.empty() || capacity_ == 0 || (past_ == 0 && ahead_ == 0)) {
    return;
  }
  const bool native_pass = native(impl);
  for (const auto& [share, eye] : eyes) {
    SBSCONV_CHECK(
        eye->hole_sides.defined() && eye->holes.defined(), Internal, "stereo",
        "steadying the fill needs eyes rendered with their holes described");
    const int64_t n = eye->image.size(0);
    const int64_t h = eye->image.size(2);
    const int64_t w = eye->image.size(3);
    if (n == 0) {
      continue;
    }
    auto last = std::find_if(last_eyes_.begin(), last_eyes_.end(), [&](const LastEye& e) { return e.share == share; });
    if (last == last_eyes_.end()) {
      LastEye fresh;
      fresh.share = share;
      last = last_eyes_.insert(last_eyes_.end(), fresh);
    }
    // the pixels no frame saw: holes the window did not fill (side 0 marks those it did, and
    // the holes with no neighbour in their row, which no fill reaches); and every hole, the
    // pixels the next frame's may take the mean with
    const at::Tensor holes = eye->holes.select(1, 0); // [N,H,W]
    const at::Tensor image = eye->image.permute({0, 2, 3, 1}); // [N,H,W,3] view
    const at::Tensor side = eye->hole_sides.select(1, 3); // [N,H,W]
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = first + i;
      const bool from_last = i == 0;
      if (!continues_from_previous(t) || (from_last && last->index != t - 1)) {
        continue;
      }
      const at::Tensor before = from_last ? last->image : image[i - 1];
      const at::Tensor before_hole = from_last ? last->holes : holes[i - 1];
      const at::Tensor here = image[i];
      if (native_pass) {
        // the holes' own pass (no tensor over the frame): a row's holes, then their side
        SBSCONV_CHECK(
            here.is_cpu() && before.is_cpu() && holes.is_contiguous() && side.stride(2) == 1 &&
                before_hole.is_contiguous(),
            Internal, "stereo", "the native pass needs CPU eyes with contiguous hole masks");
        const bool* h_ptr = holes[i].const_data_ptr<bool>();
        const float* s_ptr = side[i].const_data_ptr<float>();
        const int64_t s_row = side.stride(1);
        const bool* bh_ptr = before_hole.const_data_ptr<bool>();
        uint8_t* out = here.data_ptr<uint8_t>();
        const uint8_t* prev = before.const_data_ptr<uint8_t>();
        const int64_t os[3] = {here.stride(0), here.stride(1), here.stride(2)};
        const int64_t ps[3] = {before.stride(0), before.stride(1), before.stride(2)};
        at::parallel_for(0, h, 16, [&](int64_t begin, int64_t end) {
          for (int64_t y = begin; y < end; ++y) {
            const bool* row = h_ptr + y * w;
            for (int64_t x = next_hole(row, 0, w); x < w; x = next_hole(row, x + 1, w)) {
              if (s_ptr[y * s_row + x] == 0.0f || !bh_ptr[y * w + x]) {
                continue; // taken from a frame, or no hole before
              }
              uint8_t* o = out + y * os[0] + x * os[1];
              const uint8_t* p = prev + y * ps[0] + x * ps[1];
              for (int c = 0; c < 3; ++c) {
                o[c * os[2]] = static_cast<uint8_t>((int32_t{o[c * os[2]]} + int32_t{p[c * ps[2]]} + 1) / 2);
              }
            }
          }
        });
      } else {
        const at::Tensor both = (holes[i] & side[i].ne(0) & before_hole).unsqueeze(2); // [H,W,1]
        const at::Tensor mean = (here.to(at::kShort) + before.to(at::kShort) + 1).div(2, "floor").to(at::kByte);
        here.copy_(at::where(both, mean, here));
      }
    }
    // the batch's last frame, for the next call's first
    last->index = first + n - 1;
    if (!last->image.defined() || last->image.size(0) != h || last->image.size(1) != w ||
        last->image.device() != eye->image.device()) {
      last->image = at::empty({h, w, 3}, eye->image.options().memory_format(at::MemoryFormat::Contiguous));
      last->holes = at::empty({h, w}, holes.options());
    }
    last->image.copy_(image[n - 1]);
    last->holes.copy_(holes[n - 1]);
  }
}

} // namespace sbsconv
