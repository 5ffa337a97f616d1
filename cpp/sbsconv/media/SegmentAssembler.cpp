#include "sbsconv/media/SegmentAssembler.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "sbsconv/media/InputFile.h"

namespace fs = std::filesystem;

namespace sbsconv {

namespace {

constexpr const char* kStage = "assemble";
constexpr const char* kResumeStage = "resume";

void check_cancel(const WriterOptions& o) {
  if (o.cancel != nullptr && o.cancel->load()) {
    throw Error(ErrorKind::Cancelled, kStage, "cancelled");
  }
}

std::string encoder_tag_of(const AVStream* stream) {
  const AVDictionaryEntry* tag = av_dict_get(stream->metadata, "encoder", nullptr, 0);
  return tag != nullptr ? std::string(tag->value) : std::string();
}

// Note [Complete segments]
// A NUT file written to its end (av_write_trailer) finishes with its index packet, and the
// NUT format places the index's length in the 8 bytes before the file's final checksum, so
// that the index can be found from the end. A file cut short (a crash mid-write, a partial
// copy) has no such index: libavformat then reads the packets that are there without
// complaint, so the check is made here, on the bytes: the length points at an index start
// code, the index packet's forward pointer reaches exactly the end of the file, and its
// CRC-32 (polynomial 0x04C11DB7, initial value 0, stored big-endian) matches.
constexpr uint64_t kNutIndexStartcode = 0x4E58DD672F23E64EULL; // "NX" + 0xDD672F23E64E
constexpr uint64_t kMaxIndexBytes = 64ULL << 20;

// NUT's checksum: CRC-32, polynomial 0x04C11DB7, most significant bit first, initial value
// 0, no final inversion. Computed bit by bit: an index is a few hundred bytes.
uint32_t nut_crc32(const uint8_t* data, size_t size) {
  uint32_t crc = 0;
  for (size_t i = 0; i < size; ++i) {
    crc ^= uint32_t{data[i]} << 24;
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x80000000u) != 0 ? (crc << 1) ^ 0x04C11DB7u : crc << 1;
    }
  }
  return crc;
}

std::string nut_index_problem(const std::string& path, uint64_t size) {
  constexpr uint64_t kSmallest = 8 + 1 + 8 + 4; // start code, forward pointer, index_ptr, CRC
  if (size < kSmallest) {
    return "too short to be a complete segment";
  }
  std::ifstream in(path, std::ios::binary);
  auto read_at = [&](uint64_t offset, size_t n) {
    std::string bytes(n, '\0');
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(bytes.data(), static_cast<std::streamsize>(n));
    return in ? bytes : std::string();
  };
  const std::string tail = read_at(size - 12, 8);
  if (tail.size() != 8) {
    return "cannot read its end";
  }
  uint64_t index_bytes = 0;
  for (unsigned char c : tail) {
    index_bytes = (index_bytes << 8) | c;
  }
  const std::string missing = "no NUT index at its end (truncated, or never finished)";
  if (index_bytes < kSmallest || index_bytes > size || index_bytes > kMaxIndexBytes) {
    return missing;
  }
  const std::string index = read_at(size - index_bytes, static_cast<size_t>(index_bytes));
  if (index.size() != index_bytes) {
    return "cannot read its index";
  }
  const auto* p = reinterpret_cast<const uint8_t*>(index.data());
  uint64_t startcode = 0;
  for (int k = 0; k < 8; ++k) {
    startcode = (startcode << 8) | p[k];
  }
  if (startcode != kNutIndexStartcode) {
    return missing;
  }
  // forward_ptr: a NUT variable-length number (7 bits a byte, high bit = more follow).
  size_t at = 8;
  uint64_t forward = 0;
  for (int k = 0;; ++k) {
    if (at >= index.size() || k > 8) {
      return missing;
    }
    const uint8_t byte = p[at++];
    forward = (forward << 7) | (byte & 0x7f);
    if ((byte & 0x80) == 0) {
      break;
    }
  }
  if (forward > 4096) {
    at += 4; // header checksum
  }
  if (forward < 4 || at + forward != index.size()) {
    return missing;
  }
  const uint32_t crc = nut_crc32(p + at, static_cast<size_t>(forward - 4));
  const uint8_t* stored = p + index.size() - 4;
  const uint32_t expected = (uint32_t{stored[0]} << 24) | (uint32_t{stored[1]} << 16) |
      (uint32_t{stored[2]} << 8) | uint32_t{stored[3]};
  if (crc != expected) {
    return "its index is damaged (checksum mismatch)";
  }
  return {};
}

} // namespace

SegmentAssembler::SegmentAssembler(const WriterOptions& options, AVStream* video) : options_(options) {
  const WriterOptions& o = options_;
  // See Note [Resumable runs]: the video was encoded into segments already; its packets
  // are copied, with their timestamps (already on the output's timeline).
  UniqueInputFormatContext first = open_input(o.video_segments.front(), kStage, o.cancel);
  const int index = choose_video_stream(first.get(), -1, o.video_segments.front());
  const AVStream* in = first->streams[index];
  SBSCONV_CHECK_AV(
      avcodec_parameters_copy(video->codecpar, in->codecpar), Encode, "mux", "stream copy", o.path);
  video->codecpar->codec_tag = 0;
  video->time_base = in->time_base;
  video->avg_frame_rate =
      in->avg_frame_rate.num > 0 ? in->avg_frame_rate : AVRational{o.frame_rate.num, o.frame_rate.den};
  encoder_tag_ = encoder_tag_of(in);
  time_base_ = in->time_base;
}

void SegmentAssembler::copy(const PacketSink& sink) {
  const WriterOptions& o = options_;
  for (const std::string& segment : o.video_segments) {
    check_cancel(o);
    UniqueInputFormatContext in = open_input(segment, kStage, o.cancel);
    const int index = choose_video_stream(in.get(), -1, segment);
    const AVStream* stream = in->streams[index];
    // A segment is short: read it whole, so that the decode timestamps NUT leaves unknown at
    // its start (until the reorder depth is reached) can be filled in backwards from the
    // first known one, one packet duration at a time.
    std::vector<UniqueAVPacket> packets;
    while (true) {
      check_cancel(o);
      UniqueAVPacket pkt = make_packet();
      const int status = av_read_frame(in.get(), pkt.get());
      if (status == AVERROR_EOF) {
        break;
      }
      if (status < 0) {
        check_cancel(o); // an interrupted read is a cancellation, not a damaged segment
        throw_av_error(ErrorKind::Output, "mux", "cannot read the segment " + segment, o.path, status);
      }
      if (pkt->stream_index == index) {
        packets.push_back(std::move(pkt));
      }
    }
    size_t known = 0;
    while (known < packets.size() && packets[known]->dts == AV_NOPTS_VALUE) {
      ++known;
    }
    for (size_t k = known; k-- > 0;) {
      const AVPacket* next = k + 1 < packets.size() ? packets[k + 1].get() : nullptr;
      packets[k]->dts = next != nullptr && next->dts != AV_NOPTS_VALUE
          ? next->dts - std::max<int64_t>(packets[k]->duration, 1)
          : packets[k]->pts;
    }
    const int64_t offset = av_rescale_q(
        static_cast<int64_t>(std::llround(o.segment_offset * AV_TIME_BASE)),
        AV_TIME_BASE_Q,
        stream->time_base);
    for (UniqueAVPacket& pkt : packets) {
      check_cancel(o);
      for (int64_t* ts : {&pkt->pts, &pkt->dts}) {
        if (*ts != AV_NOPTS_VALUE) {
          *ts -= offset;
        }
      }
      av_packet_rescale_ts(pkt.get(), stream->time_base, time_base_);
      if (pkt->pts != AV_NOPTS_VALUE) {
        last_pts_ = last_pts_ == AV_NOPTS_VALUE ? pkt->pts : std::max(last_pts_, pkt->pts);
        end_ = std::max(end_, pkt->pts + std::max<int64_t>(pkt->duration, 1));
      }
      ++frames_;
      sink(pkt.get(), time_base_);
    }
  }
}

SegmentInfo inspect_segment(const std::string& path) {
  install_ffmpeg_log_handler();
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) {
    throw Error(ErrorKind::Input, kResumeStage, "the segment file is missing", path);
  }
  if (!fs::is_regular_file(status)) {
    throw Error(ErrorKind::Input, kResumeStage, "the segment is not a regular file", path);
  }
  SegmentInfo info;
  info.bytes = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec) {
    throw Error(ErrorKind::Input, kResumeStage, "cannot read its size: " + ec.message(), path);
  }
  // See Note [Complete segments].
  const std::string problem = nut_index_problem(path, static_cast<uint64_t>(info.bytes));
  if (!problem.empty()) {
    throw Error(ErrorKind::Input, kResumeStage, "the segment is incomplete: " + problem, path);
  }
  // The NUT demuxer, not probing (a segment is nothing else), and no stream-information pass
  // (that would decode): codec parameters from the stream header, packets counted as read.
  auto* nut = av_find_input_format("nut");
  SBSCONV_CHECK(nut != nullptr, Internal, kResumeStage, "this FFmpeg has no NUT demuxer");
  AVFormatContext* raw = nullptr;
  clear_last_ffmpeg_message();
  int code = avformat_open_input(&raw, path.c_str(), nut, nullptr);
  if (code < 0) {
    throw_av_error(ErrorKind::Input, kResumeStage, "cannot open the segment", path, code);
  }
  UniqueInputFormatContext format(raw);
  int index = -1;
  for (unsigned i = 0; i < format->nb_streams; ++i) {
    if (format->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) {
      index = static_cast<int>(i);
      break;
    }
  }
  if (index < 0) {
    throw Error(ErrorKind::Input, kResumeStage, "the segment has no video stream", path);
  }
  UniqueAVPacket packet = make_packet();
  while (true) {
    code = av_read_frame(format.get(), packet.get());
    if (code == AVERROR_EOF) {
      break;
    }
    if (code < 0) {
      throw_av_error(ErrorKind::Input, kResumeStage, "cannot read the segment", path, code);
    }
    PacketUnref unref(packet.get());
    if (packet->stream_index != index) {
      continue;
    }
    if ((packet->flags & AV_PKT_FLAG_CORRUPT) != 0 || packet->size <= 0) {
      throw Error(
          ErrorKind::Input,
          kResumeStage,
          "video packet " + std::to_string(info.packets) + " is damaged",
          path);
    }
    ++info.packets;
  }
  if (info.packets == 0) {
    throw Error(ErrorKind::Input, kResumeStage, "the segment holds no video packets", path);
  }
  const AVStream* stream = format->streams[index];
  info.params = stream_params_of(stream->codecpar, encoder_tag_of(stream));
  return info;
}

} // namespace sbsconv
