#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "sbsconv/pipeline/Batch.h"
#include "sbsconv/pipeline/FrameSelector.h"
#include "sbsconv/temporal/SceneCutDetector.h"

namespace sbsconv {

// The decode stage's bookkeeping between the frames it selects and the batches it sends on:
// numbers the frames, runs the scene-cut detector on them, and groups them into batches of at
// most `batch_size` frames that
// - carry each frame's "starts a shot" flag, so a batch waits until the detector has decided
//   every frame in it (it looks a few frames ahead);
// - never cross a segment's end in a resumable run (Note [Resumable runs]); the batch that
//   ends a segment carries the detector's state after its last frame and the next frame's
//   source timestamp (the last selected frame waits for its successor to know it).
//
// Threading: not thread-safe; one owner (the decode stage).
class BatchAssembler {
 public:
  struct Options {
    int64_t batch_size = 4;
    int64_t first_index = 0; // the index of the first frame added (a resumed run's start)
    int64_t segment_frames = 0; // > 0: a segment ends after every this many frames
  };

  // `detector` may be null (no scene-cut detection): then only the first frame starts a shot.
  BatchAssembler(Options options, std::unique_ptr<SceneCutDetector> detector);

  void add(const SelectedFrame& frame);
  // Adds frames in order; the scene-cut features of all of them are computed at once (one
  // device -> host transfer, Note [Host synchronisation]).
  void add_all(const std::vector<SelectedFrame>& frames);
  // No more frames: the detector decides the rest, and next() hands out everything.
  void finish();
  // The next batch that is complete (full, ending a segment, or the last ones after
  // finish()); nullopt while it must wait for more frames.
  std::optional<Batch> next();

  // Segments from now on are `frames` long (> 0; a resumable run's only): the open segment
  // ends after `frames` more frames if that is sooner than it would have (the frames added so
  // far stay in it). For Note [Chunk-parallel encoding], whose segments are sized once the
  // frames' size and the encoders are known. Segments never cross what was added before.
  void set_segment_frames(int64_t frames);

  // The index the next frame added gets.
  int64_t next_index() const {
    return next_index_;
  }
  // Frames (> 0) found to start a new shot so far.
  std::vector<int64_t> cuts() const;

 private:
  struct Item {
    at::Tensor frame; // [3,H,W]
    int64_t pts = 0;
    int64_t source_pts = 0;
    int64_t index = 0;
  };

  bool segment_end_at(int64_t index) const;
  void mark_segment_ends(int64_t index); // each frame's index as it is added

  Options o_;
  std::unique_ptr<SceneCutDetector> detector_;
  std::set<int64_t> shot_starts_;
  std::map<int64_t, TensorMap> detector_states_; // segment's last frame -> detector state
  std::deque<Item> pending_; // selected frames not yet sent on
  int64_t next_index_ = 0;
  std::set<int64_t> segment_ends_; // the last frames of segments, among the frames added
  int64_t last_end_ = -1; // the last frame of the last segment ended (first_index - 1 at first)
  int64_t next_end_ = -1; // the last frame of the open segment
  bool finished_ = false;
};

} // namespace sbsconv
