#include "sbsconv/media/OutputContainer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "sbsconv/media/MediaWriter.h"

namespace sbsconv {

std::string lowercase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string resolve_container(const WriterOptions& o) {
  std::string c = lowercase(o.container);
  if (c.empty()) {
    c = lowercase(std::filesystem::path(o.path).extension().string());
    if (!c.empty() && c[0] == '.') {
      c = c.substr(1);
    }
  }
  if (c == "mp4" || c == "m4v") {
    return "mp4";
  }
  if (c == "mov") {
    return "mov";
  }
  if (c == "mkv" || c == "matroska") {
    return "mkv";
  }
  if (c == "nut") {
    return "nut"; // FFmpeg's own container: any time base, no edit lists (resume segments)
  }
  throw Error(
      ErrorKind::Option,
      "open output",
      "unsupported output container '" + (c.empty() ? std::string("(no extension)") : c) +
          "': use .mp4, .mov or .mkv",
      o.path);
}

const char* muxer_for(const std::string& container) {
  return container == "mkv" ? "matroska" : container.c_str();
}

bool is_isobmff(const std::string& container) {
  return container == "mp4" || container == "mov";
}

bool container_wants_global_header(const std::string& container) {
  const AVOutputFormat* format = av_guess_format(muxer_for(container), nullptr, nullptr);
  SBSCONV_CHECK(
      format != nullptr, Internal, "open output", "this FFmpeg has no " + container + " muxer");
  return (format->flags & AVFMT_GLOBALHEADER) != 0;
}

void write_packet(AVFormatContext* out, AVStream* stream, AVPacket* packet, const std::string& path) {
  packet->stream_index = stream->index;
  const int status = av_interleaved_write_frame(out, packet);
  if (status < 0) {
    throw_av_error(ErrorKind::Output, "mux", "cannot write to the output file", path, status);
  }
}

} // namespace sbsconv
