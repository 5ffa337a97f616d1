#include "sbsconv/pipeline/Engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstring>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <set>
#include <thread>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/DurableFile.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/common/Float64Guard.h"
#include "sbsconv/common/Logging.h"
#include "sbsconv/media/ImageFile.h"
#include "sbsconv/media/LosslessVideo.h"
#include "sbsconv/pipeline/Batch.h"
#include "sbsconv/pipeline/BatchAssembler.h"
#include "sbsconv/pipeline/BoundedQueue.h"
#include "sbsconv/pipeline/FrameSelector.h"
#include "sbsconv/pipeline/Journal.h"
#include "sbsconv/pipeline/RunLock.h"
#include "sbsconv/pipeline/StateFile.h"
#include "sbsconv/stereo/Disparity.h"
#include "sbsconv/stereo/Stereo.h"
#include "sbsconv/stereo/Vr180.h"

namespace fs = std::filesystem;

namespace sbsconv {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kQueueDepth = 2; // batches waiting between two stages
constexpr double kDefaultFov = 60.0;
// Note [Bounded inputs] (VideoReader.h): a batch's frames cost about this many bytes per
// pixel across the stages at once: in the queues (RGB 3, RGB + depth 7, RGB + disparity 7,
// packed eyes 6, two batches each) and in the stages' work (the warp's float intermediates
// above all); and a batch may take at most this many.
constexpr int64_t kBytesInFlightPerPixel = 120;
constexpr int64_t kBatchByteBudget = int64_t{8} << 30;
// Segments are written this many seconds late on the output clock, so that an encoder's
// negative start decode timestamps (B-frame delay) stay positive in NUT; assembly takes it
// back off.
constexpr double kSegmentOffset = 100.0;

// A hidden file or folder beside the output: ".<output name><suffix>". The resume folder
// (Note [Resumable runs]) and the run lock (Note [Run lock]: one per output, whatever the
// run's kind).
std::string beside_output(const std::string& output, const char* suffix) {
  const fs::path p(output);
  const std::string name = "." + p.filename().string() + suffix;
  return (p.parent_path().empty() ? fs::path(name) : p.parent_path() / name).string();
}

// Memory this process can still take (MemAvailable on Linux, the free pages elsewhere); 0 when
// unknown.
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

} // namespace

struct Engine::Impl {
  EngineOptions o;
  std::atomic<bool> cancelled{false}; // set by cancel() and by a failing stage
  std::atomic<bool> user_cancelled{false};
  std::thread coordinator;
  mutable std::mutex mutex; // guards everything below that is not atomic
  std::condition_variable finished_cv;
  bool finished = false;
  std::exception_ptr error;
  std::string phase = "starting";
  EngineResult result;
  Clock::time_point started;

  std::atomic<int64_t> frames_done{0};
  std::atomic<int64_t> frames_total{-1};
  // Written by prepare() on the coordinator thread while progress() may read it.
  std::atomic<int64_t> start_index{0};
  std::optional<int64_t> resume_pts;
  TensorMap restored; // stage states from the journal
  std::unique_ptr<RunLock> run_lock; // held from prepare() to the end of run()
  std::unique_ptr<Journal> journal;
  std::vector<SegmentRecord> segments;

  static constexpr int kStages = 5;
  const char* stage_names[kStages] = {"decode", "depth", "stabilise", "stereo", "encode"};
  std::atomic<int64_t> stage_frames[kStages] = {};
  std::atomic<int64_t> stage_busy_us[kStages] = {};
  std::atomic<int64_t> stage_batches[kStages] = {};
  std::atomic<int64_t> stage_syncs[kStages] = {};
  // Note [Sharing the cores]
  // On the CPU every stage computes with LibTorch, and each stage thread would otherwise open
  // an OpenMP team as wide as the machine: five teams on two cores, whose threads spin at
  // their barriers while the others want the cores. The intra-op threads are shared out
  // instead (set per stage thread; LibTorch's OpenMP count is a per-thread setting): the depth
  // stage, where a CPU conversion spends its time, keeps the caller's count (all cores unless
  // the caller set fewer); decoding's colour conversion, the stabiliser and the stereo warp get
  // a quarter of it (one thread on up to seven cores), the encode stage one; FFmpeg's own
  // decoder and encoder threads block rather than spin and are left to FFmpeg. Whether the
  // encoder sets the pace is then a question of its preset (Note [Encoder preset on the CPU]).
  // On a GPU the stages' tensor work is on the device and nothing is changed.
  int caller_threads = 0; // the caller's intra-op threads, read when the run starts
  std::array<int, kStages> stage_threads{}; // planned
  std::atomic<int> stage_threads_seen[kStages] = {}; // as each stage thread found them
  void plan_cores() {
    caller_threads = std::max(1, at::get_num_threads());
    const bool cpu = run_device().is_cpu();
    for (int i = 0; i < kStages; ++i) {
      const bool depth = std::strcmp(stage_names[i], "depth") == 0;
      const bool encode = std::strcmp(stage_names[i], "encode") == 0;
      stage_threads[i] = !cpu || depth ? caller_threads : encode ? 1 : std::max(1, caller_threads / 4);
    }
  }
  void share_cores(int index) {
    if (caller_threads == 0) {
      return;
    }
    at::internal::lazy_init_num_threads(); // this thread's first use would reset it otherwise
    if (at::get_num_threads() != stage_threads[index]) {
      at::set_num_threads(stage_threads[index]);
    }
    stage_threads_seen[index] = at::get_num_threads();
  }

  // Note [Encoder preset on the CPU]
  // On the CPU the encoder takes its cores from the model: at input 266 on two cores libx264's
  // medium preset on a 2560x720 frame costs about 0.14 core-seconds, against 0.3-0.5 for the
  // model. When the caller names no preset, the engine picks libx264's slowest preset whose
  // estimated share of the CPU time stays within 15 %, from the model's own measured time per
  // frame (the depth stage's first batches, times its threads) and libx264's cost per pixel
  // by preset, measured once on a 2-core AMD EPYC (benchmarks/RESULTS.md: medium 75 ns a pixel
  // of core time; fast 0.70, faster 0.53, veryfast 0.36, superfast 0.20 of that). Where the
  // model is slow (input 518: 2+ core-seconds a frame) medium stays. Only libx264 (the CPU
  // path's default, 8-bit H.264); a GPU run, another encoder, HEVC or 10-bit keep their
  // default. Chosen once per conversion and recorded in the resume journal (Note [Automatic
  // choices in the journal]), so that a resumed run encodes its segments as the first did;
  // reported in EngineResult::encoder_preset and the log. The table and the rule are
  // choose_x264_preset() (media/MediaWriter.h), which split conversions also use to choose one
  // preset for all their parts before the parts start.
  std::string x264_preset;
  static constexpr const char* kPresetChoice = "x264_preset";
  static constexpr const char* kBatchChoice = "batch_size";
  static bool parse_batch_size(const std::string& text, int64_t* batch) {
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || end == nullptr || *end != '\0' || value < 1 || value > 1024) {
      return false;
    }
    *batch = value;
    return true;
  }
  void choose_x264_preset(int64_t width, int64_t height) {
    if (!o.writer.preset.empty() || !run_device().is_cpu() || o.writer.spatial || o.writer.bit_depth != 8 ||
        !(o.writer.codec == "h264" || o.writer.codec == "auto") ||
        !(o.writer.encoder == "auto" || o.writer.encoder == "software" || o.writer.encoder == "libx264")) {
      return;
    }
    const int64_t depth_frames = stage_frames[stage_index("depth")].load();
    const double depth_seconds = static_cast<double>(stage_busy_us[stage_index("depth")].load()) * 1e-6;
    if (depth_frames <= 0 || depth_seconds <= 0.0) {
      return;
    }
    const double model_core_s = depth_seconds / static_cast<double>(depth_frames) * stage_threads[stage_index("depth")];
    const X264PresetChoice chosen = sbsconv::choose_x264_preset(model_core_s, width, height);
    x264_preset = chosen.preset;
    const std::string& why = chosen.reason;
    {
      std::lock_guard<std::mutex> lock(mutex);
      result.encoder_preset = x264_preset;
      result.encoder_preset_reason = why;
    }
    log(LogLevel::Info, why);
    if (journal) {
      journal->record_choice(kPresetChoice, x264_preset);
    }
  }

  int stage_index(const char* name) const {
    for (int i = 0; i < kStages; ++i) {
      if (std::strcmp(stage_names[i], name) == 0) {
        return i;
      }
    }
    return 0;
  }

  BoundedQueue<Batch> decoded{kQueueDepth};
  BoundedQueue<Batch> depthed{kQueueDepth};
  BoundedQueue<Batch> stabilised{kQueueDepth};
  BoundedQueue<Batch> rendered{kQueueDepth};

  // Written by the decode stage before its first batch, read by the encode stage.
  Rational out_time_base;
  Rational out_frame_rate;
  double origin = 0.0; // the output's zero on the source clock (absolute seconds)
  double source_tick = 0.0; // seconds per tick of the source stream's time base
  double source_start = 0.0; // the source stream's start (seconds)
  double source_fps = 25.0; // its nominal frame rate
  std::optional<double> end_time;
  std::vector<std::string> warnings; // guarded by mutex
  std::vector<int64_t> cuts; // guarded by mutex
  double fov_sum = 0.0;
  int64_t fov_count = 0;
  bool warned_fov = false;
  int64_t damaged_frames = 0; // guarded by mutex
  bool truncated = false; // guarded by mutex
  int64_t batches_sent = 0; // decode stage only
  // Note [Progress on variable frame rates]: the exact frame count, counted beside the
  // decoding (-1 until known).
  std::thread frame_counter;
  std::atomic<int64_t> counted_frames{-1};
  // The parsed EngineOptions::fault.
  std::string fault_stage;
  int64_t fault_batch = -1;
  enum class FaultAction { Throw, Kill, Float64, Cancel } fault_action = FaultAction::Throw;
  std::unique_ptr<ComfortBudget> comfort;

  explicit Impl(EngineOptions options) : o(std::move(options)) {}

  // The device the stages work on: the model's, or (depth read from a file) the one given.
  at::Device run_device() const {
    return o.model ? o.model->device() : at::Device(o.device);
  }

  // The field of view Apple's hfov box states: given, else the model's mean estimate, else the
  // 60 degrees the metric rendering assumes (the writer keeps a value given in its options).
  // The horizontal field of view, in one place for every use: the one given (fov_degrees),
  // else the model's estimates (made sane by the stabilise stage), else 60 degrees. Per batch
  // ([N], or [1] when one value holds for all), and for the whole run (the estimates' mean).
  at::Tensor batch_fov(const Batch& b) const {
    if (o.disparity.fov_degrees) {
      return at::full({1}, *o.disparity.fov_degrees, at::kFloat);
    }
    return b.fov.defined() ? b.fov : at::full({1}, kDefaultFov, at::kFloat);
  }
  double run_fov() {
    if (o.disparity.fov_degrees) {
      return *o.disparity.fov_degrees;
    }
    std::lock_guard<std::mutex> lock(mutex);
    return fov_count > 0 ? fov_sum / static_cast<double>(fov_count) : kDefaultFov;
  }
  // Apple's hfov box: a canvas's own (VR180: 180 degrees), else the run's.
  double apple_fov() {
    if (o.writer.apple && o.writer.apple->hfov_degrees) {
      return *o.writer.apple->hfov_degrees;
    }
    return run_fov();
  }

  // Seconds from the source's start of each frame of a batch (Note [Depth files]).
  std::vector<double> source_times(const Batch& b) const {
    std::vector<double> t;
    t.reserve(b.source_pts.size());
    for (const int64_t p : b.source_pts) {
      t.push_back(static_cast<double>(p) * source_tick - source_start);
    }
    return t;
  }

  void fail(std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!error) {
        error = e;
      }
    }
    cancelled = true;
    abort_queues();
  }

  void abort_queues() {
    decoded.abort();
    depthed.abort();
    stabilised.abort();
    rendered.abort();
  }

  void warn(const std::string& message) {
    log(LogLevel::Warning, message);
    std::lock_guard<std::mutex> lock(mutex);
    warnings.push_back(message);
  }

  template <typename F>
  void guarded(const char* stage, F&& body) {
    try {
      body();
    } catch (const Error&) {
      fail(std::current_exception());
    } catch (const c10::Error& e) {
      fail(std::make_exception_ptr(Error(ErrorKind::Internal, stage, e.what_without_backtrace())));
    } catch (const std::exception& e) {
      fail(std::make_exception_ptr(Error(ErrorKind::Internal, stage, e.what())));
    }
  }

  // A test fault (EngineOptions::fault) at this stage's n-th batch.
  void inject_fault(const char* stage, int64_t n) {
    if (fault_batch != n || fault_stage != stage) {
      return;
    }
    switch (fault_action) {
      case FaultAction::Kill:
        std::fflush(nullptr);
        std::raise(SIGKILL);
        return;
      case FaultAction::Cancel: // Ctrl-C arriving exactly here
        user_cancelled = true;
        cancelled = true;
        abort_queues();
        return;
      case FaultAction::Float64: // what a careless statistic would do: the check mode must see it
        (void)at::ones({2}, at::TensorOptions().dtype(at::kDouble).device(run_device())).sum();
        return;
      case FaultAction::Throw:
        break;
    }
    throw Error(ErrorKind::Internal, stage, "a fault injected for testing (batch " + std::to_string(n) + ")");
  }

  // Note [No float64 on devices]: in check mode each stage thread observes its own operations.
  // Note [Host synchronisation]: each stage counts the times it makes the host wait for the
  // device (observed in check mode, the explicit transfers otherwise), per batch.
  // Note [Streams and hand-overs]: each stage works on a stream of its own.
  struct StageGuard {
    Impl& impl;
    const char* stage;
    int index;
    std::optional<Float64Guard> guard;
    std::optional<HostSyncCounter> syncs;
    StageStream stream;
    int64_t transfers_before;
    StageGuard(Impl& owner, const char* name)
        : impl(owner),
          stage(name),
          index(owner.stage_index(name)),
          stream(owner.run_device()),
          transfers_before(explicit_host_transfers()) {
      impl.share_cores(index);
      if (impl.o.check_float64) {
        guard.emplace(/*cpu_counts_as_device=*/true);
      }
      if (impl.o.check_syncs) {
        syncs.emplace(/*cpu_counts_as_device=*/true);
      }
    }
    ~StageGuard() {
      tally();
    }
    void tally() {
      impl.stage_syncs[index] = syncs ? syncs->count() : explicit_host_transfers() - transfers_before;
    }
    // Once per batch, after the stage's work on it.
    void check() {
      impl.stage_batches[index] += 1;
      tally();
      if (guard) {
        guard->check(stage);
      }
    }
    // A batch arriving from the previous stage / leaving for the next one.
    void received(Batch& b) {
      stream.receive(b.ready, b.tensors());
      b.ready.reset();
    }
    void send(Batch& b) {
      b.ready = stream.mark();
    }
  };

  struct Busy {
    std::atomic<int64_t>& counter;
    Clock::time_point t0 = Clock::now();
    ~Busy() {
      counter += std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    }
  };

  // A stage's state at a segment's end, brought to the host in one transfer (Note [Host
  // synchronisation]) for the encode stage to save.
  static TensorMap host_state(TensorMap state) {
    std::vector<at::Tensor> values;
    for (auto& [key, value] : state) {
      values.push_back(value);
    }
    std::vector<at::Tensor> host = to_host_all(values);
    size_t i = 0;
    for (auto& [key, value] : state) {
      value = host[i++];
    }
    return state;
  }

  // The model's field-of-view estimates, made usable: NaN or infinite values become the
  // running mean (or 60), values outside 1..179 degrees are clamped, each with one warning.
  at::Tensor sane_fov(const at::Tensor& estimate) {
    at::Tensor fov = estimate.to(at::kCPU, at::kFloat).contiguous().clone();
    float* v = fov.data_ptr<float>();
    bool bad_value = false;
    bool clamped = false;
    std::lock_guard<std::mutex> lock(mutex);
    for (int64_t i = 0; i < fov.numel(); ++i) {
      if (!std::isfinite(v[i])) {
        v[i] = static_cast<float>(fov_count > 0 ? fov_sum / static_cast<double>(fov_count) : kDefaultFov);
        bad_value = true;
      } else if (v[i] < 1.0f || v[i] > 179.0f) {
        v[i] = std::clamp(v[i], 1.0f, 179.0f);
        clamped = true;
      }
      fov_sum += v[i];
      fov_count += 1;
    }
    if ((bad_value || clamped) && !warned_fov) {
      warned_fov = true;
      const std::string message = bad_value
          ? "the depth model's field-of-view estimate is not a number for some frames; the mean of the others (or 60 degrees) is used"
          : "the depth model's field-of-view estimate is outside 1..179 degrees for some frames; it is clamped";
      log(LogLevel::Warning, message);
      warnings.push_back(message + " (give fov_degrees= to set it)");
    }
    return fov;
  }

  // The writer of this run's video: the output itself, or (resumable runs) the next segment.
  WriterOptions output_writer_options(int width, int height, const std::string& device) const {
    WriterOptions w = o.writer;
    w.width = width;
    w.height = height;
    w.time_base = out_time_base;
    w.frame_rate = out_frame_rate;
    w.time_origin = origin;
    w.time_end = end_time;
    w.device = device;
    w.cancel = &cancelled;
    w.x264_preset = x264_preset;
    if (o.resume) {
      // A segment: video only, in NUT (exact timestamps); the carried streams join at
      // assembly.
      w.path = journal->path_of(numbered("segment_%05lld.nut", static_cast<int64_t>(segments.size())));
      w.container = "nut";
      w.time_origin = origin - kSegmentOffset;
      w.source.clear();
      w.audio = "none";
      w.subtitles = "none";
      w.stereo.clear();
      w.metadata.clear();
    } else if (o.part) {
      // Note [Parts of one video]: video only, on the whole video's timeline
      w.container = "nut";
      w.time_origin = source_start + o.timeline_start - kSegmentOffset;
      w.time_end.reset();
      w.source.clear();
      w.audio = "none";
      w.subtitles = "none";
      w.stereo.clear();
      w.metadata.clear();
      w.apple.reset();
    } else {
      w.source = o.input;
    }
    return w;
  }

  // Journal::load's check of each finished segment: the file holds the packets the journal
  // counted, with the stream parameters it recorded.
  static bool verify_segment(const SegmentRecord& r, const std::string& path, std::string* why) {
    const SegmentInfo info = inspect_segment(path);
    if (info.packets != r.packets) {
      *why = "it holds " + std::to_string(info.packets) + " packets, the journal says " + std::to_string(r.packets);
      return false;
    }
    const std::optional<StreamParams> recorded = StreamParams::parse(r.stream_params);
    StreamParams found = info.params;
    if (recorded) {
      found.encoder = recorded->encoder; // a NUT file may not name its encoder
    }
    if (!recorded || !(found == *recorded)) {
      *why = "its stream (" + info.params.to_string() + ") is not the one the journal recorded (" + r.stream_params + ")";
      return false;
    }
    return true;
  }

  // Note [Resumable runs]: segments are joined by stream copy, so they must all come from
  // the same encoder with the same stream parameters. A continued run opens the encoder it
  // would use (without writing) and converts again, with a warning, every finished segment
  // whose recorded parameters differ (another GPU, a driver or FFmpeg update, other
  // settings that the fingerprint does not see).
  void check_segment_encoder() {
    if (segments.empty()) {
      return;
    }
    const VideoReader reader(o.input, o.reader);
    const VideoStreamDescription& desc = reader.stream();
    const auto [eye_h, eye_w] = eye_size(o.stereo, desc.height, desc.width);
    const auto [height, width] = packed_size(o.stereo.layout, eye_h, eye_w);
    out_time_base = desc.time_base;
    out_frame_rate = desc.frame_rate;
    const StreamParams now =
        probe_encoder(output_writer_options(static_cast<int>(width), static_cast<int>(height), run_device().str()));
    for (size_t i = 0; i < segments.size(); ++i) {
      std::optional<StreamParams> then = StreamParams::parse(segments[i].stream_params);
      if (then) {
        then->encoder = now.encoder; // compared on what they make; the name is reported
      }
      if (then && *then == now) {
        continue;
      }
      warn("resume: segments " + std::to_string(i) + " to " + std::to_string(segments.size() - 1) + " were encoded by " +
           (segments[i].encoder.empty() ? std::string("another encoder") : segments[i].encoder) + " as " +
           segments[i].stream_params + ", but this run's encoder makes " + now.to_string() +
           "; converting them again rather than joining incompatible streams");
      journal->truncate(i);
      segments.resize(i);
      return;
    }
  }

  // Note [Parts of one video]: drops a batch's warm-up frames (those before output_start) and
  // renumbers the rest; false when none is left.
  int64_t warm_up_dropped = 0;
  bool drop_warm_up(Batch& b) {
    const double threshold = source_start + *o.output_start;
    int64_t keep_from = 0;
    while (keep_from < b.size() &&
           static_cast<double>(b.source_pts[static_cast<size_t>(keep_from)]) * source_tick < threshold - 1e-6) {
      ++keep_from;
    }
    b.first_index -= warm_up_dropped;
    warm_up_dropped += keep_from;
    if (keep_from == b.size()) {
      return false;
    }
    if (keep_from > 0) {
      const auto tail = [&](const at::Tensor& t) { return t.defined() && t.size(0) == b.size() ? t.narrow(0, keep_from, b.size() - keep_from) : t; };
      b.frames = tail(b.frames);
      b.disparity = tail(b.disparity);
      b.fov = tail(b.fov);
      b.export_depth = tail(b.export_depth);
      b.depth_colors = tail(b.depth_colors);
      b.pts.erase(b.pts.begin(), b.pts.begin() + keep_from);
      b.source_pts.erase(b.source_pts.begin(), b.source_pts.begin() + keep_from);
      b.starts_shot.erase(b.starts_shot.begin(), b.starts_shot.begin() + keep_from);
    }
    return true;
  }

  void prepare();
  void run();
  void decode_stage();
  void depth_stage();
  void depth_from_file(StageGuard& stage_guard);
  void stabilise_stage();
  void stereo_stage();
  void encode_stage();
  void assemble();
};

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
  SBSCONV_CHECK(o.batch_size >= 1 && o.batch_size <= 1024, Option, "engine", "batch_size must be within 1..1024");
  SBSCONV_CHECK(o.segment_frames >= 1, Option, "engine", "segment_frames must be >= 1");
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
  for (const std::string& extra : {o.depth_export ? o.depth_export->path : std::string(), o.infill_mask, o.depth_video}) {
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
  if (const auto preset = journal->choice(kPresetChoice); preset && is_x264_preset_choice(*preset) && o.writer.preset.empty()) {
    x264_preset = *preset;
    std::lock_guard<std::mutex> lock(mutex);
    result.encoder_preset = x264_preset;
    result.encoder_preset_reason = "libx264 preset " + x264_preset + ": as the interrupted run chose";
  }
  if (o.batch_size_auto) {
    const auto recorded = journal->choice(kBatchChoice);
    int64_t batch = 0;
    if (recorded && parse_batch_size(*recorded, &batch)) {
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

    while (!cancelled) {
      FrameBatch fb;
      {
        Busy busy{stage_busy_us[0]};
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

// ---- depth -------------------------------------------------------------------------------------

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
        waiting.push_back(std::move(b));
        inject_fault("depth", batch_number++);
        stage_guard.check();
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
    depthed.close();
  });
}

// ---- stabilise ----------------------------------------------------------------------------------

void Engine::Impl::stabilise_stage() {
  guarded("stabilise", [&] {
    StageGuard stage_guard(*this, "stabilise");
    int64_t batch_number = 0;
    DepthStabilizer stabilizer(o.stabilizer);
    {
      TensorMap s = under_prefix(restored, "stabilizer.");
      if (!s.empty()) {
        stabilizer.load_state(s);
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
        const int64_t width = b.frames.size(3);
        at::Tensor disparity;
        if (!o.render_stereo) {
          // depth products only: no disparity, no comfort budget
        } else if (o.stabilizer.relative) {
          disparity = disparity_from_relative(
              stable, width, o.disparity.divergence, o.disparity.convergence, o.disparity.max_shift);
        } else {
          disparity = disparity_from_metric(
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
          b.state.merge(host_state(std::move(both))); // one transfer at a segment's end
        }
      }
      inject_fault("stabilise", batch_number++);
      stage_guard.check();
      stage_frames[2] += b.size();
      if (o.output_start && !drop_warm_up(b)) {
        continue; // the whole batch only warmed up the temporal state
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

// ---- encode ------------------------------------------------------------------------------------

void Engine::Impl::encode_stage() {
  guarded("encode", [&] {
    StageGuard stage_guard(*this, "encode");
    int64_t batch_number = 0;
    std::unique_ptr<MediaWriter> writer;
    std::unique_ptr<MediaWriter> depth_writer; // the colour-mapped depth video
    std::unique_ptr<DepthWriter> export_writer; // Note [Depth products]
    std::unique_ptr<LosslessVideoWriter> mask_writer; // Note [Infill masks]
    int64_t segment_first = start_index;
    frames_done = start_index.load();
    auto writer_options = [&](const Batch& b) {
      return output_writer_options(
          static_cast<int>(b.packed.size(3)), static_cast<int>(b.packed.size(2)), b.packed.device().str());
    };
    auto close_segment = [&](int64_t next_index, int64_t next_pts, const TensorMap& state) {
      WriterResult r = writer->finish();
      writer.reset();
      {
        std::lock_guard<std::mutex> lock(mutex);
        // each segment's encoder says the same things (a codec chosen for the frame size ...): once
        for (const auto& w : r.warnings) {
          if (std::find(warnings.begin(), warnings.end(), w) == warnings.end()) {
            warnings.push_back(w);
          }
        }
        result.encoder = r.encoder;
        result.skipped_encoders = r.skipped_encoders;
      }
      SegmentRecord record;
      record.index = static_cast<int64_t>(segments.size());
      record.first_frame = segment_first;
      record.frames = next_index - segment_first;
      record.next_pts = next_pts;
      record.file = fs::path(r.path).filename().string();
      record.encoder = r.encoder;
      record.stream_params = r.video_params.to_string();
      // Counted from the file as written (and so checked once), as a later load counts it.
      record.packets = inspect_segment(journal->path_of(record.file)).packets;
      record.state = numbered("segment_%05lld.state", record.index);
      {
        HostFloat64Scope host; // the states are CPU tensors, written as they are
        save_tensors(journal->path_of(record.state), state);
      }
      journal->append(record);
      segments.push_back(record);
      segment_first = next_index;
    };
    int64_t next_index = start_index;
    while (auto batch = rendered.pop()) {
      if (cancelled) {
        return;
      }
      Batch b = std::move(*batch);
      stage_guard.received(b);
      {
        Busy busy{stage_busy_us[4]};
        if (o.render_stereo) {
          if (!writer) {
            if (segments.empty() && x264_preset.empty()) {
              choose_x264_preset(b.packed.size(3), b.packed.size(2));
            }
            writer = std::make_unique<MediaWriter>(writer_options(b));
            std::lock_guard<std::mutex> lock(mutex);
            result.width = b.packed.size(3);
            result.height = b.packed.size(2);
          }
          writer->write(b.packed, b.pts);
        }
        if (b.export_depth.defined()) {
          if (!export_writer) {
            DepthWriterOptions dw = *o.depth_export;
            dw.width = static_cast<int>(b.export_depth.size(3));
            dw.height = static_cast<int>(b.export_depth.size(2));
            dw.time_base = out_time_base;
            dw.frame_rate = out_frame_rate;
            dw.time_origin = origin;
            dw.source_start = source_start;
            dw.cancel = &cancelled;
            export_writer = std::make_unique<DepthWriter>(dw);
          }
          export_writer->write(b.export_depth, b.pts, source_times(b), b.fov, b.camera);
        }
        if (b.infill_mask.defined()) {
          if (!mask_writer) {
            LosslessVideoOptions mw;
            mw.path = o.infill_mask;
            mw.width = static_cast<int>(b.infill_mask.size(3));
            mw.height = static_cast<int>(b.infill_mask.size(2));
            mw.time_base = out_time_base;
            mw.frame_rate = out_frame_rate;
            mw.time_origin = origin;
            mw.metadata["comment"] =
                "sbsconv infill mask: black = visible; coloured = disoccluded, red/green = (n+1)/2 with n pointing to the background side";
            mw.cancel = &cancelled;
            mask_writer = std::make_unique<LosslessVideoWriter>(mw);
          }
          mask_writer->write(b.infill_mask, b.pts);
        }
        if (b.depth_colors.defined()) {
          if (!depth_writer) {
            WriterOptions dw = o.writer;
            dw.path = o.depth_video;
            dw.container.clear();
            dw.width = static_cast<int>(b.depth_colors.size(3));
            dw.height = static_cast<int>(b.depth_colors.size(2));
            dw.time_base = out_time_base;
            dw.frame_rate = out_frame_rate;
            dw.time_origin = origin;
            dw.source.clear();
            dw.audio = "none";
            dw.subtitles = "none";
            dw.stereo.clear();
            dw.device = "cpu";
            depth_writer = std::make_unique<MediaWriter>(dw);
          }
          depth_writer->write(b.depth_colors, b.pts);
        }
        if (!o.image_dir.empty()) {
          for (int64_t k = 0; k < b.size(); ++k) {
            write_png((fs::path(o.image_dir) / numbered("frame_%06lld.png", b.first_index + k + 1)).string(), b.packed[k]);
          }
        }
        next_index = b.first_index + b.size();
        if (o.resume && b.segment_end) {
          close_segment(next_index, b.next_source_pts, b.state);
        }
      }
      inject_fault("encode", batch_number++);
      stage_guard.check();
      stage_frames[4] += b.size();
      frames_done = next_index;
    }
    if (cancelled) {
      return;
    }
    if (depth_writer) {
      depth_writer->finish();
    }
    if (export_writer) {
      std::vector<int64_t> shot_starts;
      {
        std::lock_guard<std::mutex> lock(mutex);
        shot_starts = cuts;
      }
      DepthExportSummary summary = export_writer->finish(shot_starts);
      std::lock_guard<std::mutex> lock(mutex);
      warnings.insert(warnings.end(), summary.warnings.begin(), summary.warnings.end());
      result.depth_export = summary;
    }
    if (mask_writer) {
      mask_writer->finish();
    }
    if (writer) {
      Busy busy{stage_busy_us[4]};
      if (o.resume) {
        close_segment(next_index, -1, TensorMap{});
      } else {
        writer->set_apple_field_of_view(apple_fov());
        WriterResult r = writer->finish();
        std::lock_guard<std::mutex> lock(mutex);
        result.encoder = r.encoder;
        result.skipped_encoders = r.skipped_encoders;
        result.streams = r.streams;
        result.output = r.path;
        for (const auto& w : r.warnings) {
          warnings.push_back(w);
        }
      }
    } else if ((!o.resume || segments.empty()) && o.render_stereo) {
      throw Error(ErrorKind::Input, "decode", "the window holds no frames", o.input);
    } else if (!o.render_stereo && !export_writer && !depth_writer) {
      throw Error(ErrorKind::Input, "decode", "the window holds no frames", o.input);
    }
  });
}

void Engine::Impl::assemble() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    phase = "assembling";
  }
  WriterOptions w = o.writer;
  w.source = o.input;
  w.time_origin = origin;
  w.time_end = end_time;
  for (const SegmentRecord& r : segments) {
    w.video_segments.push_back(journal->path_of(r.file));
  }
  w.segment_offset = kSegmentOffset;
  w.cancel = &cancelled; // Ctrl-C during assembly stops it; nothing is renamed into place
  if (result.encoder.empty() && !segments.empty()) {
    // every segment was made by an earlier run
    std::lock_guard<std::mutex> lock(mutex);
    result.encoder = segments.front().encoder;
  }
  if (w.encoder.empty() || w.encoder == "auto") {
    w.encoder = result.encoder.empty() ? "copy" : result.encoder;
  }
  MediaWriter writer(w);
  writer.set_apple_field_of_view(apple_fov());
  inject_fault("assemble", 0);
  writer.copy_segments();
  inject_fault("assemble", 1); // copied, not yet renamed into place
  WriterResult r = writer.finish();
  std::lock_guard<std::mutex> lock(mutex);
  result.output = r.path;
  result.streams = r.streams;
  for (const auto& warning : r.warnings) {
    warnings.push_back(warning);
  }
}

void Engine::Impl::run() {
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
    p.stages.push_back(StageStats{d.stage_names[i], d.stage_frames[i], d.stage_busy_us[i] / 1e6, d.stage_batches[i], d.stage_syncs[i], d.stage_threads_seen[i]});
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
    r.stages.push_back(StageStats{d.stage_names[i], d.stage_frames[i], d.stage_busy_us[i] / 1e6, d.stage_batches[i], d.stage_syncs[i], d.stage_threads_seen[i]});
  }
  r.warnings = d.warnings;
  r.cuts = d.cuts;
  r.comfort = d.comfort ? d.comfort->scenes() : std::vector<SceneComfort>{};
  if (d.fov_count > 0) {
    r.fov_degrees = d.fov_sum / static_cast<double>(d.fov_count);
  }
  r.damaged_frames = d.damaged_frames;
  r.truncated = d.truncated;
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
