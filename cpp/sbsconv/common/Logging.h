#pragma once

#include <string>
#include <vector>

namespace sbsconv {

enum class LogLevel { Debug = 10, Info = 20, Warning = 30, Error = 40 };

struct LogRecord {
  LogLevel level;
  std::string message;
};

// Note [Deferred logging]
// Log records from the core (and FFmpeg's own messages routed through av_log) can be
// produced on any thread, including FFmpeg's internal decoder threads. Calling into Python
// from those threads would need the GIL, and a thread that waits for the GIL while the GIL
// holder waits for that thread (a codec being freed from a Python destructor joins FFmpeg's
// workers) deadlocks. So records are queued here, under a mutex, and the bindings drain the
// queue on the Python side at safe points (after every call into the core, and from the
// engine's progress callback). Without a drain installed, records at or above the stderr
// threshold go to stderr.
//
// Threading: every function here is thread-safe.

void log(LogLevel level, const std::string& message);

// Routes records to the queue (true) or to stderr (false, the default).
void set_log_deferred(bool deferred);

// Records below this level are dropped (default Info when deferred, Warning otherwise).
void set_log_level(LogLevel level);

// Moves every queued record out, oldest first.
std::vector<LogRecord> drain_log();

} // namespace sbsconv
