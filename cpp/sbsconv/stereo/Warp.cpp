#include "sbsconv/stereo/Warp.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <array>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "sbsconv/common/Clones.h"
#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

// Neighbouring pixels are one surface when their shifts differ by less than this (pixels).
constexpr float kConnected = 1.0f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// floor/ceil for values well inside the int64 range, without a libm call per pixel (baseline
// x86-64 has no rounding instruction); equal to std::floor/std::ceil there, so the kernel
// matches the tensor version exactly.
// Disparities are clamped to +-kMaxDisparity pixels (in both versions), which keeps every
// coordinate within the int32 range these use (a vectorisable conversion).
constexpr float kMaxDisparity = 1.0e6f;
inline float fast_floor(float v) {
  const auto i = static_cast<float>(static_cast<int32_t>(v));
  return i - static_cast<float>(i > v);
}
inline float fast_ceil(float v) {
  const auto i = static_cast<float>(static_cast<int32_t>(v));
  return i + static_cast<float>(i < v);
}

// The row passes of render_eye_cpu that vectorise, built for each instruction set (Note
// [Instruction-set clones]; the file is compiled with -ffp-contract=off, so every clone gives the
// same bits). Written without branches (loads hoisted, float selects) so the compiler vectorises
// them (GCC's -fopt-info-vec says so; benchmarks/RESULTS.md, the pace at 1080p).

// A row's disparity clamped to +-kMaxDisparity, its shift k * d and each pixel's target x + shift.
SBSCONV_CLONES void shift_row(
    const float* d_row, float k, int32_t w, float* __restrict d, float* __restrict shift, float* __restrict target) {
  for (int32_t x = 0; x < w; ++x) {
    d[x] = std::min(std::max(d_row[x], -kMaxDisparity), kMaxDisparity);
    shift[x] = d[x] * k;
    target[x] = static_cast<float>(x) + shift[x];
  }
}

// Per source pixel, the candidate of each half-segment (Note [Occlusion-correct eye rendering]):
// target index (as float, -1 for none), source position and interpolated disparity, right half
// then left. d, shift and target have one element of padding on each side (a shift that is never
// "connected"), so no index is tested.
SBSCONV_CLONES void half_segments_row(
    const float* d, const float* shift, const float* target, int32_t w, float last_col, float* __restrict pr_out,
    float* __restrict ur_out, float* __restrict ddr_out, float* __restrict pl_out, float* __restrict ul_out,
    float* __restrict ddl_out) {
  for (int32_t x = 0; x < w; ++x) {
    const float xf = static_cast<float>(x);
    const float t = target[x];
    const float dx = d[x];
    const float t_next = target[x + 1];
    const float t_prev = target[x - 1];
    const float d_next = d[x + 1];
    const float d_prev = d[x - 1];
    const bool conn_next = std::fabs(shift[x + 1] - shift[x]) < kConnected;
    const bool conn_prev = std::fabs(shift[x - 1] - shift[x]) < kConnected;
    // Right half [x, x+1/2] -> [t, b_r).
    const float b_r = conn_next ? (t + t_next) * 0.5f : t + 0.5f;
    const float pr = fast_ceil(t);
    const float fr = (pr - t) / (b_r - t);
    const float ur = conn_next ? xf + fr * 0.5f : xf;
    const float interp_r = dx + (d_next - dx) * (ur - xf);
    ddr_out[x] = conn_next ? interp_r : dx;
    // in range (pr < b_r, 0 <= pr <= last_col) as a chain of float selects: GCC 12 does not
    // vectorise the loop with the three tests and-ed as bools
    const float in_r = pr < b_r ? pr : -1.0f;
    const float above_r = pr >= 0.0f ? in_r : -1.0f;
    pr_out[x] = pr <= last_col ? above_r : -1.0f;
    ur_out[x] = ur;
    // Left half [x-1/2, x] -> [a_l, t).
    const float a_l = conn_prev ? (t_prev + t) * 0.5f : t - 0.5f;
    const float pl = fast_ceil(a_l);
    const float fl = (pl - a_l) / (t - a_l);
    const float ul = conn_prev ? (xf - 0.5f) + fl * 0.5f : xf;
    const float interp_l = dx + (d_prev - dx) * (xf - ul);
    ddl_out[x] = conn_prev ? interp_l : dx;
    const float in_l = pl < t ? pl : -1.0f;
    const float above_l = pl >= 0.0f ? in_l : -1.0f;
    pl_out[x] = pl <= last_col ? above_l : -1.0f;
    ul_out[x] = ul;
  }
}

// Each pixel's sampling position (clamped to the row) as its first tap and the weight of the
// second.
SBSCONV_CLONES void sample_taps_row(
    const float* pos, int32_t w, float last_col, int32_t* __restrict first, float* __restrict weight) {
  for (int32_t p = 0; p < w; ++p) {
    const float q = std::min(std::max(pos[p], 0.0f), last_col);
    const float i0 = std::min(std::max(fast_floor(q), 0.0f), last_col);
    first[p] = static_cast<int32_t>(i0);
    weight[p] = q - i0;
  }
}

// A row's colours: each pixel the linear sample between its two taps (first, first + 1 within
// the row, weight of the second), rounded as floor(v + 1/2); a hole black unless filled. ss and
// ds are the frames' and the eye's strides; Interleaved has them as constants (channels last,
// the engine's layout), which lets the compiler address a pixel's bytes directly.
enum class Layout { Strided, Interleaved };
template <Layout L>
void colour_row(
    const uint8_t* src_row, uint8_t* dst_row, const int32_t* first, const float* weight, const bool* hole_row,
    bool fill_holes, int64_t w, const int64_t ss[4], const int64_t ds[4]) {
  const int64_t sc = L == Layout::Interleaved ? 1 : ss[1];
  const int64_t sx = L == Layout::Interleaved ? 3 : ss[3];
  const int64_t dc = L == Layout::Interleaved ? 1 : ds[1];
  const int64_t dx = L == Layout::Interleaved ? 3 : ds[3];
  for (int64_t p = 0; p < w; ++p) {
    uint8_t* o = dst_row + p * dx;
    if (!fill_holes && hole_row[p]) {
      o[0] = o[dc] = o[2 * dc] = 0;
      continue;
    }
    const int64_t i0 = first[p];
    const int64_t i1 = std::min<int64_t>(i0 + 1, w - 1);
    const float frac = weight[p];
    const uint8_t* s0 = src_row + i0 * sx;
    const uint8_t* s1 = src_row + i1 * sx;
    const float keep = 1.0f - frac;
    for (int c = 0; c < 3; ++c) {
      const float v = static_cast<float>(s0[c * sc]) * keep + static_cast<float>(s1[c * sc]) * frac;
      o[c * dc] = static_cast<uint8_t>(std::min(v + 0.5f, 255.0f)); // floor(v + 1/2), v >= 0
    }
  }
}

void check_inputs(const at::Tensor& frames, const at::Tensor& disparity) {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte,
      Option,
      "stereo",
      "frames must be uint8 RGB [N,3,H,W]");
  SBSCONV_CHECK(
      disparity.dim() == 4 && disparity.size(1) == 1 && disparity.size(0) == frames.size(0) &&
          disparity.size(2) == frames.size(2) && disparity.size(3) == frames.size(3),
      Option,
      "stereo",
      "disparity must be [N,1,H,W] matching the frames");
  SBSCONV_CHECK(
      frames.device() == disparity.device(), Option, "stereo", "frames and disparity must be on one device");
}

// A near surface's edge within a row: its edge pixel x, the side the farther surface lies on
// (+1: right), the target pixel holding the edge and the part of it x covers.
struct RowEdge {
  int32_t x;
  int32_t side;
  int64_t pixel;
  float covered;
};

// Note [Depth edges within their pixel], for one row: `d`, `shift` and `target` the source
// pixels' disparity, shift and target position, `depth` and `source` the z-buffer's winners
// (-inf: a hole). Writes each partly covered pixel's blend into `blend` (zeroed); `offers`
// (w bytes) and `edges` are scratch.
void edge_coverage_row(
    const float* d, const float* shift, const float* target, const float* depth, const float* source, float k,
    int64_t w, float* blend, int8_t* offers, std::vector<RowEdge>& edges) {
  edges.clear();
  const float last = static_cast<float>(w - 1);
  for (int64_t x = 0; x + 1 < w; ++x) {
    if (std::fabs(shift[x + 1] - shift[x]) < kConnected) { // one surface: no edge
      continue;
    }
    const bool left_nearer = d[x] > d[x + 1];
    if (!left_nearer && !(d[x + 1] > d[x])) {
      continue;
    }
    const int32_t side = left_nearer ? 1 : -1;
    const int64_t near = left_nearer ? x : x + 1;
    const float e = target[near] + 0.5f * static_cast<float>(side); // the near surface's edge
    const float pf = fast_floor(e + 0.5f);
    const float covered = side > 0 ? e + 0.5f - pf : pf + 0.5f - e; // of pixel pf, by `near`
    if (pf < 0.0f || pf > last || !(covered > 0.0f && covered < 1.0f)) {
      continue;
    }
    edges.push_back({static_cast<int32_t>(near), side, static_cast<int64_t>(pf), covered});
  }
  if (edges.empty()) {
    return;
  }
  std::fill(offers, offers + w, int8_t{0}); // the edges landing on each pixel (2: several)
  for (const RowEdge& edge : edges) {
    offers[edge.pixel] = static_cast<int8_t>(std::min(offers[edge.pixel] + 1, 2));
  }
  for (const RowEdge& edge : edges) {
    const int64_t p = edge.pixel;
    const float dx = d[edge.x];
    if (offers[p] != 1) {
      continue;
    }
    const bool owned = depth[p] == dx && source[p] == static_cast<float>(edge.x);
    const int64_t other = owned ? p + edge.side : p - edge.side;
    if (other < 0 || other >= w) {
      continue;
    }
    if (owned) {
      // the pixel shows the near surface; the hole or farther surface beside it lends the
      // uncovered part
      if (depth[other] < dx && std::fabs((dx - depth[other]) * k) >= kConnected) {
        blend[p] = (1.0f - edge.covered) * static_cast<float>(edge.side);
      }
    } else if (
        depth[p] > kNegInf && depth[p] < dx && std::fabs((dx - depth[p]) * k) >= kConnected &&
        std::fabs((depth[other] - dx) * k) < kConnected) {
      // the pixel shows a farther surface (not a hole); the near side lends the covered part
      blend[p] = edge.covered * static_cast<float>(-edge.side);
    }
  }
}

void check_blend(const at::Tensor& image, const at::Tensor& edge_blend) {
  SBSCONV_CHECK(
      image.dim() == 4 && image.size(1) == 3 && image.scalar_type() == at::kByte && edge_blend.dim() == 4 &&
          edge_blend.size(0) == image.size(0) && edge_blend.size(1) == 1 && edge_blend.size(2) == image.size(2) &&
          edge_blend.size(3) == image.size(3) && edge_blend.device() == image.device(),
      Option,
      "stereo",
      "edge blending needs a uint8 [N,3,H,W] image and a [N,1,H,W] blend on its device");
}

} // namespace

at::Tensor background_tolerance(const at::Tensor& foreground, const at::Tensor& background, float parts) {
  return ((foreground - background) / parts).clamp_min(0.5);
}

// ---- the tensor version (any device) -----------------------------------------------------------

EyeResult render_eye_tensor(
    const at::Tensor& frames,
    const at::Tensor& disparity_in,
    double share,
    bool fill_holes,
    bool describe_holes) {
  check_inputs(frames, disparity_in);
  at::InferenceMode guard;
  const int64_t n = frames.size(0);
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  const int64_t rows = n * h;
  const auto device = frames.device();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(device);
  const float k = static_cast<float>(share);

  at::Tensor d = disparity_in.to(at::kFloat).reshape({rows, w}).clamp(-kMaxDisparity, kMaxDisparity);
  at::Tensor x = at::arange(w, f32).expand({rows, w});
  at::Tensor s = d * k;
  at::Tensor t = x + s;

  // Neighbours to the right (index x+1) and left (x-1); the edge columns have none.
  auto shift_left = [](const at::Tensor& v) { return at::cat({v.narrow(1, 1, v.size(1) - 1), v.narrow(1, v.size(1) - 1, 1)}, 1); };
  auto shift_right = [](const at::Tensor& v) { return at::cat({v.narrow(1, 0, 1), v.narrow(1, 0, v.size(1) - 1)}, 1); };
  at::Tensor col = at::arange(w, i64).expand({rows, w});
  at::Tensor d_next = shift_left(d), s_next = shift_left(s), t_next = shift_left(t);
  at::Tensor d_prev = shift_right(d), s_prev = shift_right(s), t_prev = shift_right(t);
  at::Tensor conn_next = (s_next - s).abs() < kConnected;
  conn_next = conn_next & (col < w - 1);
  at::Tensor conn_prev = (s_prev - s).abs() < kConnected;
  conn_prev = conn_prev & (col > 0);

  // Right half-segments [x, x+1/2] -> [a, b).
  at::Tensor a_r = t;
  at::Tensor b_r = at::where(conn_next, (t + t_next) * 0.5, t + 0.5);
  at::Tensor p_r = at::ceil(a_r);
  at::Tensor valid_r = (p_r < b_r) & (p_r >= 0) & (p_r <= w - 1);
  at::Tensor f_r = (p_r - a_r) / (b_r - a_r);
  at::Tensor u_r = at::where(conn_next, x + f_r * 0.5, x);
  at::Tensor dd_r = at::where(conn_next, d + (d_next - d) * (u_r - x), d);
  // Left half-segments [x-1/2, x] -> [a, b).
  at::Tensor a_l = at::where(conn_prev, (t_prev + t) * 0.5, t - 0.5);
  at::Tensor b_l = t;
  at::Tensor p_l = at::ceil(a_l);
  at::Tensor valid_l = (p_l < b_l) & (p_l >= 0) & (p_l <= w - 1);
  at::Tensor f_l = (p_l - a_l) / (b_l - a_l);
  at::Tensor u_l = at::where(conn_prev, (x - 0.5) + f_l * 0.5, x);
  at::Tensor dd_l = at::where(conn_prev, d + (d_prev - d) * (x - u_l), d);

  // Z-buffer: the largest disparity wins each target pixel, then the largest u among equals.
  at::Tensor row_base = (at::arange(rows, i64) * w).unsqueeze(1);
  at::Tensor valid = at::cat({valid_r, valid_l}, 1);
  at::Tensor index = at::cat({p_r, p_l}, 1).clamp(0, w - 1).to(at::kLong) + row_base;
  at::Tensor dd = at::where(valid, at::cat({dd_r, dd_l}, 1), kNegInf);
  at::Tensor u = at::cat({u_r, u_l}, 1);
  at::Tensor depth_buffer = at::full({rows * w}, kNegInf, f32);
  depth_buffer.scatter_reduce_(0, index.flatten(), dd.flatten(), "amax", /*include_self=*/true);
  at::Tensor won = valid & (dd == depth_buffer.gather(0, index.flatten()).view_as(dd));
  at::Tensor source = at::full({rows * w}, kNegInf, f32);
  source.scatter_reduce_(0, index.flatten(), at::where(won, u, kNegInf).flatten(), "amax", true);
  depth_buffer = depth_buffer.view({rows, w});
  source = source.view({rows, w});
  at::Tensor covered = depth_buffer > kNegInf;

  // Holes: the background-side neighbour's source position.
  at::Tensor left = std::get<0>(at::where(covered, col, -1).cummax(1));
  at::Tensor right = std::get<0>(at::where(covered, col, w).flip({1}).cummin(1)).flip({1});
  at::Tensor has_left = left >= 0;
  at::Tensor has_right = right <= w - 1;
  at::Tensor left_c = left.clamp(0, w - 1);
  at::Tensor right_c = right.clamp(0, w - 1);
  at::Tensor take_left = has_left & (has_right.logical_not() | (depth_buffer.gather(1, left_c) <= depth_buffer.gather(1, right_c)));
  at::Tensor neighbour = at::where(take_left, left_c, right_c);
  at::Tensor fill = at::where(has_left | has_right, source.gather(1, neighbour), x);
  at::Tensor position = at::where(covered, source, fill);

  // Colour: linear interpolation along the row at the source position.
  at::Tensor pos = position.clamp(0, static_cast<double>(w - 1));
  at::Tensor i0 = at::floor(pos).clamp(0, w - 1).to(at::kLong);
  at::Tensor frac = pos - i0.to(at::kFloat);
  at::Tensor i1 = (i0 + 1).clamp_max(w - 1);
  at::Tensor rgb = frames.to(at::kFloat).reshape({n, 3, h, w}).permute({0, 2, 1, 3}).reshape({rows, 3, w});
  at::Tensor v0 = rgb.gather(2, i0.unsqueeze(1).expand({rows, 3, w}));
  at::Tensor v1 = rgb.gather(2, i1.unsqueeze(1).expand({rows, 3, w}));
  at::Tensor wf = frac.unsqueeze(1);
  at::Tensor value = v0 * (1 - wf) + v1 * wf;
  value = at::floor(value + 0.5).clamp(0, 255);
  if (!fill_holes) {
    value = at::where(covered.unsqueeze(1), value, 0.0);
  }
  EyeResult result;
  if (describe_holes) {
    // Note [Depth edges within their pixel]: the same rules as edge_coverage_row
    const int64_t cells = rows * w;
    std::vector<at::Tensor> target_of, part_of, ok_of;
    for (int dir = -1; dir <= 1; dir += 2) {
      const bool right_side = dir > 0;
      const at::Tensor d_nb = right_side ? d_next : d_prev;
      const at::Tensor s_nb = right_side ? s_next : s_prev;
      const at::Tensor in_row = right_side ? col < w - 1 : col > 0;
      const at::Tensor e = t + 0.5f * static_cast<float>(dir);
      const at::Tensor pf = at::floor(e + 0.5f);
      const at::Tensor part = right_side ? e + 0.5f - pf : pf + 0.5f - e;
      target_of.push_back(pf.clamp(0, w - 1).to(at::kLong) + row_base);
      part_of.push_back(part);
      ok_of.push_back(
          in_row & (d > d_nb) & ((s_nb - s).abs() >= kConnected) & (pf >= 0) & (pf <= w - 1) & (part > 0) &
          (part < 1));
    }
    at::Tensor offers = at::zeros({cells}, i64);
    for (int i = 0; i < 2; ++i) {
      offers.scatter_add_(0, target_of[i].flatten(), ok_of[i].to(at::kLong).flatten());
    }
    at::Tensor blend = at::zeros({cells}, f32);
    const at::Tensor depth_flat = depth_buffer.flatten();
    const at::Tensor source_flat = source.flatten();
    const at::Tensor d_flat = d.flatten();
    const at::Tensor x_flat = x.flatten();
    for (int i = 0; i < 2; ++i) {
      const int dir = i == 0 ? -1 : 1;
      const at::Tensor p = target_of[i].flatten();
      const at::Tensor p_col = p.remainder(w);
      const at::Tensor part = part_of[i].flatten();
      const at::Tensor depth_p = depth_flat.index_select(0, p);
      const at::Tensor owned = (depth_p == d_flat) & (source_flat.index_select(0, p) == x_flat);
      const at::Tensor other_col = at::where(owned, p_col + dir, p_col - dir);
      const at::Tensor other_ok = (other_col >= 0) & (other_col <= w - 1);
      const at::Tensor depth_other = depth_flat.index_select(0, (p - p_col + other_col.clamp(0, w - 1)));
      const at::Tensor lend_background =
          owned & (depth_other < d_flat) & (((d_flat - depth_other) * k).abs() >= kConnected);
      const at::Tensor lend_foreground = owned.logical_not() & (depth_p > kNegInf) & (depth_p < d_flat) &
          (((d_flat - depth_p) * k).abs() >= kConnected) & (((depth_other - d_flat) * k).abs() < kConnected);
      const at::Tensor keep =
          ok_of[i].flatten() & (offers.index_select(0, p) == 1) & other_ok & (lend_background | lend_foreground);
      const at::Tensor amount =
          at::where(owned, (1.0f - part) * static_cast<float>(dir), part * static_cast<float>(-dir));
      // one kept offer at most per pixel: the others add nothing
      blend.scatter_add_(0, p, at::where(keep, amount, 0.0f));
    }
    result.edge_blend = blend.view({n, 1, h, w});
  }
  result.image = value.to(at::kByte).view({n, h, 3, w}).permute({0, 2, 1, 3}).contiguous();
  result.holes = covered.logical_not().view({n, 1, h, w});
  if (describe_holes) {
    const at::Tensor hole = covered.logical_not() & (has_left | has_right);
    const at::Tensor other = at::where(take_left, right_c, left_c);
    const at::Tensor has_other = at::where(take_left, has_right, has_left);
    const at::Tensor bg_d = depth_buffer.gather(1, neighbour);
    const at::Tensor fg_d = at::where(has_other, depth_buffer.gather(1, other), bg_d);
    const at::Tensor side = at::where(take_left, -1.0, 1.0).to(at::kFloat);
    at::Tensor sides = at::stack({fill, bg_d, fg_d, side}, 0); // [4, rows, w]
    sides = at::where(hole.unsqueeze(0), sides, 0.0);
    result.hole_sides = sides.view({4, n, h, w}).permute({1, 0, 2, 3}).contiguous();
  }
  return result;
}

// ---- the native CPU kernel -------------------------------------------------------------------

EyeResult render_eye_cpu(
    const at::Tensor& frames,
    const at::Tensor& disparity_in,
    double share,
    bool fill_holes,
    const at::Tensor& out_in,
    bool describe_holes) {
  check_inputs(frames, disparity_in);
  SBSCONV_CHECK(frames.is_cpu(), Option, "stereo", "render_eye_cpu needs CPU tensors");
  const int64_t n = frames.size(0);
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  at::Tensor out = out_in.defined() ? out_in : at::empty({n, 3, h, w}, frames.options());
  SBSCONV_CHECK(
      out.sizes() == frames.sizes() && out.scalar_type() == at::kByte && out.is_cpu(),
      Option,
      "stereo",
      "the output view must be uint8 [N,3,H,W] on the CPU");
  at::Tensor holes = at::empty({n, 1, h, w}, at::TensorOptions().dtype(at::kBool));
  const at::Tensor d_all = disparity_in.to(at::kFloat).contiguous();
  const float* dptr = d_all.data_ptr<float>();
  const uint8_t* src_base = frames.data_ptr<uint8_t>();
  uint8_t* dst_base = out.data_ptr<uint8_t>();
  const int64_t ss[4] = {frames.stride(0), frames.stride(1), frames.stride(2), frames.stride(3)};
  const int64_t ds[4] = {out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  bool* hole_ptr = holes.data_ptr<bool>();
  at::Tensor sides = describe_holes ? at::zeros({n, 4, h, w}, at::TensorOptions().dtype(at::kFloat)) : at::Tensor();
  float* sides_ptr = describe_holes ? sides.data_ptr<float>() : nullptr;
  at::Tensor edges = describe_holes ? at::zeros({n, 1, h, w}, at::TensorOptions().dtype(at::kFloat)) : at::Tensor();
  float* edge_ptr = edges.defined() ? edges.data_ptr<float>() : nullptr;
  const float k = static_cast<float>(share);
  const float last_col = static_cast<float>(w - 1);
  // the engine's frames and eyes: channels last, a pixel's three bytes together
  const bool interleaved = ss[1] == 1 && ss[3] == 3 && ds[1] == 1 && ds[3] == 3;

  at::parallel_for(0, n * h, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> depth(w), source(w);
    // Rows padded by one element on each side: the sentinel shift at the edges is never
    // "connected", so the loop below needs no index tests and vectorises.
    std::vector<float> shift_pad(w + 2), target_pad(w + 2), d_pad(w + 2);
    // Per source pixel, the candidate of each half-segment: target index (as float, -1 for
    // none), source position and interpolated disparity; then scattered through the
    // z-buffer in a short scalar loop.
    std::vector<float> p_r(w), u_r(w), dd_r(w), p_l(w), u_l(w), dd_l(w);
    std::vector<int64_t> right(w);
    std::vector<float> position(w), fraction(w);
    std::vector<int32_t> index0(w);
    std::vector<int8_t> offers(edge_ptr != nullptr ? w : 0);
    std::vector<RowEdge> edges;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / h;
      const int64_t y = row % h;
      const float* d_row = dptr + row * w;
      std::fill(depth.begin(), depth.end(), kNegInf);
      std::fill(source.begin(), source.end(), kNegInf);
      shift_pad[0] = shift_pad[w + 1] = 4.0f * kMaxDisparity;
      target_pad[0] = target_pad[w + 1] = 0.0f;
      d_pad[0] = d_pad[w + 1] = 0.0f;
      float* __restrict shift = shift_pad.data() + 1;
      float* __restrict target = target_pad.data() + 1;
      float* __restrict d = d_pad.data() + 1;
      // int32 indices: SSE2 converts packed int32, not int64, to float.
      const auto w32 = static_cast<int32_t>(w);
      shift_row(d_row, k, w32, d, shift, target);
      half_segments_row(d, shift, target, w32, last_col, p_r.data(), u_r.data(), dd_r.data(), p_l.data(), u_l.data(),
                        dd_l.data());
      // Z-buffer: the nearest candidate wins, the larger source position among equals.
      auto offer = [&](float p, float u, float dd) {
        if (p < 0.0f) {
          return;
        }
        const auto pi = static_cast<int64_t>(p);
        if (dd > depth[pi] || (dd == depth[pi] && u > source[pi])) {
          depth[pi] = dd;
          source[pi] = u;
        }
      };
      for (int64_t x = 0; x < w; ++x) {
        offer(p_r[x], u_r[x], dd_r[x]);
        offer(p_l[x], u_l[x], dd_l[x]);
      }
      if (edge_ptr != nullptr) {
        edge_coverage_row(d, shift, target, depth.data(), source.data(), k, w, edge_ptr + row * w, offers.data(), edges);
      }
      // Holes take the background-side neighbour's source position: the nearest covered
      // pixel to the right is found in one backward pass, the one to the left on the way.
      bool* hole_row = hole_ptr + row * w;
      int32_t holes_in_row = 0;
      for (int32_t p = 0; p < w32; ++p) {
        const bool hole = !(depth[p] > kNegInf);
        hole_row[p] = hole;
        holes_in_row += hole;
      }
      float* __restrict pos = position.data();
      std::copy(source.begin(), source.end(), position.begin());
      if (holes_in_row > 0) {
        int64_t next = w;
        for (int64_t p = w - 1; p >= 0; --p) {
          if (!hole_row[p]) {
            next = p;
          }
          right[p] = next;
        }
        int64_t previous = -1; // the nearest covered pixel to the left
        for (int64_t p = 0; p < w; ++p) {
          if (!hole_row[p]) {
            previous = p;
            continue;
          }
          const bool has_left = previous >= 0;
          const bool has_right = right[p] <= w - 1;
          if (!has_left && !has_right) {
            pos[p] = static_cast<float>(p);
          } else {
            const int64_t lc = has_left ? previous : 0;
            const int64_t rc = has_right ? right[p] : w - 1;
            const bool take_left = has_left && (!has_right || depth[lc] <= depth[rc]);
            pos[p] = source[take_left ? lc : rc];
            if (sides_ptr != nullptr) {
              const int64_t plane = h * w;
              float* at_p = sides_ptr + b * 4 * plane + y * w + p;
              const float bg = depth[take_left ? lc : rc];
              const bool has_other = take_left ? has_right : has_left;
              at_p[0] = pos[p];
              at_p[plane] = bg;
              at_p[2 * plane] = has_other ? depth[take_left ? rc : lc] : bg;
              at_p[3 * plane] = take_left ? -1.0f : 1.0f;
            }
          }
        }
      }
      // Sampling positions (vectorised), then the colours (a gather per pixel).
      sample_taps_row(pos, w32, last_col, index0.data(), fraction.data());
      const int32_t* first = index0.data();
      const float* weight = fraction.data();
      const uint8_t* src_row = src_base + b * ss[0] + y * ss[2];
      uint8_t* dst_row = dst_base + b * ds[0] + y * ds[2];
      if (interleaved) {
        colour_row<Layout::Interleaved>(src_row, dst_row, first, weight, hole_row, fill_holes, w, ss, ds);
      } else {
        colour_row<Layout::Strided>(src_row, dst_row, first, weight, hole_row, fill_holes, w, ss, ds);
      }
    }
  });
  return EyeResult{out, holes, sides, edges};
}

void blend_depth_edges(EyeResult& eye) {
  if (!eye.edge_blend.defined()) {
    return;
  }
  if (eye.image.is_cpu()) {
    blend_depth_edges_cpu(eye.image, eye.edge_blend);
  } else {
    blend_depth_edges_tensor(eye.image, eye.edge_blend);
  }
  eye.edge_blend = at::Tensor(); // applied: a second call blends nothing
}

void blend_depth_edges_tensor(const at::Tensor& image, const at::Tensor& edge_blend) {
  at::InferenceMode guard;
  check_blend(image, edge_blend);
  const int64_t w = image.size(3);
  const at::Tensor b = edge_blend.to(at::kFloat);
  const at::Tensor col = at::arange(w, b.options().dtype(at::kLong)).view({1, 1, 1, w});
  const at::Tensor other = (col + at::sign(b).to(at::kLong)).clamp(0, w - 1).expand_as(image);
  const at::Tensor c = image.to(at::kFloat);
  const at::Tensor weight = b.abs();
  const at::Tensor mixed = c * (1 - weight) + c.gather(3, other) * weight;
  image.copy_(at::where(b != 0, at::floor(mixed + 0.5).clamp(0, 255), c));
}

void blend_depth_edges_cpu(const at::Tensor& image, const at::Tensor& edge_blend) {
  check_blend(image, edge_blend);
  SBSCONV_CHECK(image.is_cpu(), Option, "stereo", "blend_depth_edges_cpu needs CPU tensors");
  const int64_t n = image.size(0);
  const int64_t h = image.size(2);
  const int64_t w = image.size(3);
  const at::Tensor blend = edge_blend.to(at::kFloat).contiguous();
  const float* bptr = blend.data_ptr<float>();
  uint8_t* base = image.data_ptr<uint8_t>();
  const int64_t st[4] = {image.stride(0), image.stride(1), image.stride(2), image.stride(3)};
  at::parallel_for(0, n * h, 16, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<int64_t, std::array<uint8_t, 3>>> changed;
    for (int64_t row = begin; row < end; ++row) {
      const float* b = bptr + row * w;
      uint8_t* px = base + (row / h) * st[0] + (row % h) * st[2];
      changed.clear();
      for (int64_t p = 0; p < w; ++p) {
        if (b[p] == 0.0f) {
          continue;
        }
        const int64_t other = std::min<int64_t>(std::max<int64_t>(p + (b[p] > 0.0f ? 1 : -1), 0), w - 1);
        const float weight = std::fabs(b[p]);
        std::array<uint8_t, 3> v{};
        for (int c = 0; c < 3; ++c) {
          const float own = px[p * st[3] + c * st[1]];
          const float lent = px[other * st[3] + c * st[1]];
          v[c] = static_cast<uint8_t>(std::min(own * (1.0f - weight) + lent * weight + 0.5f, 255.0f));
        }
        changed.emplace_back(p, v); // written after the row is read: neighbours blend the originals
      }
      for (const auto& [p, v] : changed) {
        for (int c = 0; c < 3; ++c) {
          px[p * st[3] + c * st[1]] = v[c];
        }
      }
    }
  });
}

EyeResult render_eye(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    double share,
    bool fill_holes,
    const at::Tensor& out,
    bool describe_holes) {
  if (frames.is_cpu()) {
    return render_eye_cpu(frames, disparity, share, fill_holes, out, describe_holes);
  }
  EyeResult result = render_eye_tensor(frames, disparity, share, fill_holes, describe_holes);
  if (out.defined()) {
    out.copy_(result.image);
    result.image = out;
  }
  return result;
}

at::Tensor render_eye_naive(const at::Tensor& frames, const at::Tensor& disparity, double share) {
  check_inputs(frames, disparity);
  at::InferenceMode guard;
  const int64_t n = frames.size(0);
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(frames.device());
  at::Tensor xs = at::arange(w, f32).view({1, 1, w}).expand({n, h, w});
  at::Tensor ys = at::arange(h, f32).view({1, h, 1}).expand({n, h, w});
  at::Tensor sx = xs - disparity.to(at::kFloat).view({n, h, w}) * share;
  at::Tensor grid = at::stack({sx * (2.0 / (w - 1)) - 1.0, ys * (2.0 / (h - 1)) - 1.0}, -1);
  at::Tensor sampled = at::grid_sampler(frames.to(at::kFloat), grid, 0, 1, true);
  return sampled.add_(0.5).floor_().clamp_(0, 255).to(at::kByte);
}

} // namespace sbsconv
