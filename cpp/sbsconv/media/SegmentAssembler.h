#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/MediaWriter.h"

namespace sbsconv {

// Copy mode (Note [Resumable runs]): the video of the output is not encoded but copied,
// packet for packet, from the segments a resumable run encoded earlier (NUT files, video
// only, timestamps on the output's timeline plus options.segment_offset). The first segment
// describes the output's video stream; every segment's packets then follow in order, their
// missing leading decode timestamps filled in and the offset removed.
//
// Threading: not thread-safe; one owner (the MediaWriter that created it).
class SegmentAssembler {
 public:
  // Receives every video packet, timestamps in `time_base`.
  using PacketSink = std::function<void(AVPacket* packet, AVRational time_base)>;

  // Describes `video` (an output stream, before the header is written) from the first of
  // options.video_segments. `options` outlives this object.
  SegmentAssembler(const WriterOptions& options, AVStream* video);

  // Reads every segment and hands its video packets to `sink`. Checks options.cancel
  // between packets (Error Cancelled, stage "assemble").
  void copy(const PacketSink& sink);

  // The segments' encoder as their stream says ("encoder" tag; "" when untagged).
  const std::string& encoder_tag() const {
    return encoder_tag_;
  }
  // The time base of last_pts()/end(): the first segment's.
  AVRational time_base() const {
    return time_base_;
  }
  int64_t last_pts() const {
    return last_pts_;
  }
  int64_t end() const {
    return end_;
  }
  int64_t frames() const {
    return frames_;
  }

 private:
  const WriterOptions& options_;
  std::string encoder_tag_;
  AVRational time_base_{1, 1};
  int64_t last_pts_ = AV_NOPTS_VALUE;
  int64_t end_ = 0;
  int64_t frames_ = 0;
};

} // namespace sbsconv
