#include "sbsconv/media/InputFile.h"

#include <cstring>
#include <filesystem>
#include <system_error>

#include "sbsconv/common/Logging.h"

namespace sbsconv {

namespace {

int interrupt_callback(void* opaque) {
  const auto* cancel = static_cast<const std::atomic<bool>*>(opaque);
  return cancel != nullptr && cancel->load(std::memory_order_relaxed) ? 1 : 0;
}

// Note [One file per input]
// Some demuxers open other files named inside the input: an HLS or DASH playlist, a concat
// script, a QuickTime reference movie. sbsconv opens untrusted local files (downloads, files
// from others), and a 2 KB "video" that is really a playlist could make it read any file on
// the machine into the output. A local input may therefore open only itself: every further
// open is refused (the demuxer then fails, and the user gets an Input error).
using IoOpen = int (*)(AVFormatContext*, AVIOContext**, const char*, int, AVDictionary**);
IoOpen g_default_io_open = nullptr; // FFmpeg's own, the same for every context

int open_only_the_input(AVFormatContext* s, AVIOContext** pb, const char* url, int flags, AVDictionary** options) {
  if (s->url == nullptr || url == nullptr || std::strcmp(url, s->url) != 0) {
    log(LogLevel::Warning, std::string("refused to open ") + (url != nullptr ? url : "(null)") +
            " named inside " + (s->url != nullptr ? s->url : "the input") + " (Note [One file per input])");
    return AVERROR(EPERM);
  }
  return g_default_io_open(s, pb, url, flags, options);
}

// Note [A weak guess is not a video]
// FFmpeg finds a format for almost any bytes: about one in forty random 300 KB blobs passes
// its raw H.263 probe (score 25 of 100, AVPROBE_SCORE_RETRY: "a guess; read more if you can"),
// some of them with a picture size. A local file whose format was only guessed that weakly
// and whose extension another demuxer claims (random.mp4: MP4 is the mov demuxer's) is not
// what its name says: an Input error names both, instead of a conversion of noise. Weak
// guesses that agree with the name (an .mpg whose MPEG-PS packs are few) and names no
// demuxer claims (a raw .bin) are opened as before.
void refuse_a_weak_guess(const AVFormatContext* format, const std::string& path, const char* stage) {
  if (is_url(path) || format->probe_score > AVPROBE_SCORE_RETRY || format->iformat == nullptr) {
    return;
  }
  if (format->iformat->extensions != nullptr && av_match_ext(path.c_str(), format->iformat->extensions)) {
    return;
  }
  void* it = nullptr;
  while (const AVInputFormat* named = av_demuxer_iterate(&it)) {
    if (named != format->iformat && named->extensions != nullptr && av_match_ext(path.c_str(), named->extensions)) {
      const std::string ext = std::filesystem::path(path).extension().string();
      throw Error(
          ErrorKind::Input, stage,
          "not a valid " + ext + " file (its bytes only weakly resemble " +
              (format->iformat->long_name != nullptr ? format->iformat->long_name : format->iformat->name) +
              ", FFmpeg's guess at " + std::to_string(format->probe_score) + " of 100)",
          path);
    }
  }
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
  if (!is_url(path) && raw->io_open != nullptr) {
    static const IoOpen default_open = raw->io_open;
    g_default_io_open = default_open;
    raw->io_open = &open_only_the_input;
  }

  clear_last_ffmpeg_message();
  // On failure avformat_open_input frees the context itself.
  int status = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
  if (status < 0) {
    throw_av_error(ErrorKind::Input, stage, "cannot open as a media file", path, status);
  }
  UniqueInputFormatContext format(raw);
  refuse_a_weak_guess(format.get(), path, stage);
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
