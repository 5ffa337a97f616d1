#include "sbsconv/media/LosslessVideo.h"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>

#include "sbsconv/common/DurableFile.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/MediaWriter.h"
#include "sbsconv/media/OutputContainer.h"

namespace fs = std::filesystem;

namespace sbsconv {

namespace {
constexpr const char* kStage = "write depth";
} // namespace

struct LosslessVideoWriter::Impl {
  LosslessVideoOptions o;
  std::string temp;
  UniqueOutputFormatContext out;
  UniqueAVCodecContext codec;
  AVStream* stream = nullptr;
  UniqueAVFrame frame = make_frame();
  UniqueAVPacket packet = make_packet();
  int64_t origin = 0; // the file's zero in the pts' time base
  int64_t last_pts = AV_NOPTS_VALUE;
  int64_t count = 0;
  bool done = false;

  void check_cancel() const {
    if (o.cancel != nullptr && o.cancel->load()) {
      throw Error(ErrorKind::Cancelled, kStage, "cancelled", o.path);
    }
  }

  void drain(bool flushing) {
    while (true) {
      const int status = avcodec_receive_packet(codec.get(), packet.get());
      if (status == AVERROR(EAGAIN) || (flushing && status == AVERROR_EOF)) {
        return;
      }
      SBSCONV_CHECK_AV(status, Encode, kStage, "FFV1 encoding failed", o.path);
      av_packet_rescale_ts(packet.get(), codec->time_base, stream->time_base);
      packet->stream_index = stream->index;
      write_packet(out.get(), stream, packet.get(), o.path);
    }
  }

  void discard() {
    if (done) {
      return;
    }
    out.reset();
    std::error_code ec;
    fs::remove(temp, ec);
  }
};

LosslessVideoWriter::LosslessVideoWriter(LosslessVideoOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.o = std::move(options);
  install_ffmpeg_log_handler();
  SBSCONV_CHECK(
      d.o.width > 0 && d.o.height > 0 && d.o.width <= 32768 && d.o.height <= 32768,
      Option,
      kStage,
      "the frame size must be within 1..32768");
  SBSCONV_CHECK(d.o.time_base.num > 0 && d.o.time_base.den > 0, Option, kStage, "the time base must be positive");
  const AVCodec* ffv1 = avcodec_find_encoder(AV_CODEC_ID_FFV1);
  SBSCONV_CHECK(ffv1 != nullptr, Encode, kStage, "this FFmpeg has no FFV1 encoder");
  d.temp = temporary_path(d.o.path);

  AVFormatContext* raw = nullptr;
  const int status = avformat_alloc_output_context2(&raw, nullptr, "matroska", d.temp.c_str());
  if (status < 0) {
    throw_av_error(ErrorKind::Output, kStage, "cannot create the Matroska muxer", d.o.path, status);
  }
  d.out.reset(raw);
  d.codec.reset(avcodec_alloc_context3(ffv1));
  SBSCONV_CHECK(d.codec != nullptr, Internal, kStage, "avcodec_alloc_context3 failed");
  AVCodecContext* c = d.codec.get();
  c->width = d.o.width;
  c->height = d.o.height;
  // 8-bit RGB as bgr0: FFV1's lossless RGB in every FFmpeg sbsconv supports (gbrp only from 6.0)
  c->pix_fmt = d.o.pixels == FramePixels::Gray16 ? AV_PIX_FMT_GRAY16LE
      : d.o.pixels == FramePixels::Gray8            ? AV_PIX_FMT_GRAY8
                                                    : AV_PIX_FMT_BGR0;
  c->time_base = AVRational{d.o.time_base.num, d.o.time_base.den};
  if (d.o.frame_rate.num > 0 && d.o.frame_rate.den > 0) {
    c->framerate = AVRational{d.o.frame_rate.num, d.o.frame_rate.den};
  }
  c->level = 3;
  c->gop_size = 1;
  c->thread_count = 0;
  if (d.out->oformat->flags & AVFMT_GLOBALHEADER) {
    c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  }
  AVDictionary* opts = nullptr;
  av_dict_set(&opts, "slicecrc", "1", 0);
  const int opened = avcodec_open2(c, ffv1, &opts);
  av_dict_free(&opts);
  SBSCONV_CHECK_AV(opened, Encode, kStage, "cannot open the FFV1 encoder", d.o.path);

  d.stream = avformat_new_stream(d.out.get(), nullptr);
  SBSCONV_CHECK(d.stream != nullptr, Internal, kStage, "avformat_new_stream failed");
  SBSCONV_CHECK_AV(
      avcodec_parameters_from_context(d.stream->codecpar, c), Internal, kStage, "codec parameters", d.o.path);
  d.stream->time_base = c->time_base;
  if (c->framerate.num > 0) {
    d.stream->avg_frame_rate = c->framerate;
  }
  for (const auto& [key, value] : d.o.metadata) {
    av_dict_set(&d.out->metadata, key.c_str(), value.c_str(), 0);
  }
  try {
    SBSCONV_CHECK_AV(avio_open(&d.out->pb, d.temp.c_str(), AVIO_FLAG_WRITE), Output, kStage, "cannot create the file", d.o.path);
    SBSCONV_CHECK_AV(avformat_write_header(d.out.get(), nullptr), Output, kStage, "cannot write the header", d.o.path);
  } catch (...) {
    d.discard();
    throw;
  }
  d.origin = static_cast<int64_t>(std::llround(d.o.time_origin * d.o.time_base.den / d.o.time_base.num));
  d.frame->format = c->pix_fmt;
  d.frame->width = c->width;
  d.frame->height = c->height;
}

LosslessVideoWriter::~LosslessVideoWriter() {
  impl_->discard();
}

int64_t LosslessVideoWriter::frames() const {
  return impl_->count;
}

void LosslessVideoWriter::write(const at::Tensor& frames, const std::vector<int64_t>& pts) {
  Impl& d = *impl_;
  const bool grey = d.o.pixels != FramePixels::Rgb;
  const int64_t channels = grey ? 1 : 3;
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == channels && frames.size(2) == d.o.height && frames.size(3) == d.o.width &&
          frames.size(0) == static_cast<int64_t>(pts.size()),
      Option,
      kStage,
      "frames must be [N," + std::to_string(channels) + "," + std::to_string(d.o.height) + "," +
          std::to_string(d.o.width) + "] with one pts each");
  SBSCONV_CHECK(
      grey ? !at::isFloatingType(frames.scalar_type()) : frames.scalar_type() == at::kByte,
      Option,
      kStage,
      grey ? "grey frames must be integers" : "RGB frames must be uint8");
  try {
    // rows on the CPU: gray16 as uint16 values, gray as bytes, RGB as packed B, G, R, 0 (bgr0)
    at::Tensor host = frames.to(at::kCPU);
    if (d.o.pixels == FramePixels::Gray16) {
      host = host.to(at::kInt).clamp(0, 65535).to(at::kShort).contiguous(); // the low 16 bits
    } else if (d.o.pixels == FramePixels::Gray8) {
      host = host.to(at::kInt).clamp(0, 255).to(at::kByte).contiguous();
    } else {
      host = at::cat({host.index_select(1, at::tensor({2, 1, 0}, at::kLong)), at::zeros_like(host.narrow(1, 0, 1))}, 1)
                 .permute({0, 2, 3, 1})
                 .contiguous(); // [N,H,W,4]
    }
    const size_t item = d.o.pixels == FramePixels::Gray16 ? 2 : d.o.pixels == FramePixels::Gray8 ? 1 : 4; // bytes per pixel
    for (int64_t k = 0; k < frames.size(0); ++k) {
      d.check_cancel();
      SBSCONV_CHECK(
          d.last_pts == AV_NOPTS_VALUE || pts[k] > d.last_pts, Option, kStage, "pts must be strictly increasing");
      d.last_pts = pts[k];
      SBSCONV_CHECK_AV(av_frame_get_buffer(d.frame.get(), 0), Encode, kStage, "frame allocation", d.o.path);
      const uint8_t* src = static_cast<const uint8_t*>(host[k].data_ptr());
      const size_t row = static_cast<size_t>(d.o.width) * item;
      for (int y = 0; y < d.o.height; ++y) {
        std::memcpy(d.frame->data[0] + static_cast<ptrdiff_t>(y) * d.frame->linesize[0], src + y * row, row);
      }
      d.frame->pts = pts[k] - d.origin;
      const int status = avcodec_send_frame(d.codec.get(), d.frame.get());
      av_frame_unref(d.frame.get());
      d.frame->format = d.codec->pix_fmt;
      d.frame->width = d.o.width;
      d.frame->height = d.o.height;
      SBSCONV_CHECK_AV(status, Encode, kStage, "FFV1 encoding failed", d.o.path);
      d.drain(false);
      ++d.count;
    }
  } catch (...) {
    d.discard();
    throw;
  }
}

void LosslessVideoWriter::finish() {
  Impl& d = *impl_;
  try {
    d.check_cancel();
    SBSCONV_CHECK_AV(avcodec_send_frame(d.codec.get(), nullptr), Encode, kStage, "FFV1 flush failed", d.o.path);
    d.drain(true);
    SBSCONV_CHECK_AV(av_write_trailer(d.out.get()), Output, kStage, "cannot finish the file", d.o.path);
    SBSCONV_CHECK_AV(avio_closep(&d.out->pb), Output, kStage, "cannot close the file", d.o.path);
    d.out.reset();
    d.check_cancel();
    durable_rename(d.temp, d.o.path, kStage);
    d.done = true;
  } catch (...) {
    d.discard();
    throw;
  }
}

} // namespace sbsconv
