#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sbsconv/depth/DepthModel.h"
#include "sbsconv/media/DepthFile.h"
#include "sbsconv/media/MediaWriter.h"
#include "sbsconv/media/VideoReader.h"
#include "sbsconv/stereo/Stereo.h"
#include "sbsconv/temporal/ComfortBudget.h"
#include "sbsconv/temporal/DepthStabilizer.h"
#include "sbsconv/temporal/SceneCutDetector.h"
#include "sbsconv/temporal/SubjectPlane.h"

namespace sbsconv {

struct DisparityOptions {
  // relative depth
  double divergence = 2.0; // percent of the eye width
  std::optional<double> max_shift; // pixels; replaces divergence
  double convergence = 0.5;
  // metric depth
  double ipd_metres = 0.063;
  std::optional<double> fov_degrees; // the model's estimate when absent, else 60
  double screen_distance = 2.0;
};

// The subject (Note [Subject on the screen plane]): a mask model (DepthKind::SalientMask) run
// on every frame beside the depth, its masks stabilised like depth (the motion-weighted EMA of
// Note [Depth stabilisation], afresh at cuts).
struct SubjectOptions {
  std::shared_ptr<DepthModel> mask_model; // or:
  std::optional<DepthSourceOptions> mask_source; // masks read from a file (matched by time)
  double mask_smoothing = 0.6; // the masks' EMA weight on still pixels
  // convergence="subject": the subject's depth at zero parallax (plane.relative and
  // plane.fallback are the run's); otherwise the masks are only a product
  bool convergence = false;
  SubjectPlaneOptions plane;
  // mask_out: also write the masks (a gray8 depth file whose sidecar says product: mask)
  std::optional<DepthWriterOptions> mask_export;
};

struct EngineOptions {
  std::string input;
  ReaderOptions reader; // window, stream, hardware decoding, device
  int64_t batch_size = 4;
  // batch_size was chosen for the caller (not given): a resumed run takes the first run's
  // (Note [Automatic choices in the journal] in pipeline/Journal.h)
  bool batch_size_auto = false;
  std::shared_ptr<DepthModel> model;
  bool detect_cuts = true;
  SceneCutOptions cuts;
  StabilizerOptions stabilizer;
  ComfortOptions comfort;
  DisparityOptions disparity;
  StereoOptions stereo;
  // The output: path, container, codec, encoder, quality, audio/subtitles, stereo tag,
  // metadata. Frame size, time base, frame rate, source and time window are set by the engine.
  WriterOptions writer;
  std::optional<Rational> fps; // resample to this rate (frames repeated or dropped)
  double preview_every = 0.0; // seconds: one frame every this often, shown 1 s each
  std::string image_dir; // also write every output frame as a PNG here
  std::string depth_video; // also write the stabilised depth, colour-mapped, as a video here
  // Note [Depth products]. depth_export: also write the depth as it goes into the stereo
  // stage (its path and format; the engine sets the size, timing and cancel flag).
  // render_stereo false: write only the depth products (no 3D video; writer.path then names
  // the file the run lock sits beside). depth_source: take each frame's depth from this file
  // (matched by time) instead of running a model; it is used as stored (it was stabilised
  // when exported). infill_mask: also write a lossless video, packed like the 3D video, that
  // marks each synthesised eye's disoccluded pixels (Note [Infill masks]).
  std::optional<DepthWriterOptions> depth_export;
  bool render_stereo = true;
  std::optional<DepthSourceOptions> depth_source;
  std::string infill_mask;
  std::optional<SubjectOptions> subject;
  std::string device = "cpu"; // where the work runs when no model does (depth_source)
  // Note [Parts of one video]: this run converts one part of a video that several runs
  // convert side by side (sbsconv's split conversions). reader.start is the part's start less
  // a warm-up stretch; frames before output_start (seconds after the source's start) only warm
  // up the temporal state (depth alignment and range, scene cuts, the comfort budget) and are
  // not rendered or written. part: the output is one video-only NUT piece whose timestamps are
  // on the whole video's timeline (zero at timeline_start, seconds after the source's start),
  // shifted as resume segments are, for assemble_parts() to join by stream copy.
  std::optional<double> output_start;
  bool part = false;
  double timeline_start = 0.0;
  bool resume = false; // see Note [Resumable runs]
  std::string fingerprint; // identifies input + options for resume
  int64_t segment_frames = 240;
  // Note [Chunk-parallel encoding]: encoder instances that encode a resumable run's segments at
  // once; 0: the engine chooses (Note [Encoder preset chosen to keep pace]: more than one only
  // on a GPU run whose software encoder would otherwise set the pace).
  int encoder_instances = 0;
  // Debugging and tests. check_float64: every stage observes its own tensor operations and
  // fails on a float64 tensor that would live on the model's device, the CPU included (Note
  // [No float64 on devices]). fault: "STAGE:N" makes STAGE fail at its N-th batch (0-based),
  // "STAGE:N:kill" kills the process there (SIGKILL), "STAGE:N:float64" makes a float64 tensor
  // there (to prove check_float64 sees it), "STAGE:N:cancel" cancels the run there as
  // Ctrl-C would, for the fault tests; STAGE is decode,
  // depth, stabilise, stereo, encode, encode-segment (N counts the batches the parallel
  // segments' encoders write, Note [Chunk-parallel encoding]) or assemble (N counts segments
  // copied).
  bool check_float64 = false;
  // check_syncs: every stage counts each operation that would make the host wait for the
  // model's device, the CPU counting as one (Note [Host synchronisation]).
  bool check_syncs = false;
  std::string fault;
};

struct StageStats {
  std::string name;
  int64_t frames = 0;
  double busy_seconds = 0.0; // time spent working (not waiting on its queues)
  int64_t batches = 0;
  // Times the stage made the host wait for the device (Note [Host synchronisation]): every
  // synchronising operation with EngineOptions::check_syncs, else its explicit transfers.
  int64_t host_syncs = 0;
  // LibTorch intra-op threads the stage's thread computed with (Note [Sharing the cores]),
  // and those it took once the model was done (0: it kept its share to the end).
  int threads = 0;
  int threads_after_model = 0;
};

struct EngineProgress {
  std::string phase; // "starting", "converting", "assembling", "done", "failed", "cancelled"
  int64_t frames_done = 0; // frames encoded (counting frames done by an earlier run)
  int64_t frames_total = -1; // the estimate for the whole window; -1 when unknown
  int64_t resumed_from = 0;
  double elapsed = 0.0;
  std::vector<StageStats> stages;
};

struct EngineResult {
  std::string output;
  int64_t frames = 0; // frames in the output
  int64_t resumed_from = 0; // the first frame this call processed
  int64_t batch_size = 0; // frames per depth batch as run (a resumed run's: the first run's)
  double seconds = 0.0;
  int64_t width = 0; // of the output frames
  int64_t height = 0;
  std::vector<StageStats> stages;
  // Note [Encoder preset chosen to keep pace]: the libx264/libx265 preset the engine chose ("" when the caller
  // gave one or none was chosen), and why.
  std::string encoder_preset;
  std::string encoder_preset_reason;
  // Note [Chunk-parallel encoding]: encoder instances that encoded segments at once (1: one
  // stream at a time) and the frames each segment held when more than one did (else 0)
  int encoder_instances = 1;
  int64_t chunk_frames = 0;
  std::string encoder;
  std::vector<std::string> skipped_encoders;
  std::vector<std::string> streams;
  std::vector<std::string> warnings;
  std::vector<int64_t> cuts; // frames that started a new shot (found in this call)
  std::vector<SceneComfort> comfort;
  std::optional<double> fov_degrees; // the model's mean estimate, when it makes one
  int64_t damaged_frames = 0; // decoded with errors, or corrupt packets skipped
  bool truncated = false; // the input ended before the end its container declares
  std::optional<DepthExportSummary> depth_export; // what depth_export wrote
  std::optional<DepthExportSummary> mask_export; // what subject.mask_export wrote
  // convergence="subject": each output frame's plane (relative: the convergence in [0,1];
  // metric: the screen distance in metres), in order, for the frames of this call
  std::vector<double> screen_plane;
};

// Note [Depth products]
// Depth is a product as well as a step: the depth stage's output, after the stabiliser, is
// what the stereo stage turns into disparity, so that is what an export holds (relative depth
// normalised to [0,1], or metres) and what a later run reads back instead of running the
// model (depth_source). Read back, it skips the stabiliser; scene cuts are found again from
// the frames and the comfort budget runs as before, so a re-render with the same options
// gives the same 3D video, within the format's quantisation, at the speed of the warp and
// the encoder.
//
// Note [Engine]
// One conversion runs as five stages, each on its own thread, joined by bounded queues of
// frame batches: decode (with scene-cut detection and the frame selection of fps/preview
// modes) -> depth (batched inference; temporal models reset at cuts) -> stabilise (depth
// stabiliser, disparity, comfort budget) -> stereo (edge snapping, warp, fill, pack; it
// holds a batch back until the frames the temporal fill looks ahead to have arrived, Note
// [Temporal fill]) -> encode (and, for a
// resumable run, segment files and the journal). Memory is bounded by the queues. A stage
// that throws records its error (with its stage), aborts every queue and sets the cancel
// flag, so nothing waits on a dead stage; result() rethrows the first error. cancel() sets
// the same flag, which every stage checks between batches and the decoder's I/O checks.
// Where it lives: the engine's state and the stages' shared interface (queues, counters,
// saved states, guards) in EngineImpl.h; the wiring in Engine.cpp; each stage's loop in its
// own file (DecodeStage, DepthStage, StabiliseStage, StereoStage, EncodeStage, AssemblyStage).
//
// Threading: start(), wait(), cancel(), progress() and result() may be called from any one
// thread (the caller); the stages run on threads the engine owns and joins, each named for its
// stage ("sbs-depth", ...: top -H, perf and gdb show them; StageGuard names them).
class Engine {
 public:
  explicit Engine(EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void start();
  // Waits up to `timeout_seconds`; true once the run has finished (successfully or not).
  bool wait(double timeout_seconds);
  void cancel();
  EngineProgress progress() const;
  // The result of a finished run; rethrows its error (a Cancelled error after cancel()).
  EngineResult result();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Note [Parts of one video]: joins the parts that runs with `part` set wrote (in order, each
// covering the frames from its output_start to the next part's) into options.writer.path by
// stream copy, with the source's audio and subtitles over options.reader's window, as a
// resumed run's segments are joined. `fov_degrees`: for Apple's hfov box when the options'
// writer has one without a value. Throws as MediaWriter (Error(Cancelled) when *cancel is set).
WriterResult assemble_parts(
    const EngineOptions& options,
    const std::vector<std::string>& parts,
    double fov_degrees,
    const std::atomic<bool>* cancel = nullptr);

} // namespace sbsconv
