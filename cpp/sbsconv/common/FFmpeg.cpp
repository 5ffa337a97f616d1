#include "sbsconv/common/FFmpeg.h"

#include <cmath>
#include <cstring>
#include <mutex>

#include "sbsconv/common/Logging.h"
#include "sbsconv/common/Versions.h"

namespace sbsconv {

namespace detail {
void CloseOutputFormat::operator()(AVFormatContext* p) const {
  if (p == nullptr) {
    return;
  }
  if (p->oformat != nullptr && !(p->oformat->flags & AVFMT_NOFILE) && p->pb != nullptr) {
    avio_closep(&p->pb);
  }
  avformat_free_context(p);
}
} // namespace detail

SubtitleHolder::SubtitleHolder() {
  std::memset(&subtitle_, 0, sizeof(subtitle_));
}

SubtitleHolder::~SubtitleHolder() {
  reset();
}

void SubtitleHolder::reset() {
  if (filled_) {
    avsubtitle_free(&subtitle_);
    filled_ = false;
  }
  std::memset(&subtitle_, 0, sizeof(subtitle_));
}

UniqueAVFrame make_frame() {
  UniqueAVFrame frame(av_frame_alloc());
  SBSCONV_CHECK(frame != nullptr, Internal, "memory", "av_frame_alloc failed");
  return frame;
}

UniqueAVPacket make_packet() {
  UniqueAVPacket packet(av_packet_alloc());
  SBSCONV_CHECK(packet != nullptr, Internal, "memory", "av_packet_alloc failed");
  return packet;
}

// ---- Errors ------------------------------------------------------------------------------

namespace {
thread_local std::string t_last_ffmpeg_message;

void ffmpeg_log_callback(void* avcl, int level, const char* fmt, va_list args) {
  if (level > av_log_get_level()) {
    return;
  }
  char line[1024];
  int print_prefix = 1;
  av_log_format_line2(avcl, level, fmt, args, line, sizeof(line), &print_prefix);
  std::string message(line);
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) {
    message.pop_back();
  }
  if (message.empty()) {
    return;
  }
  if (level <= AV_LOG_ERROR) {
    // Keep FFmpeg's own words for the next exception raised on this thread. The context
    // prefix ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...]") carries a pointer; drop it.
    std::string text = message;
    if (!text.empty() && text[0] == '[') {
      auto close = text.find("] ");
      if (close != std::string::npos) {
        text = text.substr(close + 2);
      }
    }
    t_last_ffmpeg_message = text;
  }
  log(LogLevel::Debug, "[ffmpeg] " + message);
}
} // namespace

std::string av_error_string(int code) {
  char buffer[AV_ERROR_MAX_STRING_SIZE] = {0};
  if (av_strerror(code, buffer, sizeof(buffer)) < 0) {
    return "FFmpeg error " + std::to_string(code);
  }
  return buffer;
}

std::string take_last_ffmpeg_message() {
  std::string message;
  message.swap(t_last_ffmpeg_message);
  return message;
}

void clear_last_ffmpeg_message() {
  t_last_ffmpeg_message.clear();
}

void throw_av_error(
    ErrorKind kind,
    const std::string& stage,
    const std::string& what,
    const std::string& file,
    int code) {
  std::string ffmpeg = av_error_string(code);
  std::string last = take_last_ffmpeg_message();
  if (!last.empty() && last != ffmpeg) {
    ffmpeg += "; " + last;
  }
  if (code == AVERROR(ENOENT) && kind == ErrorKind::Input) {
    kind = ErrorKind::InputNotFound;
  }
  throw Error(kind, stage, what, file, ffmpeg);
}

void install_ffmpeg_log_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Warnings and errors are kept; FFmpeg's informational chatter is not wanted even at
    // Debug level.
    av_log_set_level(AV_LOG_WARNING);
    av_log_set_callback(ffmpeg_log_callback);
  });
}

// ---- Version shims -----------------------------------------------------------------------

double stream_display_rotation(const AVStream* stream) {
  const uint8_t* data = nullptr;
#if SBSCONV_FFMPEG_HAS_CODED_SIDE_DATA
  const AVPacketSideData* side = av_packet_side_data_get(
      stream->codecpar->coded_side_data,
      stream->codecpar->nb_coded_side_data,
      AV_PKT_DATA_DISPLAYMATRIX);
  data = side != nullptr && side->size >= 9 * sizeof(int32_t) ? side->data : nullptr;
#else
#if LIBAVFORMAT_VERSION_MAJOR < 59
  int size = 0;
#else
  size_t size = 0;
#endif
  data = av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, &size);
  if (data != nullptr && size < static_cast<decltype(size)>(9 * sizeof(int32_t))) {
    data = nullptr;
  }
#endif
  if (data == nullptr) {
    return 0.0;
  }
  double theta = av_display_rotation_get(reinterpret_cast<const int32_t*>(data));
  if (std::isnan(theta)) {
    return 0.0;
  }
  return theta == 0.0 ? 0.0 : theta; // no negative zero
}

int codecpar_channels(const AVCodecParameters* par) {
#if SBSCONV_FFMPEG_HAS_CH_LAYOUT
  return par->ch_layout.nb_channels;
#else
  return par->channels;
#endif
}

std::string codecpar_channel_layout_name(const AVCodecParameters* par) {
  char buffer[128] = {0};
#if SBSCONV_FFMPEG_HAS_CH_LAYOUT
  if (av_channel_layout_describe(&par->ch_layout, buffer, sizeof(buffer)) < 0) {
    return {};
  }
#else
  uint64_t layout = par->channel_layout != 0
      ? par->channel_layout
      : static_cast<uint64_t>(av_get_default_channel_layout(par->channels));
  av_get_channel_layout_string(buffer, sizeof(buffer), par->channels, layout);
#endif
  return buffer;
}

int64_t frame_duration(const AVFrame* frame) {
#if SBSCONV_FFMPEG_HAS_FRAME_DURATION
  return frame->duration;
#else
  return frame->pkt_duration;
#endif
}

int decode_subtitle(AVCodecContext* ctx, SubtitleHolder& holder, int* got, const AVPacket* pkt) {
  holder.reset();
#if LIBAVCODEC_VERSION_MAJOR < 60 // the packet became const in FFmpeg 6.0
  int status = avcodec_decode_subtitle2(ctx, holder.get(), got, const_cast<AVPacket*>(pkt));
#else
  int status = avcodec_decode_subtitle2(ctx, holder.get(), got, pkt);
#endif
  holder.filled_ = status >= 0 && *got != 0;
  return status;
}

int copy_channel_layout(AVCodecContext* dst, const AVCodecContext* src) {
#if SBSCONV_FFMPEG_HAS_CH_LAYOUT
  if (src->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC) {
    av_channel_layout_default(&dst->ch_layout, src->ch_layout.nb_channels);
  } else {
    int status = av_channel_layout_copy(&dst->ch_layout, &src->ch_layout);
    if (status < 0) {
      return status;
    }
  }
  return dst->ch_layout.nb_channels;
#else
  dst->channels = src->channels;
  dst->channel_layout = src->channel_layout != 0
      ? src->channel_layout
      : static_cast<uint64_t>(av_get_default_channel_layout(src->channels));
  return dst->channels;
#endif
}

UniqueSwrContext make_resampler(const AVCodecContext* dst, const AVCodecContext* src) {
  SwrContext* swr = nullptr;
#if SBSCONV_FFMPEG_HAS_CH_LAYOUT
  AVChannelLayout in_layout = {}; // av_channel_layout_copy reads the destination first
  if (src->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC) {
    av_channel_layout_default(&in_layout, src->ch_layout.nb_channels);
  } else {
    av_channel_layout_copy(&in_layout, &src->ch_layout);
  }
  int status = swr_alloc_set_opts2(
      &swr,
      const_cast<AVChannelLayout*>(&dst->ch_layout), // const only from FFmpeg 6
      dst->sample_fmt,
      dst->sample_rate,
      &in_layout,
      src->sample_fmt,
      src->sample_rate,
      0,
      nullptr);
  av_channel_layout_uninit(&in_layout);
  if (status < 0) {
    swr_free(&swr);
    return nullptr;
  }
#else
  uint64_t in_layout = src->channel_layout != 0
      ? src->channel_layout
      : static_cast<uint64_t>(av_get_default_channel_layout(src->channels));
  swr = swr_alloc_set_opts(
      nullptr,
      static_cast<int64_t>(dst->channel_layout),
      dst->sample_fmt,
      dst->sample_rate,
      static_cast<int64_t>(in_layout),
      src->sample_fmt,
      src->sample_rate,
      0,
      nullptr);
#endif
  if (swr == nullptr || swr_init(swr) < 0) {
    swr_free(&swr);
    return nullptr;
  }
  return UniqueSwrContext(swr);
}

int prepare_audio_frame(AVFrame* frame, const AVCodecContext* enc, int nb_samples) {
  frame->format = enc->sample_fmt;
  frame->sample_rate = enc->sample_rate;
  frame->nb_samples = nb_samples;
#if SBSCONV_FFMPEG_HAS_CH_LAYOUT
  int status = av_channel_layout_copy(&frame->ch_layout, &enc->ch_layout);
  if (status < 0) {
    return status;
  }
#else
  frame->channels = enc->channels;
  frame->channel_layout = enc->channel_layout;
#endif
  return av_frame_get_buffer(frame, 0);
}

namespace {

// Looks `value` up in the encoder's list of supported values of one kind; lists end with
// `terminator`. A missing list means "anything".
template <typename T>
bool in_list(const T* list, T value, T terminator) {
  if (list == nullptr) {
    return true;
  }
  for (; *list != terminator; ++list) {
    if (*list == value) {
      return true;
    }
  }
  return false;
}

#if SBSCONV_FFMPEG_HAS_SUPPORTED_CONFIG
template <typename T>
bool supported(const AVCodec* codec, AVCodecConfig config, T value) {
  const void* values = nullptr;
  int count = 0;
  if (avcodec_get_supported_config(nullptr, codec, config, 0, &values, &count) < 0) {
    return false;
  }
  if (values == nullptr) {
    return true;
  }
  const T* typed = static_cast<const T*>(values);
  for (int i = 0; i < count; ++i) {
    if (typed[i] == value) {
      return true;
    }
  }
  return false;
}
#endif

} // namespace

bool encoder_supports_sample_format(const AVCodec* codec, AVSampleFormat fmt) {
#if SBSCONV_FFMPEG_HAS_SUPPORTED_CONFIG
  return supported(codec, AV_CODEC_CONFIG_SAMPLE_FORMAT, fmt);
#else
  return in_list(codec->sample_fmts, fmt, AV_SAMPLE_FMT_NONE);
#endif
}

bool encoder_supports_pixel_format(const AVCodec* codec, AVPixelFormat fmt) {
#if SBSCONV_FFMPEG_HAS_SUPPORTED_CONFIG
  return supported(codec, AV_CODEC_CONFIG_PIX_FORMAT, fmt);
#else
  return in_list(codec->pix_fmts, fmt, AV_PIX_FMT_NONE);
#endif
}

bool encoder_supports_sample_rate(const AVCodec* codec, int rate) {
#if SBSCONV_FFMPEG_HAS_SUPPORTED_CONFIG
  return supported(codec, AV_CODEC_CONFIG_SAMPLE_RATE, rate);
#else
  return in_list(codec->supported_samplerates, rate, 0);
#endif
}

std::map<std::string, std::string> ffmpeg_info() {
  auto version = [](unsigned v) {
    return std::to_string(AV_VERSION_MAJOR(v)) + "." + std::to_string(AV_VERSION_MINOR(v)) + "." +
        std::to_string(AV_VERSION_MICRO(v));
  };
  std::map<std::string, std::string> info;
  info["ffmpeg"] = av_version_info();
  info["libavcodec"] = version(avcodec_version());
  info["libavformat"] = version(avformat_version());
  info["libavutil"] = version(avutil_version());
  info["libswscale"] = version(swscale_version());
  for (const char* name : {"h264_nvenc", "hevc_nvenc", "h264_videotoolbox", "hevc_videotoolbox", "libx264",
                           "libx265", "libopenh264", "aac"}) {
    info[std::string("encoder:") + name] = avcodec_find_encoder_by_name(name) != nullptr ? "1" : "0";
  }
  // the hardware device types this FFmpeg was built with (cuda, videotoolbox, vaapi ...)
  std::string hwaccels;
  for (AVHWDeviceType t = av_hwdevice_iterate_types(AV_HWDEVICE_TYPE_NONE); t != AV_HWDEVICE_TYPE_NONE;
       t = av_hwdevice_iterate_types(t)) {
    hwaccels += (hwaccels.empty() ? "" : ",") + std::string(av_hwdevice_get_type_name(t));
  }
  info["hwaccels"] = hwaccels;
  return info;
}

bool attach_stereo3d(AVStream* stream, AVStereo3DType type) {
  // sizeof is that of the headers this file is compiled against, which are those of the
  // libavutil it links (av_stereo3d_alloc_size exists only from FFmpeg 7).
  const size_t size = sizeof(AVStereo3D);
  AVStereo3D* stereo = av_stereo3d_alloc();
  if (stereo == nullptr) {
    return false;
  }
  stereo->type = type;
#if SBSCONV_FFMPEG_HAS_CODED_SIDE_DATA
  AVPacketSideData* side = av_packet_side_data_add(
      &stream->codecpar->coded_side_data,
      &stream->codecpar->nb_coded_side_data,
      AV_PKT_DATA_STEREO3D,
      stereo,
      size,
      0);
  if (side == nullptr) {
    av_free(stereo);
    return false;
  }
  return true;
#else
  int status = av_stream_add_side_data(
      stream, AV_PKT_DATA_STEREO3D, reinterpret_cast<uint8_t*>(stereo), size);
  if (status < 0) {
    av_free(stereo);
    return false;
  }
  return true;
#endif
}

bool attach_vr180_spherical(AVStream* stream) {
  size_t size = 0;
  AVSphericalMapping* map = av_spherical_alloc(&size);
  if (map == nullptr) {
    return false;
  }
  map->projection = AV_SPHERICAL_EQUIRECTANGULAR_TILE;
  // 180 degrees of the 360: a quarter cropped on each side (0.32 fixed-point fractions)
  map->bound_left = 0x40000000u;
  map->bound_right = 0x40000000u;
  map->bound_top = 0;
  map->bound_bottom = 0;
#if SBSCONV_FFMPEG_HAS_CODED_SIDE_DATA
  if (av_packet_side_data_add(
          &stream->codecpar->coded_side_data, &stream->codecpar->nb_coded_side_data, AV_PKT_DATA_SPHERICAL, map, size,
          0) == nullptr) {
    av_free(map);
    return false;
  }
  return true;
#else
  if (av_stream_add_side_data(stream, AV_PKT_DATA_SPHERICAL, reinterpret_cast<uint8_t*>(map), size) < 0) {
    av_free(map);
    return false;
  }
  return true;
#endif
}

} // namespace sbsconv
