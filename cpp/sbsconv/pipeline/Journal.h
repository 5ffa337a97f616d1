#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sbsconv {

// Note [Resumable runs]
// A resumable conversion encodes its video in segments (NUT files: any time base, no edit
// lists) in a hidden folder beside the output, ".<output name>.sbsconv-resume". When a
// segment is complete the engine saves every stateful stage's state after its last frame
// (scene-cut detector, depth model, stabiliser, comfort budget) and appends a line to the
// journal. A later call with the same input and options (the fingerprint) continues after
// the last complete segment: the decoder seeks to that segment's next frame, the states are
// restored, and the frame indices go on where they stopped. At the end the segments' video
// packets are copied, with the source's audio and subtitles, into the output (MediaWriter's
// copy mode) and the folder is removed. Segments end at fixed frame counts from the start of
// the conversion, so an interrupted and an uninterrupted run cut the stream in the same
// places and produce the same frames.
struct SegmentRecord {
  int64_t index = 0;
  int64_t first_frame = 0;
  int64_t frames = 0;
  int64_t next_pts = 0; // pts (source stream ticks) of the frame after the segment; -1 at the end
  std::string file; // segment video, relative to the journal folder
  std::string state; // stage states after the segment, relative to the journal folder
};

// Threading: not thread-safe; one owner (the engine's encode stage and coordinator).
class Journal {
 public:
  Journal(std::string folder, std::string fingerprint);

  // The completed segments of an earlier run with the same fingerprint, in order; empty (and
  // the folder cleared) when there is none or the fingerprint differs. `discarded` tells
  // whether an incompatible earlier journal was thrown away.
  std::vector<SegmentRecord> load(bool* discarded = nullptr);
  void append(const SegmentRecord& record);
  void remove();

  const std::string& folder() const {
    return folder_;
  }
  std::string path_of(const std::string& name) const;

 private:
  void write() const;

  std::string folder_;
  std::string fingerprint_;
  std::vector<SegmentRecord> records_;
};

} // namespace sbsconv
