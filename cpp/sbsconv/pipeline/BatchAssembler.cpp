#include "sbsconv/pipeline/BatchAssembler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

// Note [Batches without copies]: the decoder writes a batch of frames into one buffer (fresh
// for every read, channels-last). When a batch's frames are consecutive pictures of one such
// buffer, the batch is a view of it; otherwise (a batch that straddles two reads, frames
// dropped by fps or preview selection) they are copied into a buffer laid out the same way,
// pinned when theirs was, so the host -> device copy stays asynchronous.
at::Tensor join_frames(const std::vector<at::Tensor>& frames) {
  const at::Tensor& first = frames.front();
  const auto n = static_cast<int64_t>(frames.size());
  if (n == 1) {
    return first.unsqueeze(0);
  }
  const int64_t step = frames[1].storage_offset() - first.storage_offset();
  bool consecutive = step > 0;
  for (int64_t k = 1; consecutive && k < n; ++k) {
    const at::Tensor& f = frames[static_cast<size_t>(k)];
    consecutive = f.storage().is_alias_of(first.storage()) && f.sizes() == first.sizes() &&
        f.strides() == first.strides() && f.storage_offset() == first.storage_offset() + k * step;
  }
  if (consecutive) {
    std::vector<int64_t> sizes{n};
    std::vector<int64_t> strides{step};
    sizes.insert(sizes.end(), first.sizes().begin(), first.sizes().end());
    strides.insert(strides.end(), first.strides().begin(), first.strides().end());
    return first.as_strided(sizes, strides, first.storage_offset());
  }
  // [N,H,W,C] storage seen as [N,C,H,W], as the decoder makes it
  at::Tensor out = at::empty(
                       {n, first.size(1), first.size(2), first.size(0)},
                       first.options().pinned_memory(first.is_cpu() && first.is_pinned()))
                       .permute({0, 3, 1, 2});
  for (int64_t k = 0; k < n; ++k) {
    out[k].copy_(frames[static_cast<size_t>(k)]);
  }
  return out;
}

} // namespace

BatchAssembler::BatchAssembler(Options options, std::unique_ptr<SceneCutDetector> detector)
    : o_(options), detector_(std::move(detector)), next_index_(options.first_index) {
  SBSCONV_CHECK(o_.batch_size >= 1, Option, "decode", "batch_size must be >= 1");
  SBSCONV_CHECK(o_.segment_frames >= 0 && o_.first_index >= 0, Option, "decode", "invalid batch bookkeeping");
  last_end_ = o_.first_index - 1;
  next_end_ = o_.segment_frames > 0 ? last_end_ + o_.segment_frames : -1;
  if (o_.first_index == 0) {
    shot_starts_.insert(0);
  }
}

bool BatchAssembler::segment_end_at(int64_t index) const {
  return segment_ends_.count(index) != 0;
}

void BatchAssembler::mark_segment_ends(int64_t index) {
  if (o_.segment_frames > 0 && index == next_end_) {
    segment_ends_.insert(index);
    last_end_ = index;
    next_end_ = index + o_.segment_frames;
  }
}

void BatchAssembler::set_segment_frames(int64_t frames) {
  SBSCONV_CHECK(frames >= 1, Option, "decode", "a segment must hold at least one frame");
  if (o_.segment_frames <= 0) {
    return; // not a resumable run: no segments
  }
  o_.segment_frames = frames;
  // the open segment: `frames` after its start, or (when more than that was added already)
  // `frames` after the last frame added
  next_end_ = std::min(next_end_, std::max(last_end_ + frames, next_index_ - 1 + frames));
}

void BatchAssembler::add(const SelectedFrame& f) {
  add_all({f});
}

void BatchAssembler::add_all(const std::vector<SelectedFrame>& frames) {
  SBSCONV_CHECK(!finished_, Internal, "decode", "a frame was added after the last one");
  if (frames.empty()) {
    return;
  }
  at::Tensor features;
  if (detector_) {
    std::vector<at::Tensor> pictures;
    pictures.reserve(frames.size());
    for (const SelectedFrame& f : frames) {
      pictures.push_back(f.frame);
    }
    features = detector_->features(pictures);
  }
  for (size_t k = 0; k < frames.size(); ++k) {
    const SelectedFrame& f = frames[k];
    mark_segment_ends(next_index_);
    pending_.push_back(Item{f.frame, f.pts, f.source_pts, next_index_++});
    if (detector_) {
      for (int64_t c : detector_->push_features(features[static_cast<int64_t>(k)])) {
        shot_starts_.insert(c);
      }
      const int64_t just = detector_->decided() - 1;
      if (just >= 0 && segment_end_at(just)) {
        detector_states_[just] = detector_->state_through(just);
      }
    }
  }
}

void BatchAssembler::finish() {
  if (finished_) {
    return;
  }
  finished_ = true;
  if (detector_) {
    for (int64_t c : detector_->flush()) {
      shot_starts_.insert(c);
    }
  }
}

std::optional<Batch> BatchAssembler::next() {
  const int64_t decided = detector_ ? detector_->decided() : std::numeric_limits<int64_t>::max();
  int64_t count = 0;
  bool seg_end = false;
  for (const Item& item : pending_) {
    // Before the end, a frame is ready once the detector has decided it and its successor
    // (whose pts a segment's end records) has arrived.
    const bool ready = finished_ || (item.index < decided && count + 1 < static_cast<int64_t>(pending_.size()));
    if (!ready || count == o_.batch_size) {
      break;
    }
    ++count;
    if (segment_end_at(item.index)) {
      seg_end = true;
      break;
    }
  }
  const bool full = count == o_.batch_size || seg_end;
  if (count == 0 || (!full && !finished_)) {
    return std::nullopt; // wait for more frames to fill the batch
  }
  Batch b;
  b.first_index = pending_.front().index;
  std::vector<at::Tensor> frames;
  frames.reserve(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) {
    Item& item = pending_.front();
    frames.push_back(item.frame);
    b.pts.push_back(item.pts);
    b.source_pts.push_back(item.source_pts);
    b.starts_shot.push_back(shot_starts_.count(item.index) != 0);
    pending_.pop_front();
  }
  b.frames = join_frames(frames);
  if (seg_end) {
    const int64_t last = b.first_index + count - 1;
    b.segment_end = true;
    b.next_source_pts = pending_.empty() ? -1 : pending_.front().source_pts;
    if (auto it = detector_states_.find(last); it != detector_states_.end()) {
      b.state = with_prefix(it->second, "cuts.");
      detector_states_.erase(it);
    }
    segment_ends_.erase(segment_ends_.begin(), segment_ends_.upper_bound(last));
  }
  return b;
}

std::vector<int64_t> BatchAssembler::cuts() const {
  std::vector<int64_t> out;
  for (int64_t c : shot_starts_) {
    if (c > 0) {
      out.push_back(c);
    }
  }
  return out;
}

} // namespace sbsconv
