#pragma once

#include <ATen/core/Tensor.h>

#include <c10/core/Event.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "sbsconv/pipeline/StateFile.h"

namespace sbsconv {

// One batch of frames on its way through the engine's stages (Note [Engine]); each stage
// fills in its part and drops what the later stages no longer need.
struct Batch {
  int64_t first_index = 0;
  at::Tensor frames; // uint8 [N,3,H,W]
  std::vector<int64_t> pts; // output timestamps (the writer's time base)
  std::vector<int64_t> source_pts; // the frames' own timestamps (source stream ticks)
  std::vector<bool> starts_shot;
  at::Tensor depth;
  bool depth_final = false; // read from a depth file: not stabilised again
  at::Tensor fov; // [N] degrees, for models that estimate it
  at::Tensor camera; // [N,3,4] camera-to-world poses, for models that estimate them
  at::Tensor export_depth; // the depth to export (EngineOptions::depth_export)
  at::Tensor mask; // float [N,1,H,W] in [0,1]: the subject (EngineOptions::subject)
  at::Tensor plane; // [N]: the subject's screen plane (convergence="subject")
  at::Tensor infill_mask; // uint8 [N,3,H',W'], packed like `packed`
  at::Tensor disparity;
  at::Tensor packed;
  at::Tensor depth_colors; // the stabilised depth, colour-mapped (when a depth video is asked for)
  // A resumable run's segment ends with this batch: the next frame's source pts (-1 at the
  // end) and every stage's state after this batch.
  bool segment_end = false;
  int64_t next_source_pts = -1;
  TensorMap state;
  // Recorded on the producing stage's stream after its last operation on the batch (Note
  // [Streams and hand-overs]); null off CUDA.
  std::shared_ptr<c10::Event> ready;
  std::vector<at::Tensor*> tensors() {
    return {&frames, &depth, &fov, &camera, &export_depth, &mask, &plane, &infill_mask, &disparity, &packed, &depth_colors};
  }
  int64_t size() const {
    return static_cast<int64_t>(pts.size());
  }
};

} // namespace sbsconv
