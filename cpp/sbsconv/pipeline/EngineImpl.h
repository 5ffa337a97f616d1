#pragma once

// The engine's private room (Note [Engine] in Engine.h): its state, its queues and counters, and
// the interface every stage works through (Engine::Impl). Engine.cpp holds the wiring, the
// set-up and the lifecycle; each stage's loop has a translation unit of its own (DecodeStage,
// DepthStage, StabiliseStage, StereoStage, EncodeStage, AssemblyStage .cpp). Included only by
// those files.

#include "sbsconv/pipeline/Engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <pthread.h>
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
#include "sbsconv/pipeline/SegmentEncoders.h"
#include "sbsconv/pipeline/BoundedQueue.h"
#include "sbsconv/pipeline/FrameSelector.h"
#include "sbsconv/pipeline/Journal.h"
#include "sbsconv/pipeline/RunLock.h"
#include "sbsconv/pipeline/StateFile.h"
#include "sbsconv/stereo/Disparity.h"
#include "sbsconv/stereo/Stereo.h"
#include "sbsconv/stereo/Vr180.h"

namespace sbsconv {

namespace fs = std::filesystem;

namespace engine_detail {

using Clock = std::chrono::steady_clock;
inline constexpr size_t kQueueDepth = 2; // batches waiting between two stages
inline constexpr double kDefaultFov = 60.0;
// Note [Bounded inputs] (VideoReader.h): a batch's frames cost about this many bytes per
// pixel across the stages at once: in the queues (RGB 3, RGB + depth 7, RGB + disparity 7,
// packed eyes 6, two batches each) and in the stages' work (the warp's float intermediates
// above all); and a batch may take at most this many.
inline constexpr int64_t kBytesInFlightPerPixel = 120;
inline constexpr int64_t kBatchByteBudget = int64_t{8} << 30;
// Segments are written this many seconds late on the output clock, so that an encoder's
// negative start decode timestamps (B-frame delay) stay positive in NUT; assembly takes it
// back off.
inline constexpr double kSegmentOffset = 100.0;

// A hidden file or folder beside the output: ".<output name><suffix>". The resume folder
// (Note [Resumable runs]) and the run lock (Note [Run lock]: one per output, whatever the
// run's kind).
std::string beside_output(const std::string& output, const char* suffix);

// Memory this process can still take (MemAvailable on Linux, the free pages elsewhere); 0 when
// unknown.
int64_t available_memory_bytes();

std::string numbered(const char* pattern, int64_t n);

} // namespace engine_detail

using namespace engine_detail;

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
  // Note [Encoder preset chosen to keep pace]: the model's pace without its first batch (which
  // also builds its kernels and warms its caches): the frames the model has taken, and its
  // busy time and frames when the first batch was done (-1: not yet).
  std::atomic<int64_t> model_frames_in{0};
  std::atomic<int64_t> model_first_busy_us{-1};
  std::atomic<int64_t> model_first_frames{0};
  // Note [Sharing the cores]
  // On the CPU every stage computes with LibTorch, and each stage thread would otherwise open
  // an OpenMP team as wide as the machine: five teams on two cores, whose threads spin at
  // their barriers while the others want the cores. The intra-op threads are shared out
  // instead (set per stage thread; LibTorch's OpenMP count is a per-thread setting): the depth
  // stage, where a CPU conversion spends its time, keeps the caller's count (all cores unless
  // the caller set fewer); decoding's colour conversion, the stabiliser and the stereo warp get
  // a quarter of it (one thread on up to seven cores), the encode stage one; FFmpeg's own
  // decoder and encoder threads block rather than spin and are left to FFmpeg. Whether the
  // encoder sets the pace is then a question of its preset (Note [Encoder preset chosen to keep
  // pace]).
  // Once the model has given its last depth (or where no model runs: depth read from a file),
  // the stereo stage takes the caller's count: what is left then is the tail the temporal fill's
  // window holds back and the encoder's, and one thread would leave the model's cores idle.
  // On a GPU the stages' tensor work is on the device and nothing is changed.
  std::atomic<bool> model_done{false};
  std::atomic<int> stage_threads_after_model[kStages] = {};
  void widen_cores(int index) {
    if (caller_threads == 0 || !model_done.load() || !run_device().is_cpu()) {
      return;
    }
    if (at::get_num_threads() != caller_threads) {
      at::set_num_threads(caller_threads);
    }
    stage_threads_after_model[index] = at::get_num_threads();
  }
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

  // Note [Encoder preset chosen to keep pace]
  // When the caller names no preset and the run's encoder is libx264 or libx265 (the one
  // probe_encoder finds the writer would open: a hardware encoder keeps its own default), the
  // engine picks the slowest preset from medium (the encoders' default) down to veryfast (the
  // quality floor; faster presets only when asked) that keeps pace with the depth stage, from
  // the model's own measured time a frame (the depth stage's first batches) and the encoder's
  // core time a pixel by preset (choose_encoder_preset, media/EncoderSelection.cpp, its table
  // measured by benchmarks/bench_encoder.py):
  //   - on the CPU the encoder takes its cores from the model (libx264's medium on a 2560x720
  //     frame costs about 0.14 core-seconds, against 1.5-1.8 for the model at input 518 on two
  //     cores): the preset whose core time a frame stays within 5 % of the model's, what the
  //     goal of end to end at 0.9 of the model alone leaves once decoding, the stabiliser and
  //     the stereo stage have theirs (kEncoderShare, media/EncoderSelection.cpp);
  //   - on a GPU the encoder has the CPU's cores to itself: the preset whose frames per
  //     second on them (at 75 % thread efficiency) exceed the model's by 10 %.
  // The model's time a frame leaves out its first batch where later ones are done (the first
  // also builds its kernels: measured with it, a fast model looked slow enough to be given a
  // slower preset in one run of three, benchmarks/RESULTS.md).
  // With the depth read from a file there is no model: the pace to keep is the slowest other
  // stage's (the stereo stage's, as a rule), measured the same way, and the rule is the GPU's,
  // on the cores that stage leaves the encoder (on the CPU that stage's threads are not the
  // encoder's; nothing else there takes a machine's cores as the model does).
  // Where even veryfast cannot keep pace, the choice says so: the result's reason and the log
  // name the encoder as what sets the pace, and how to go faster. Chosen once per conversion
  // and recorded in the resume journal (Note [Automatic choices in the journal]), so that a
  // resumed run encodes its segments as the first did; reported in
  // EngineResult::encoder_preset. Split conversions choose one preset for all their parts the
  // same way before the parts start (sbsconv.plan.settle_split_options).
  std::string chosen_preset;
  static constexpr const char* kPresetChoice = "encoder_preset";
  static constexpr const char* kBatchChoice = "batch_size";
  // a count the journal recorded (the batch size, the encoder instances): 1..1024; false
  // for anything else (a damaged journal's value is not restored)
  static bool parse_recorded_count(const std::string& text, int64_t* count) {
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || end == nullptr || *end != '\0' || value < 1 || value > 1024) {
      return false;
    }
    *count = value;
    return true;
  }
  // Note [Chunk-parallel encoding] (SegmentEncoders.h): the encoder instances that encode
  // this run's segments at once, the frames each segment holds then (the decode stage ends
  // segments at this length from when it is set; 0: the run's segment_frames), and the
  // instances an interrupted run chose (0: none recorded).
  int encoder_instances = 1;
  std::atomic<int64_t> chunk_frames{0};
  int restored_instances = 0;
  static constexpr const char* kInstancesChoice = "encoder_instances";
  // What the frames of the segments being encoded may take while they wait, all together
  // (on the device they are on; on the CPU also at most a quarter of the available memory).
  static constexpr int64_t kChunkBufferBytes = int64_t{2} << 30;

  // At the first batch the encode stage has (the frames' size and the model's pace known):
  // the preset (Note [Encoder preset chosen to keep pace]) and the encoder instances.
  void choose_encoding(const WriterOptions& writer, const Batch& b) {
    // segments exist only in a resumable run; one video written in one piece has one encoder
    const bool parallel = o.resume && !o.part && !writer.spatial;
    int instances = o.encoder_instances > 0 ? o.encoder_instances : restored_instances;
    if (!parallel && instances > 1) {
      warn("encoders=" + std::to_string(instances) + " needs a resumable run (resume on, not a depth export, infill "
           "mask, depth video, preview or spatial video): the video is encoded as one stream");
      instances = 1;
    }
    if (segments.empty() && chosen_preset.empty()) {
      // the stage whose pace the encoder keeps, its frames and busy seconds so far
      int pacer = stage_index("depth");
      if (o.depth_source) {
        // no model: the slowest other stage (the stereo stage, as a rule), its first batch's
        // time included
        double slowest = -1.0;
        for (int i = 0; i < kStages; ++i) {
          const int64_t frames = stage_frames[i].load();
          const double seconds = static_cast<double>(stage_busy_us[i].load()) * 1e-6;
          if (std::strcmp(stage_names[i], "encode") != 0 && frames > 0 && seconds / frames > slowest) {
            slowest = seconds / static_cast<double>(frames);
            pacer = i;
          }
        }
      }
      int64_t pace_frames = stage_frames[pacer].load();
      double pace_seconds = static_cast<double>(stage_busy_us[pacer].load()) * 1e-6;
      const int64_t first_us = model_first_busy_us.load(); // stored after the first frames
      const int64_t first_frames = model_first_frames.load();
      const int64_t frames_in = model_frames_in.load(); // counted after their time
      if (!o.depth_source && first_us >= 0 && frames_in > first_frames) {
        // the model's batches after its first (its warm-up left out)
        pace_frames = frames_in - first_frames;
        pace_seconds = static_cast<double>(stage_busy_us[pacer].load() - first_us) * 1e-6;
      }
      const std::string encoder = pace_frames > 0 && pace_seconds > 0.0 ? preset_chosen_for(writer) : "";
      if (!encoder.empty()) {
        EncoderPace pace;
        pace.encoder = encoder;
        pace.width = writer.width;
        pace.height = writer.height;
        pace.model_seconds = pace_seconds / static_cast<double>(pace_frames);
        const int widened = stage_threads_after_model[pacer].load(); // (Note [Sharing the cores])
        pace.model_threads = widened > 0 ? widened : stage_threads[pacer];
        pace.shared_cores = run_device().is_cpu() && !o.depth_source;
        pace.cores = usable_cores();
        if (o.depth_source) {
          // Note [Encoder preset chosen to keep pace]: the depth read from a file
          pace.pacer = std::string("the ") + stage_names[pacer] + " stage (the depth read from a file)";
          if (run_device().is_cpu()) {
            pace.cores = std::max(1, pace.cores - pace.model_threads);
          }
        }
        pace.parallel_segments = parallel;
        pace.instances = instances;
        const PresetChoice chosen = choose_encoder_preset(pace);
        chosen_preset = chosen.preset;
        instances = chosen.instances;
        {
          std::lock_guard<std::mutex> lock(mutex);
          result.encoder_preset = chosen_preset;
          result.encoder_preset_reason = chosen.reason;
        }
        log(chosen.keeps_pace ? LogLevel::Info : LogLevel::Warning, chosen.reason);
        if (journal) {
          journal->record_choice(kPresetChoice, chosen_preset);
        }
      }
    }
    instances = std::max(instances, 1);
    int64_t chunk = 0;
    if (instances > 1) {
      const int64_t frame_bytes =
          std::max<int64_t>(b.packed.numel() / std::max<int64_t>(b.size(), 1) * b.packed.element_size(), 1);
      int64_t budget = kChunkBufferBytes;
      const int64_t available = available_memory_bytes();
      if (b.packed.is_cpu() && available > 0) {
        budget = std::min(budget, available / 4);
      }
      const ParallelSegments plan =
          plan_parallel_segments(instances, frame_bytes, budget, o.segment_frames, o.batch_size);
      if (plan.instances < instances) {
        warn("encoder instances: " + std::to_string(plan.instances) + " instead of " + std::to_string(instances) +
             " (the frames they would hold at once do not fit in " + std::to_string(budget >> 20) + " MiB)");
      }
      instances = plan.instances;
      if (instances > 1) {
        chunk = plan.segment_frames;
        chunk_frames = chunk;
        log(LogLevel::Info, std::to_string(instances) + " encoder instances encode segments of " +
                                std::to_string(chunk) + " frames at once (Note [Chunk-parallel encoding])");
      }
    }
    encoder_instances = instances;
    {
      std::lock_guard<std::mutex> lock(mutex);
      result.encoder_instances = instances;
      result.chunk_frames = chunk;
    }
    if (journal && parallel) {
      journal->record_choice(kInstancesChoice, std::to_string(instances));
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
  // The stage's name on its thread ("sbs-stereo"), as top -H, perf, gdb and py-spy show it; the
  // threads a stage starts (its OpenMP team, FFmpeg's codec threads) inherit it on Linux.
  static void name_this_thread(const char* stage) {
    char label[16]; // the kernel keeps 15 characters
    std::snprintf(label, sizeof label, "sbs-%s", stage);
#if defined(__linux__)
    pthread_setname_np(pthread_self(), label);
#elif defined(__APPLE__)
    pthread_setname_np(label);
#endif
  }
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
      name_this_thread(name);
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
    w.chosen_preset = chosen_preset;
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
      b.mask = tail(b.mask);
      b.plane = tail(b.plane);
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
  void subject_mask(Batch& b);
  std::unique_ptr<DepthMatcher> mask_matcher; // subject.mask_source (the depth stage's)
  // convergence="subject": each kept batch's planes, in order (the stabilise stage's; read
  // once the stages have ended)
  std::vector<at::Tensor> screen_planes;
  void stabilise_stage();
  void stereo_stage();
  void encode_stage();
  void assemble();
};

} // namespace sbsconv
