#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/MediaWriter.h"

namespace sbsconv {

// The source's audio and subtitle streams, carried into the output beside the video:
// stream copy where the container takes the codec, AAC where it does not (or when asked),
// text subtitles converted to the container's format (bitmap subtitles MP4 cannot hold are
// dropped with a warning), everything cut to the output's window [time_origin, time_end]
// and fed to the muxer in step with the video so the interleaving buffer stays small.
//
// Threading: not thread-safe; one owner (the MediaWriter that created it), which also owns
// the output context `out` and calls every method from one thread.
class CarriedStreams {
 public:
  // Opens options.source and adds an output stream to `out` for each stream it carries
  // (before the header is written); copies the source's global tags and gives `video` the
  // source video stream's language. `options` and `out` outlive this object.
  CarriedStreams(
      const WriterOptions& options,
      const std::string& container,
      AVFormatContext* out,
      AVStream* video);
  ~CarriedStreams();
  CarriedStreams(const CarriedStreams&) = delete;
  CarriedStreams& operator=(const CarriedStreams&) = delete;

  // Call after avformat_write_header (the muxer may have changed the time bases).
  void header_written();

  // Muxes the source packets that lie before `until_seconds` on the output's clock. AAC is
  // encoded up to `video_end` (the end of the video written so far, in `video_time_base`).
  void pull(double until_seconds, int64_t video_end, AVRational video_time_base);

  // Muxes what is left up to `end_seconds` (the end of the output, on its clock), trims the
  // last packets of each stream to it and drains the AAC encoders. Checks options.cancel
  // between packets (Error Cancelled).
  void finish(double end_seconds, int64_t video_end, AVRational video_time_base);

  // "audio #1 aac (eng): copied", one per carried stream.
  const std::vector<std::string>& notes() const {
    return notes_;
  }
  const std::vector<std::string>& warnings() const {
    return warnings_;
  }

 private:
  struct Stream;

  void add(AVStream* in);
  void read_until(double until_seconds, int64_t video_end, AVRational video_time_base, bool final_pass);
  void process(AVPacket* packet, int64_t video_end, AVRational video_time_base);
  void transcode_audio(Stream& s, AVPacket* packet);
  void encode_audio(Stream& s, int64_t limit_sample, bool final);
  void send_audio_frame(Stream& s, AVFrame* frame);
  void convert_subtitle(Stream& s, AVPacket* packet);
  // Writes the stream's previously held packet and holds this one (see finish()).
  void hold(Stream& s, AVPacket* packet);
  [[noreturn]] void fail(ErrorKind kind, const std::string& what, int code) const;

  const WriterOptions& options_;
  std::string container_;
  AVFormatContext* out_; // not owned
  UniqueInputFormatContext source_;
  std::vector<std::unique_ptr<Stream>> streams_; // by source stream index (null = not carried)
  UniqueAVPacket packet_ = make_packet();
  bool pending_ = false; // packet_ holds a packet read but not yet due
  bool eof_ = false;
  bool trim_start_ = false; // the output starts part-way into the source
  std::vector<std::string> notes_;
  std::vector<std::string> warnings_;
};

} // namespace sbsconv
