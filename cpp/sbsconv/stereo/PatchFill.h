#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "sbsconv/stereo/Warp.h"

namespace sbsconv {

// Note [Depth-guided patch fill]
// The pixels of an eye's disocclusions that no frame saw (Note [Temporal fill]; all of them
// with fill="spatial") show background that nobody has seen. The warp continues the
// background's edge pixel across them (Note [Occlusion-correct eye rendering], step 3): a
// streak. They are filled instead from the background beside the hole along the row, at the
// background's depth only: its own texture where it repeats (steps 2-5), elsewhere a fade
// from the edge's colour to the background's (step 6). The same holds for the holes at the
// frame's edge, where the picture's border was never seen:
//
// 1. A run is a stretch of such pixels in one row that continue the same background pixel
//    (the warp's description: its source position e, disparity d_b, side s). Pixel p of the
//    run shows the hidden point u = p - k*d_b, delta = (u - e) * -s pixels beyond the edge.
// 2. The run copies from P pixels further into the background, u + s*P, with P past the
//    run's deepest point (P >= ceil(max delta) + 1, so every copy lands on seen background)
//    and chosen among kPatchCandidates values by self-similarity: the texture is taken to
//    repeat at P where the strip beside the edge, kPatchWidth pixels from e into the
//    background in the rows y-kPatchRows..y+kPatchRows, looks most like itself P pixels
//    further on (the least mean squared difference of R+G+B). Periodic textures (bricks,
//    tiles, stripes) continue in phase; neighbouring rows see almost the same strip, so they
//    choose the same P and the copy is one coherent patch, not a smear.
// 3. Depth-guided: only pixel pairs whose disparities are both the background's (within the
//    temporal fill's tolerance, a third of the way to the foreground's, at least half a
//    pixel) count, at least a third of the strip must, and every pixel the run copies from
//    must lie in the unbroken background beside the edge (row y, from e on): a nearer object
//    beside the hole is never copied into it.
// 4. Only a background that demonstrably repeats is copied: the best P's difference must be
//    under kPatchRepeats of what two unrelated pixels of the strip differ by (twice its
//    variance). Elsewhere (a texture that does not repeat, noise) nothing is copied (step 6):
//    measured against exact ground truth (benchmarks/bench_fill.py), copying such a texture
//    costs 1.5-2 dB PSNR in the disocclusions, since a copy is as far from the unseen truth as
//    any other sample of the texture. (The native kernel stops a candidate as soon as its sum
//    shows it cannot win: most runs cost a few pairs per candidate.)
// 5. Colour: the source row sampled linearly at u + s*P (rounded like the warp), plus the
//    strip's mean difference between the edge and its copy (per channel), so the copy joins
//    the edge at the edge's brightness.
// 6. A run that copies nothing fades from the edge's colour to the background's: pixel p,
//    delta pixels beyond the edge, takes m + rho(delta) * (c_edge - m), per channel, where m
//    is the mean of the background's pixels in a wider strip (kFadeWidth pixels from e into
//    the background, rows y-kFadeRows..y+kFadeRows, the step 3 test of what is background)
//    and rho(delta) = 1 / (1 + delta / L) is how much the background still resembles its
//    edge pixel delta pixels on. L follows from r, the strip's correlation between
//    neighbouring pixels along its rows (R+G+B): L = r / (1 - r), within [1, kFadeLongest]
//    (a smooth background, r near 1, keeps the edge's colour far; a busy one reaches its
//    mean within a few pixels; a strip without variance or without two neighbouring
//    background pixels takes L = kFadeLongest). This is the least-squares guess of a hidden
//    pixel from the edge pixel for a texture whose correlation falls off like
//    1/(1 + delta/L); the warp's streak (rho = 1) repeats the edge pixel's own detail, which
//    is uncorrelated with the hidden point a few pixels on. Measured on the scenes' six
//    textures, each at three scales, runs of 3, 8, 14 and 25 pixels gain 0.4, 1.1, 1.3 and
//    1.6 dB over the streak on average (benchmarks/RESULTS.md). The holes at the frame's edge
//    (the warp's one-neighbour holes) are runs like any other: the picture's border fades
//    too. Fewer than kFadeWidth background pixels in the strip keep the streak.
//
// A hole region that stays disoccluded over still frames sees the same strip and makes the
// same choice: the fill is stable. Pixels the temporal fill took from another frame carry
// side 0 in the description (no run includes them).
// Two implementations compute this and agree but for rounding in the sums (which can, rarely,
// tip a choice of P): a native CPU kernel (rows in parallel) and LibTorch operations (any
// device, runs in chunks); fill_from_patches picks the native one for CPU tensors.
constexpr int64_t kPatchWidth = 12; // strip length into the background (pixels)
constexpr int64_t kPatchRows = 2; // rows above and below
constexpr int64_t kPatchCandidates = 32; // values of P tried
constexpr float kPatchRepeats = 0.15f; // the best P's share of an unrelated pair's difference
constexpr int64_t kFadeWidth = 48; // step 6: the strip's length into the background (pixels)
constexpr int64_t kFadeRows = 4; // rows above and below
constexpr float kFadeLongest = 64.0f; // the longest fade length L (pixels)

// frames: uint8 RGB [N,3,H,W] (the eyes' source frames); disparity: float [N,1,H,W] (what the
// eyes were rendered from); eyes: (share, eye) pairs, each eye rendered with describe_holes and
// filled in place. The native kernel prepares the frames once for all the eyes (planar, with
// each pixel's grey).
void fill_from_patches(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    const std::vector<std::pair<double, EyeResult*>>& eyes);
void fill_from_patches_cpu(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    const std::vector<std::pair<double, EyeResult*>>& eyes);
void fill_from_patches_tensor(const at::Tensor& frames, const at::Tensor& disparity, double share, EyeResult& eye);

} // namespace sbsconv
