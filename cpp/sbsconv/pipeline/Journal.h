#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sbsconv/pipeline/RunLock.h"

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
//
// Note [Journal integrity]
// A resumed run trusts only what it can check. The journal (format 2, text) is
//   sbsconv-journal 2
//   fingerprint <fingerprint> <checksum>
//   choice <key> <value> <checksum>                                  (zero or more)
//   segment <index> <first_frame> <frames> <next_pts> <file> <state> <encoder> <stream_params>
//           <packets> <bytes> <state_checksum> <checksum>            (one line per segment)
// where every string field is percent-encoded (bytes outside '!'..'~', and '%', as %XX; the
// empty string as "-"), so each field is one space-free token whatever it holds, and every
// line ends with the FNV-1a 64 checksum (16 hex digits) of the text before it. The file is
// rewritten whole, durably (Note [Durable files]), at every change. load() keeps the longest
// prefix of segments that check out: the line is intact, the indices and frames continue, the
// segment file has exactly the recorded size, the state file's checksum matches, and the
// engine's SegmentVerifier (which counts the packets with FFmpeg) agrees. Everything after the
// first segment that fails is deleted and encoded again; the reason is reported as a warning.
// A journal that is empty, foreign, damaged or from another format never stops a run: it
// continues from what checks out, or from the start. Only a journal whose intact fingerprint
// differs counts as "discarded" (the run's settings changed).
//
// Note [Automatic choices in the journal]
// What a run chose for itself because the caller left it to "auto" and that shapes the encoded
// stream (the encoder preset measured from the model's speed, Note [Encoder preset chosen to keep pace];
// the batch size chosen from a device's free memory) is recorded as a `choice` line the moment
// it is made, and a resumed run takes it from there instead of choosing again: a first run and
// its continuation always encode alike, whatever the machine's load or free memory. Choices
// belong to the fingerprint they were made under (a discarded journal's are dropped) and
// survive truncate(); the fingerprint leaves such options out (they are "auto" in it).
struct SegmentRecord {
  int64_t index = 0;
  int64_t first_frame = 0;
  int64_t frames = 0;
  int64_t next_pts = 0; // pts (source stream ticks) of the frame after the segment; -1 at the end
  std::string file; // segment video, relative to the journal folder
  std::string state; // stage states after the segment, relative to the journal folder
  std::string encoder; // the encoder that wrote the segment
  std::string stream_params; // the engine's description of the encoded stream, kept verbatim
  int64_t packets = 0; // video packets in the segment file
  int64_t bytes = 0; // size of the segment file (append() measures it when 0)
  uint64_t state_checksum = 0; // fnv1a64 of the state file (append() computes it when 0)

  bool operator==(const SegmentRecord&) const = default;
};

// What parse_journal() reads from a journal's text.
struct ParsedJournal {
  int version = 0; // the format in the header line; 0 when there is no readable header
  // The fingerprint, when the header (format 2) and the fingerprint line check out.
  std::optional<std::string> fingerprint;
  // The segments whose lines check out and continue each other, up to the first that does not.
  std::vector<SegmentRecord> records;
  // The automatic choices recorded (Note [Automatic choices in the journal]), by key.
  std::map<std::string, std::string> choices;
  // Why reading stopped before the end of the text ("line 4: checksum mismatch"); empty when
  // every line checked out.
  std::string problem;
};

// Reads a journal's text (Note [Journal integrity]). Pure: touches no file, never throws for
// any input (fuzzing entry point).
ParsedJournal parse_journal(std::string_view text);
// The text of a journal with these segments and choices; parse_journal() reads it back exactly.
std::string format_journal(
    const std::string& fingerprint,
    const std::vector<SegmentRecord>& records,
    const std::map<std::string, std::string>& choices = {});

// Checks a segment file beyond its size (the engine counts its packets with FFmpeg; the journal
// includes no FFmpeg header). Returns false, with the reason in *why, for a segment that cannot
// be used; may also throw, which counts as false.
using SegmentVerifier =
    std::function<bool(const SegmentRecord& record, const std::string& segment_path, std::string* why)>;

// Threading: not thread-safe; one owner (the engine's encode stage and coordinator).
class Journal {
 public:
  Journal(std::string folder, std::string fingerprint);
  ~Journal();

  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Takes the run lock "<folder>/lock" (creating the folder) against another run writing the
  // same output (Note [Run lock]); `output` is named in the error. Call it before load(), which
  // deletes files. Released by unlock(), remove() and the destructor.
  void lock(const std::string& output);
  void unlock() noexcept;
  bool locked() const {
    return lock_ != nullptr && lock_->held();
  }
  std::string lock_path() const;

  // The completed segments of an earlier run with the same fingerprint that check out (Note
  // [Journal integrity]), in order; the folder is created, and every file in it that the kept
  // segments do not list (the lock aside) is deleted. `discarded` tells whether an intact
  // journal with another fingerprint was thrown away; `warnings` receives why segments or a
  // damaged journal were dropped. Throws only when the folder cannot be created or the journal
  // cannot be rewritten.
  std::vector<SegmentRecord> load(
      bool* discarded = nullptr,
      std::vector<std::string>* warnings = nullptr,
      const SegmentVerifier& verify_segment = {});

  // Records a completed segment: its index and first frame must continue the journal, and its
  // files must exist (the segment file is flushed to the disk first). A zero `bytes` or
  // `state_checksum` is filled in from the files; a non-zero one must match them.
  void append(const SegmentRecord& record);

  // Keeps the first `keep` segments and deletes the others' files (the journal is rewritten
  // first), for segments that must be encoded again (their encoder parameters would differ).
  void truncate(size_t keep);

  // Deletes the folder and everything in it, and releases the lock.
  void remove();

  // Note [Automatic choices in the journal]: what an earlier run with this fingerprint chose
  // for `key` (after load()), and recording this run's choice (the journal is rewritten).
  std::optional<std::string> choice(const std::string& key) const;
  void record_choice(const std::string& key, const std::string& value);

  const std::vector<SegmentRecord>& records() const {
    return records_;
  }
  const std::string& folder() const {
    return folder_;
  }
  std::string path_of(const std::string& name) const;

 private:
  void write() const;
  void delete_unlisted() const;

  std::string folder_;
  std::string fingerprint_;
  std::vector<SegmentRecord> records_;
  std::map<std::string, std::string> choices_;
  std::unique_ptr<RunLock> lock_;
};

} // namespace sbsconv
