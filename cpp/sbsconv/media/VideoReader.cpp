#include "sbsconv/media/VideoReader.h"

#include "sbsconv/media/CudaDevice.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/common/Logging.h"
#include "sbsconv/media/ColorConversion.h"
#include "sbsconv/media/InputFile.h"

namespace sbsconv {

namespace {

constexpr const char* kStage = "decode";
// A stream that produces nothing but errors is given up on after this many in a row.
constexpr int kMaxConsecutiveErrors = 1000;
// Note [Bounded inputs] (VideoReader.h).
constexpr int64_t kMaxSourceSide = 32768;
constexpr int64_t kMaxSourcePixels = int64_t{16384} * 16384;
constexpr int64_t kMaxBatchBytes = int64_t{1} << 30;

std::string seconds_text(double seconds) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.3f s", seconds);
  return buffer;
}

int quarter_turns_clockwise(double rotation) {
  // The display matrix angle is counter-clockwise; showing the picture upright means
  // turning it clockwise by that angle.
  double turn = std::fmod(-rotation, 360.0);
  if (turn < 0) {
    turn += 360.0;
  }
  const int quarters = static_cast<int>(std::lround(turn / 90.0)) % 4;
  return quarters;
}

// Turns an [H,W,3] picture clockwise by quarters * 90 degrees (a view; copy to materialise).
at::Tensor turn_clockwise(const at::Tensor& hwc, int quarters) {
  switch (quarters) {
    case 1:
      return hwc.transpose(0, 1).flip({1});
    case 2:
      return hwc.flip({0, 1});
    case 3:
      return hwc.transpose(0, 1).flip({0});
    default:
      return hwc;
  }
}

} // namespace

struct VideoReader::Impl {
  std::string path;
  ReaderOptions options;
  UniqueInputFormatContext format;
  UniqueAVCodecContext codec;
  UniqueAVBufferRef hw_device;
  AVPixelFormat hw_format = AV_PIX_FMT_NONE;
  std::string hw_name;
  std::string hw_fallback;
  AVStream* stream = nullptr;
  VideoStreamDescription description;
  at::Device device{at::kCPU};
  int coded_width = 0;
  int coded_height = 0;
  int out_width = 0; // the converted picture, before rotation (scaled when asked)
  int out_height = 0;
  int quarters = 0;

  UniqueAVPacket packet = make_packet();
  UniqueAVFrame frame = make_frame();
  UniqueAVFrame transfer = make_frame();
  RgbConverter converter;
  at::Tensor rotation_staging;

  double window_start = -std::numeric_limits<double>::infinity(); // absolute seconds
  double window_end = std::numeric_limits<double>::infinity();
  bool seeked = false;
  bool checked_seek = false;
  bool demux_eof = false;
  bool finished = false;
  int64_t packets_read = 0;
  int64_t frames_read = 0;
  int64_t corrupt_packets = 0;
  int64_t damaged_frames = 0; // decoded with concealed errors (decode_error_flags / CORRUPT)
  bool truncated = false;
  double last_end = -std::numeric_limits<double>::infinity(); // end of the last frame, seconds
  int consecutive_errors = 0;
  int64_t last_pts = AV_NOPTS_VALUE;
  int64_t default_duration = 0;
  bool warned_resize = false;
  bool read_error = false;
  std::vector<std::string> warnings;

  Impl(const std::string& p, ReaderOptions o) : path(p), options(std::move(o)) {}

  void open();
  void setup_hardware(const AVCodec* decoder);
  void seek_to_window();
  bool next_frame();
  void write_frame(at::Tensor& slot_hwc);
  void problem(const std::string& what, int code);
  void check_truncation();
  double declared_end_seconds() const;
  [[noreturn]] void fail(ErrorKind kind, const std::string& what, int code = 0);
  static AVPixelFormat choose_hw_format(AVCodecContext* context, const AVPixelFormat* formats);
};

AVPixelFormat VideoReader::Impl::choose_hw_format(
    AVCodecContext* context,
    const AVPixelFormat* formats) {
  auto* impl = static_cast<VideoReader::Impl*>(context->opaque);
  for (const AVPixelFormat* p = formats; *p != AV_PIX_FMT_NONE; ++p) {
    if (*p == impl->hw_format) {
      return *p;
    }
  }
  // The hardware cannot decode this stream (profile, size, chroma format): take the first
  // software format, which is what the decoder would have used on its own.
  impl->hw_fallback = "the " + impl->hw_name + " decoder does not support this stream (" +
      std::string(avcodec_get_name(context->codec_id)) + ", " +
      (av_get_pix_fmt_name(context->sw_pix_fmt) ? av_get_pix_fmt_name(context->sw_pix_fmt)
                                                : "unknown format") +
      ")";
  log(LogLevel::Warning, "hardware decoding unavailable: " + impl->hw_fallback +
          "; decoding in software");
  impl->hw_name.clear();
  for (const AVPixelFormat* p = formats; *p != AV_PIX_FMT_NONE; ++p) {
    const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(*p);
    if (desc != nullptr && !(desc->flags & AV_PIX_FMT_FLAG_HWACCEL)) {
      return *p;
    }
  }
  return AV_PIX_FMT_NONE;
}

void VideoReader::Impl::fail(ErrorKind kind, const std::string& what, int code) {
  if (code < 0) {
    throw_av_error(kind, kStage, what, path, code);
  }
  throw Error(kind, kStage, what, path);
}

void VideoReader::Impl::problem(const std::string& what, int code) {
  if (options.strict) {
    fail(ErrorKind::Decode, what, code);
  }
  std::string text = what;
  if (code < 0) {
    text += " (FFmpeg: " + av_error_string(code) + ")";
  }
  log(LogLevel::Debug, text + " [" + path + "]");
}

void VideoReader::Impl::open() {
  try {
    device = at::Device(options.device);
  } catch (const std::exception&) {
    throw Error(ErrorKind::Option, "open", "unknown device '" + options.device + "'", path);
  }
  if (device.is_cuda() && !at::hasCUDA()) {
    throw Error(ErrorKind::Device, "open", "CUDA is not available on this machine", path);
  }
  if (device.is_mps() && !at::hasMPS()) {
    throw Error(ErrorKind::Device, "open", "MPS is not available on this machine", path);
  }
  if (options.width < 0 || options.height < 0 || options.width > 16384 || options.height > 16384) {
    throw Error(ErrorKind::Option, "open", "the output size must be within 0..16384", path);
  }
  if (options.threads < 0) {
    throw Error(ErrorKind::Option, "open", "threads must be >= 0", path);
  }
  if (options.start && (!std::isfinite(*options.start) || *options.start < 0)) {
    throw Error(ErrorKind::Option, "open", "start must be a finite number of seconds >= 0", path);
  }
  if (options.duration && (!std::isfinite(*options.duration) || *options.duration <= 0)) {
    throw Error(ErrorKind::Option, "open", "duration must be a finite number of seconds > 0", path);
  }

  if (options.pixels != FramePixels::Rgb) {
    // Depth and mask videos: exact grey values, decoded in software on the CPU.
    if (!device.is_cpu()) {
      throw Error(ErrorKind::Option, "open", "grey frames are decoded on the CPU", path);
    }
    options.hwaccel = "none";
    converter = RgbConverter(options.pixels == FramePixels::Gray16 ? AV_PIX_FMT_GRAY16 : AV_PIX_FMT_GRAY8);
  }
  format = open_input(path, "open");
  const int index = choose_video_stream(format.get(), options.stream_index, path);
  stream = format->streams[index];
  // Only the chosen stream's packets are wanted from the demuxer.
  for (unsigned i = 0; i < format->nb_streams; ++i) {
    format->streams[i]->discard = static_cast<int>(i) == index ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
  }

  const AVCodec* decoder = avcodec_find_decoder(stream->codecpar->codec_id);
  if (decoder == nullptr) {
    fail(
        ErrorKind::Input,
        std::string("this FFmpeg has no decoder for ") +
            avcodec_get_name(stream->codecpar->codec_id));
  }
  codec.reset(avcodec_alloc_context3(decoder));
  SBSCONV_CHECK(codec != nullptr, Internal, kStage, "avcodec_alloc_context3 failed");
  SBSCONV_CHECK_AV(
      avcodec_parameters_to_context(codec.get(), stream->codecpar),
      Input,
      kStage,
      "cannot configure the decoder",
      path);
  codec->pkt_timebase = stream->time_base;
  // FFmpeg refuses pictures beyond this itself (mid-stream size changes included).
  codec->max_pixels = kMaxSourcePixels;
  codec->thread_count = options.threads;
  codec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
  codec->opaque = this;
  setup_hardware(decoder);
  clear_last_ffmpeg_message();
  SBSCONV_CHECK_AV(
      avcodec_open2(codec.get(), decoder, nullptr),
      Input,
      kStage,
      std::string("cannot open the ") + decoder->name + " decoder",
      path);

  coded_width = stream->codecpar->width;
  coded_height = stream->codecpar->height;
  if (coded_width <= 0 || coded_height <= 0) {
    coded_width = codec->width;
    coded_height = codec->height;
  }
  if (coded_width <= 0 || coded_height <= 0) {
    fail(ErrorKind::Input, "the video stream has no picture size");
  }
  // Note [Bounded inputs]: a declared picture larger than this would need gigabytes per
  // frame before the first one is decoded; refuse it before allocating anything.
  if (static_cast<int64_t>(coded_width) * coded_height > kMaxSourcePixels || coded_width > kMaxSourceSide ||
      coded_height > kMaxSourceSide) {
    fail(
        ErrorKind::Input,
        "the picture is " + std::to_string(coded_width) + "x" + std::to_string(coded_height) +
            ", larger than sbsconv handles (at most 16384x16384 pixels)");
  }
  const double rotation = stream_display_rotation(stream);
  quarters = quarter_turns_clockwise(rotation);

  description.index = index;
  description.codec = avcodec_get_name(stream->codecpar->codec_id);
  const char* pix = av_get_pix_fmt_name(static_cast<AVPixelFormat>(stream->codecpar->format));
  description.pix_fmt = pix != nullptr ? pix : "unknown";
  // The output size: the displayed size, or what the caller asked for (one side given keeps
  // the aspect ratio), converted back to the coded orientation for the colour converter.
  const int display_w = quarters % 2 == 1 ? coded_height : coded_width;
  const int display_h = quarters % 2 == 1 ? coded_width : coded_height;
  int want_w = options.width;
  int want_h = options.height;
  if (want_w > 0 && want_h <= 0) {
    want_h = std::max(1, static_cast<int>(std::lround(static_cast<double>(display_h) * want_w / display_w)));
  } else if (want_h > 0 && want_w <= 0) {
    want_w = std::max(1, static_cast<int>(std::lround(static_cast<double>(display_w) * want_h / display_h)));
  } else if (want_w <= 0 && want_h <= 0) {
    want_w = display_w;
    want_h = display_h;
  }
  out_width = quarters % 2 == 1 ? want_h : want_w;
  out_height = quarters % 2 == 1 ? want_w : want_h;
  description.width = want_w;
  description.height = want_h;
  description.rotation = rotation;
  description.time_base = Rational{stream->time_base.num, stream->time_base.den};
  AVRational rate = stream->avg_frame_rate;
  if (rate.num <= 0 || rate.den <= 0) {
    rate = stream->r_frame_rate;
  }
  if (rate.num <= 0 || rate.den <= 0) {
    rate = AVRational{25, 1};
    warnings.push_back("the stream does not state its frame rate; assuming 25 fps");
  }
  description.frame_rate = Rational{rate.num, rate.den};
  description.start_time = format_start_seconds(format.get());
  description.duration = stream->duration != AV_NOPTS_VALUE
      ? stream->duration * av_q2d(stream->time_base)
      : (format->duration != AV_NOPTS_VALUE ? static_cast<double>(format->duration) / AV_TIME_BASE
                                            : std::numeric_limits<double>::quiet_NaN());
  description.num_frames = stream->nb_frames > 0 ? stream->nb_frames : -1;
  {
    AVRational sar = av_guess_sample_aspect_ratio(format.get(), stream, nullptr);
    if (sar.num > 0 && sar.den > 0 && sar.num != sar.den) {
      av_reduce(&sar.num, &sar.den, sar.num, sar.den, 1 << 16);
      // A quarter turn shows the pixels turned: their aspect ratio inverts.
      description.sample_aspect = quarters % 2 == 1 ? Rational{sar.den, sar.num} : Rational{sar.num, sar.den};
    }
  }
  description.declared_end = declared_end_seconds();
  default_duration = av_rescale_q(1, av_inv_q(rate), stream->time_base);
  if (default_duration <= 0) {
    default_duration = 1;
  }

  if (options.start) {
    window_start = description.start_time + *options.start;
  }
  if (options.duration) {
    const double from = options.start ? window_start : description.start_time;
    window_end = from + *options.duration;
  }
  if (options.resume_pts) {
    window_start = static_cast<double>(*options.resume_pts) * av_q2d(stream->time_base);
  }
  if ((options.start && *options.start > 0) || options.resume_pts) {
    seek_to_window();
  }
}

void VideoReader::Impl::setup_hardware(const AVCodec* decoder) {
  std::string wanted = options.hwaccel;
  bool explicit_request = wanted != "auto";
  if (wanted == "auto") {
#ifdef __APPLE__
    wanted = "videotoolbox";
#else
    wanted = device.is_cuda() ? "cuda" : "none";
#endif
  }
  if (wanted == "none" || wanted.empty()) {
    return;
  }
  const AVHWDeviceType type = av_hwdevice_find_type_by_name(wanted.c_str());
  if (type == AV_HWDEVICE_TYPE_NONE) {
    std::string known;
    for (AVHWDeviceType t = av_hwdevice_iterate_types(AV_HWDEVICE_TYPE_NONE);
         t != AV_HWDEVICE_TYPE_NONE;
         t = av_hwdevice_iterate_types(t)) {
      known += std::string(known.empty() ? "" : ", ") + av_hwdevice_get_type_name(t);
    }
    throw Error(
        ErrorKind::Option,
        "open",
        "unknown hwaccel '" + wanted + "' (this FFmpeg knows: auto, none" +
            (known.empty() ? "" : ", " + known) + ")",
        path);
  }
  auto give_up = [&](const std::string& reason) {
    hw_fallback = reason;
    log(explicit_request ? LogLevel::Warning : LogLevel::Info,
        "hardware decoding (" + wanted + ") unavailable: " + reason + "; decoding in software");
  };
  for (int i = 0;; ++i) {
    const AVCodecHWConfig* config = avcodec_get_hw_config(decoder, i);
    if (config == nullptr) {
      give_up(std::string("the ") + decoder->name + " decoder has no " + wanted + " support");
      return;
    }
    if ((config->methods & AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX) && config->device_type == type) {
      hw_format = config->pix_fmt;
      break;
    }
  }
  AVBufferRef* device_ref = nullptr;
  if (type == AV_HWDEVICE_TYPE_CUDA) {
    // Note [One CUDA context]: LibTorch's context, and the decode stage's stream.
    UniqueAVBufferRef shared;
    std::string why;
    if (!create_cuda_device(device.is_cuda() && device.has_index() ? device.index() : 0, &shared, &why)) {
      hw_format = AV_PIX_FMT_NONE;
      give_up("cannot create the " + wanted + " device: " + why);
      return;
    }
    device_ref = shared.release();
  } else {
    clear_last_ffmpeg_message();
    const int status = av_hwdevice_ctx_create(&device_ref, type, nullptr, nullptr, 0);
    if (status < 0) {
      std::string reason = "cannot create the " + wanted + " device: " + av_error_string(status);
      const std::string last = take_last_ffmpeg_message();
      if (!last.empty()) {
        reason += " (" + last + ")";
      }
      hw_format = AV_PIX_FMT_NONE;
      give_up(reason);
      return;
    }
  }
  hw_device.reset(device_ref);
  codec->hw_device_ctx = av_buffer_ref(hw_device.get());
  codec->get_format = &Impl::choose_hw_format;
  codec->thread_count = 1; // the hardware does the work; frame threads only add latency
  hw_name = wanted;
}

void VideoReader::Impl::seek_to_window() {
  const int64_t target = static_cast<int64_t>(std::floor(window_start / av_q2d(stream->time_base)));
  const int status = av_seek_frame(format.get(), stream->index, target, AVSEEK_FLAG_BACKWARD);
  if (status < 0) {
    // Not seekable (a pipe, a broken index): decode from the beginning and drop.
    log(LogLevel::Debug, "seek failed (" + av_error_string(status) + "); decoding from the start");
    return;
  }
  seeked = true;
}

bool VideoReader::Impl::next_frame() {
  while (!finished) {
    int status = avcodec_receive_frame(codec.get(), frame.get());
    if (status == 0) {
      consecutive_errors = 0;
      if (frame->decode_error_flags != 0 || (frame->flags & AV_FRAME_FLAG_CORRUPT) != 0) {
        ++damaged_frames;
        if (options.strict) {
          fail(ErrorKind::Decode, "a frame was decoded with errors (the data is damaged)");
        }
      }
      int64_t pts = frame->best_effort_timestamp;
      if (pts == AV_NOPTS_VALUE) {
        pts = last_pts == AV_NOPTS_VALUE ? 0 : last_pts + default_duration;
      }
      frame->pts = pts;
      const double seconds = pts * av_q2d(stream->time_base);
      const double half_tick = 0.5 * av_q2d(stream->time_base);
      if (seeked && !checked_seek) {
        checked_seek = true;
        // The seek must land at or before the window; if the index lied and it landed
        // after, decode from the beginning instead.
        if (seconds > window_start + half_tick) {
          av_frame_unref(frame.get());
          log(LogLevel::Debug, "seek overshot the window start; decoding from the beginning");
          SBSCONV_CHECK_AV(
              avformat_seek_file(format.get(), -1, INT64_MIN, INT64_MIN, INT64_MIN, 0),
              Decode,
              kStage,
              "cannot rewind the input",
              path);
          avcodec_flush_buffers(codec.get());
          seeked = false;
          continue;
        }
      }
      if (seconds < window_start - half_tick) {
        av_frame_unref(frame.get());
        continue;
      }
      if (seconds >= window_end - half_tick) {
        av_frame_unref(frame.get());
        finished = true;
        return false;
      }
      last_pts = pts;
      return true;
    }
    if (status == AVERROR(EAGAIN)) {
      if (demux_eof) {
        finished = true; // a decoder that wants input after the flush: nothing more
        return false;
      }
      clear_last_ffmpeg_message();
      const int read = av_read_frame(format.get(), packet.get());
      if (read == AVERROR_EXIT) {
        throw Error(ErrorKind::Cancelled, kStage, "cancelled", path);
      }
      if (read < 0) {
        if (read != AVERROR_EOF) {
          read_error = true;
          problem("reading the file failed part-way", read);
          warnings.push_back(
              "reading stopped early: " + av_error_string(read) +
              " (the file may be truncated or damaged); frames after that point are missing");
        }
        demux_eof = true;
        avcodec_send_packet(codec.get(), nullptr); // enter draining mode
        continue;
      }
      PacketUnref unref(packet.get());
      if (packet->stream_index != stream->index) {
        continue;
      }
      ++packets_read;
      const int sent = avcodec_send_packet(codec.get(), packet.get());
      if (sent < 0 && sent != AVERROR(EAGAIN)) {
        ++corrupt_packets;
        if (++consecutive_errors > kMaxConsecutiveErrors) {
          fail(ErrorKind::Decode, "the video stream cannot be decoded", sent);
        }
        problem("a corrupt packet was skipped", sent);
      }
      continue;
    }
    if (status == AVERROR_EOF) {
      finished = true;
      check_truncation();
      return false;
    }
    ++corrupt_packets;
    if (++consecutive_errors > kMaxConsecutiveErrors) {
      fail(ErrorKind::Decode, "the video stream cannot be decoded", status);
    }
    problem("a frame could not be decoded", status);
  }
  return false;
}

double VideoReader::Impl::declared_end_seconds() const {
  // Where the container says the video ends, on the stream's clock: the stream's own
  // duration, Matroska's per-track DURATION tag, or the file's duration when the video is its
  // only stream (otherwise a longer audio track would make the video look cut short).
  double length = std::numeric_limits<double>::quiet_NaN();
  if (stream->duration != AV_NOPTS_VALUE && stream->duration > 0) {
    length = static_cast<double>(stream->duration) * av_q2d(stream->time_base);
  } else if (const AVDictionaryEntry* tag = av_dict_get(stream->metadata, "DURATION", nullptr, 0)) {
    int h = 0;
    int m = 0;
    double sec = 0.0;
    if (std::sscanf(tag->value, "%d:%d:%lf", &h, &m, &sec) == 3) {
      length = h * 3600.0 + m * 60.0 + sec;
    }
  } else if (format->nb_streams == 1 && format->duration != AV_NOPTS_VALUE && format->duration > 0) {
    length = static_cast<double>(format->duration) / AV_TIME_BASE;
  }
  if (!std::isfinite(length)) {
    return length;
  }
  const double start = stream->start_time != AV_NOPTS_VALUE ? stream->start_time * av_q2d(stream->time_base)
                                                             : description.start_time;
  return start + length;
}

void VideoReader::Impl::check_truncation() {
  const bool whole_file = !options.start && !options.duration;
  // Frames stop well before the end the container declares (a file cut off mid-cluster
  // demuxes to a clean end of file): more than half a second and three frames short.
  const double frame_seconds = static_cast<double>(default_duration) * av_q2d(stream->time_base);
  const double declared = description.declared_end;
  const double window_limit = std::min(declared, window_end);
  if (!read_error && frames_read > 0 && std::isfinite(window_limit) &&
      last_end < window_limit - std::max(0.5, 3.0 * frame_seconds)) {
    truncated = true;
    const std::string what = "the file is truncated: the video should last until " + seconds_text(declared) +
        " but its frames end at " + seconds_text(last_end);
    if (options.strict) {
      fail(ErrorKind::Decode, what);
    }
    warnings.push_back(what + "; decoded " + std::to_string(frames_read) + " frames");
  } else if (whole_file && !read_error && stream->nb_frames > 0 && packets_read < stream->nb_frames) {
    truncated = true;
    const std::string what = "the file is truncated: its index lists " +
        std::to_string(stream->nb_frames) + " video packets but only " +
        std::to_string(packets_read) + " could be read";
    if (options.strict) {
      fail(ErrorKind::Decode, what);
    }
    warnings.push_back(what + "; decoded " + std::to_string(frames_read) + " frames");
  }
  if (corrupt_packets > 0) {
    warnings.push_back(
        std::to_string(corrupt_packets) +
        " corrupt packets or frames were skipped while decoding");
  }
  if (damaged_frames > 0) {
    warnings.push_back(
        std::to_string(damaged_frames) + " frames were decoded with errors (damaged data, concealed by the decoder)");
  }
}

void VideoReader::Impl::write_frame(at::Tensor& slot_hwc) {
  AVFrame* source = frame.get();
  const bool on_device = frame->format == hw_format && hw_format != AV_PIX_FMT_NONE;
  const bool scaled = out_width != coded_width || out_height != coded_height;
  // (an HDR frame is tone-mapped by the CPU's converter: Note [HDR to SDR])
  if (on_device && slot_hwc.is_cuda() && frame->hw_frames_ctx != nullptr && !is_hdr_transfer(frame->color_trc)) {
    if (quarters == 0 && !scaled) {
      if (device_yuv_to_rgb(frame.get(), slot_hwc)) {
        return;
      }
    } else {
      at::Tensor staging = at::empty(
          {coded_height, coded_width, 3}, at::TensorOptions().dtype(at::kByte).device(device));
      if (device_yuv_to_rgb(frame.get(), staging)) {
        if (scaled) {
          at::Tensor chw = staging.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);
          chw = at::_upsample_bilinear2d_aa(chw, {out_height, out_width}, false);
          staging = chw.add_(0.5).floor_().clamp_(0, 255).to(at::kByte)[0].permute({1, 2, 0});
        }
        slot_hwc.copy_(turn_clockwise(staging, quarters));
        return;
      }
    }
  }
  if (on_device) {
    av_frame_unref(transfer.get());
    SBSCONV_CHECK_AV(
        av_hwframe_transfer_data(transfer.get(), frame.get(), 0),
        Decode,
        kStage,
        "cannot copy a hardware frame to memory",
        path);
    transfer->colorspace = frame->colorspace;
    transfer->color_range = frame->color_range;
    transfer->color_trc = frame->color_trc;
    transfer->color_primaries = frame->color_primaries;
    source = transfer.get();
  }
  if ((source->width != coded_width || source->height != coded_height) && !warned_resize) {
    warned_resize = true;
    warnings.push_back(
        "the picture size changes mid-stream (" + std::to_string(source->width) + "x" +
        std::to_string(source->height) + "); frames are scaled to " +
        std::to_string(out_width) + "x" + std::to_string(out_height));
  }
  const bool cpu_slot = slot_hwc.is_cpu();
  const int row_bytes = out_width * static_cast<int>(slot_hwc.size(2) * slot_hwc.element_size());
  if (quarters == 0 && cpu_slot) {
    converter.convert(source, static_cast<uint8_t*>(slot_hwc.data_ptr()), row_bytes, out_width, out_height);
    return;
  }
  if (!rotation_staging.defined()) {
    // See Note [swscale over-reach].
    rotation_staging = empty_padded_hwc(
        1, out_height, out_width, at::TensorOptions(), slot_hwc.size(2), slot_hwc.scalar_type())[0];
  }
  converter.convert(source, static_cast<uint8_t*>(rotation_staging.data_ptr()), row_bytes, out_width, out_height);
  slot_hwc.copy_(turn_clockwise(rotation_staging, quarters));
}

// ---- VideoReader ---------------------------------------------------------------------------

VideoReader::VideoReader(const std::string& path, ReaderOptions options)
    : impl_(std::make_unique<Impl>(path, std::move(options))) {
  impl_->open();
}

VideoReader::~VideoReader() = default;

const VideoStreamDescription& VideoReader::stream() const {
  return impl_->description;
}

FrameBatch VideoReader::read(int max_frames) {
  SBSCONV_CHECK(max_frames > 0, Option, kStage, "batch size must be > 0");
  Impl& d = *impl_;
  // Note [Bounded inputs]: one call never allocates more than kMaxBatchBytes of frames.
  const int64_t channels = d.options.pixels == FramePixels::Rgb ? 3 : 1;
  const at::ScalarType dtype = d.options.pixels == FramePixels::Gray16 ? at::kShort : at::kByte;
  const int64_t frame_bytes = static_cast<int64_t>(d.description.width) * d.description.height * 3;
  max_frames = static_cast<int>(std::clamp<int64_t>(kMaxBatchBytes / std::max<int64_t>(frame_bytes, 1), 1, max_frames));
  FrameBatch batch;
  batch.time_base = d.description.time_base;
  const int64_t h = d.description.height;
  const int64_t w = d.description.width;
  // Software frames are converted on the CPU; hardware frames on a CUDA target stay there.
  const bool device_native = d.device.is_cuda() && d.hw_format != AV_PIX_FMT_NONE;
  auto options = at::TensorOptions().dtype(dtype);
  if (device_native) {
    options = options.device(d.device);
  } else if (d.device.is_cuda()) {
    options = options.pinned_memory(true);
  }
  at::Tensor hwc = empty_padded_hwc(max_frames, h, w, options, channels, dtype); // Note [swscale over-reach]
  int64_t n = 0;
  while (n < max_frames && d.next_frame()) {
    FrameUnref unref(d.frame.get());
    at::Tensor slot = hwc[n];
    d.write_frame(slot);
    int64_t duration = frame_duration(d.frame.get());
    batch.pts.push_back(d.frame->pts);
    batch.durations.push_back(duration > 0 ? duration : d.default_duration);
    d.last_end = std::max(
        d.last_end, static_cast<double>(d.frame->pts + batch.durations.back()) * av_q2d(d.stream->time_base));
    ++n;
    ++d.frames_read;
  }
  if (n < max_frames) {
    hwc = hwc.narrow(0, 0, n);
  }
  // [N,H,W,3] storage seen as [N,3,H,W]: the channels-last layout, no copy.
  at::Tensor frames = hwc.permute({0, 3, 1, 2});
  if (frames.device() != d.device) {
    frames = frames.to(d.device, /*non_blocking=*/d.device.is_cuda());
  }
  batch.frames = frames;
  return batch;
}

int64_t VideoReader::damaged_frames() const {
  return impl_->damaged_frames + impl_->corrupt_packets;
}

bool VideoReader::truncated() const {
  return impl_->truncated;
}

bool VideoReader::finished() const {
  return impl_->finished;
}

int64_t VideoReader::frames_read() const {
  return impl_->frames_read;
}

std::string VideoReader::hardware_decoder() const {
  return impl_->hw_name;
}

std::string VideoReader::hardware_fallback_reason() const {
  return impl_->hw_fallback;
}

std::vector<std::string> VideoReader::take_warnings() {
  std::vector<std::string> out;
  out.swap(impl_->warnings);
  return out;
}

void VideoReader::set_cancel_flag(const std::atomic<bool>* flag) {
  impl_->format->interrupt_callback.opaque = const_cast<std::atomic<bool>*>(flag);
}

} // namespace sbsconv
