#include "sbsconv/media/StreamParams.h"

#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <string_view>
#include <vector>

#include "sbsconv/common/DurableFile.h"
#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/NalBits.h"

namespace sbsconv {

namespace {

// ---- reading the sequence parameter set ----------------------------------------------------

// What StreamParams needs from an SPS.
struct SequenceHeader {
  int profile = -1;
  int chroma_format = 1; // 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4
  int bit_depth = 8;
};

using nal::BitReader;
using nal::unescape;

// Every NAL unit of an extradata block, in Annex B form (start codes) or in the
// avcC/hvcC form MP4 uses (a configuration record holding length-prefixed units).
std::vector<std::string_view> nal_units(const uint8_t* data, size_t size, bool hevc) {
  std::vector<std::string_view> units;
  const auto* chars = reinterpret_cast<const char*>(data);
  if (size >= 7 && data[0] == 1) {
    // Configuration record. avcC: 5 bytes, then SPS count (low 5 bits) and the SPSs, then the
    // PPS count and PPSs. hvcC: 22 bytes, then the number of arrays, each a type byte, a
    // count and that many units. Every unit has a 16-bit length.
    size_t at = 0;
    auto take_units = [&](size_t count) {
      for (size_t k = 0; k < count; ++k) {
        if (at + 2 > size) {
          return false;
        }
        const size_t length = (static_cast<size_t>(data[at]) << 8) | data[at + 1];
        at += 2;
        if (at + length > size) {
          return false;
        }
        units.emplace_back(chars + at, length);
        at += length;
      }
      return true;
    };
    if (!hevc) {
      at = 6;
      if (take_units(data[5] & 0x1f) && at < size) {
        const size_t pps = data[at++];
        take_units(pps);
      }
    } else if (size >= 23) {
      const size_t arrays = data[22];
      at = 23;
      for (size_t a = 0; a < arrays && at + 3 <= size; ++a) {
        const size_t count = (static_cast<size_t>(data[at + 1]) << 8) | data[at + 2];
        at += 3;
        if (!take_units(count)) {
          break;
        }
      }
    }
    return units;
  }
  // Annex B: units separated by 00 00 01 (or 00 00 00 01).
  size_t start = std::string_view::npos;
  for (size_t i = 0; i + 2 < size; ++i) {
    if (data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1) {
      if (start != std::string_view::npos) {
        size_t end = i;
        while (end > start && data[end - 1] == 0) {
          --end; // the leading zero of a four-byte start code
        }
        units.emplace_back(chars + start, end - start);
      }
      start = i + 3;
      i += 2;
    }
  }
  if (start != std::string_view::npos && start < size) {
    units.emplace_back(chars + start, size - start);
  }
  return units;
}

bool high_profile_h264(uint32_t profile) {
  switch (profile) {
    case 100: case 110: case 122: case 244: case 44: case 83:
    case 86: case 118: case 128: case 138: case 139: case 134: case 135:
      return true;
    default:
      return false;
  }
}

// H.264 seq_parameter_set_rbsp, up to the bit depth.
std::optional<SequenceHeader> read_h264_sps(const std::vector<uint8_t>& rbsp) {
  BitReader r(rbsp);
  SequenceHeader h;
  h.profile = static_cast<int>(r.bits(8));
  r.skip(16); // constraint flags, level_idc
  r.exp_golomb(); // seq_parameter_set_id
  if (high_profile_h264(static_cast<uint32_t>(h.profile))) {
    const uint32_t chroma = r.exp_golomb(); // (checked before it becomes an int: ue(v) is 32-bit)
    if (chroma == 3) {
      r.skip(1); // separate_colour_plane_flag
    }
    const uint32_t depth_minus8 = r.exp_golomb();
    if (!r.ok() || chroma > 3 || depth_minus8 > 8) {
      return std::nullopt;
    }
    h.chroma_format = static_cast<int>(chroma);
    h.bit_depth = static_cast<int>(depth_minus8) + 8;
  }
  if (!r.ok()) {
    return std::nullopt;
  }
  return h;
}

// HEVC seq_parameter_set_rbsp, up to the bit depth.
std::optional<SequenceHeader> read_hevc_sps(const std::vector<uint8_t>& rbsp) {
  const std::optional<nal::HevcSpsHead> head = nal::read_hevc_sps_head(rbsp);
  if (!head) {
    return std::nullopt;
  }
  SequenceHeader h;
  h.profile = head->profile;
  h.chroma_format = head->chroma_format;
  h.bit_depth = head->bit_depth;
  return h;
}

// The first SPS in the extradata, read; nullopt when there is none or it does not parse.
std::optional<SequenceHeader> read_sequence_header(int codec, const uint8_t* data, size_t size) {
  if (data == nullptr || size == 0 || (codec != AV_CODEC_ID_H264 && codec != AV_CODEC_ID_HEVC)) {
    return std::nullopt;
  }
  const bool hevc = codec == AV_CODEC_ID_HEVC;
  for (std::string_view unit : nal_units(data, size, hevc)) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(unit.data());
    const size_t header = hevc ? 2 : 1;
    if (unit.size() <= header) {
      continue;
    }
    const int type = hevc ? (bytes[0] >> 1) & 0x3f : bytes[0] & 0x1f;
    if (type != (hevc ? 33 : 7)) {
      continue;
    }
    const std::vector<uint8_t> rbsp = unescape(bytes + header, unit.size() - header);
    return hevc ? read_hevc_sps(rbsp) : read_h264_sps(rbsp);
  }
  return std::nullopt;
}

// FFmpeg's name of the planar format with this chroma format and depth ("" if none).
std::string planar_format_name(int chroma_format, int bit_depth) {
  static const char* const kBase[] = {"gray", "yuv420p", "yuv422p", "yuv444p"};
  if (chroma_format < 0 || chroma_format > 3) {
    return {};
  }
  std::string name = kBase[chroma_format];
  if (bit_depth != 8) {
    name += std::to_string(bit_depth) + "le";
  }
  const AVPixelFormat format = av_get_pix_fmt(name.c_str());
  return format == AV_PIX_FMT_NONE ? std::string() : std::string(av_get_pix_fmt_name(format));
}

// The coded format a software pixel format stands for (NV12 -> yuv420p, P010 -> yuv420p10le);
// "" for hardware formats, whose content the format does not tell.
std::string coded_format_name(int format) {
  const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(static_cast<AVPixelFormat>(format));
  if (desc == nullptr || (desc->flags & AV_PIX_FMT_FLAG_HWACCEL) != 0) {
    return {};
  }
  if ((desc->flags & AV_PIX_FMT_FLAG_RGB) != 0) {
    return desc->name;
  }
  int chroma = 3;
  if (desc->nb_components < 3) {
    chroma = 0;
  } else if (desc->log2_chroma_w == 1 && desc->log2_chroma_h == 1) {
    chroma = 1;
  } else if (desc->log2_chroma_w == 1 && desc->log2_chroma_h == 0) {
    chroma = 2;
  } else if (desc->log2_chroma_w != 0 || desc->log2_chroma_h != 0) {
    return desc->name;
  }
  const std::string planar = planar_format_name(chroma, desc->comp[0].depth);
  return planar.empty() ? std::string(desc->name) : planar;
}

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016" PRIx64, value);
  return text;
}

StreamParams describe(
    const std::string& encoder,
    int codec,
    int profile,
    int width,
    int height,
    int format,
    const uint8_t* extradata,
    int extradata_size) {
  StreamParams p;
  p.encoder = encoder;
  p.codec = avcodec_get_name(static_cast<AVCodecID>(codec));
  p.width = width;
  p.height = height;
  const size_t size = extradata != nullptr && extradata_size > 0 ? static_cast<size_t>(extradata_size) : 0;
  if (const auto sps = read_sequence_header(codec, extradata, size)) {
    p.profile = sps->profile;
    p.pix_fmt = planar_format_name(sps->chroma_format, sps->bit_depth);
  } else {
    p.profile = profile >= 0 ? profile : -1;
    p.pix_fmt = coded_format_name(format);
  }
  p.extradata_hash =
      hex64(fnv1a64(std::string_view(reinterpret_cast<const char*>(extradata), size)));
  return p;
}

bool is_token(std::string_view text) {
  for (char c : text) {
    if (c == '|' || static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return false;
    }
  }
  return true;
}

bool parse_int(std::string_view text, int* value) {
  if (text.empty()) {
    return false;
  }
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return error == std::errc() && end == text.data() + text.size();
}

} // namespace

std::string StreamParams::to_string() const {
  return encoder + "|" + codec + "|" + std::to_string(profile) + "|" + std::to_string(width) + "|" +
      std::to_string(height) + "|" + pix_fmt + "|" + extradata_hash;
}

std::optional<StreamParams> StreamParams::parse(const std::string& text) {
  std::vector<std::string_view> fields;
  std::string_view rest(text);
  while (true) {
    const size_t bar = rest.find('|');
    fields.push_back(rest.substr(0, bar));
    if (bar == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(bar + 1);
  }
  if (fields.size() != 7) {
    return std::nullopt;
  }
  for (std::string_view field : fields) {
    if (!is_token(field)) {
      return std::nullopt;
    }
  }
  StreamParams p;
  p.encoder = std::string(fields[0]);
  p.codec = std::string(fields[1]);
  if (p.codec.empty() || !parse_int(fields[2], &p.profile) || !parse_int(fields[3], &p.width) ||
      !parse_int(fields[4], &p.height) || p.width < 0 || p.height < 0) {
    return std::nullopt;
  }
  p.pix_fmt = std::string(fields[5]);
  p.extradata_hash = std::string(fields[6]);
  if (p.extradata_hash.size() != 16 ||
      p.extradata_hash.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return std::nullopt;
  }
  if (p.to_string() != text) {
    return std::nullopt; // e.g. "+5" or "007": not what to_string() writes
  }
  return p;
}

StreamParams stream_params_of(const AVCodecContext* c, const std::string& encoder) {
  const int format = c->hw_frames_ctx != nullptr
      ? reinterpret_cast<const AVHWFramesContext*>(c->hw_frames_ctx->data)->sw_format
      : c->pix_fmt;
  return describe(
      encoder, c->codec_id, c->profile, c->width, c->height, format, c->extradata, c->extradata_size);
}

StreamParams stream_params_of(const AVCodecParameters* par, const std::string& encoder) {
  return describe(
      encoder,
      par->codec_id,
      par->profile,
      par->width,
      par->height,
      par->format,
      par->extradata,
      par->extradata_size);
}

} // namespace sbsconv
