#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstring>

namespace sbsconv {

// Note [Occlusion-correct eye rendering]
// An eye is rendered from the source frame by forward projection, one row at a time:
//
// 1. Each source pixel x moves to t(x) = x + k*d(x) (d: disparity in pixels, k: the eye's
//    share, +1/2 and -1/2 for a symmetric pair). The row is a chain of half-pixel segments,
//    [x-1/2, x] and [x, x+1/2]; a half-segment maps linearly onto the target row, towards
//    its neighbour's projection when the two are on one surface (|k*d(x+1) - k*d(x)| < 1
//    px), or rigidly with x's own shift at a depth edge. A target pixel centre p inside a
//    mapped half-segment is a candidate, with the source position u that maps onto it and
//    the disparity interpolated there. Half-segments are shorter than a pixel, so each
//    yields at most one candidate; slanted surfaces stretch without cracks, and a constant
//    integer disparity is an exact shift.
// 2. Depth ordering: at each target pixel the candidate with the largest disparity (the
//    nearest surface) wins; ties go to the larger u. This is the z-buffer.
// 3. Target pixels without a candidate were hidden in the source (disocclusions). They take
//    the source position of the nearer of their two covered row neighbours that lies
//    farther away (smaller disparity): the background side, never the foreground. The
//    background's edge pixel is stretched across the hole. (Holes at the frame's edge take
//    their one neighbour.) The stereo stage then fills these holes better (Note [Temporal
//    fill], Note [Depth-guided patch fill]); render_eye alone leaves the streak.
// 4. Colour: the source row sampled linearly at u, rounded to the nearest integer.
//
// 5. Depth edges within their pixel: see the Note below (the stereo stage, after the fills).
//
// Two implementations compute exactly this and must agree: render_eye_tensor (LibTorch
// operations, any device) and render_eye_cpu (a native kernel, rows in parallel on the CPU,
// several times faster there). render_eye picks the native kernel for CPU tensors.

// Note [Depth edges within their pixel]
// At a depth edge step 1 moves the near surface's edge pixel rigidly, so the surface ends half a
// pixel beyond that pixel's new centre: at e = t(x) +- 1/2, anywhere within a target pixel. The
// z-buffer then gives the target pixel whose box holds e wholly to one surface, by which side
// of its centre e falls. But a frame samples an edge at pixel centres: the true edge lies
// anywhere between the last near pixel and the first far one, and over that pixel's width
// where it lies is unknown. The fraction a of the target pixel that the near surface covers
// (a = e + 1/2 - p for an edge to the right of the near surface) is then exactly the
// probability that the pixel's centre shows the near surface, and the colour that errs least
// on average is a of the near surface's and 1 - a of the far one's.
//
// So each such pixel p (one per edge and row; none where two edges land on one pixel) is
// blended with its row neighbour, after the fills have given the holes their colours:
// - p shows the near surface (the z-buffer gave it p: a > 1/2, or a = 1/2 at the surface's
//   left edge, its half-open segments' rule): it takes 1 - a of the far side's neighbour, a
//   hole (its fill) or a farther surface. The near surface's edge erodes into the colour behind.
// - p shows a farther surface (a < 1/2, the edge's occluding side, where the eye sees that
//   surface in the source): it takes a of the near side's neighbour.
// - p is a hole (a < 1/2, a disocclusion): it stays as the fill made it. The near surface's
//   colour is never spread into what it uncovers: its halo would move with the surface over a
//   background that stands still, and the fills' background would flicker.
// (benchmarks/RESULTS.md, "Depth edges within their pixel": on the scenes of bench_fill.py at
// 720p the disocclusions gain 0.1-2.2 dB in every scene and eye, the whole eye 0.1-0.7 dB, and
// the flicker falls in every moving one. Blending the holes too cost the trucking scene
// 1.4-1.9 dB in its disocclusions at 640x360 and raised its flicker 1.6-2.2 times.)
//
// The warp marks these pixels (EyeResult::edge_blend, with describe_holes) and
// blend_depth_edges applies the marks; both have a native and a LibTorch version that agree
// exactly. Without a fill (fill "none": black holes for an external inpainting model) no edge is
// blended, the occluding side's neither: that eye is the warp's own, pixel for pixel.

struct EyeResult {
  at::Tensor image; // uint8 [N,3,H,W]
  at::Tensor holes; // bool [N,1,H,W]: pixels filled from the background side
  // When asked for (describe_holes), float [N,4,H,W], at each hole pixel (zero elsewhere): the
  // source position the fill took (the background-side neighbour's, step 3), that neighbour's
  // disparity, the other (foreground) side's disparity (the background's at the frame's edge),
  // and the background's side: -1 left, +1 right. The temporal fill starts from these.
  at::Tensor hole_sides;
  // With describe_holes, float [N,1,H,W]: the pixels a near surface's edge covers in part
  // (Note [Depth edges within their pixel]); b at such a pixel blends in |b| of its row
  // neighbour on the side sign(b), zero elsewhere.
  at::Tensor edge_blend;
};

// Whether a disparity is still a hole's background's, for the fills that look for it (Note
// [Temporal fill], Note [Depth-guided patch fill]): within a third of the way to the hole's
// foreground disparity, and at least half a pixel.
// (`parts`: a third by default; Note [Temporal fill], step 3, asks a sixth of a point it finds.)
inline float background_tolerance(float foreground, float background, float parts = 3.0f) {
  const float share = (foreground - background) / parts;
  return share > 0.5f ? share : 0.5f;
}
// The same, elementwise (the fills' LibTorch versions).
at::Tensor background_tolerance(const at::Tensor& foreground, const at::Tensor& background, float parts = 3.0f);

// The first hole of a row of EyeResult::holes ([w] bools) at or after x; w where there is none.
// The fills' native kernels walk their rows' holes with it: eight pixels at a time where none of
// them is a hole (most of a row), one at a time where some are.
inline int64_t next_hole(const bool* row, int64_t x, int64_t w) {
  while (x + 8 <= w) {
    uint64_t eight = 0;
    std::memcpy(&eight, row + x, sizeof eight);
    if (eight != 0) {
      break;
    }
    x += 8;
  }
  while (x < w && !row[x]) {
    ++x;
  }
  return x;
}

// frames: uint8 [N,3,H,W] (any memory layout); disparity: float [N,1,H,W] in pixels, the
// left-to-right disparity (a point at x in the left view is at x - d in the right view);
// share: the fraction of d this eye moves by (+0.5 left, -0.5 right for a symmetric pair,
// +1/-1 when the other eye is the source frame). With fill_holes false the holes stay
// black (for an external inpainting step). `out`, when defined, is a uint8 [N,3,H,W] view
// (for example one half of a side-by-side frame) that receives the image.
EyeResult render_eye(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    double share,
    bool fill_holes = true,
    const at::Tensor& out = {},
    bool describe_holes = false);

// Blends, in place, the pixels of eye.image that eye.edge_blend marks (Note [Depth edges within
// their pixel]); run after the fills, which give the holes their colours. Nothing without an
// edge_blend.
void blend_depth_edges(EyeResult& eye);
// The two implementations, which agree exactly: `image` uint8 [N,3,H,W] is blended in place.
void blend_depth_edges_tensor(const at::Tensor& image, const at::Tensor& edge_blend);
void blend_depth_edges_cpu(const at::Tensor& image, const at::Tensor& edge_blend);

EyeResult render_eye_tensor(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    double share,
    bool fill_holes = true,
    bool describe_holes = false);

EyeResult render_eye_cpu(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    double share,
    bool fill_holes = true,
    const at::Tensor& out = {},
    bool describe_holes = false);

// The naive shortcut most converters take, for comparison: each target pixel samples the
// source at x - k*d(x) with the target's own disparity (grid_sample, bilinear, border).
at::Tensor render_eye_naive(const at::Tensor& frames, const at::Tensor& disparity, double share);

} // namespace sbsconv
