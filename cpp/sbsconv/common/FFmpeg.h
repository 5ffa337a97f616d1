#pragma once

// The only place FFmpeg headers are included from. Everything FFmpeg-version-specific is
// decided here, as feature macros and small shims, so the rest of the core reads as if
// there were one FFmpeg. Supported: FFmpeg 4.4 (Ubuntu 22.04, Colab) to 7.x/8.x (Homebrew);
// CMakeLists.txt checks the libavcodec major version once against that range.

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/avutil.h>
#include <libavutil/channel_layout.h>
#include <libavutil/dict.h>
#include <libavutil/display.h>
#include <libavutil/error.h>
#include <libavutil/hwcontext.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libavutil/mathematics.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libavutil/spherical.h>
#include <libavutil/stereo3d.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
}

#include <memory>
#include <string>

#include "sbsconv/common/Error.h"

// ---- Feature macros ---------------------------------------------------------------------

// AVChannelLayout (ch_layout fields, swr_alloc_set_opts2): FFmpeg 5.1.
#define SBSCONV_FFMPEG_HAS_CH_LAYOUT (LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(57, 24, 100))
// Stream side data lives in codecpar->coded_side_data: FFmpeg 6.1. Before that it is
// AVStream::side_data, read with av_stream_get_side_data (whose size argument was an int*
// before libavformat 59).
#define SBSCONV_FFMPEG_HAS_CODED_SIDE_DATA \
  (LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(60, 31, 100))
// AVFrame::duration: FFmpeg 6.0 (pkt_duration before).
#define SBSCONV_FFMPEG_HAS_FRAME_DURATION (LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(58, 2, 100))
// avcodec_get_supported_config: FFmpeg 7.1 (AVCodec::sample_fmts before, since deprecated).
#define SBSCONV_FFMPEG_HAS_SUPPORTED_CONFIG \
  (LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(61, 13, 100))

namespace sbsconv {

// ---- Ownership ---------------------------------------------------------------------------
// One unique_ptr alias per FFmpeg object, with FFmpeg's own free function as the deleter.
// No av_*_free appears outside this header and FFmpeg.cpp.

namespace detail {
template <typename T, void (*Free)(T**)>
struct FreeByAddress {
  void operator()(T* p) const {
    if (p != nullptr) {
      Free(&p);
    }
  }
};
template <typename T, void (*Free)(T*)>
struct FreeByValue {
  void operator()(T* p) const {
    if (p != nullptr) {
      Free(p);
    }
  }
};
struct CloseOutputFormat {
  void operator()(AVFormatContext* p) const;
};
struct FreeDictionary {
  void operator()(AVDictionary* p) const {
    if (p != nullptr) {
      av_dict_free(&p);
    }
  }
};
} // namespace detail

using UniqueAVFrame = std::unique_ptr<AVFrame, detail::FreeByAddress<AVFrame, av_frame_free>>;
using UniqueAVPacket =
    std::unique_ptr<AVPacket, detail::FreeByAddress<AVPacket, av_packet_free>>;
using UniqueAVCodecContext =
    std::unique_ptr<AVCodecContext, detail::FreeByAddress<AVCodecContext, avcodec_free_context>>;
// Demuxing contexts are closed with avformat_close_input (which also closes their I/O);
// muxing contexts need their I/O closed first and then avformat_free_context.
using UniqueInputFormatContext =
    std::unique_ptr<AVFormatContext, detail::FreeByAddress<AVFormatContext, avformat_close_input>>;
using UniqueOutputFormatContext = std::unique_ptr<AVFormatContext, detail::CloseOutputFormat>;
using UniqueAVBufferRef =
    std::unique_ptr<AVBufferRef, detail::FreeByAddress<AVBufferRef, av_buffer_unref>>;
using UniqueSwsContext = std::unique_ptr<SwsContext, detail::FreeByValue<SwsContext, sws_freeContext>>;
using UniqueSwrContext = std::unique_ptr<SwrContext, detail::FreeByAddress<SwrContext, swr_free>>;
using UniqueAudioFifo =
    std::unique_ptr<AVAudioFifo, detail::FreeByValue<AVAudioFifo, av_audio_fifo_free>>;
using UniqueAVDictionary = std::unique_ptr<AVDictionary, detail::FreeDictionary>;

// Unreferences a packet (or frame) at the end of a loop turn, so that every exit path of
// the turn, including an exception, releases the payload while the holder is reused.
class PacketUnref {
 public:
  explicit PacketUnref(AVPacket* packet) : packet_(packet) {}
  ~PacketUnref() {
    av_packet_unref(packet_);
  }
  PacketUnref(const PacketUnref&) = delete;
  PacketUnref& operator=(const PacketUnref&) = delete;

 private:
  AVPacket* packet_;
};

class FrameUnref {
 public:
  explicit FrameUnref(AVFrame* frame) : frame_(frame) {}
  ~FrameUnref() {
    av_frame_unref(frame_);
  }
  FrameUnref(const FrameUnref&) = delete;
  FrameUnref& operator=(const FrameUnref&) = delete;

 private:
  AVFrame* frame_;
};

// A decoded subtitle, freed with avsubtitle_free.
class SubtitleHolder {
 public:
  SubtitleHolder();
  ~SubtitleHolder();
  SubtitleHolder(const SubtitleHolder&) = delete;
  SubtitleHolder& operator=(const SubtitleHolder&) = delete;
  AVSubtitle* get() {
    return &subtitle_;
  }
  void reset();

 private:
  AVSubtitle subtitle_;
  bool filled_ = false;
  friend int decode_subtitle(AVCodecContext*, SubtitleHolder&, int*, const AVPacket*);
};

UniqueAVFrame make_frame();
UniqueAVPacket make_packet();

// ---- Errors ------------------------------------------------------------------------------

// av_strerror as a string.
std::string av_error_string(int code);

// The last error-level message FFmpeg logged on this thread (for example "moov atom not
// found"): often more telling than the return code. Cleared by take_.
std::string take_last_ffmpeg_message();
void clear_last_ffmpeg_message();

// Throws an Error whose FFmpeg part is the return code's text plus the last message FFmpeg
// logged on this thread.
[[noreturn]] void throw_av_error(
    ErrorKind kind,
    const std::string& stage,
    const std::string& what,
    const std::string& file,
    int code);

// Routes FFmpeg's av_log into sbsconv's log (at Debug level; FFmpeg's errors also become
// the "last message" above). Idempotent; called by every entry point that opens media.
void install_ffmpeg_log_handler();

// ---- Version shims -----------------------------------------------------------------------

// The stream's display matrix rotation in degrees, counter-clockwise, as ffprobe reports it
// (0 when there is none).
double stream_display_rotation(const AVStream* stream);

int codecpar_channels(const AVCodecParameters* par);
std::string codecpar_channel_layout_name(const AVCodecParameters* par);

// A frame's duration in its stream's time base (0 when unknown).
int64_t frame_duration(const AVFrame* frame);

// Decodes one subtitle packet into holder; returns FFmpeg's code and sets *got.
int decode_subtitle(AVCodecContext* ctx, SubtitleHolder& holder, int* got, const AVPacket* pkt);

// Copies the decoder's channel layout to an encoder context and returns the channel count.
int copy_channel_layout(AVCodecContext* dst, const AVCodecContext* src);

// An audio resampler from src's format/layout/rate to dst's.
UniqueSwrContext make_resampler(const AVCodecContext* dst, const AVCodecContext* src);

// Sets an AAC-friendly layout on an audio frame for the encoder (nb_samples set by caller).
int prepare_audio_frame(AVFrame* frame, const AVCodecContext* enc, int nb_samples);

// Whether the encoder accepts this sample / pixel format / sample rate (true when the encoder
// does not say).
bool encoder_supports_sample_format(const AVCodec* codec, AVSampleFormat fmt);
bool encoder_supports_pixel_format(const AVCodec* codec, AVPixelFormat fmt);
bool encoder_supports_sample_rate(const AVCodec* codec, int rate);

// Attaches stereoscopic 3D side data to an output stream before the header is written.
// Returns false where this FFmpeg cannot carry it.
bool attach_stereo3d(AVStream* stream, AVStereo3DType type);
// Google's spherical metadata for VR180: equirectangular, the middle 180 degrees of longitude
// (left and right bounds a quarter each). MP4/MOV write it as sv3d (at the unofficial
// compliance level), Matroska as its Projection element.
bool attach_vr180_spherical(AVStream* stream);

} // namespace sbsconv

// Checks an FFmpeg return code; on failure throws sbsconv::Error of the given kind with
// the stage, what was being done, the file and FFmpeg's reason.
#define SBSCONV_CHECK_AV(expr, kind, stage, what, file)                                \
  do {                                                                                 \
    const int sbsconv_av_status_ = (expr);                                             \
    if (sbsconv_av_status_ < 0) {                                                      \
      ::sbsconv::throw_av_error(                                                       \
          ::sbsconv::ErrorKind::kind, stage, what, file, sbsconv_av_status_);          \
    }                                                                                  \
  } while (0)
