#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <map>
#include <string>
#include <vector>

namespace sbsconv {

// What the pixels of a lossless depth or mask video hold (Note [Depth files]): 8-bit RGB
// (packed depth), 8-bit grey (masks) or 16-bit grey (depth).
enum class FramePixels { Rgb, Gray8, Gray16 };

struct Rational {
  int num = 0;
  int den = 1;
};

// One stream of a media file, as ffprobe would describe it. Fields that do not apply to the
// stream's type keep their defaults (0, empty, -1 for counts, NaN for times).
struct StreamInfo {
  int index = -1;
  std::string type; // "video", "audio", "subtitle", "data", "attachment"
  std::string codec;
  std::string codec_long_name;
  std::string profile;
  std::string language; // ISO 639-2 from the stream's "language" tag; empty when absent
  std::string title;
  bool is_default = false;
  bool attached_picture = false;
  int64_t bit_rate = 0;
  double start_time = 0.0;
  double duration = 0.0; // NaN when the container does not say
  int64_t num_frames = -1; // packets in the stream's index; -1 when unknown
  Rational time_base;
  // video
  int coded_width = 0;
  int coded_height = 0;
  int width = 0; // displayed: after rotation
  int height = 0;
  double rotation = 0.0; // display matrix, degrees counter-clockwise (as ffprobe)
  Rational avg_frame_rate;
  Rational r_frame_rate;
  Rational sample_aspect_ratio;
  std::string pix_fmt;
  int bit_depth = 0;
  std::string color_range; // FFmpeg names: "tv", "pc", "unknown"
  std::string color_space; // matrix: "bt709", "smpte170m", "bt2020nc", "unknown" ...
  std::string color_transfer;
  std::string color_primaries;
  std::string field_order;
  // Stereo and spherical signalling FFmpeg reads (MP4/MOV st3d and sv3d, Matroska StereoMode
  // and Projection): "side-by-side", "top-bottom", with " (right eye first)" when inverted;
  // "equirectangular" (with its longitude span, "equirectangular 180"), "cubemap".
  std::string stereo3d;
  std::string spherical;
  // audio
  int sample_rate = 0;
  int channels = 0;
  std::string channel_layout;
  std::string sample_fmt;
  std::map<std::string, std::string> tags;
};

struct MediaInfo {
  std::string path;
  std::string format_name;
  std::string format_long_name;
  double start_time = 0.0;
  double duration = 0.0; // NaN when unknown
  int64_t bit_rate = 0;
  int video_stream = -1; // the stream sbsconv decodes (choose_video_stream)
  std::vector<StreamInfo> streams;
  std::map<std::string, std::string> tags;
};

// Reads a file's container and stream information without decoding pictures. Throws
// sbsconv::Error (Input/InputNotFound) for files that cannot be used, and when the file has
// no video stream at all.
MediaInfo probe(const std::string& path);

// Counts the frames of a video stream whose presentation time falls in [from, to) (absolute
// seconds; nullopt = open) by reading packets without decoding them: the exact frame count
// of a file whose container does not state it (Matroska, WebM, a variable frame rate). Reads
// the whole file, so callers run it beside the work (the engine's progress estimate), not
// before it. Returns -1 when `cancel` became true or the file could not be read to its end.
int64_t count_video_frames(
    const std::string& path,
    int stream_index,
    std::optional<double> from,
    std::optional<double> to,
    const std::atomic<bool>* cancel);

// The presentation times (absolute seconds, ascending) of a video stream's keyframes, read from
// the packets without decoding: where a split conversion may cut (Note [Parts of one video]).
// Throws as probe().
std::vector<double> keyframe_times(const std::string& path, int stream_index);

} // namespace sbsconv
