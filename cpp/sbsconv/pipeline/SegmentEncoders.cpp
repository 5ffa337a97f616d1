// Note [Chunk-parallel encoding] (SegmentEncoders.h)

#include "sbsconv/pipeline/SegmentEncoders.h"

#include <c10/core/Event.h>

#include <algorithm>
#include <chrono>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {
constexpr const char* kStage = "encode";
using Clock = std::chrono::steady_clock;
} // namespace

ParallelSegments plan_parallel_segments(
    int instances, int64_t frame_bytes, int64_t budget_bytes, int64_t segment_frames, int64_t batch_size) {
  SBSCONV_CHECK(instances >= 1 && frame_bytes >= 1 && segment_frames >= 1 && batch_size >= 1, Option, kStage,
                "invalid parallel segments");
  const int64_t least = std::min(segment_frames, kMinSegmentFrames);
  const int64_t affordable = std::max<int64_t>(budget_bytes, 0) / frame_bytes; // frames waiting, all together
  const auto fit = static_cast<int>(std::clamp<int64_t>(affordable / least, 1, instances));
  if (fit <= 1) {
    return ParallelSegments{1, segment_frames};
  }
  int64_t length = std::clamp<int64_t>(affordable / fit, least, segment_frames);
  if (length > batch_size) {
    length -= length % batch_size; // whole batches
  }
  return ParallelSegments{fit, length};
}

struct SegmentEncoders::Job {
  struct Item {
    at::Tensor frames;
    std::vector<int64_t> pts;
    std::shared_ptr<c10::Event> ready;
  };
  WriterOptions writer;
  int64_t tag = 0;
  int64_t index = 0;
  std::deque<Item> items; // guarded by the owner's mutex, as are the flags
  bool closed = false; // every frame was handed over
  bool done = false; // the worker has ended (finished, failed or stopped)
  bool failed = false;
  WriterResult result;
  std::thread thread;
};

SegmentEncoders::SegmentEncoders(Options options) : o_(std::move(options)) {
  SBSCONV_CHECK(o_.instances >= 1, Option, kStage, "the encoder instances must be at least 1");
  SBSCONV_CHECK(o_.max_buffered_frames >= 1, Option, kStage, "the frames buffered must be at least 1");
}

SegmentEncoders::~SegmentEncoders() {
  stop_all();
}

void SegmentEncoders::stop_all() {
  std::vector<std::shared_ptr<Job>> all;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    all.assign(jobs_.begin(), jobs_.end());
  }
  changed_.notify_all();
  for (auto& job : all) {
    if (job->thread.joinable()) {
      job->thread.join();
    }
  }
}

void SegmentEncoders::rethrow_failure_locked() {
  if (failure_) {
    std::rethrow_exception(failure_);
  }
}

void SegmentEncoders::open(WriterOptions writer, int64_t tag) {
  std::unique_lock<std::mutex> lock(mutex_);
  SBSCONV_CHECK(!open_, Internal, kStage, "a segment is already open");
  // at most `instances` segments encoding at once: wait for one to end
  auto running = [&] {
    int64_t n = 0;
    for (const auto& job : jobs_) {
      n += job->done ? 0 : 1;
    }
    return n;
  };
  while (!failure_ && running() >= o_.instances) {
    if (o_.cancel != nullptr && o_.cancel->load()) {
      throw Error(ErrorKind::Cancelled, kStage, "cancelled");
    }
    changed_.wait_for(lock, std::chrono::milliseconds(50));
  }
  rethrow_failure_locked();
  auto job = std::make_shared<Job>();
  job->writer = std::move(writer);
  job->tag = tag;
  job->index = opened_++;
  jobs_.push_back(job);
  open_ = job;
  job->thread = std::thread([this, job] {
    try {
      StageStream stream(at::Device(o_.device));
      MediaWriter out(job->writer);
      int64_t batch = 0;
      for (;;) {
        Job::Item item;
        {
          std::unique_lock<std::mutex> guard(mutex_);
          changed_.wait(guard, [&] { return stopping_ || !job->items.empty() || job->closed; });
          if (stopping_) {
            break; // `out` discards what it wrote
          }
          if (job->items.empty()) {
            guard.unlock();
            WriterResult r = out.finish();
            guard.lock();
            job->result = std::move(r);
            break;
          }
          item = std::move(job->items.front());
          job->items.pop_front();
        }
        at::Tensor* frames = &item.frames;
        stream.receive(item.ready, {frames});
        if (o_.before_write) {
          o_.before_write(job->index, batch);
        }
        ++batch;
        const auto t0 = Clock::now();
        out.write(item.frames, item.pts);
        const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        const auto n = static_cast<int64_t>(item.pts.size());
        item = Job::Item{}; // the frames' memory is free before the next waits
        {
          std::lock_guard<std::mutex> guard(mutex_);
          buffered_ -= n;
        }
        changed_.notify_all();
        if (o_.on_frames) {
          o_.on_frames(n, seconds);
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> guard(mutex_);
      if (!failure_) {
        failure_ = std::current_exception();
      }
      job->failed = true;
      for (const auto& item : job->items) {
        buffered_ -= static_cast<int64_t>(item.pts.size());
      }
      job->items.clear();
    }
    {
      std::lock_guard<std::mutex> guard(mutex_);
      job->done = true;
    }
    changed_.notify_all();
  });
}

void SegmentEncoders::write(at::Tensor frames, std::vector<int64_t> pts, std::shared_ptr<c10::Event> ready) {
  const auto n = static_cast<int64_t>(pts.size());
  {
    std::unique_lock<std::mutex> lock(mutex_);
    SBSCONV_CHECK(open_ != nullptr, Internal, kStage, "no segment is open");
    // Wait while the buffer is full; a batch larger than the whole budget goes alone.
    while (!failure_ && buffered_ > 0 && buffered_ + n > o_.max_buffered_frames) {
      if (o_.cancel != nullptr && o_.cancel->load()) {
        throw Error(ErrorKind::Cancelled, kStage, "cancelled");
      }
      changed_.wait_for(lock, std::chrono::milliseconds(50));
    }
    rethrow_failure_locked();
    open_->items.push_back(Job::Item{std::move(frames), std::move(pts), std::move(ready)});
    buffered_ += n;
  }
  changed_.notify_all();
}

void SegmentEncoders::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    SBSCONV_CHECK(open_ != nullptr, Internal, kStage, "no segment is open");
    open_->closed = true;
    open_.reset();
    rethrow_failure_locked();
  }
  changed_.notify_all();
}

std::vector<SegmentEncoders::Finished> SegmentEncoders::take_finished() {
  std::vector<std::shared_ptr<Job>> ended;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!jobs_.empty() && jobs_.front()->done && !jobs_.front()->failed && jobs_.front() != open_) {
      ended.push_back(jobs_.front());
      jobs_.pop_front();
    }
  }
  std::vector<Finished> out;
  for (auto& job : ended) {
    job->thread.join();
    out.push_back(Finished{std::move(job->result), job->tag});
  }
  return out;
}

std::vector<SegmentEncoders::Finished> SegmentEncoders::drain() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    SBSCONV_CHECK(open_ == nullptr, Internal, kStage, "a segment is still open");
    while (!failure_) {
      bool all_done = true;
      for (const auto& job : jobs_) {
        all_done = all_done && job->done;
      }
      if (all_done) {
        break;
      }
      if (o_.cancel != nullptr && o_.cancel->load()) {
        throw Error(ErrorKind::Cancelled, kStage, "cancelled");
      }
      changed_.wait_for(lock, std::chrono::milliseconds(50));
    }
    rethrow_failure_locked();
  }
  return take_finished();
}

int64_t SegmentEncoders::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(jobs_.size());
}

} // namespace sbsconv
