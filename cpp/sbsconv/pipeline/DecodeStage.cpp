// The decode stage: the source's frames, selected and numbered, into batches.
// (Engine::Impl in EngineImpl.h; Note [Engine] in Engine.h)

#include "sbsconv/pipeline/EngineImpl.h"

namespace sbsconv {

// ---- decode ------------------------------------------------------------------------------------

void Engine::Impl::decode_stage() {
  guarded("decode", [&] {
    StageGuard stage_guard(*this, "decode");
    const bool all_done = resume_pts == std::nullopt && !segments.empty();
    if (all_done) {
      // Every frame was converted by an earlier run: only assembly is left, which needs the
      // source's start.
      VideoReader reader(o.input, o.reader);
      origin = reader.stream().start_time + o.reader.start.value_or(0.0);
      if (o.reader.duration) {
        end_time = origin + *o.reader.duration;
      }
      decoded.close();
      return;
    }
    ReaderOptions ro = o.reader;
    ro.resume_pts = resume_pts;
    VideoReader reader(o.input, ro);
    reader.set_cancel_flag(&cancelled);
    const VideoStreamDescription& desc = reader.stream();
    origin = desc.start_time + ro.start.value_or(0.0);
    if (ro.duration) {
      end_time = origin + *ro.duration;
    }
    source_tick = static_cast<double>(desc.time_base.num) / desc.time_base.den;
    source_start = desc.start_time;
    if (desc.frame_rate.num > 0 && desc.frame_rate.den > 0) {
      source_fps = static_cast<double>(desc.frame_rate.num) / desc.frame_rate.den;
    }
    // Note [Bounded inputs]: a batch of huge frames is made smaller rather than allocated,
    // and a picture whose frames in flight would not fit in the machine's memory at all is
    // refused before the first one is decoded.
    const int64_t frame_bytes = static_cast<int64_t>(desc.width) * desc.height * kBytesInFlightPerPixel;
    const int64_t available = available_memory_bytes();
    int64_t affordable = kBatchByteBudget / std::max<int64_t>(frame_bytes, 1);
    if (available > 0) {
      affordable = std::min(affordable, available * 4 / 5 / std::max<int64_t>(frame_bytes, 1));
    }
    if (affordable < 1) {
      throw Error(
          ErrorKind::Input,
          "decode",
          "frames of " + std::to_string(desc.width) + "x" + std::to_string(desc.height) + " need about " +
              std::to_string(frame_bytes >> 30) + " GiB each in flight, more than a batch may take (" +
              std::to_string(kBatchByteBudget >> 30) + " GiB) or this machine has available (" +
              std::to_string(available >> 30) + " GiB): the picture is larger than sbsconv handles",
          o.input);
    }
    const int64_t batch_size = std::clamp<int64_t>(affordable, 1, o.batch_size);
    if (batch_size < o.batch_size) {
      warn("frames of " + std::to_string(desc.width) + "x" + std::to_string(desc.height) + " are converted " +
           std::to_string(batch_size) + " at a time (batch_size " + std::to_string(o.batch_size) +
           " would need more memory than a batch may take)");
    }
    const double fps = static_cast<double>(desc.frame_rate.num) / desc.frame_rate.den;
    double span = std::isnan(desc.duration) ? -1.0 : desc.duration - ro.start.value_or(0.0);
    if (ro.duration) {
      span = span < 0 ? *ro.duration : std::min(span, *ro.duration);
    }
    FrameSelector selector(FrameSelector::Options{
        desc.time_base, desc.frame_rate, origin, end_time, o.fps, o.preview_every});
    out_time_base = selector.time_base();
    out_frame_rate = selector.frame_rate();
    // Note [Progress on variable frame rates]: the container's count first (index, or the
    // average rate times the span), then what the frames show once there are enough of them.
    int64_t nominal = -1;
    double out_rate = fps; // selected frames per second of source
    if (o.preview_every > 0) {
      out_rate = 1.0 / o.preview_every;
      nominal = span > 0 ? static_cast<int64_t>(std::floor(span / o.preview_every)) + 1 : -1;
    } else if (o.fps) {
      out_rate = static_cast<double>(o.fps->num) / o.fps->den;
      nominal = span > 0 ? static_cast<int64_t>(std::llround(span * out_rate)) : -1;
    } else if (!ro.start && !ro.duration && desc.num_frames > 0) {
      nominal = desc.num_frames;
    } else if (span > 0) {
      nominal = static_cast<int64_t>(std::llround(span * fps));
    }
    // Only the source's own frames tell a variable rate; resampled and preview outputs have
    // an exact count.
    FrameCountEstimate estimate(o.fps || o.preview_every > 0 ? -1.0 : span, nominal, start_index);
    frames_total = estimate.current();
    if (!o.fps && o.preview_every <= 0 && (desc.num_frames <= 0 || ro.start || ro.duration)) {
      // The container does not state the window's frame count: count the packets (no
      // decoding) on a thread of its own while the conversion runs.
      std::optional<double> from;
      if (ro.start) {
        from = origin;
      }
      frame_counter = std::thread([this, path = o.input, index = desc.index, from, to = end_time] {
        counted_frames = count_video_frames(path, index, from, to, &cancelled);
      });
    }
    const double tb = static_cast<double>(desc.time_base.num) / desc.time_base.den;

    std::unique_ptr<SceneCutDetector> detector;
    if (o.detect_cuts && o.preview_every <= 0) {
      detector = std::make_unique<SceneCutDetector>(o.cuts);
      TensorMap state = under_prefix(restored, "cuts.");
      if (!state.empty()) {
        detector->load_state(state);
      }
    }
    BatchAssembler batches(
        BatchAssembler::Options{batch_size, start_index.load(), o.resume ? o.segment_frames : 0}, std::move(detector));
    std::vector<SelectedFrame> selected;

    // Sends on every batch that is complete.
    auto send = [&]() -> bool {
      while (std::optional<Batch> b = batches.next()) {
        stage_frames[0] += b->size();
        inject_fault("decode", batches_sent++);
        stage_guard.check();
        stage_guard.send(*b);
        if (!decoded.push(std::move(*b))) {
          return false;
        }
      }
      return true;
    };

    int64_t segment_length = o.segment_frames;
    while (!cancelled) {
      FrameBatch fb;
      {
        Busy busy{stage_busy_us[0]};
        // Note [Chunk-parallel encoding]: the encode stage's segment length, from now on
        if (const int64_t chunk = chunk_frames.load(); chunk > 0 && chunk != segment_length) {
          batches.set_segment_frames(chunk);
          segment_length = chunk;
        }
        fb = reader.read(static_cast<int>(batch_size));
        selected.clear();
        for (int64_t k = 0; k < fb.size(); ++k) {
          selector.push(fb.frames[k], fb.pts[k], selected);
        }
        if (fb.size() == 0) {
          selector.finish(selected);
        }
        batches.add_all(selected);
        for (const SelectedFrame& f : selected) {
          const int64_t estimated = estimate.observe(static_cast<double>(f.source_pts) * tb - origin);
          const int64_t exact = counted_frames.load();
          frames_total = exact >= 0 ? std::max(exact, batches.next_index()) : estimated;
        }
        if (fb.size() == 0) {
          batches.finish();
        }
      }
      if (!send()) {
        return;
      }
      if (fb.size() == 0) {
        break;
      }
    }
    for (const std::string& w : reader.take_warnings()) {
      warn(w);
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      damaged_frames = reader.damaged_frames();
      truncated = reader.truncated();
    }
    if (!reader.hardware_fallback_reason().empty()) {
      std::lock_guard<std::mutex> lock(mutex);
      warnings.push_back("hardware decoding unavailable: " + reader.hardware_fallback_reason());
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      cuts = batches.cuts();
    }
    decoded.close();
  });
}

} // namespace sbsconv
