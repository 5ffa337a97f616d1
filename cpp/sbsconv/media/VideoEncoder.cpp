#include "sbsconv/media/VideoEncoder.h"

#include <ATen/ATen.h>

#include "sbsconv/common/DeviceSync.h"

#include <algorithm>
#include <cmath>

namespace sbsconv {

namespace {
constexpr const char* kStage = "encode";
} // namespace

VideoEncoder::VideoEncoder(const WriterOptions& options, OpenedEncoder encoder)
    : options_(options), encoder_(std::move(encoder)) {
  if (!encoder_.device_frames) {
    yuv_ = std::make_unique<YuvConverter>(options_.width, options_.height, encoder_.sw_format);
  }
  origin_ = av_rescale_q(
      static_cast<int64_t>(std::llround(options_.time_origin * AV_TIME_BASE)),
      AV_TIME_BASE_Q,
      time_base());
}

void VideoEncoder::write(
    const at::Tensor& frames_in,
    const std::vector<int64_t>& pts,
    const PacketSink& sink) {
  const WriterOptions& o = options_;
  SBSCONV_CHECK(
      frames_in.dim() == 4 && frames_in.size(1) == 3 && frames_in.scalar_type() == at::kByte,
      Option,
      kStage,
      "frames must be a uint8 tensor [N,3,H,W]");
  SBSCONV_CHECK(
      frames_in.size(2) == o.height && frames_in.size(3) == o.width,
      Option,
      kStage,
      "frames are " + std::to_string(frames_in.size(3)) + "x" + std::to_string(frames_in.size(2)) +
          ", the writer was opened for " + std::to_string(o.width) + "x" + std::to_string(o.height));
  SBSCONV_CHECK(
      static_cast<int64_t>(pts.size()) == frames_in.size(0),
      Option,
      kStage,
      "one pts per frame is needed");
  at::Tensor frames = frames_in;
  if (!encoder_.device_frames) {
    frames = to_host(frames); // the batch's one transfer (Note [Host synchronisation])
  }
  if (encoder_.device_frames) {
    write_device_frames(frames, pts, sink);
    return;
  }
  AVCodecContext* enc = encoder_.context.get();
  for (int64_t i = 0; i < frames.size(0); ++i) {
    const int64_t t = next_pts(pts[i]);
    AVFrame* f = frame_.get();
    if (f->data[0] == nullptr) {
      f->format = enc->pix_fmt;
      f->width = enc->width;
      f->height = enc->height;
      SBSCONV_CHECK_AV(av_frame_get_buffer(f, 0), Encode, kStage, "frame allocation", o.path);
    }
    SBSCONV_CHECK_AV(av_frame_make_writable(f), Encode, kStage, "frame allocation", o.path);
    yuv_->convert(frames[i], f);
    f->pts = t;
    tag(f);
    encode(f, sink);
    ++frames_;
  }
}

int64_t VideoEncoder::next_pts(int64_t pts) {
  const AVCodecContext* enc = encoder_.context.get();
  const int64_t nominal = std::max<int64_t>(
      1, av_rescale_q(1, AVRational{options_.frame_rate.den, options_.frame_rate.num}, enc->time_base));
  int64_t t = pts - origin_;
  if (last_pts_ != AV_NOPTS_VALUE && t <= last_pts_) {
    t = last_pts_ + 1;
  }
  last_pts_ = t;
  end_ = std::max(end_, t + nominal);
  return t;
}

void VideoEncoder::tag(AVFrame* f) {
  f->color_primaries = AVCOL_PRI_BT709;
  f->color_trc = AVCOL_TRC_BT709;
  f->colorspace = AVCOL_SPC_BT709;
  f->color_range = AVCOL_RANGE_MPEG;
}

// Note [NVENC input on the device]: the batch is converted to NV12/P010 into hardware frames
// by tensor operations on the encode stage's stream; NVENC reads those frames through
// FFmpeg's CUDA context, which knows nothing of that stream. So the order is made explicit:
// every frame of the batch is converted, one event recorded after the last conversion is
// waited for (the host waits for these conversions alone, once per batch), and only then are
// the frames handed to the encoder.
void VideoEncoder::write_device_frames(const at::Tensor& frames, const std::vector<int64_t>& pts, const PacketSink& sink) {
  const WriterOptions& o = options_;
  std::vector<UniqueAVFrame> converted;
  converted.reserve(static_cast<size_t>(frames.size(0)));
  for (int64_t i = 0; i < frames.size(0); ++i) {
    UniqueAVFrame f(av_frame_alloc());
    SBSCONV_CHECK(f != nullptr, Internal, kStage, "av_frame_alloc failed");
    SBSCONV_CHECK_AV(av_hwframe_get_buffer(encoder_.hw_frames.get(), f.get(), 0), Encode, kStage, "no CUDA frame", o.path);
    if (!device_rgb_to_yuv(frames[i], f.get())) {
      throw Error(ErrorKind::Encode, kStage, "cannot convert frames on the GPU", o.path);
    }
    converted.push_back(std::move(f));
  }
  wait_for_current_stream(frames.device());
  for (size_t i = 0; i < converted.size(); ++i) {
    AVFrame* f = converted[i].get();
    f->pts = next_pts(pts[i]);
    tag(f);
    encode(f, sink);
    ++frames_;
  }
}

void VideoEncoder::flush(const PacketSink& sink) {
  encode(nullptr, sink);
}

void VideoEncoder::encode(AVFrame* input, const PacketSink& sink) {
  AVCodecContext* enc = encoder_.context.get();
  clear_last_ffmpeg_message();
  int status = avcodec_send_frame(enc, input);
  if (status < 0) {
    throw_av_error(ErrorKind::Encode, kStage, encoder_.name + " rejected a frame", options_.path, status);
  }
  while (true) {
    status = avcodec_receive_packet(enc, packet_.get());
    if (status == AVERROR(EAGAIN) || status == AVERROR_EOF) {
      return;
    }
    if (status < 0) {
      throw_av_error(ErrorKind::Encode, kStage, encoder_.name + " failed", options_.path, status);
    }
    PacketUnref unref(packet_.get());
    sink(packet_.get(), enc->time_base);
  }
}

} // namespace sbsconv
