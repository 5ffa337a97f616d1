#pragma once

#include <string>
#include <vector>

#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/MediaWriter.h"

namespace sbsconv {

// Choosing and opening the video encoder: the candidates `encoder` resolves to (see
// encoder_candidates in MediaWriter.h), tried in order, each with sbsconv's options for it;
// the first that opens is used and every one skipped is reported with FFmpeg's reason.
//
// Threading: free functions over their own objects; safe to call from any thread.

// An opened encoder and what its frames need.
struct OpenedEncoder {
  UniqueAVCodecContext context;
  std::string name; // the FFmpeg encoder, e.g. "libx264"
  // The format frames are converted into on the CPU path (the encoder's input format), or
  // the software format of the CUDA frames NVENC takes.
  AVPixelFormat sw_format = AV_PIX_FMT_NONE;
  bool device_frames = false; // NVENC takes CUDA frames (hw_frames) directly
  UniqueAVBufferRef hw_device;
  UniqueAVBufferRef hw_frames;
  std::vector<std::string> skipped; // "h264_nvenc: <why>", in the order tried
  std::vector<std::string> warnings; // options the encoder ignored
};

// Checks the frames' description (size, time base, frame rate): what encoding needs and
// copying segments does not. Throws Error(Option) naming options.path.
void validate_frame_format(const WriterOptions& options);
// Checks the encoder settings (bit depth, codec, crf/cq/quality, sample aspect ratio).
void validate_encoder_settings(const WriterOptions& options);

// The largest side H.264 on NVENC encodes (Note [H.264 on NVENC]).
constexpr int kNvencH264MaxSide = 4096;
// Note [H.264 level limits] (EncoderSelection.cpp): what H.264 level 5.2 takes.
constexpr int kH264Level52MaxSide = 4096;
constexpr int64_t kH264Level52MaxPixels = 4096LL * 2176;

// The codec a writer encodes: options.codec, with 'auto' (or empty) resolved to H.264 (HEVC
// for 10-bit), and to HEVC when NVENC would encode frames too large for its H.264 (said in
// *notes). An explicit 'h264' that NVENC would have to encode at such a size is an
// Error(Option) naming the limit and the alternatives.
std::string resolve_codec(const WriterOptions& options, std::vector<std::string>* notes);

// Opens the first candidate encoder that accepts these options. `global_header`: the
// container keeps codec headers out of band (AVFMT_GLOBALHEADER). Throws Error(Encode)
// listing every candidate's reason when none opens.
OpenedEncoder open_video_encoder(const WriterOptions& options, bool global_header);

// The sample aspect ratio to encode: options.sample_aspect reduced, or 1:1 when unknown.
AVRational encoded_sample_aspect(const WriterOptions& options);

} // namespace sbsconv
