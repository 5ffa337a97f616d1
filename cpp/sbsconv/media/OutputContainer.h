#pragma once

#include <string>

#include "sbsconv/common/FFmpeg.h"

namespace sbsconv {

struct WriterOptions;

// What the output container is and the one way packets enter it; shared by the writer's
// rooms (EncoderSelection, VideoEncoder, CarriedStreams, SegmentAssembler).
//
// Threading: pure functions; write_packet is called only by the owner of `out`.

std::string lowercase(std::string s);

// "mp4" / "mov" / "mkv" / "nut" from options.container, else from the output's extension.
// Throws Error(Option) for anything else.
std::string resolve_container(const WriterOptions& options);

// The libavformat muxer name for a resolved container.
const char* muxer_for(const std::string& container);

bool is_isobmff(const std::string& container);

// Whether the container keeps codec headers out of band (AVFMT_GLOBALHEADER), so that
// encoders must be opened with AV_CODEC_FLAG_GLOBAL_HEADER.
bool container_wants_global_header(const std::string& container);

// Hands a packet, already in `stream`'s time base, to the interleaving muxer. Throws
// Error(Output) naming `path` when the muxer fails.
void write_packet(AVFormatContext* out, AVStream* stream, AVPacket* packet, const std::string& path);

} // namespace sbsconv
