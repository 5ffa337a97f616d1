// The stereo stage: disparity, the eyes, the packed layout (and VR180, masks, previews).
// (Engine::Impl in EngineImpl.h; Note [Engine] in Engine.h)

#include "sbsconv/pipeline/EngineImpl.h"

namespace sbsconv {

// ---- stereo ------------------------------------------------------------------------------------

void Engine::Impl::stereo_stage() {
  guarded("stereo", [&] {
    StageGuard stage_guard(*this, "stereo");
    int64_t batch_number = 0;
    Vr180Projector projector; // keeps the VR180 grid between batches
    while (auto batch = stabilised.pop()) {
      if (cancelled) {
        return;
      }
      Batch b = std::move(*batch);
      stage_guard.received(b);
      {
        Busy busy{stage_busy_us[3]};
        if (o.render_stereo) {
          StereoOptions so = o.stereo;
          if (so.vr180) {
            HostScope host; // the field of view is on the host (sane_fov)
            so.vr180_fov = batch_fov(b).mean().item<double>(); // the eyes' field of view
          }
          StereoFrames r = render_stereo(b.frames, b.disparity, so, &projector);
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
      if (!rendered.push(std::move(b))) {
        return;
      }
    }
    if (!cancelled) {
      rendered.close();
    }
  });
}

} // namespace sbsconv
