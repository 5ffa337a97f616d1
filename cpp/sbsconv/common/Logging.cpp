#include "sbsconv/common/Logging.h"

#include <atomic>
#include <cstdio>
#include <deque>
#include <mutex>

namespace sbsconv {

namespace {

// Bounded so that a run nobody drains cannot grow without limit; the oldest records go.
constexpr size_t kMaxQueued = 10000;

struct LogState {
  std::mutex mutex;
  std::deque<LogRecord> queue;
  std::atomic<bool> deferred{false};
  std::atomic<int> level{static_cast<int>(LogLevel::Warning)};
};

LogState& state() {
  static LogState* s = new LogState(); // never destroyed: FFmpeg threads may log at exit
  return *s;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::Debug:
      return "debug";
    case LogLevel::Info:
      return "info";
    case LogLevel::Warning:
      return "warning";
    case LogLevel::Error:
      return "error";
  }
  return "log";
}

} // namespace

void log(LogLevel level, const std::string& message) {
  LogState& s = state();
  if (static_cast<int>(level) < s.level.load(std::memory_order_relaxed)) {
    return;
  }
  if (s.deferred.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.queue.size() >= kMaxQueued) {
      s.queue.pop_front();
    }
    s.queue.push_back(LogRecord{level, message});
  } else {
    std::fprintf(stderr, "sbsconv %s: %s\n", level_name(level), message.c_str());
  }
}

void set_log_deferred(bool deferred) {
  state().deferred.store(deferred);
}

void set_log_level(LogLevel level) {
  state().level.store(static_cast<int>(level));
}

std::vector<LogRecord> drain_log() {
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::vector<LogRecord> out(
      std::make_move_iterator(s.queue.begin()), std::make_move_iterator(s.queue.end()));
  s.queue.clear();
  return out;
}

} // namespace sbsconv
