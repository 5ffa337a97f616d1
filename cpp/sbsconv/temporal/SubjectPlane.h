#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

namespace sbsconv {

struct SubjectPlaneOptions {
  // Relative depth (normalised inverse depth in [0,1]): the plane is the convergence value;
  // metric depth (metres): the plane is the inverse screen distance (1/m).
  bool relative = true;
  double smoothing = 0.8; // EMA decay of the plane within a shot (0 = each frame its own)
  double threshold = 0.5; // mask values at or above it are the subject
  double min_area = 0.002; // the subject's smallest share of the frame to count as one
  double fallback = 0.5; // the plane before any subject in a shot (the run's convergence, or 1/screen distance)
  int64_t sample_pixels = 65536; // pixels sampled for the median
};

// Note [Subject on the screen plane]
// convergence="subject" puts the subject's depth at zero parallax, scene by scene, which is
// what keeps a long film comfortable: the eyes converge where they look. Per frame, the
// median of the subject's depth (the pixels whose mask is at least `threshold`, on a sample
// grid; inverse depth for metric models, so that the median is taken where disparity is
// linear) is the frame's plane; within a shot it is smoothed by an EMA; a shot starts from
// its first frame's subject (or `fallback` until a subject appears); a frame without a subject
// (under `min_area` of the frame) keeps the plane it had. Relative planes lie in [0,1], metric
// ones within 1/1000 .. 1/0.1 m. The comfort budget (ComfortBudget) then holds the disparity
// either side of that plane to its limit, as for any convergence. Everything stays on the
// depth's device and no host synchronisation happens (a weighted median by sorting and
// searchsorted, the EMA by where()).
//
// Threading: not thread-safe; one owner (the engine's stabilise stage).
class SubjectPlane {
 public:
  explicit SubjectPlane(SubjectPlaneOptions options);

  // depth: the stabilised depth [N,1,H,W] (float); masks: [N,1,H,W] in [0,1] (any size: the
  // sample grid is taken from each at the same relative positions); starts_shot: one per frame.
  // Returns the planes [N] (float, on the depth's device).
  at::Tensor process(const at::Tensor& depth, const at::Tensor& masks, const std::vector<bool>& starts_shot);

  void reset();
  std::map<std::string, at::Tensor> state() const;
  void load_state(const std::map<std::string, at::Tensor>& state);

 private:
  SubjectPlaneOptions options_;
  at::Tensor plane_; // [1]: the last frame's plane; undefined before the first frame
};

} // namespace sbsconv
