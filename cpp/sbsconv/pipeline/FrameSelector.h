#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "sbsconv/media/Probe.h"

namespace sbsconv {

// One frame chosen for the output: the picture, its output timestamp (the output time base)
// and the timestamp of the source frame it shows (source ticks).
struct SelectedFrame {
  at::Tensor frame; // [3,H,W]
  int64_t pts = 0;
  int64_t source_pts = 0;
};

// Decides which decoded frames the output shows, and when (the decode stage's frame
// selection, apart from reading, scene cuts and batching):
// - every frame: each source frame once, with its own timestamp;
// - fps resampling: output slot k (time origin + k/fps) shows the frame on screen at that
//   time, so frames are repeated or dropped; the last frame lasts its duration, up to the
//   window's end;
// - preview: the first frame at or after each multiple of `preview_every` seconds, shown for
//   one second each (output time base 1/1).
//
// Threading: not thread-safe; one owner (the decode stage).
class FrameSelector {
 public:
  struct Options {
    Rational source_time_base;
    Rational source_frame_rate; // the last frame's duration in fps mode
    double origin = 0.0; // the output's zero on the source clock (absolute seconds)
    std::optional<double> end_time; // the window's end (absolute seconds)
    std::optional<Rational> fps; // resample to this rate
    double preview_every = 0.0; // seconds; > 0 selects preview mode
  };

  explicit FrameSelector(Options options);

  // The output's time base and nominal frame rate.
  Rational time_base() const;
  Rational frame_rate() const;

  // Takes the next decoded frame (in presentation order) and appends the frames it decides.
  void push(const at::Tensor& frame, int64_t source_pts, std::vector<SelectedFrame>& out);
  // The source ended: appends what is still held.
  void finish(std::vector<SelectedFrame>& out);

 private:
  Options o_;
  double tb_ = 0.0; // source tick, seconds
  double out_tb_ = 0.0; // output tick, seconds
  int64_t origin_ticks_ = 0; // origin in output ticks
  int64_t slot_ = 0;
  std::optional<SelectedFrame> held_;
};

// Note [Progress on variable frame rates]
// The progress bar's total is the window's frame count. MP4 states it (the sample table);
// Matroska/WebM do not, and their nominal rate can be far off: the WebM sample declares 30 fps
// but changes to 15 fps after 15 s, 836 frames where 30 fps x 44.6 s says 1340. So the engine
// starts from the container's figures, corrects them from the frames it has seen (this
// class), and meanwhile counts the window's packets exactly on a thread of its own (reading
// without decoding takes a small fraction of the conversion), which replaces the estimate
// once done. The callback's fraction still ends at exactly 1: the final update uses the
// frames done.
//
// Estimates how many frames a window holds, from the container's figures at first and from
// the frames seen once there are enough of them.
//
// Threading: not thread-safe; one owner (the decode stage).
class FrameCountEstimate {
 public:
  // `span`: the window's length in seconds (< 0 when unknown); `nominal`: the frame count the
  // container's rate or index gives (-1 when unknown); `before`: frames of the window done
  // before the first one observed (a resumed run).
  FrameCountEstimate(double span, int64_t nominal, int64_t before = 0);
  // A frame at `seconds` from the window's start was selected. Returns the current estimate
  // (never below the frames seen, -1 when unknown).
  int64_t observe(double seconds);
  int64_t current() const;

 private:
  double span_;
  int64_t nominal_;
  int64_t before_;
  int64_t seen_ = 0;
  double first_ = 0.0;
  double last_ = 0.0;
};

} // namespace sbsconv
