#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sbsconv/media/Probe.h"

namespace sbsconv {

// Note [Depth files]
// Depth leaves sbsconv in one of six formats, each with a JSON sidecar that says how to read
// it without sbsconv (units, how stored values map to depth, every frame's timestamp, field
// of view, scene cuts, the model and the options of the run):
//   gray16      FFV1 gray16le in Matroska; code = round((d - low) / (high - low) * 65535).
//   gray8       FFV1 gray (8-bit) in Matroska; code = round((d - low) / (high - low) * 255):
//               the subject masks (sidecar product "mask"), and depth where 8 bits will do.
//   rgb-packed  the metric-depth toolboxes' exchange format: an 8-bit RGB video (FFV1 bgr0 in
//               Matroska) whose red and green both hold the high byte of a 16-bit code and
//               blue its low byte. The code is the top 16 bits of a 32-bit value on which
//               255^4 steps span 0..max_depth (the toolboxes' own scale, so each side reads
//               the other's files exactly): code = round(d / max_depth * 255^4 / 65536),
//               d = code * 65536 / 255^4 * max_depth. Depth beyond max_depth is clipped.
//   png16       one 16-bit grey PNG per frame (depth_000001.png, ...), mapped as gray16.
//   exr         one float EXR per frame (FFmpeg's OpenEXR encoder; float32, or half).
//   npy         one [N,H,W] float32/float16 array, written frame by frame (the header's frame
//               count is completed at the end), so memory stays flat for any length.
// Depth is what the stereo stage uses: relative models give normalised inverse depth in
// [0,1] (1 = nearest, after the depth stabiliser), metric models metres. gray16/png16 use
// low = 0, high = 1 for relative depth and each frame's own minimum and maximum for metres
// (gray8 likewise).
// The sidecar of a file X is X.json; of a sequence folder, depth.json inside it. Timestamps
// are seconds on the source's clock (the source's first frame at source_start), so a later
// conversion of the same video matches depth to frames by time, whatever window either run
// used.
//
// Reading back (DepthReader) accepts every format but the colour-mapped preview, and
// rgb-packed files without a sidecar given max_depth (files the toolboxes wrote; lossy
// H.264/HEVC ones too: the two copies of the high byte are averaged, and the high byte whose
// code lies nearest the averaged high byte's centre is taken with the blue low byte, which
// keeps the error near one low-byte step where compression blurs the bytes; a lossy file's
// frames are then denoised, Note [Lossy packed depth] in DepthFile.cpp).

enum class DepthFormat { Gray16, Gray8, RgbPacked, Png16, Exr, Npy };

DepthFormat parse_depth_format(const std::string& name);
const char* depth_format_name(DepthFormat format);

// float depth [N,1,H,W] -> uint8 RGB [N,3,H,W] packed as above; `clipped`, when given,
// receives the number of pixels beyond max_depth.
at::Tensor pack_rgb_depth(const at::Tensor& depth, double max_depth, int64_t* clipped = nullptr);
// uint8 RGB [N,3,H,W] (lossless or lossy) -> float depth [N,1,H,W].
at::Tensor unpack_rgb_depth(const at::Tensor& rgb, double max_depth);
// float depth [N,1,H,W] -> int32 codes 0..full_scale for per-frame ranges low/high ([N] float).
at::Tensor depth_to_codes(const at::Tensor& depth, const at::Tensor& low, const at::Tensor& high, double full_scale = 65535.0);
at::Tensor codes_to_depth(const at::Tensor& codes, const at::Tensor& low, const at::Tensor& high, double full_scale = 65535.0);

struct DepthWriterOptions {
  std::string path; // the file (gray16/rgb-packed: .mkv; npy: .npy) or the folder (png16, exr)
  DepthFormat format = DepthFormat::Gray16;
  bool relative = true; // normalised inverse depth in [0,1]; false: metres
  double max_depth = 6.0; // rgb-packed: metres at full scale (relative depth: 1)
  bool half = false; // exr and npy: float16 instead of float32
  int width = 0;
  int height = 0;
  Rational time_base; // of the pts given to write(), on the source's clock
  Rational frame_rate;
  double time_origin = 0.0; // the first frame's window start on the source clock (seconds)
  double source_start = 0.0; // the source stream's start (seconds): time zero of the sidecar
  std::optional<double> fov_degrees; // the field of view given by the user (else estimates)
  // Members of a JSON object (without the braces) written into the sidecar as given: the
  // model, checkpoint and options of the run.
  std::string sidecar_extra;
  const std::atomic<bool>* cancel = nullptr;
};

struct DepthExportSummary {
  std::string path;
  std::string sidecar;
  int64_t frames = 0;
  std::vector<std::string> warnings;
};

// Writes depth frames in any DepthFormat, and the sidecar. Nothing appears under the output
// name until finish() succeeds (files under temporary_path(), folders likewise, renamed into
// place: a folder replaces only an earlier sbsconv depth folder or an empty one). An
// unfinished writer removes what it wrote.
//
// Threading: not thread-safe; one owner.
class DepthWriter {
 public:
  explicit DepthWriter(DepthWriterOptions options);
  ~DepthWriter();
  DepthWriter(const DepthWriter&) = delete;
  DepthWriter& operator=(const DepthWriter&) = delete;

  // depth: float [N,1,H,W] at the writer's size (any device); pts: in options.time_base on
  // the source clock (the video formats' timestamps); times: the seconds from the source's
  // start of the source frame each depth belongs to (the sidecar's, for matching; equal to
  // the pts unless frames were resampled); fov: [N] degrees (the model's estimates) or
  // undefined; camera: [N,3,4] camera-to-world poses (the model's estimates) or undefined.
  void write(
      const at::Tensor& depth,
      const std::vector<int64_t>& pts,
      const std::vector<double>& times,
      const at::Tensor& fov = {},
      const at::Tensor& camera = {});
  // cuts: output frame numbers that start a new shot.
  DepthExportSummary finish(const std::vector<int64_t>& cuts);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A depth file to read, as its sidecar describes it (the Python side reads the JSON).
struct DepthSourceOptions {
  std::string path; // the file, or a sequence's folder
  DepthFormat format = DepthFormat::Gray16;
  bool relative = true;
  double max_depth = 0.0; // rgb-packed
  std::string pattern = "depth_%06lld"; // sequences: file names (numbered from 1), without extension
  // Each frame's time in seconds from the source's start; empty: the video file's own
  // timestamps (rgb-packed without a sidecar).
  std::vector<double> times;
  std::vector<float> low; // gray16/gray8/png16: per frame, or one value for all
  std::vector<float> high;
  std::vector<float> fov; // per frame (may be empty)
  // The largest frame accepted, in pixels (Note [Bounded inputs]): larger frames are refused
  // before they are decoded. By default a video's bound; a service reading untrusted files
  // may set less.
  int64_t max_pixels = int64_t{16384} * 16384;
};

struct DepthFrames {
  at::Tensor depth; // float [N,1,H,W] on the CPU
  std::vector<double> times; // seconds from the source's start
  at::Tensor fov; // [N] degrees, or undefined
  int64_t size() const {
    return static_cast<int64_t>(times.size());
  }
};

// Reads depth frames in order. Opening checks what can be checked without reading it all:
// the file is there and decodes, a video without a sidecar really is RGB-packed depth (its
// red and green agree), the sidecar's frames match the file's.
//
// Threading: not thread-safe; one owner.
class DepthReader {
 public:
  explicit DepthReader(DepthSourceOptions options);
  ~DepthReader();
  DepthReader(const DepthReader&) = delete;
  DepthReader& operator=(const DepthReader&) = delete;

  int width() const;
  int height() const;
  int64_t frame_count() const; // -1 when the file does not say
  double frame_rate() const; // nominal frames per second
  // Up to max_frames frames, fewer where they would pass 256 MB of depth (at least one: Note
  // [Bounded inputs]); none at the end. Throws Error(Input) for damaged files.
  DepthFrames read(int max_frames);
  void set_cancel_flag(const std::atomic<bool>* flag);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Depth for frames given by their times: walks a DepthReader forward, taking for each time
// the depth frame nearest to it, which must lie within `tolerance` seconds (half a frame).
//
// Threading: not thread-safe; one owner (the engine's depth stage).
class DepthMatcher {
 public:
  DepthMatcher(std::unique_ptr<DepthReader> reader, double tolerance);
  // times: seconds from the source's start, increasing. Returns float [N,1,h,w] (the file's
  // size) and, when the file has them, the field-of-view estimates in *fov.
  at::Tensor depth_for(const std::vector<double>& times, at::Tensor* fov);
  const DepthReader& reader() const {
    return *reader_;
  }

 private:
  bool fill();
  std::unique_ptr<DepthReader> reader_;
  double tolerance_;
  DepthFrames buffer_;
  int64_t position_ = 0; // next unread frame in buffer_
  bool ended_ = false;
};

} // namespace sbsconv
