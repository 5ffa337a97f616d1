#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sbsconv/media/IsoBmff.h"
#include "sbsconv/media/Probe.h"
#include "sbsconv/media/StreamParams.h"

namespace sbsconv {

struct WriterOptions {
  std::string path; // the final output; written as a hidden temporary beside it, then renamed
  std::string container; // "mp4", "mov", "mkv"; "" = from the extension
  std::string codec = "h264"; // "auto", "h264" or "hevc" (see resolve_codec in EncoderSelection.h)
  // "auto" (NVENC, then VideoToolbox, then libx264/libx265, by actually opening them),
  // "nvenc", "videotoolbox", "software", or an FFmpeg encoder name ("libx264", ...).
  std::string encoder = "auto";
  std::optional<int> crf; // libx264/libx265 (0-51)
  std::optional<int> cq; // NVENC constant quality (0-51)
  std::optional<int> quality; // VideoToolbox quality (1-100)
  std::string preset; // encoder preset; "" = sbsconv's default for that encoder
  // libx264's or libx265's preset when `preset` is "" (the engine's choice, Note [Encoder
  // preset chosen to keep pace] in pipeline/EngineImpl.h); other encoders keep their default.
  std::string chosen_preset;
  int bit_depth = 8; // 8, or 10 with HEVC
  int width = 0; // of the frames given to write()
  int height = 0;
  Rational time_base; // of the pts given to write()
  Rational frame_rate; // nominal rate, for rate control and the container
  // Where frames arrive from: a CUDA device lets NVENC take them without a host round trip.
  std::string device = "cpu";
  int threads = 0; // encoder threads; 0 = the encoder's choice
  // Pixel aspect ratio of the frames (anamorphic video); 0/1 = unknown, taken as square.
  // When set it is given to the encoder and the container (MP4/MOV: a pasp box; MKV: the
  // display size).
  Rational sample_aspect{0, 1};

  // Streams carried over from the source file.
  std::string source; // "" = no source: video only
  std::string audio = "copy"; // "copy" (stream copy where the container allows, else AAC),
                              // "aac" (always transcode), "none"
  std::string subtitles = "copy"; // "copy" (converted to the container's text format where
                                  // needed, bitmap subtitles MP4 cannot hold dropped), "none"
  // The output's time zero on the source clock, in seconds (the pts of the first decoded
  // frame's window: the source's start time plus the window start). Video pts given to
  // write() are on the same clock. Source packets before it are dropped.
  double time_origin = 0.0;
  // End of the window on the source clock (absolute seconds); the carried streams also end
  // where the video ends.
  std::optional<double> time_end;

  // Stereoscopic layout tag: "" (none), "sbs" (left eye left), "sbs-rl" (right eye left,
  // cross-eyed), "tb" (left eye on top). MP4/MOV's st3d box cannot say "right eye first",
  // so "sbs-rl" is written there with no stereo tag at all (and a warning) rather than one
  // that makes players swap the eyes; MKV marks it as StereoMode right_left.
  std::string stereo;
  std::map<std::string, std::string> metadata; // extra global tags
  // Apple's stereo boxes (vexu, hfov) for the video's sample entry, MP4/MOV only (Note [Editing
  // ISO-BMFF files]): added to the finished file before it is renamed into place.
  std::optional<AppleStereo> apple;
  // VR180 (Google's spherical metadata, sv3d): the video is half-equirectangular, 180 degrees
  // wide and high; with `stereo` it is st3d + sv3d in MP4/MOV, the projection in MKV.
  bool vr180 = false;
  // Apple spatial video (Note [Spatial video through x265] in MvHevcEncoder.h): the frames are
  // full side by side (left eye left) and become two MV-HEVC layers, encoded by an external
  // x265 with multiview support; MP4/MOV only, 8-bit; `codec`/`encoder` are not used.
  bool spatial = false;

  // Copy mode (see Note [Resumable runs]): the video is not encoded here but copied, packet
  // for packet, from these files (segments encoded earlier, with output-timeline timestamps);
  // call copy_segments() then finish(). `encoder` then only names the encoder that made them.
  std::vector<std::string> video_segments;
  // Seconds added to the segments' timestamps when they were written (to keep every decode
  // timestamp positive, which NUT requires without shifting the stream); removed on copy.
  double segment_offset = 0.0;

  // When given and set, copy_segments() and finish() stop between packets with
  // Error(Cancelled, "assemble"); the output name is left untouched (nothing is renamed
  // into place) and the temporary file is removed. Also aborts blocking reads of the source
  // and the segments. Must outlive the writer.
  const std::atomic<bool>* cancel = nullptr;
};

struct WriterResult {
  std::string path;
  std::string encoder; // the encoder that ran, e.g. "libx264"
  std::vector<std::string> skipped_encoders; // "h264_nvenc: <why>"
  int64_t frames = 0;
  // One line per carried stream: "audio #1 aac (eng): copied", "audio #1 vorbis: -> aac".
  std::vector<std::string> streams;
  std::vector<std::string> warnings;
  // What the encoder that ran produced (Note [Stream parameters]); in copy mode, what the
  // first segment holds.
  StreamParams video_params;
};

// Encodes RGB frames and muxes them, with the source's audio and subtitles, into MP4/MOV
// (faststart) or MKV. Nothing appears under the output name until finish() succeeds; on any
// failure, or if the writer is destroyed unfinished, the temporary file is removed.
//
// Threading: not thread-safe; one owner.
class MediaWriter {
 public:
  explicit MediaWriter(WriterOptions options);
  ~MediaWriter();
  MediaWriter(const MediaWriter&) = delete;
  MediaWriter& operator=(const MediaWriter&) = delete;

  // frames: uint8 [N,3,H,W] RGB (any memory layout; CPU, or CUDA for NVENC); pts: one per
  // frame, in options.time_base units, on the source clock (strictly increasing; repeats
  // are nudged forward by one tick).
  void write(const at::Tensor& frames, const std::vector<int64_t>& pts);

  // Copy mode: copies every segment's video packets (interleaved with the carried streams).
  void copy_segments();

  // Flushes the encoder, completes the carried streams, writes the trailer and renames the
  // temporary file to the output name.
  WriterResult finish();

  // Discards everything written so far; the output name is left untouched.
  void abort();

  // The field of view written into Apple's hfov box, when it is known only at the end (a
  // model's mean estimate). Before finish().
  void set_apple_field_of_view(double degrees);

  const std::string& encoder_name() const;
  const std::vector<std::string>& skipped_encoders() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The temporary name every writer of `output` in this process writes under until it renames
// the complete file (or folder) into place: ".<name>.sbsconv-<pid>.part" beside it.
std::string temporary_path(const std::string& output);

// Removes the temporary files (and image-sequence folders) a writer of `output` left behind
// when its process died; returns how many. Only for a caller that knows no other writer of
// `output` is alive (the engine holds the run lock, Note [Run lock]).
int remove_abandoned_temporaries(const std::string& output);

// The FFmpeg encoders `encoder` resolves to for `codec`, in the order they are tried.
std::vector<std::string> encoder_candidates(const std::string& codec, const std::string& encoder);

// Opens the encoder exactly as a MediaWriter with these options would (same candidates in
// the same order, same settings, the global-header flag of options' container) and describes
// what it produces, without writing anything: for checking, before a resumed run appends to
// earlier segments, that this run's encoder makes the same stream. Cheap (milliseconds for
// libx264). Throws Error(Option) for bad options and Error(Encode) when no encoder opens.
// Threading: safe to call from any thread.
StreamParams probe_encoder(const WriterOptions& options);

// Note [Encoder preset chosen to keep pace] (pipeline/EngineImpl.h): the slowest preset of a
// software encoder, from medium down to veryfast, that keeps pace with the depth stage; with
// the reason, in words, for the log and the result. Pure; safe from any thread.
struct EncoderPace {
  std::string encoder; // the encoder the run opens: "libx264" or "libx265"
  int64_t width = 0; // of the packed frames
  int64_t height = 0;
  double model_seconds = 0.0; // the depth stage's wall seconds a frame
  int model_threads = 1; // its intra-op threads
  // true: a CPU run, where the model and the encoder share the cores; false: the model runs on
  // a GPU and the encoder has `cores` CPU cores to itself
  bool shared_cores = true;
  int cores = 1;
  // Note [Chunk-parallel encoding] (pipeline/SegmentEncoders.h): whether segments may be
  // encoded by several instances at once (a resumable run's), and how many the caller named
  // (0: the rule chooses; only a GPU run chooses more than one)
  bool parallel_segments = false;
  int instances = 0;
  // what model_seconds are: "" the model's; or, the depth read from a file (no model), the
  // slowest other stage's, named here ("the stereo stage ..."), a stage the encoder does not
  // share the cores with as it does the model's (shared_cores false, `cores` those left)
  std::string pacer;
};
struct PresetChoice {
  std::string preset; // "" when the encoder is not one sbsconv chooses for
  std::string reason;
  bool keeps_pace = true; // false: even the fastest preset allowed sets the pace
  int instances = 1; // encoder instances at once
};
PresetChoice choose_encoder_preset(const EncoderPace& pace);
// The most encoder instances choose_encoder_preset() takes on `cores` cores (a GPU run's:
// each instance keeps about six cores busy, Note [Chunk-parallel encoding]).
int max_encoder_instances(int cores);
// Whether sbsconv chooses the preset of this encoder when the caller names none.
bool chooses_preset_for(const std::string& encoder);
// The encoder whose preset sbsconv chooses for a writer with these options (at their frame
// size): the one probe_encoder() finds it opens, when that is libx264 or libx265 and the
// options name no preset; "" otherwise. Opens the encoder (milliseconds for libx264).
std::string preset_chosen_for(const WriterOptions& options);
// Whether `name` is one of the presets choose_encoder_preset() may choose for `encoder`.
bool is_preset_choice(const std::string& encoder, const std::string& name);
// The number of CPU cores this process may run on.
int usable_cores();

// A segment file of a resumable run (NUT, written by MediaWriter in video-only mode).
struct SegmentInfo {
  StreamParams params; // encoder from the stream's "encoder" tag ("" if untagged)
  int64_t packets = 0; // video packets
  int64_t bytes = 0; // file size
};

// Reads a segment's codec parameters and counts its video packets (reading, not decoding).
// A missing, truncated (see Note [Complete segments] in SegmentAssembler.cpp) or otherwise
// damaged file throws Error(Input, "resume", reason, path). Threading: safe to call from any
// thread.
SegmentInfo inspect_segment(const std::string& path);

} // namespace sbsconv
