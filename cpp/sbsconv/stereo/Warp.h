#pragma once

#include <ATen/core/Tensor.h>

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
// Two implementations compute exactly this and must agree: render_eye_tensor (LibTorch
// operations, any device) and render_eye_cpu (a native kernel, rows in parallel on the CPU,
// several times faster there). render_eye picks the native kernel for CPU tensors.

struct EyeResult {
  at::Tensor image; // uint8 [N,3,H,W]
  at::Tensor holes; // bool [N,1,H,W]: pixels filled from the background side
  // When asked for (describe_holes), float [N,4,H,W], at each hole pixel (zero elsewhere): the
  // source position the fill took (the background-side neighbour's, step 3), that neighbour's
  // disparity, the other (foreground) side's disparity (the background's at the frame's edge),
  // and the background's side: -1 left, +1 right. The temporal fill starts from these.
  at::Tensor hole_sides;
};

// Whether a disparity is still a hole's background's, for the fills that look for it (Note
// [Temporal fill], Note [Depth-guided patch fill]): within a third of the way to the hole's
// foreground disparity, and at least half a pixel.
inline float background_tolerance(float foreground, float background) {
  const float third = (foreground - background) / 3.0f;
  return third > 0.5f ? third : 0.5f;
}
// The same, elementwise (the fills' LibTorch versions).
at::Tensor background_tolerance(const at::Tensor& foreground, const at::Tensor& background);

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
