#pragma once

#include <ATen/core/Tensor.h>

namespace sbsconv {

// Note [Dense optical flow]
// Where each pixel of one frame went in another: coarse-to-fine Lucas-Kanade with iterative
// warping. The two grey images are reduced to a pyramid (halving down to about 16 pixels);
// at each level, from the coarser level's flow (doubled), a few Gauss-Newton steps: the
// second image is warped back by the current flow, and each pixel's update solves the 2x2
// normal equations of the brightness constancy over a square window (regularised, so that
// flat regions keep the coarser estimate), and the flow is then averaged over the same window
// (each pixel's equations read its neighbours' warped values: a flow that varies from pixel
// to pixel feeds its own noise back and the steps diverge without it). Gradients are the mean of both images' (the
// symmetric form converges in fewer steps). It is written in LibTorch operations, batched
// over frame pairs, and runs on the frames' device; on the CPU the steps run natively (the
// same arithmetic, dense_flow's `impl`). Accuracy is a tenth of a pixel on
// textured surfaces; at motion boundaries the window mixes both motions, so its users take
// the flow a window's width inside a surface (Note [Temporal fill]).
struct FlowOptions {
  int64_t window_radius = 3; // the window is (2r+1)^2
  int64_t iterations = 2; // Gauss-Newton steps per level (from the coarser level's flow, two suffice)
  int64_t min_size = 16; // the coarsest level's shorter side
  double regularisation = 1e-4; // added to the normal equations' diagonal
};

// a, b: float grey [N,1,H,W] in 0..1. Returns float [N,2,H,W]: per pixel of `a`, the
// displacement (dx, dy) in pixels to where it is in `b`. `impl`: on the CPU the Gauss-Newton
// steps run as one native pass per step (each image on a thread of its own, fused loops over
// its rows: 2.3-2.8x the LibTorch operations' speed, benchmarks/RESULTS.md), elsewhere as
// LibTorch operations; Tensor forces those (the tests compare the two).
enum class FlowImpl { Auto, Tensor, Cpu };
at::Tensor dense_flow(
    const at::Tensor& a, const at::Tensor& b, const FlowOptions& options = {}, FlowImpl impl = FlowImpl::Auto);

// The reverse of a flow [N,2,H,W] (from b back to a), by fixed-point iteration: where a
// pixel x of b came from is x + r(x) with r(x) = -flow(x + r(x)). Exact where the flow is
// smooth; at occlusion boundaries it takes one of the two sides.
at::Tensor invert_flow(const at::Tensor& flow, int64_t iterations = 3);

// uint8 RGB [N,3,H,W] -> float grey [N,1,h,w] in 0..1 (BT.601 luma), area-reduced so that the
// width is at most max_width (the aspect ratio kept; the areas as adaptive_avg_pool2d's). On the
// CPU, uint8 frames are reduced in one native pass.
at::Tensor flow_gray(const at::Tensor& frames, int64_t max_width);

} // namespace sbsconv
