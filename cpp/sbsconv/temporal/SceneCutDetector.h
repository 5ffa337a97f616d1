#pragma once

#include <ATen/core/Tensor.h>

#include <deque>
#include <map>
#include <string>
#include <vector>

namespace sbsconv {

struct SceneCutOptions {
  // 0..1: higher finds more cuts (a lower threshold on the colour change).
  double sensitivity = 0.5;
  // A cut is not reported within this many frames of the previous one.
  int64_t min_scene_length = 8;
};

// Note [Scene cut detection]
// Each frame is reduced to a 96x54 thumbnail: a joint colour histogram (6 levels per channel)
// and a 32x18 luma picture. A hard cut changes the whole picture at once, so the score of
// frame i is its distance to frame i-1: the histogram mass that moved (half the L1 norm,
// 0..1) plus twice the mean luma change (which catches cuts between shots of similar
// colours, two dark scenes for example). Frame i starts a new shot when its score is
//   - above the threshold set by the sensitivity,
//   - well above the recent scores of the shot (fast camera motion and busy content raise
//     every score, a cut raises one), and
//   - still above it when frames i+1 and i+2 are compared with frames i-3 .. i-1 (a flash,
//     even one fading over a frame, returns to the previous look; a cut does not),
// and the previous cut is at least min_scene_length frames back. The flash test needs the
// next two frames, so decisions are two frames late.
//
// Threading: not thread-safe; one owner.
class SceneCutDetector {
 public:
  explicit SceneCutDetector(SceneCutOptions options = {});

  // Feeds uint8 RGB frames [N,3,H,W] (any device) in order. Returns the indices (counted from
  // the first frame ever pushed) of frames now known to start a new shot.
  std::vector<int64_t> push(const at::Tensor& frames);
  // The features of each frame (any device), as one host float32 tensor [N, F] brought over
  // in one transfer (Note [Host synchronisation]); push_features() takes its rows in order.
  // push() is the two together.
  at::Tensor features(const std::vector<at::Tensor>& frames) const;
  std::vector<int64_t> push_features(const at::Tensor& row);
  // Decides the last frames (with what lookahead there is) and returns what is left.
  std::vector<int64_t> flush();

  int64_t frames_seen() const {
    return seen_;
  }
  // Every frame's score so far (index 0 has none and scores 0), for diagnostics and tuning.
  const std::vector<double>& scores() const {
    return scores_;
  }

  // Frames with an index below this are decided.
  int64_t decided() const {
    return next_;
  }

  void reset();
  std::map<std::string, at::Tensor> state() const;
  // The state as it would be had frames after `last` never been pushed; valid right after
  // frame `last` was decided (decided() == last + 1). A resumed run pushes them again.
  std::map<std::string, at::Tensor> state_through(int64_t last) const;
  void load_state(const std::map<std::string, at::Tensor>& state);

 private:
  double threshold() const;
  std::vector<int64_t> decide(bool final);

  SceneCutOptions options_;
  int64_t seen_ = 0;
  int64_t last_cut_ = 0;
  std::vector<double> scores_;
  std::deque<at::Tensor> window_; // features of frames i-3 .. i+2 around the next decision
  int64_t window_first_ = 0; // the index of window_[0]
  int64_t next_ = 1; // the next frame to decide
  std::deque<double> recent_; // recent scores of the current shot
};

} // namespace sbsconv
