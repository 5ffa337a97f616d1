#pragma once

#include <ATen/core/Tensor.h>

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/ColorConversion.h"
#include "sbsconv/media/MediaWriter.h"

namespace sbsconv {

// Note [Spatial video through x265]
// Apple's spatial video is MV-HEVC: the left eye is the base layer and the right eye a second
// layer predicted from it, in one HEVC track whose sample entry carries both layers' parameter
// sets (hvcC and lhvC) and Apple's vexu/hfov boxes. No FFmpeg sbsconv supports can encode it,
// and no libx265 it links against either (Debian's and Ubuntu's 3.5 predate multiview; x265 4.0+
// has it only when built with ENABLE_MULTIVIEW, and its API changes with the build). So sbsconv
// runs the x265 command line as a separate process, found at run time and feature-detected:
// $SBSCONV_X265 if set, else `x265` on PATH, used only if its --help offers --multiview-config.
// - Frames go to x265's standard input as raw 8-bit 4:2:0 side-by-side pictures (its multiview
//   config: two views, format 1, input "-"), converted with the same BT.709 limited-range
//   conversion as every other output; each eye is cropped to even sizes (4:2:0). x265 writes a
//   raw byte stream to a temporary file beside the output.
// - finish() reads that stream back (Note [MV-HEVC bitstreams]): access units, their display
//   order from the picture order count (x265 reorders with B-frames), the base layer's
//   parameter sets as the muxer's extradata (FFmpeg builds hvcC from them) and the second
//   layer's as an lhvC box that the writer adds with Apple's boxes (Note [Editing ISO-BMFF
//   files]). Presentation timestamps are the frames' own, taken in display order; decode
//   timestamps are the same list delayed by the stream's reorder delay.
// - The MP4/MOV header is written only then (the muxer needs the parameter sets first); the
//   carried audio and subtitles are interleaved as the packets are muxed.
// - Resumable runs (Note [Resumable runs]): each segment is its own x265 stream in NUT, starting
//   at an IDR picture, whose extradata keeps both views' parameter sets; the assembled MP4/MOV
//   splits them into hvcC and lhvC again (split_spatial_headers). Before a continued run joins
//   earlier segments, probe_mvhevc_encoder() has x265 encode one black frame with this run's
//   settings: segments are joined only if x265 still makes exactly the same headers.
// - x265's messages go to a log file; a failing x265 is reported with its last lines.

// An x265 that can encode MV-HEVC.
struct MvHevcTool {
  std::string path;
  std::string version; // its version line, e.g. "x265 [info]: HEVC encoder version 4.1"
};

// The x265 to use for spatial video (Note above), or nullopt with the reason in *why.
std::optional<MvHevcTool> find_mvhevc_encoder(std::string* why);

// The full error text for a missing MV-HEVC encoder: why, what to install, the alternative.
std::string mvhevc_missing_message(const std::string& why);

// The MP4/MOV form of a spatial stream's parameter sets (both layers', Annex B, as finish()
// returns them and spatial segments keep them): the base layer's for the muxer's extradata
// (FFmpeg makes hvcC of it) and the second layer's as a complete lhvC box. Throws
// Error(Encode) when they do not hold a second layer.
struct SpatialHeaders {
  std::string extradata;
  std::string lhvc;
};
SpatialHeaders split_spatial_headers(const uint8_t* data, size_t size);

// probe_encoder() for spatial video: what x265 makes with these options, found by encoding one
// black frame of their size (x265's parameter sets depend on the settings, not the pictures).
// Throws as MvHevcEncoder and find_mvhevc_encoder.
StreamParams probe_mvhevc_encoder(const WriterOptions& options);

// Encodes side-by-side RGB frames as two-layer MV-HEVC with an external x265.
//
// Threading: not thread-safe; one owner (the MediaWriter that created it).
class MvHevcEncoder {
 public:
  using PacketSink = std::function<void(AVPacket* packet, AVRational time_base)>;

  // `options`: the side-by-side frames' size (both eyes), time base, frame rate, crf, preset,
  // sample aspect, time origin (see WriterOptions); kept by reference. `scratch`: a path
  // prefix for x265's bitstream, configuration and log files (each gets a suffix ending in
  // ".part"). Starts x265; throws Error(Encode) when it cannot.
  MvHevcEncoder(const WriterOptions& options, MvHevcTool tool, const std::string& scratch);
  ~MvHevcEncoder(); // stops x265 if it still runs, removes the scratch files
  MvHevcEncoder(const MvHevcEncoder&) = delete;
  MvHevcEncoder& operator=(const MvHevcEncoder&) = delete;

  // frames: uint8 [N,3,H,W] RGB, left eye in the left half; pts as VideoEncoder::write.
  void write(const at::Tensor& frames, const std::vector<int64_t>& pts);

  // Ends x265's input, waits for it to finish and reads its stream (Note above). Returns both
  // layers' parameter sets (Annex B, the base layer's first): a segment's extradata, or split
  // by split_spatial_headers() for MP4/MOV.
  std::string finish();
  // After finish(): every access unit as a packet, in decoding order.
  void emit(const PacketSink& sink);

  int eye_width() const {
    return eye_width_;
  }
  int eye_height() const {
    return eye_height_;
  }
  const std::string& name() const {
    return name_;
  }
  AVRational time_base() const;
  int64_t last_pts() const {
    return pts_.empty() ? AV_NOPTS_VALUE : pts_.back();
  }
  int64_t end() const {
    return end_;
  }
  int64_t frames() const {
    return static_cast<int64_t>(pts_.size());
  }

 private:
  struct Mapped; // the bitstream file, mapped while packets are made
  void send(const uint8_t* data, size_t size);
  [[noreturn]] void fail_with_log(const std::string& reason);
  void stop();

  const WriterOptions& options_;
  MvHevcTool tool_;
  std::string bitstream_path_;
  std::string config_path_;
  std::string log_path_;
  std::string name_ = "x265-mvhevc"; // (one token: StreamParams::to_string)
  int eye_width_ = 0;
  int eye_height_ = 0;
  pid_t pid_ = -1;
  int input_ = -1; // our end of x265's standard input
  std::unique_ptr<YuvConverter> yuv_;
  UniqueAVFrame frame_ = make_frame();
  std::vector<uint8_t> picture_; // one packed 4:2:0 picture
  std::vector<int64_t> pts_; // each frame's pts on the output's timeline, display order
  int64_t origin_ = 0;
  int64_t nominal_ = 1; // one frame's duration in time_base()
  int64_t end_ = 0;
  std::unique_ptr<Mapped> mapped_;
};

} // namespace sbsconv
