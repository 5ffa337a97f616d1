#include "sbsconv/media/Probe.h"

#include <algorithm>

#include <cmath>
#include <limits>

#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/InputFile.h"

namespace sbsconv {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Rational to_rational(AVRational r) {
  return Rational{r.num, r.den};
}

std::string or_unknown(const char* name) {
  return name != nullptr ? name : "unknown";
}

std::map<std::string, std::string> read_tags(const AVDictionary* dict) {
  std::map<std::string, std::string> tags;
  const AVDictionaryEntry* entry = nullptr;
  while ((entry = av_dict_get(dict, "", entry, AV_DICT_IGNORE_SUFFIX)) != nullptr) {
    tags[entry->key] = entry->value;
  }
  return tags;
}

// The stream's stereo-3D and spherical side data, as words (StreamInfo::stereo3d/spherical).
const uint8_t* stream_side_data(const AVStream* stream, AVPacketSideDataType type, size_t* size) {
#if SBSCONV_FFMPEG_HAS_CODED_SIDE_DATA
  const AVPacketSideData* sd =
      av_packet_side_data_get(stream->codecpar->coded_side_data, stream->codecpar->nb_coded_side_data, type);
  if (sd == nullptr) {
    return nullptr;
  }
  *size = sd->size;
  return sd->data;
#else
  return av_stream_get_side_data(stream, type, size);
#endif
}

void read_stereo_side_data(const AVStream* stream, StreamInfo& info) {
  size_t size = 0;
  if (const uint8_t* data = stream_side_data(stream, AV_PKT_DATA_STEREO3D, &size); data && size >= sizeof(int) * 2) {
    const auto* stereo = reinterpret_cast<const AVStereo3D*>(data);
    switch (stereo->type) {
      case AV_STEREO3D_SIDEBYSIDE:
        info.stereo3d = "side-by-side";
        break;
      case AV_STEREO3D_TOPBOTTOM:
        info.stereo3d = "top-bottom";
        break;
      case AV_STEREO3D_2D:
        info.stereo3d = "2d";
        break;
      default:
        info.stereo3d = av_stereo3d_type_name(stereo->type);
    }
    if (stereo->flags & AV_STEREO3D_FLAG_INVERT) {
      info.stereo3d += " (right eye first)";
    }
  }
  size = 0;
  if (const uint8_t* data = stream_side_data(stream, AV_PKT_DATA_SPHERICAL, &size);
      data && size >= sizeof(AVSphericalMapping)) {
    const auto* map = reinterpret_cast<const AVSphericalMapping*>(data);
    if (map->projection == AV_SPHERICAL_EQUIRECTANGULAR || map->projection == AV_SPHERICAL_EQUIRECTANGULAR_TILE) {
      const double span = 360.0 * (1.0 - (static_cast<double>(map->bound_left) + map->bound_right) / 4294967296.0);
      info.spherical = "equirectangular " + std::to_string(static_cast<int>(std::lround(span)));
    } else if (map->projection == AV_SPHERICAL_CUBEMAP) {
      info.spherical = "cubemap";
    } else {
      info.spherical = av_spherical_projection_name(map->projection);
    }
  }
}

std::string field_order_name(AVFieldOrder order) {
  switch (order) {
    case AV_FIELD_PROGRESSIVE:
      return "progressive";
    case AV_FIELD_TT:
      return "tt";
    case AV_FIELD_BB:
      return "bb";
    case AV_FIELD_TB:
      return "tb";
    case AV_FIELD_BT:
      return "bt";
    default:
      return "unknown";
  }
}

bool is_quarter_turn(double rotation) {
  const double r = std::fmod(std::fabs(rotation), 180.0);
  return std::fabs(r - 90.0) < 1.0;
}

StreamInfo describe(const AVStream* stream) {
  const AVCodecParameters* par = stream->codecpar;
  StreamInfo info;
  info.index = stream->index;
  const char* type = av_get_media_type_string(par->codec_type);
  info.type = type != nullptr ? type : "unknown";
  info.codec = avcodec_get_name(par->codec_id);
  if (const AVCodecDescriptor* desc = avcodec_descriptor_get(par->codec_id)) {
    info.codec_long_name = desc->long_name != nullptr ? desc->long_name : "";
  }
  if (const char* profile = avcodec_profile_name(par->codec_id, par->profile)) {
    info.profile = profile;
  }
  info.tags = read_tags(stream->metadata);
  if (auto it = info.tags.find("language"); it != info.tags.end() && it->second != "und") {
    info.language = it->second;
  }
  if (auto it = info.tags.find("title"); it != info.tags.end()) {
    info.title = it->second;
  }
  info.is_default = (stream->disposition & AV_DISPOSITION_DEFAULT) != 0;
  info.attached_picture = (stream->disposition & AV_DISPOSITION_ATTACHED_PIC) != 0;
  info.bit_rate = par->bit_rate;
  info.time_base = to_rational(stream->time_base);
  info.start_time =
      stream->start_time == AV_NOPTS_VALUE ? 0.0 : stream->start_time * av_q2d(stream->time_base);
  info.duration =
      stream->duration == AV_NOPTS_VALUE ? kNaN : stream->duration * av_q2d(stream->time_base);
  info.num_frames = stream->nb_frames > 0 ? stream->nb_frames : -1;

  if (par->codec_type == AVMEDIA_TYPE_VIDEO) {
    info.coded_width = par->width;
    info.coded_height = par->height;
    info.rotation = stream_display_rotation(stream);
    const bool swap = is_quarter_turn(info.rotation);
    info.width = swap ? par->height : par->width;
    info.height = swap ? par->width : par->height;
    info.avg_frame_rate = to_rational(stream->avg_frame_rate);
    info.r_frame_rate = to_rational(stream->r_frame_rate);
    // The container's value (Matroska's display size, MP4's pasp) wins over the bitstream's,
    // as FFmpeg's own players decide.
    const AVRational sar = stream->sample_aspect_ratio.num > 0 ? stream->sample_aspect_ratio : par->sample_aspect_ratio;
    info.sample_aspect_ratio = to_rational(sar);
    const auto format = static_cast<AVPixelFormat>(par->format);
    info.pix_fmt = or_unknown(av_get_pix_fmt_name(format));
    if (const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(format)) {
      info.bit_depth = desc->comp[0].depth;
    }
    if (par->bits_per_raw_sample > 0 && info.bit_depth == 0) {
      info.bit_depth = par->bits_per_raw_sample;
    }
    info.color_range = or_unknown(av_color_range_name(par->color_range));
    info.color_space = or_unknown(av_color_space_name(par->color_space));
    info.color_transfer = or_unknown(av_color_transfer_name(par->color_trc));
    info.color_primaries = or_unknown(av_color_primaries_name(par->color_primaries));
    info.field_order = field_order_name(par->field_order);
    read_stereo_side_data(stream, info);
  } else if (par->codec_type == AVMEDIA_TYPE_AUDIO) {
    info.sample_rate = par->sample_rate;
    info.channels = codecpar_channels(par);
    info.channel_layout = codecpar_channel_layout_name(par);
    info.sample_fmt = or_unknown(av_get_sample_fmt_name(static_cast<AVSampleFormat>(par->format)));
  }
  return info;
}

} // namespace

MediaInfo probe(const std::string& path) {
  UniqueInputFormatContext format = open_input(path, "probe");
  MediaInfo info;
  info.path = path;
  info.format_name = format->iformat->name != nullptr ? format->iformat->name : "";
  info.format_long_name = format->iformat->long_name != nullptr ? format->iformat->long_name : "";
  info.start_time = format_start_seconds(format.get());
  info.duration = format->duration == AV_NOPTS_VALUE
      ? kNaN
      : static_cast<double>(format->duration) / AV_TIME_BASE;
  info.bit_rate = format->bit_rate;
  info.tags = read_tags(format->metadata);
  for (unsigned i = 0; i < format->nb_streams; ++i) {
    info.streams.push_back(describe(format->streams[i]));
  }
  info.video_stream = choose_video_stream(format.get(), -1, path);
  const AVCodecParameters* chosen = format->streams[info.video_stream]->codecpar;
  if (chosen->width <= 0 || chosen->height <= 0) {
    // (what the reader refuses when it opens the stream: said by probe already)
    throw Error(
        ErrorKind::Input, "probe",
        std::string("the ") + avcodec_get_name(chosen->codec_id) + " video stream has no picture size: not a video sbsconv can read",
        path);
  }
  return info;
}

namespace {

// Reads every packet of the chosen video stream (the others discarded, nothing decoded) and
// hands each to `fn` with the stream's time base in seconds. True when the file was read to
// its end, false when reading failed before it.
template <typename F>
bool scan_video_packets(
    const std::string& path,
    int stream_index,
    const char* stage,
    const std::atomic<bool>* cancel,
    F&& fn) {
  UniqueInputFormatContext format = open_input(path, stage, cancel);
  const int index = choose_video_stream(format.get(), stream_index, path);
  for (unsigned i = 0; i < format->nb_streams; ++i) {
    format->streams[i]->discard = static_cast<int>(i) == index ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
  }
  const double tb = av_q2d(format->streams[index]->time_base);
  UniqueAVPacket packet = make_packet();
  while (true) {
    const int status = av_read_frame(format.get(), packet.get());
    if (status < 0) {
      return status == AVERROR_EOF;
    }
    PacketUnref unref(packet.get());
    if (packet->stream_index == index) {
      fn(*packet, tb);
    }
  }
}

} // namespace

int64_t count_video_frames(
    const std::string& path,
    int stream_index,
    std::optional<double> from,
    std::optional<double> to,
    const std::atomic<bool>* cancel) {
  int64_t count = 0;
  try {
    const bool whole = scan_video_packets(path, stream_index, "count frames", cancel, [&](const AVPacket& p, double tb) {
      if (p.pts != AV_NOPTS_VALUE) {
        const double t = static_cast<double>(p.pts) * tb;
        const double half_tick = 0.5 * tb;
        if ((from && t < *from - half_tick) || (to && t >= *to - half_tick)) {
          return;
        }
      }
      ++count;
    });
    return whole ? count : -1;
  } catch (const Error&) {
    return -1;
  }
}

std::vector<double> keyframe_times(const std::string& path, int stream_index) {
  std::vector<double> times;
  scan_video_packets(path, stream_index, "probe", nullptr, [&](const AVPacket& p, double tb) {
    if ((p.flags & AV_PKT_FLAG_KEY) != 0 && p.pts != AV_NOPTS_VALUE) {
      times.push_back(static_cast<double>(p.pts) * tb);
    }
  });
  std::sort(times.begin(), times.end());
  times.erase(std::unique(times.begin(), times.end()), times.end());
  return times;
}

} // namespace sbsconv
