#pragma once

#include <atomic>
#include <string>

#include "sbsconv/common/FFmpeg.h"

namespace sbsconv {

// Opens anything FFmpeg can demux, with stream information read, and maps every failure to
// an Error that names the file: InputNotFound for a missing path, Input for a directory, an
// empty file or data FFmpeg cannot make sense of. `cancel`, when given, aborts blocking I/O
// (network inputs) as soon as it becomes true.
UniqueInputFormatContext open_input(
    const std::string& path,
    const char* stage,
    const std::atomic<bool>* cancel = nullptr);

// The video stream a viewer would pick, the rule FFmpeg's command line uses: the largest
// picture, then the default disposition; cover art (attached pictures) and streams with no
// decoder in this FFmpeg are skipped. `requested` >= 0 selects that stream instead, which
// must be a video stream (Option error otherwise). Throws an Input error when the file has
// no usable video stream, listing what it does have.
int choose_video_stream(const AVFormatContext* format, int requested, const std::string& path);

// "video h264, audio aac (eng), subtitle mov_text (eng)", for error messages.
std::string describe_streams(const AVFormatContext* format);

// The file's start time in seconds (0 when the container does not say).
double format_start_seconds(const AVFormatContext* format);

bool is_url(const std::string& path);

} // namespace sbsconv
