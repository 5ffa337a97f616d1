#include "sbsconv/media/InputFile.h"

#include <filesystem>
#include <system_error>

namespace sbsconv {

namespace {

int interrupt_callback(void* opaque) {
  const auto* cancel = static_cast<const std::atomic<bool>*>(opaque);
  return cancel != nullptr && cancel->load(std::memory_order_relaxed) ? 1 : 0;
}

} // namespace

bool is_url(const std::string& path) {
  return path.find("://") != std::string::npos;
}

UniqueInputFormatContext open_input(
    const std::string& path,
    const char* stage,
    const std::atomic<bool>* cancel) {
  install_ffmpeg_log_handler();
  if (!is_url(path)) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(status)) {
      throw Error(ErrorKind::InputNotFound, stage, "no such file", path);
    }
    if (std::filesystem::is_directory(status)) {
      throw Error(ErrorKind::Input, stage, "is a directory, not a video file", path);
    }
    if (std::filesystem::is_regular_file(status) && std::filesystem::file_size(path, ec) == 0) {
      throw Error(ErrorKind::Input, stage, "the file is empty", path);
    }
  }

  AVFormatContext* raw = avformat_alloc_context();
  SBSCONV_CHECK(raw != nullptr, Internal, stage, "avformat_alloc_context failed");
  raw->interrupt_callback.callback = interrupt_callback;
  raw->interrupt_callback.opaque = const_cast<std::atomic<bool>*>(cancel);

  clear_last_ffmpeg_message();
  // On failure avformat_open_input frees the context itself.
  int status = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
  if (status < 0) {
    throw_av_error(ErrorKind::Input, stage, "cannot open as a media file", path, status);
  }
  UniqueInputFormatContext format(raw);
  status = avformat_find_stream_info(format.get(), nullptr);
  if (status < 0) {
    throw_av_error(ErrorKind::Input, stage, "cannot read stream information", path, status);
  }
  return format;
}

std::string describe_streams(const AVFormatContext* format) {
  std::string out;
  for (unsigned i = 0; i < format->nb_streams; ++i) {
    const AVStream* stream = format->streams[i];
    const char* type = av_get_media_type_string(stream->codecpar->codec_type);
    if (!out.empty()) {
      out += ", ";
    }
    out += type != nullptr ? type : "unknown";
    out += " ";
    out += avcodec_get_name(stream->codecpar->codec_id);
    if (stream->disposition & AV_DISPOSITION_ATTACHED_PIC) {
      out += " (cover art)";
    }
  }
  return out.empty() ? "no streams" : out;
}

int choose_video_stream(const AVFormatContext* format, int requested, const std::string& path) {
  if (requested >= 0) {
    if (requested >= static_cast<int>(format->nb_streams)) {
      throw Error(
          ErrorKind::Option,
          "open",
          "stream " + std::to_string(requested) + " does not exist (the file has " +
              std::to_string(format->nb_streams) + " streams: " + describe_streams(format) + ")",
          path);
    }
    const AVStream* stream = format->streams[requested];
    if (stream->codecpar->codec_type != AVMEDIA_TYPE_VIDEO) {
      throw Error(
          ErrorKind::Option,
          "open",
          "stream " + std::to_string(requested) + " is not a video stream (streams: " +
              describe_streams(format) + ")",
          path);
    }
    return requested;
  }

  int best = -1;
  int64_t best_score = -1;
  bool saw_video = false;
  for (unsigned i = 0; i < format->nb_streams; ++i) {
    const AVStream* stream = format->streams[i];
    const AVCodecParameters* par = stream->codecpar;
    if (par->codec_type != AVMEDIA_TYPE_VIDEO) {
      continue;
    }
    saw_video = true;
    if (stream->disposition & AV_DISPOSITION_ATTACHED_PIC) {
      continue;
    }
    if (avcodec_find_decoder(par->codec_id) == nullptr) {
      continue;
    }
    int64_t score = static_cast<int64_t>(par->width) * par->height +
        ((stream->disposition & AV_DISPOSITION_DEFAULT) ? 5000000 : 0);
    if (score > best_score) {
      best_score = score;
      best = static_cast<int>(i);
    }
  }
  if (best < 0) {
    const std::string reason = saw_video
        ? "no decodable video stream (this FFmpeg has no decoder for it)"
        : "no video stream";
    throw Error(
        ErrorKind::Input, "open", reason + " (streams: " + describe_streams(format) + ")", path);
  }
  return best;
}

double format_start_seconds(const AVFormatContext* format) {
  return format->start_time == AV_NOPTS_VALUE
      ? 0.0
      : static_cast<double>(format->start_time) / AV_TIME_BASE;
}

} // namespace sbsconv
