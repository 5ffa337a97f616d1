#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/ColorConversion.h"
#include "sbsconv/media/EncoderSelection.h"

namespace sbsconv {

// Turns RGB frames into encoded video packets with an opened encoder (EncoderSelection):
// colour conversion to the encoder's YUV (BT.709, limited range) with odd sizes padded to
// even, or CUDA frames handed to NVENC in device memory; timestamps moved onto the output's
// timeline; packets received and, at the end, flushed.
//
// Threading: not thread-safe; one owner (the MediaWriter that created it).
class VideoEncoder {
 public:
  // Receives every packet the encoder produces, timestamps in `time_base` (the encoder's).
  using PacketSink = std::function<void(AVPacket* packet, AVRational time_base)>;

  // `options`: width/height of the frames given, their time base, the frame rate and the
  // output's time origin (see WriterOptions); kept by reference for the writer's lifetime.
  VideoEncoder(const WriterOptions& options, OpenedEncoder encoder);

  // frames: uint8 [N,3,H,W] RGB; pts: one per frame, in options.time_base on the source
  // clock (repeats are nudged forward by one tick).
  void write(const at::Tensor& frames, const std::vector<int64_t>& pts, const PacketSink& sink);
  // Drains the encoder.
  void flush(const PacketSink& sink);

  const AVCodecContext* context() const {
    return encoder_.context.get();
  }
  const std::string& name() const {
    return encoder_.name;
  }
  AVRational time_base() const {
    return encoder_.context->time_base;
  }
  // The last frame's pts and the end of the last frame (pts + nominal duration), in
  // time_base() on the output's timeline; AV_NOPTS_VALUE / 0 before any frame.
  int64_t last_pts() const {
    return last_pts_;
  }
  int64_t end() const {
    return end_;
  }
  int64_t frames() const {
    return frames_;
  }

 private:
  void encode(AVFrame* frame, const PacketSink& sink);
  void write_device_frames(const at::Tensor& frames, const std::vector<int64_t>& pts, const PacketSink& sink);
  int64_t next_pts(int64_t pts); // the frame's timestamp on the encoder's clock, kept rising
  static void tag(AVFrame* frame);

  const WriterOptions& options_;
  OpenedEncoder encoder_;
  std::unique_ptr<YuvConverter> yuv_; // the CPU path
  UniqueAVFrame frame_ = make_frame();
  UniqueAVPacket packet_ = make_packet();
  int64_t origin_ = 0; // the output's zero in time_base()
  int64_t last_pts_ = AV_NOPTS_VALUE;
  int64_t end_ = 0;
  int64_t frames_ = 0;
};

} // namespace sbsconv
