// The stereo stage: disparity, the eyes, the packed layout (and VR180, masks, previews), with
// the window of frames the temporal fill draws on (Note [Temporal fill]).
// (Engine::Impl in EngineImpl.h; Note [Engine] in Engine.h)

#include "sbsconv/pipeline/EngineImpl.h"

#include <deque>
#include <optional>

#include "sbsconv/stereo/Disparity.h"
#include "sbsconv/stereo/TemporalFill.h"

namespace sbsconv {

// ---- stereo ------------------------------------------------------------------------------------

void Engine::Impl::stereo_stage() {
  guarded("stereo", [&] {
    StageGuard stage_guard(*this, "stereo");
    int64_t batch_number = 0;
    Vr180Projector projector; // keeps the VR180 grid between batches
    // Note [Temporal fill]: the frames around each batch. A batch waits here until `ahead`
    // frames after it have arrived (or the video ended). Previews' frames are seconds apart:
    // they are filled from themselves.
    std::optional<TemporalFill> temporal;
    if (o.render_stereo && o.stereo.fill == Fill::Temporal && o.preview_every <= 0) {
      TemporalFillOptions t;
      t.batch_size = o.batch_size;
      temporal.emplace(t);
    }
    auto render = [&](Batch& b) -> bool {
      widen_cores(stage_guard.index); // Note [Sharing the cores]: once the model is done
      {
        Busy busy{stage_busy_us[3]};
        if (o.render_stereo) {
          StereoOptions so = o.stereo;
          if (temporal) {
            so.edge_dilation = 0; // dilated once, before the window took it
          }
          if (so.vr180) {
            HostScope host; // the field of view is on the host (sane_fov)
            so.vr180_fov = batch_fov(b).mean().item<double>(); // the eyes' field of view
          }
          StereoFrames r = render_stereo(
              b.frames, b.disparity, so, &projector, temporal ? &*temporal : nullptr, b.first_index);
          b.packed = r.packed;
          if (!o.infill_mask.empty()) {
            b.infill_mask = infill_mask(r, o.stereo);
          }
        }
        b.frames = at::Tensor();
        b.disparity = at::Tensor();
      }
      inject_fault("stereo", batch_number++);
      stage_guard.check();
      stage_frames[3] += b.size();
      stage_guard.send(b);
      return rendered.push(std::move(b));
    };
    std::deque<Batch> waiting;
    bool starts_segment = true; // the run's first frame starts a resume segment
    while (auto batch = stabilised.pop()) {
      if (cancelled) {
        return;
      }
      Batch b = std::move(*batch);
      stage_guard.received(b);
      widen_cores(stage_guard.index);
      if (!temporal || b.size() == 0) {
        if (!render(b)) {
          return;
        }
        continue;
      }
      {
        Busy busy{stage_busy_us[3]};
        // Note [Depth edges snapped to colour edges]: once, for the window and the eyes
        b.disparity = dilate_foreground(b.disparity.to(at::kFloat), b.frames, o.stereo.edge_dilation);
        temporal->push(b.first_index, b.frames, b.disparity, b.starts_shot, starts_segment);
      }
      starts_segment = b.segment_end;
      const int64_t pushed_end = b.first_index + b.size();
      waiting.push_back(std::move(b));
      while (!waiting.empty() &&
             pushed_end - (waiting.front().first_index + waiting.front().size()) >= temporal->ahead()) {
        Batch front = std::move(waiting.front());
        waiting.pop_front();
        if (!render(front)) {
          return;
        }
      }
    }
    while (!waiting.empty() && !cancelled) {
      Batch front = std::move(waiting.front());
      waiting.pop_front();
      if (!render(front)) {
        return;
      }
    }
    if (!cancelled) {
      rendered.close();
    }
  });
}

} // namespace sbsconv
