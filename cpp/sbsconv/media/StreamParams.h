#pragma once

#include <cstdint>
#include <optional>
#include <string>

// Forward declarations, so that this header stays free of FFmpeg's (see the functions at
// the end, used by the writer's rooms).
struct AVCodecContext;
struct AVCodecParameters;

namespace sbsconv {

// Note [Stream parameters]
// What an encoded video stream is, as far as joining packets of two encoder runs into one
// stream is concerned: segments of a resumed run may be copied into one output only if
// they all carry the same StreamParams. Every field comes from the stream's codec headers
// (the extradata: SPS/PPS, and VPS for HEVC), read the same way whether they come from an
// opened encoder or from a segment file, so that the two compare equal:
// - profile: the SPS's profile_idc (H.264: 66 Baseline, 77 Main, 100 High ...; HEVC:
//   general_profile_idc, 1 Main, 2 Main 10), else FFmpeg's profile, -1 when unknown;
// - pix_fmt: the coded format (chroma format and bit depth from the SPS, as FFmpeg names
//   it: "yuv420p", "yuv420p10le"), not the frames the encoder was fed (NV12, CUDA);
// - extradata_hash: fnv1a64 of the extradata bytes, 16 lower-case hex digits.
//
// Threading: a plain value; the functions below are pure and safe from any thread.
struct StreamParams {
  std::string encoder; // "libx264"; "" when the container does not say
  std::string codec; // FFmpeg's codec name: "h264", "hevc"
  int profile = -1;
  int width = 0; // coded size (even)
  int height = 0;
  std::string pix_fmt;
  std::string extradata_hash;

  // One space-free token: "libx264|h264|100|640|360|yuv420p|0123456789abcdef".
  std::string to_string() const;
  // The inverse of to_string(); nullopt for anything to_string() cannot have written.
  static std::optional<StreamParams> parse(const std::string& text);

  bool operator==(const StreamParams&) const = default;
};

// Describes an opened encoder's output / a demuxed stream (see the note above).
StreamParams stream_params_of(const AVCodecContext* context, const std::string& encoder);
StreamParams stream_params_of(const AVCodecParameters* parameters, const std::string& encoder);

} // namespace sbsconv
