#pragma once

// Note [Chunk-parallel encoding]
// A software encoder on many cores does not scale with them: libx264's frame threads at
// 1080p keep about six cores busy whatever the machine has (issue 31 measured 20.8 frames/s
// for medium on 16 cores, where the preset's core time allows about 50), so on a GPU run the
// encoder, not the model, sets the pace. A resumable run's segments are already independent
// streams (each opens with a keyframe and is joined by stream copy, Note [Resumable runs]), so
// several segments can be encoded at once, each by its own encoder instance on its share of
// the cores: SegmentEncoders runs up to `instances` MediaWriters, one thread each. The encode
// stage hands it a segment's frames in order and closes the segment; it may open the next one
// before the last has finished encoding. Finished segments come back in the order they were
// opened, so the journal still records them in order.
//
// The frames of the segments being encoded wait in memory, so the segments of a parallel run
// are short: plan_parallel_segments() sizes them to a memory budget (2 GiB in the engine) when
// the engine has chosen the instances (Note [Encoder preset chosen to keep pace]), and the
// decode stage ends segments at that length from then on (BatchAssembler::set_segment_frames);
// `max_buffered_frames` bounds what is held, and write() waits while it is reached. One instance is what every run without a parallel choice uses:
// the encode stage then writes inline, as it always did, and this class is not involved.
//
// Errors: an encoder's exception is kept and rethrown by the encode stage's next open, write,
// close or drain, so the run fails as any stage does; take_finished() still hands over the
// segments that finished before the failed one, for the journal to keep. The destructor stops
// every worker (their writers discard what they had written) and joins them.
//
// Threading: one owner thread (the encode stage) calls the public methods; each worker owns
// its MediaWriter. `on_frames` (optional) is called from the workers after each write, with
// the frames written and the seconds spent.

#include <ATen/ATen.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "sbsconv/media/MediaWriter.h"

namespace c10 {
struct Event;
}

namespace sbsconv {

// How a parallel run's segments fit in memory: `instances` encoders, each segment's frames
// waiting in memory while it encodes, `budget_bytes` for them all. Segments are as long as the
// budget allows up to `segment_frames` (whole batches of `batch_size` where longer than one),
// and never shorter than kMinSegmentFrames (or segment_frames if that is less): keyframes
// closer than that cost more than the parallel encoders gain, so fewer instances are used
// instead (1: no parallel segments, segment_frames unchanged).
struct ParallelSegments {
  int instances = 1;
  int64_t segment_frames = 0;
};
constexpr int64_t kMinSegmentFrames = 16;
ParallelSegments plan_parallel_segments(
    int instances, int64_t frame_bytes, int64_t budget_bytes, int64_t segment_frames, int64_t batch_size);

class SegmentEncoders {
 public:
  struct Options {
    int instances = 2;
    int64_t max_buffered_frames = 64; // frames handed over and not yet encoded, all segments together
    std::string device = "cpu"; // of the frames: each worker works on a stream of its own there
    const std::atomic<bool>* cancel = nullptr;
    std::function<void(int64_t frames, double seconds)> on_frames;
    // Called by a worker before each write with the segment's number (0-based, in the order
    // opened) and the batch's number within it: the engine's fault injection.
    std::function<void(int64_t segment, int64_t batch)> before_write;
  };
  // A finished segment, in the order opened, with the tag given to open().
  struct Finished {
    WriterResult result;
    int64_t tag = 0;
  };

  explicit SegmentEncoders(Options options);
  ~SegmentEncoders();
  SegmentEncoders(const SegmentEncoders&) = delete;
  SegmentEncoders& operator=(const SegmentEncoders&) = delete;

  // Starts the next segment's encoder (waits while `instances` segments are still encoding;
  // the ones that finish meanwhile are kept for take_finished()). The writer is opened on the
  // worker.
  void open(WriterOptions writer, int64_t tag);
  // Hands frames to the open segment; `ready` (may be null): the event after which they may be
  // read on the device.
  void write(at::Tensor frames, std::vector<int64_t> pts, std::shared_ptr<c10::Event> ready);
  // The open segment has all its frames: its encoder finishes it after the last of them.
  void close();
  // Segments finished so far, in the order opened, stopping at the first one still encoding
  // (or failed). Does not throw for a failure.
  std::vector<Finished> take_finished();
  // Waits for every segment to finish; returns them in order (as take_finished()).
  std::vector<Finished> drain();
  // Segments opened and not yet taken.
  int64_t pending() const;

 private:
  struct Job;
  void rethrow_failure_locked();
  void stop_all();

  Options o_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::shared_ptr<Job>> jobs_; // opened, not yet taken, in order
  std::shared_ptr<Job> open_; // the segment receiving frames
  int64_t buffered_ = 0; // frames handed over, not yet encoded
  int64_t opened_ = 0;
  bool stopping_ = false;
  std::exception_ptr failure_;
};

} // namespace sbsconv
