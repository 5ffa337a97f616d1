#include "sbsconv/pipeline/EngineImpl.h"

#include "sbsconv/common/Heap.h"

// The engine's wiring and lifecycle: set-up (options checked, the run lock, the journal and its
// automatic choices), the coordinator that starts the stage threads and joins them, and the
// public Engine. Each stage's loop is in its own file (EngineImpl.h names them).

namespace sbsconv {

namespace engine_detail {

std::string beside_output(const std::string& output, const char* suffix) {
  const fs::path p(output);
  const std::string name = "." + p.filename().string() + suffix;
  return (p.parent_path().empty() ? fs::path(name) : p.parent_path() / name).string();
}


int64_t available_memory_bytes() {
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    long long kib = -1;
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::sscanf(line, "MemAvailable: %lld kB", &kib) == 1) {
        break;
      }
    }
    std::fclose(f);
    if (kib > 0) {
      return static_cast<int64_t>(kib) * 1024;
    }
  }
#ifdef _SC_AVPHYS_PAGES
  const long pages = sysconf(_SC_AVPHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) {
    return static_cast<int64_t>(pages) * page;
  }
#endif
  return 0;
}


std::string numbered(const char* pattern, int64_t n) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), pattern, static_cast<long long>(n));
  return buffer;
}


} // namespace engine_detail

// ---- set-up ------------------------------------------------------------------------------------

void Engine::Impl::prepare() {
  SBSCONV_CHECK(o.model != nullptr || o.depth_source, Option, "engine", "no depth model and no depth file");
  SBSCONV_CHECK(
      o.render_stereo || o.depth_export || !o.depth_video.empty(),
      Option,
      "engine",
      "a run without a 3D video must write the depth (depth_export or depth_video)");
  SBSCONV_CHECK(
      o.infill_mask.empty() || (o.render_stereo && o.stereo.layout != StereoLayout::Separate &&
                                o.stereo.layout != StereoLayout::AnaglyphDubois &&
                                o.stereo.layout != StereoLayout::AnaglyphColor &&
                                o.stereo.layout != StereoLayout::AnaglyphGray),
      Option,
      "engine",
      "an infill mask is packed like the 3D video: it needs a side-by-side or top-bottom layout");
  SBSCONV_CHECK(
      o.infill_mask.empty() || !o.stereo.vr180, Option, "engine", "infill masks are not made for VR180 layouts");
  if (o.subject) {
    SBSCONV_CHECK((o.subject->mask_model != nullptr && o.subject->mask_model->kind() == DepthKind::SalientMask) !=
                      o.subject->mask_source.has_value(),
                  Option, "engine", "the subject needs a mask model (u2netp, u2net) or a mask file, not both");
    SBSCONV_CHECK(o.subject->convergence || o.subject->mask_export, Option, "engine",
                  "a mask model runs for convergence on the subject or for a mask export");
    SBSCONV_CHECK(o.subject->mask_smoothing >= 0 && o.subject->mask_smoothing < 1, Option, "engine",
                  "the masks' smoothing must be within 0..1");
  }
  SBSCONV_CHECK(o.batch_size >= 1 && o.batch_size <= 1024, Option, "engine", "batch_size must be within 1..1024");
  SBSCONV_CHECK(o.segment_frames >= 1, Option, "engine", "segment_frames must be >= 1");
  SBSCONV_CHECK(o.encoder_instances >= 0 && o.encoder_instances <= 64, Option, "engine",
                "the encoder instances must be within 1..64 (0: chosen)");
  SBSCONV_CHECK(o.preview_every >= 0, Option, "engine", "preview_every must be >= 0");
  SBSCONV_CHECK(
      !(o.resume && (o.fps || o.preview_every > 0)),
      Option,
      "engine",
      "resume applies to conversions that keep the source timing (not fps= or preview)");
  SBSCONV_CHECK(
      !((o.part || o.output_start) && (o.resume || o.fps || o.preview_every > 0)),
      Option,
      "engine",
      "a part of a split conversion (Note [Parts of one video]) is not resumable and keeps the source timing");
  if (!o.fault.empty()) {
    const size_t a = o.fault.find(':');
    const size_t b = a == std::string::npos ? a : o.fault.find(':', a + 1);
    SBSCONV_CHECK(a != std::string::npos, Option, "engine", "fault must be STAGE:N or STAGE:N:kill");
    fault_stage = o.fault.substr(0, a);
    fault_batch = std::stoll(o.fault.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1));
    const std::string action = b == std::string::npos ? "" : o.fault.substr(b + 1);
    SBSCONV_CHECK(
        action.empty() || action == "kill" || action == "float64" || action == "cancel",
        Option,
        "engine",
        "fault must be STAGE:N[:kill|float64|cancel]");
    fault_action = action == "kill" ? FaultAction::Kill
        : action == "float64"       ? FaultAction::Float64
        : action == "cancel"        ? FaultAction::Cancel
                                    : FaultAction::Throw;
  }
  comfort = std::make_unique<ComfortBudget>(o.comfort);
  // Before anything is written: a second run on the same output fails here, at once.
  run_lock = std::make_unique<RunLock>(beside_output(o.writer.path, ".sbsconv-lock"), o.writer.path);
  // A run killed while writing left its temporary output behind; with the lock held no
  // other run can be writing one.
  int abandoned = remove_abandoned_temporaries(o.writer.path);
  const std::string mask_path = o.subject && o.subject->mask_export ? o.subject->mask_export->path : std::string();
  for (const std::string& extra : {o.depth_export ? o.depth_export->path : std::string(), o.infill_mask, o.depth_video, mask_path}) {
    if (!extra.empty() && extra != o.writer.path) {
      abandoned += remove_abandoned_temporaries(extra);
    }
  }
  if (abandoned > 0) {
    log(LogLevel::Info, "removed " + std::to_string(abandoned) + " temporary file(s) of an interrupted run");
  }
  if (!o.resume) {
    return;
  }
  journal = std::make_unique<Journal>(beside_output(o.writer.path, ".sbsconv-resume"), o.fingerprint);
  bool discarded = false;
  std::vector<std::string> problems;
  segments = journal->load(&discarded, &problems, verify_segment);
  if (discarded) {
    warn("an earlier interrupted conversion to this output used other settings; starting over");
  }
  for (const std::string& p : problems) {
    warn("resume: " + p);
  }
  // Note [Automatic choices in the journal]: what the interrupted run chose for itself
  const auto preset = journal->choice(kPresetChoice);
  if (preset && o.writer.preset.empty() && !o.writer.spatial &&
      (is_preset_choice("libx264", *preset) || is_preset_choice("libx265", *preset))) {
    chosen_preset = *preset;
    std::lock_guard<std::mutex> lock(mutex);
    result.encoder_preset = chosen_preset;
    result.encoder_preset_reason = "preset " + chosen_preset + ": as the interrupted run chose";
  }
  if (o.encoder_instances == 0) {
    const auto instances = journal->choice(kInstancesChoice);
    int64_t k = 0;
    if (instances && parse_recorded_count(*instances, &k)) {
      restored_instances = static_cast<int>(std::min<int64_t>(k, 64));
    }
  }
  if (o.batch_size_auto) {
    const auto recorded = journal->choice(kBatchChoice);
    int64_t batch = 0;
    if (recorded && parse_recorded_count(*recorded, &batch)) {
      if (batch != o.batch_size) {
        log(LogLevel::Info,
            "batch_size " + std::to_string(batch) + ": as the interrupted run chose (this run would take " +
                std::to_string(o.batch_size) + ")");
      }
      o.batch_size = batch;
    } else {
      journal->record_choice(kBatchChoice, std::to_string(o.batch_size));
    }
  }
  check_segment_encoder();
  if (!segments.empty()) {
    const SegmentRecord& last = segments.back();
    start_index = last.first_frame + last.frames;
    restored = load_tensors(journal->path_of(last.state));
    if (last.next_pts >= 0) {
      resume_pts = last.next_pts;
    }
    log(LogLevel::Info, "resuming after " + std::to_string(start_index.load()) + " frames (" +
            std::to_string(segments.size()) + " segments done)");
  }
}

void Engine::Impl::run() {
  keep_large_blocks_in_heap(); // Note [Large blocks stay in the heap]
  try {
    prepare();
    plan_cores();
    {
      std::lock_guard<std::mutex> lock(mutex);
      phase = "converting";
    }
    std::vector<std::thread> threads;
    threads.emplace_back([this] { decode_stage(); });
    threads.emplace_back([this] { depth_stage(); });
    threads.emplace_back([this] { stabilise_stage(); });
    threads.emplace_back([this] { stereo_stage(); });
    threads.emplace_back([this] { encode_stage(); });
    for (auto& t : threads) {
      t.join();
    }
    // at::set_num_threads also sets the count later threads start with: the caller's again.
    if (caller_threads > 0) {
      at::set_num_threads(caller_threads);
    }
    if (frame_counter.joinable()) {
      frame_counter.join();
    }
    if (!error && cancelled) {
      throw Error(ErrorKind::Cancelled, "engine", "the conversion was cancelled");
    }
    if (!error && o.resume) {
      assemble();
      journal->remove();
    }
  } catch (...) {
    fail(std::current_exception());
  }
  if (run_lock) {
    run_lock->release();
  }
  release_free_heap(); // the run's frames are freed: the process keeps no peak
  std::lock_guard<std::mutex> lock(mutex);
  phase = user_cancelled ? "cancelled" : (error ? "failed" : "done");
  finished = true;
  finished_cv.notify_all();
}

// ---- Engine ------------------------------------------------------------------------------------

Engine::Engine(EngineOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Engine::~Engine() {
  if (impl_->coordinator.joinable()) {
    impl_->cancelled = true;
    impl_->abort_queues();
    impl_->coordinator.join();
  }
  if (impl_->frame_counter.joinable()) {
    impl_->cancelled = true;
    impl_->frame_counter.join();
  }
}

void Engine::start() {
  SBSCONV_CHECK(!impl_->coordinator.joinable(), Option, "engine", "the engine was already started");
  impl_->started = Clock::now();
  impl_->coordinator = std::thread([this] { impl_->run(); });
}

bool Engine::wait(double timeout_seconds) {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  return impl_->finished_cv.wait_for(
      lock, std::chrono::duration<double>(std::max(0.0, timeout_seconds)), [&] { return impl_->finished; });
}

void Engine::cancel() {
  impl_->user_cancelled = true;
  impl_->cancelled = true;
  impl_->abort_queues();
}

EngineProgress Engine::progress() const {
  const Impl& d = *impl_;
  EngineProgress p;
  p.frames_done = d.frames_done;
  p.frames_total = d.frames_total;
  p.resumed_from = d.start_index;
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    p.phase = d.phase;
  }
  p.elapsed = std::chrono::duration<double>(Clock::now() - d.started).count();
  for (int i = 0; i < Impl::kStages; ++i) {
    p.stages.push_back(StageStats{d.stage_names[i], d.stage_frames[i], d.stage_busy_us[i] / 1e6, d.stage_batches[i], d.stage_syncs[i], d.stage_threads_seen[i], d.stage_threads_after_model[i]});
  }
  return p;
}

EngineResult Engine::result() {
  Impl& d = *impl_;
  if (d.coordinator.joinable()) {
    d.coordinator.join();
  }
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.error) {
    std::rethrow_exception(d.error);
  }
  EngineResult r = d.result;
  r.frames = d.frames_done;
  r.resumed_from = d.start_index;
  r.batch_size = d.o.batch_size;
  r.seconds = std::chrono::duration<double>(Clock::now() - d.started).count();
  for (int i = 0; i < Impl::kStages; ++i) {
    r.stages.push_back(StageStats{d.stage_names[i], d.stage_frames[i], d.stage_busy_us[i] / 1e6, d.stage_batches[i], d.stage_syncs[i], d.stage_threads_seen[i], d.stage_threads_after_model[i]});
  }
  r.warnings = d.warnings;
  r.cuts = d.cuts;
  r.comfort = d.comfort ? d.comfort->scenes() : std::vector<SceneComfort>{};
  if (d.fov_count > 0) {
    r.fov_degrees = d.fov_sum / static_cast<double>(d.fov_count);
  }
  r.damaged_frames = d.damaged_frames;
  r.truncated = d.truncated;
  if (!d.screen_planes.empty()) {
    // relative: the convergence itself; metric: the plane is 1/screen distance
    at::Tensor planes = to_host(at::cat(d.screen_planes)).to(at::kDouble); // float64 on the host only
    if (!d.o.stabilizer.relative) {
      planes = planes.reciprocal();
    }
    r.screen_plane.assign(planes.data_ptr<double>(), planes.data_ptr<double>() + planes.numel());
  }
  return r;
}

WriterResult assemble_parts(
    const EngineOptions& options,
    const std::vector<std::string>& parts,
    double fov_degrees,
    const std::atomic<bool>* cancel) {
  if (parts.empty()) {
    throw Error(ErrorKind::Option, "assemble", "no parts to join", options.writer.path);
  }
  const VideoReader reader(options.input, options.reader);
  WriterOptions w = options.writer;
  w.source = options.input;
  w.time_origin = reader.stream().start_time + options.timeline_start;
  if (options.reader.duration) {
    w.time_end = reader.stream().start_time + options.reader.start.value_or(0.0) + *options.reader.duration;
  }
  w.video_segments = parts;
  w.segment_offset = kSegmentOffset;
  w.cancel = cancel;
  if (w.encoder.empty() || w.encoder == "auto") {
    w.encoder = "copy";
  }
  MediaWriter writer(w);
  writer.set_apple_field_of_view(fov_degrees);
  writer.copy_segments();
  return writer.finish();
}

} // namespace sbsconv
