// The depth stage: the model's depth for each batch, or a depth file's (Note [Depth products]).
// (Engine::Impl in EngineImpl.h; Note [Engine] in Engine.h)

#include "sbsconv/pipeline/EngineImpl.h"

namespace sbsconv {

// ---- depth -------------------------------------------------------------------------------------

// Note [Subject on the screen plane]: the mask model runs on each batch's own frames, beside
// the depth, on the run's device.
void Engine::Impl::subject_mask(Batch& b) {
  if (!o.subject) {
    return;
  }
  if (!o.subject->mask_source) {
    b.mask = o.subject->mask_model->infer(b.frames).depth;
    return;
  }
  if (!mask_matcher) {
    // opened once decoding has begun: the source's clock and frame rate are known then
    auto reader = std::make_unique<DepthReader>(*o.subject->mask_source);
    reader->set_cancel_flag(&cancelled);
    mask_matcher = std::make_unique<DepthMatcher>(std::move(reader), 0.5 / source_fps);
  }
  at::Tensor mask;
  try {
    mask = mask_matcher->depth_for(source_times(b), nullptr);
  } catch (const Error& e) {
    throw Error(e.kind(), "read masks", e.reason(), e.file().empty() ? o.subject->mask_source->path : e.file());
  }
  if (mask.size(2) != b.frames.size(2) || mask.size(3) != b.frames.size(3)) {
    mask = at::upsample_bilinear2d(mask, {b.frames.size(2), b.frames.size(3)}, /*align_corners=*/false);
  }
  b.mask = mask.clamp(0.0, 1.0).to(b.frames.device(), /*non_blocking=*/true);
}

// Note [Depth products]: depth read back from an export, matched to each frame by its time.
void Engine::Impl::depth_from_file(StageGuard& stage_guard) {
  int64_t batch_number = 0;
  std::unique_ptr<DepthMatcher> matcher;
  const at::Device device = run_device();
  while (auto batch = decoded.pop()) {
    if (cancelled) {
      return;
    }
    Batch b = std::move(*batch);
    stage_guard.received(b);
    {
      Busy busy{stage_busy_us[1]};
      if (!matcher) {
        // opened once decoding has begun: the source's clock and frame rate are known then
        auto reader = std::make_unique<DepthReader>(*o.depth_source);
        reader->set_cancel_flag(&cancelled);
        matcher = std::make_unique<DepthMatcher>(std::move(reader), 0.5 / source_fps);
      }
      at::Tensor fov;
      at::Tensor depth;
      try {
        depth = matcher->depth_for(source_times(b), &fov);
      } catch (const Error& e) {
        throw Error(e.kind(), "read depth", e.reason(), e.file().empty() ? o.depth_source->path : e.file());
      }
      const int64_t h = b.frames.size(2);
      const int64_t w = b.frames.size(3);
      if (depth.size(2) != h || depth.size(3) != w) {
        depth = at::upsample_bilinear2d(depth, {h, w}, /*align_corners=*/false);
      }
      b.frames = b.frames.to(device, /*non_blocking=*/true);
      b.depth = depth.to(device, /*non_blocking=*/true);
      b.depth_final = true;
      subject_mask(b);
      if (fov.defined()) {
        b.fov = fov;
      }
      inject_fault("depth", batch_number++);
      stage_guard.check();
    }
    stage_frames[1] += b.size();
    stage_guard.send(b);
    if (!depthed.push(std::move(b))) {
      return;
    }
  }
  if (!cancelled) {
    depthed.close();
  }
}

void Engine::Impl::depth_stage() {
  guarded("depth", [&] {
    StageGuard stage_guard(*this, "depth");
    if (o.depth_source) {
      model_done = true; // no model (Note [Sharing the cores])
      depth_from_file(stage_guard);
      return;
    }
    int64_t batch_number = 0;
    DepthModel& model = *o.model;
    const bool temporal = model.temporal();
    {
      TensorMap state = under_prefix(restored, "model.");
      if (!state.empty()) {
        model.load_state(state);
      }
    }
    std::deque<Batch> waiting; // batches whose depth is not all out yet
    std::vector<at::Tensor> ready; // depth frames out of the model, in order
    std::vector<at::Tensor> ready_fov;
    std::vector<at::Tensor> ready_camera;
    int64_t ready_count = 0;
    auto take = [&](DepthOutput out) {
      if (!out.depth.defined() || out.depth.size(0) == 0) {
        return;
      }
      ready_count += out.depth.size(0);
      // Depth Anything 3's relative depth becomes inverse depth here, once, for every later
      // stage (stabiliser, stereo, exports), as the other relative models give it.
      ready.push_back(pipeline_depth(model.kind(), out.depth));
      if (out.fov_degrees) {
        ready_fov.push_back(*out.fov_degrees);
      }
      if (out.camera_to_world) {
        ready_camera.push_back(*out.camera_to_world);
      }
    };
    // The first `count` rows of what is queued in `parts` (moved to the host), the rest kept.
    auto split_front = [&](std::vector<at::Tensor>& parts, int64_t count) {
      at::Tensor all = to_host(at::cat(parts));
      if (all.size(0) < count) {
        return at::Tensor();
      }
      const int64_t left = all.size(0) - count;
      parts = left > 0 ? std::vector<at::Tensor>{all.narrow(0, count, left)} : std::vector<at::Tensor>{};
      return all.narrow(0, 0, count);
    };
    auto deliver = [&]() -> bool {
      while (!waiting.empty() && ready_count >= waiting.front().size()) {
        Batch b = std::move(waiting.front());
        waiting.pop_front();
        at::Tensor all = at::cat(ready);
        at::Tensor mine = all.narrow(0, 0, b.size());
        const int64_t rest = all.size(0) - b.size();
        ready = rest > 0 ? std::vector<at::Tensor>{all.narrow(0, b.size(), rest)} : std::vector<at::Tensor>{};
        ready_count = rest;
        b.depth = mine;
        if (!ready_fov.empty()) {
          b.fov = split_front(ready_fov, b.size()); // the batch's one transfer
        }
        if (!ready_camera.empty()) {
          b.camera = split_front(ready_camera, b.size());
        }
        stage_frames[1] += b.size();
        stage_guard.send(b);
        if (!depthed.push(std::move(b))) {
          return false;
        }
      }
      return true;
    };
    while (auto batch = decoded.pop()) {
      if (cancelled) {
        return;
      }
      Batch b = std::move(*batch);
      stage_guard.received(b);
      int64_t taken = 0; // the frames the model took
      {
        Busy busy{stage_busy_us[1]};
        // from pinned memory: the copy is queued, the host goes on
        at::Tensor frames = b.frames.to(model.device(), /*non_blocking=*/true);
        if (!temporal) {
          take(model.infer(frames));
        } else {
          // A temporal model starts a new sequence at each cut: what it holds of the old
          // shot comes out first.
          int64_t begin = 0;
          for (int64_t k = 0; k <= b.size(); ++k) {
            const bool boundary = k == b.size() || (k > begin && b.starts_shot[k]);
            if (!boundary) {
              continue;
            }
            if (b.starts_shot[begin]) {
              take(model.flush());
              model.reset();
            }
            take(model.infer(frames.narrow(0, begin, k - begin)));
            begin = k;
          }
        }
        if (b.segment_end && temporal && o.resume) {
          // Resumable runs end a model sequence's window at every segment end, so that a run
          // that continues from a segment gives what an uninterrupted one gives (Note
          // [Resumable runs]); a run that cannot be resumed keeps its windows whole.
          take(model.flush());
          b.state.merge(with_prefix(host_state(model.state()), "model."));
        }
        b.frames = frames;
        subject_mask(b);
        taken = b.size();
        waiting.push_back(std::move(b));
        inject_fault("depth", batch_number++);
        stage_guard.check();
      }
      // counted once the batch's time is (the encode stage reads the frames, then the time)
      model_frames_in += taken;
      if (batch_number == 1) {
        // the first batch's time and frames: the model's pace is taken without them
        model_first_frames = model_frames_in.load();
        model_first_busy_us = stage_busy_us[1].load();
      }
      if (!deliver()) {
        return;
      }
    }
    if (cancelled) {
      return;
    }
    take(model.flush());
    if (!deliver()) {
      return;
    }
    SBSCONV_CHECK(waiting.empty(), Internal, "depth", "the model returned fewer depth frames than it was given");
    model_done = true; // Note [Sharing the cores]: the stages after it may take its cores
    depthed.close();
  });
}

} // namespace sbsconv
