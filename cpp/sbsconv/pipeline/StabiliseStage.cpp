// The stabilise stage: the depth range and alignment over time, scene cuts, the comfort budget.
// (Engine::Impl in EngineImpl.h; Note [Engine] in Engine.h)

#include "sbsconv/pipeline/EngineImpl.h"

namespace sbsconv {

// ---- stabilise ----------------------------------------------------------------------------------

void Engine::Impl::stabilise_stage() {
  guarded("stabilise", [&] {
    StageGuard stage_guard(*this, "stabilise");
    int64_t batch_number = 0;
    DepthStabilizer stabilizer(o.stabilizer);
    // the subject's masks: smoothed as metric values are (no range), motion-weighted
    StabilizerOptions mask_options;
    mask_options.relative = false;
    mask_options.align = false;
    mask_options.alpha = o.subject ? o.subject->mask_smoothing : 0.0;
    DepthStabilizer mask_stabilizer(mask_options);
    SubjectPlane plane(o.subject ? o.subject->plane : SubjectPlaneOptions{});
    const bool subject_plane = o.subject && o.subject->convergence && o.render_stereo;
    {
      TensorMap s = under_prefix(restored, "stabilizer.");
      if (!s.empty()) {
        stabilizer.load_state(s);
      }
      TensorMap m = under_prefix(restored, "subject_mask.");
      if (!m.empty()) {
        mask_stabilizer.load_state(m);
      }
      TensorMap p = under_prefix(restored, "subject_plane.");
      if (!p.empty()) {
        plane.load_state(p);
      }
      TensorMap c = under_prefix(restored, "comfort.");
      if (!c.empty()) {
        comfort->load_state(c);
      }
    }
    const bool smoothing = o.stabilizer.alpha > 0;
    while (auto batch = depthed.pop()) {
      if (cancelled) {
        return;
      }
      Batch b = std::move(*batch);
      stage_guard.received(b);
      {
        Busy busy{stage_busy_us[2]};
        if (b.fov.defined() && !o.disparity.fov_degrees) {
          // the model's estimates, made usable once for every later use (disparity, VR180,
          // the depth export's sidecar, Apple's hfov)
          b.fov = sane_fov(b.fov);
        }
        // Depth read from an export was stabilised when it was made (Note [Depth products]).
        at::Tensor stable =
            b.depth_final ? b.depth : stabilizer.process(b.depth, smoothing ? b.frames : at::Tensor(), b.starts_shot);
        if (o.depth_export) {
          b.export_depth = stable;
        }
        if (b.mask.defined()) {
          b.mask = mask_stabilizer.process(b.mask, b.frames, b.starts_shot);
          if (subject_plane) {
            b.plane = plane.process(stable, b.mask, b.starts_shot);
          }
        }
        const int64_t width = b.frames.size(3);
        at::Tensor disparity;
        if (!o.render_stereo) {
          // depth products only: no disparity, no comfort budget
        } else if (o.stabilizer.relative) {
          disparity = b.plane.defined()
              ? disparity_from_relative(stable, width, o.disparity.divergence, b.plane, o.disparity.max_shift)
              : disparity_from_relative(
                    stable, width, o.disparity.divergence, o.disparity.convergence, o.disparity.max_shift);
        } else {
          disparity = b.plane.defined()
              ? disparity_from_metric(stable, width, o.disparity.ipd_metres, batch_fov(b), b.plane)
              : disparity_from_metric(
                    stable, width, o.disparity.ipd_metres, batch_fov(b), o.disparity.screen_distance);
        }
        if (o.render_stereo) {
          b.disparity = comfort->process(disparity, b.starts_shot);
        }
        if (!o.depth_video.empty()) {
          // Metric depth is shown as inverse depth, near bright, like relative depth.
          at::Tensor shown = stable;
          if (!o.stabilizer.relative) {
            at::Tensor inv = stable.clamp_min(1e-3).reciprocal();
            at::Tensor lo = inv.amin({1, 2, 3}, true);
            at::Tensor hi = inv.amax({1, 2, 3}, true);
            shown = (inv - lo) / (hi - lo).clamp_min(1e-6);
          }
          b.depth_colors = colorize_depth(shown);
        }
        b.depth = at::Tensor();
        if (b.segment_end) {
          TensorMap both = with_prefix(stabilizer.state(), "stabilizer.");
          both.merge(with_prefix(comfort->state(), "comfort."));
          if (o.subject) {
            both.merge(with_prefix(mask_stabilizer.state(), "subject_mask."));
            both.merge(with_prefix(plane.state(), "subject_plane."));
          }
          b.state.merge(host_state(std::move(both))); // one transfer at a segment's end
        }
      }
      inject_fault("stabilise", batch_number++);
      stage_guard.check();
      stage_frames[2] += b.size();
      if (o.output_start && !drop_warm_up(b)) {
        continue; // the whole batch only warmed up the temporal state
      }
      if (b.plane.defined()) {
        screen_planes.push_back(b.plane);
      }
      stage_guard.send(b);
      if (!stabilised.push(std::move(b))) {
        return;
      }
    }
    if (!cancelled) {
      stabilised.close();
    }
  });
}

} // namespace sbsconv
