#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "sbsconv/stereo/Warp.h"
#include "sbsconv/temporal/OpticalFlow.h"

namespace sbsconv {

// Note [Temporal fill]
// A synthesised eye sees, beside a near object, background that the source frame hides (the
// disocclusions of Note [Occlusion-correct eye rendering]). In a moving shot most of that
// background was in view a few frames earlier or is a few frames later, so each hole pixel is
// first filled from the frames that saw it:
//
// 1. Where it is: the hole pixel p of an eye moving by k*d shows the background surface on
//    the hole's background side, continued at that side's disparity d_b; its source position
//    is u = p - k*d_b (in the frame's row). The background's motion is read at an anchor a
//    on that surface: the background-side neighbour's source position moved a flow window
//    further into the background (Note [Dense optical flow]: a window at the edge mixes the
//    foreground's motion in), when the disparity there still is the background's.
// 2. Where it was and will be: the anchor is carried from frame to frame by the optical flow
//    between neighbouring frames (computed once per pair, at up to flow_width pixels wide;
//    the way back is its inverse),
//    back to `past` frames and ahead to `ahead` frames, within one shot; and the hidden point
//    with it, at the same offset u - a. A chain stops where the anchor stops being the same
//    background: its disparity jumps towards the foreground's, or its brightness changes.
// 3. Which frame saw it: at frame j the point's position is accepted when it is inside the
//    frame and the disparity there is the background's (not more than a sixth of the way to
//    the hole's foreground disparity above the anchor's, at least half a pixel: a nearer
//    surface between the two is not the background), at each of the four pixels its
//    colour is interpolated from (no nearer surface mixes in): the background was in view.
//    The nearest frame in time wins (the previous one before the next at equal distance), so
//    a region that stays hidden keeps showing what the same frame saw: stable over time.
//    Its colour is sampled there (bilinear).
//    A point just beside a surface's edge (most often the hole's pixel next to the foreground)
//    rarely has all four in any frame; where none has them, the nearest frame in which the pixel
//    nearest the point is the background's is taken, its colour interpolated from those of
//    the four that are the background's (their weights renormalised).
// 4. Pixels no frame saw keep what the eye holds; the pixels filled here are marked in the
//    eye's hole description (side 0), and the rest are left to the background's texture (Note
//    [Depth-guided patch fill]).
// 5. Except beside the pixels filled here: a hole pixel that no frame saw and whose row
//    neighbour towards its background was filled from a frame takes that neighbour's colour
//    (and is marked as filled here), for up to two pixels. Most often it is the hole's pixel
//    next to the foreground, whose point lies within a pixel of the foreground's edge in every
//    frame; the background one pixel away predicts it better than a copy from across the hole
//    (benchmarks/RESULTS.md, "Disocclusion fill").
// 6. Steady over time (steady(), after the patch fill has filled what no frame saw): a hole
//    pixel that no frame saw (filled from the background's texture, each frame on its own)
//    where the frame before also showed a hole shows the mean of its fill and the previous
//    frame's pixel as that frame was shown (taken from a frame or itself steadied): a
//    recursive filter, (a + b + 1) / 2 in integers, so each frame's own fill counts half and
//    the frames before it ever less, and a pixel a frame saw a moment ago lends its colour to
//    the guess that follows it. Not across a cut, nor across the start of a resume segment
//    (resumed output stays the same), nor where the previous frame is not in the window. It is
//    in the eye's pixels, not moved with the background: the pixels no frame saw lie beside
//    the foreground's edge, where the hole stays while the foreground does, and their fill
//    varies slowly across them; moving them by the background's motion (the chain's first
//    step back) measured no better (benchmarks/RESULTS.md, "Disocclusion fill").
//
// The window is held by the engine's stereo stage, which renders a batch once `ahead` frames
// after it have arrived (or the video ended). Looking back never crosses the start of a
// resume segment (a resumed run has no frames before it, so an uninterrupted run does not use
// them either: resumed output is the same); looking ahead may. Memory: the window holds
// (past + ahead + 2 batches) frames, each 7 bytes a pixel (the frame and its disparity), and
// step 6 each eye's last frame (4 bytes a pixel); a window that would exceed memory_bytes is
// shortened (to none for frames too large), with a warning. Everything runs in LibTorch operations on the frames' device, per batch with one
// host synchronisation (the hole pixels' list).
//
// Threading: not thread-safe; one owner (the stereo stage).
struct TemporalFillOptions {
  int64_t past = 12; // frames looked back
  int64_t ahead = 12; // frames looked ahead
  int64_t flow_width = 480; // the optical flow's working width (pixels)
  int64_t memory_bytes = int64_t{1} << 30; // the window's budget
  int64_t batch_size = 1; // the most frames one push or fill brings
  FlowOptions flow;
};

class TemporalFill {
 public:
  explicit TemporalFill(TemporalFillOptions options = {});

  // The frames the fill wants after a frame before it fills it (0 when the window is too
  // large for the budget).
  int64_t ahead() const;

  // Appends frames `first` .. `first` + N - 1 (uint8 RGB [N,3,H,W]) with the disparity their
  // eyes are rendered from (after dilate_foreground, [N,1,H,W] pixels), whether
  // each starts a shot, and whether the first starts a resume segment. Frames come in order,
  // without gaps.
  void push(
      int64_t first,
      const at::Tensor& frames,
      const at::Tensor& disparity,
      const std::vector<bool>& starts_shot,
      bool starts_segment);

  // Fills, in place, the hole pixels of eyes rendered (with describe_holes) from frames
  // `first` .. `first` + N - 1, which must be in the window; each eye with its share of the
  // disparity. Pixels no frame saw keep what the eye holds; those filled get side 0 in the
  // eye's hole_sides.
  // Two implementations compute this and agree but for rounding: a native CPU kernel (hole
  // pixels in parallel, each chain stopping where its point is found) and LibTorch operations
  // (any device, one host synchronisation); Auto picks the native one for a CPU window.
  enum class Impl { Auto, Tensor, Cpu };
  void fill(int64_t first, const std::vector<std::pair<double, EyeResult*>>& eyes, Impl impl = Impl::Auto);

  // Step 6, in place, on the same eyes after fill() and the patch fill: each hole pixel that no
  // frame saw, where the frame before showed a hole too, takes the mean of the two frames'
  // colours. Eyes are told apart by their share; the last frame of each is kept for the next
  // call.
  void steady(int64_t first, const std::vector<std::pair<double, EyeResult*>>& eyes, Impl impl = Impl::Auto);

 private:
  void allocate(const at::Tensor& frames);
  void fill_tensor(int64_t first, const std::vector<std::pair<double, EyeResult*>>& eyes);
  void fill_cpu(int64_t first, const std::vector<std::pair<double, EyeResult*>>& eyes);
  // Auto's choice, for fill() and steady() alike: the native kernels for a CPU window
  bool native(Impl impl) const {
    return impl == Impl::Cpu || (impl == Impl::Auto && frames_.is_cpu());
  }
  int64_t slot(int64_t index) const { // frames before the first (chains looking back) too
    return ((index % capacity_) + capacity_) % capacity_;
  }

  TemporalFillOptions o_;
  int64_t capacity_ = 0; // ring slots; 0 until the first push
  int64_t past_ = 0;
  int64_t ahead_ = 0;
  int64_t next_index_ = -1; // the frame the next push starts with
  int64_t shot_ = -1;
  int64_t segment_ = -1;
  // The window as rings of `capacity_` slots, channels last: frames uint8 [S,H,W,3],
  // disparity float [S,H,W,1], the flow's grey [S,h,w,1], the flows to the next and the
  // previous frame [S,h,w,2]; per slot the frame index it holds (-1: none), its shot and
  // segment numbers ([S] int64 on the device, for the per-pixel checks, and on the host).
  at::Tensor frames_;
  at::Tensor disparity_;
  at::Tensor gray_;
  at::Tensor flow_next_;
  at::Tensor flow_prev_;
  at::Tensor slot_index_;
  at::Tensor slot_shot_;
  at::Tensor slot_segment_;
  std::vector<int64_t> host_index_, host_shot_, host_segment_; // the same three, on the host
  // Step 6: each eye's last frame steadied, channels last (uint8 [H,W,3]), its holes (bool
  // [H,W]) and its index (-1: none yet).
  struct LastEye {
    double share = 0.0;
    int64_t index = -1;
    at::Tensor image;
    at::Tensor holes;
  };
  std::vector<LastEye> last_eyes_;
  // whether frame t - 1 is in the window, in t's shot and resume segment
  bool continues_from_previous(int64_t t) const;
};

} // namespace sbsconv
