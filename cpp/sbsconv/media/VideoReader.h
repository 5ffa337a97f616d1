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

struct ReaderOptions {
  int stream_index = -1; // -1: the best video stream (choose_video_stream)
  // The window to decode, in seconds from the beginning of the file (as ffmpeg's -ss/-t):
  // frames with start <= pts - file start < start + duration.
  std::optional<double> start;
  std::optional<double> duration;
  // Resume at this frame: the window starts at this pts (stream ticks) instead, while its end
  // stays where `start` + `duration` put it.
  std::optional<int64_t> resume_pts;
  int threads = 0; // FFmpeg decoder threads; 0 = one per core
  // Output size (after rotation); 0 = the displayed size. With only one side given the other
  // keeps the aspect ratio. Scaling happens in the colour conversion (area-averaged when
  // shrinking), so a small output is also cheaper.
  int width = 0;
  int height = 0;
  // "auto" (NVDEC when the device is CUDA, VideoToolbox on macOS, otherwise software),
  // "none", or an FFmpeg hardware device type ("cuda", "videotoolbox", "vaapi" ...).
  std::string hwaccel = "auto";
  std::string device = "cpu"; // torch device of the returned frames
  // Corrupt or truncated data: raise a Decode error (true) or decode what can be decoded and
  // report it through warnings (false).
  bool strict = false;
  // Decode to grey instead of RGB (depth and mask videos, Note [Depth files]): Gray16 frames
  // are int16 [N,1,H,W] holding the unsigned 16-bit values (read them with `& 0xFFFF` after
  // widening), Gray8 frames uint8 [N,1,H,W]; software decoding only, on the CPU.
  FramePixels pixels = FramePixels::Rgb;
};

// The decoded stream, as the reader presents it.
struct VideoStreamDescription {
  int index = -1;
  std::string codec;
  std::string pix_fmt;
  int width = 0; // of the returned frames: displayed size, after rotation
  int height = 0;
  double rotation = 0.0; // display matrix, degrees counter-clockwise
  Rational time_base;
  Rational frame_rate; // average rate (the nominal one when the container has no average)
  double start_time = 0.0; // the file's start, in seconds; pts are on the stream's clock
  double duration = 0.0; // NaN when unknown
  int64_t num_frames = -1;
  // The pixels' shape (anamorphic sources, e.g. 32:27 for widescreen NTSC DVDs), after
  // rotation; 0/1 when square or unknown.
  Rational sample_aspect{0, 1};
  // Where the container says the video ends (absolute seconds on the stream's clock); NaN
  // when it does not say.
  double declared_end = 0.0;
};

// A batch of consecutive frames in presentation order.
struct FrameBatch {
  at::Tensor frames; // uint8 [N,3,H,W] RGB, channels-last (packed) layout, on the device
                     // (ReaderOptions::pixels grey: [N,1,H,W] on the CPU)
  std::vector<int64_t> pts; // presentation time of each frame, in time_base units
  std::vector<int64_t> durations; // display duration of each frame, in time_base units
  Rational time_base;
  int64_t size() const {
    return static_cast<int64_t>(pts.size());
  }
};

// Note [Bounded inputs]
// A file can declare any picture size; decoding it would allocate before the first frame.
// The reader refuses pictures over 16384x16384 pixels (or a side over 32768) with an Input
// error when it opens the stream (FFmpeg's max_pixels enforces the same bound on mid-stream
// size changes), and one read() never allocates more than 1 GiB of frames (it returns fewer
// frames instead). The engine bounds its batches the same way.

// Decodes one video stream to RGB frames: every frame of the window once, in presentation
// order, upright (display rotation applied), colour converted as FFmpeg converts it (see
// Note [Matching FFmpeg's RGB]).
//
// Threading: not thread-safe; one owner. FFmpeg's decoder uses its own worker threads.
class VideoReader {
 public:
  VideoReader(const std::string& path, ReaderOptions options = {});
  ~VideoReader();
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  const VideoStreamDescription& stream() const;

  // Up to max_frames frames; a batch of size 0 once the window is exhausted.
  FrameBatch read(int max_frames);

  bool finished() const;
  int64_t frames_read() const;

  // "cuda", "videotoolbox" ... when frames come from a hardware decoder, "" in software.
  std::string hardware_decoder() const;
  // Why a requested hardware decoder is not used ("" when none was requested or it runs).
  std::string hardware_fallback_reason() const;

  // Frames decoded with concealed errors plus corrupt packets skipped, so far.
  int64_t damaged_frames() const;
  // True once the end of the data was reached well before the end the container declares.
  bool truncated() const;

  // Problems met so far that did not stop decoding (truncated file, corrupt packets); each is
  // returned once.
  std::vector<std::string> take_warnings();

  // Makes blocking reads give up (Cancelled error) once *flag becomes true.
  void set_cancel_flag(const std::atomic<bool>* flag);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace sbsconv
