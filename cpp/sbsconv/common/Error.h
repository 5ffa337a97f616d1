#pragma once

#include <stdexcept>
#include <string>

namespace sbsconv {

// What went wrong, in the terms the Python side maps to exception classes
// (python/sbsconv/errors.py holds the matching hierarchy; keep the two in step).
enum class ErrorKind {
  Input,          // the input cannot be used (not a video, corrupt, no video stream)
  InputNotFound,  // the input path does not exist
  Decode,         // decoding failed part-way (strict mode, truncated or corrupt data)
  Encode,         // no encoder could be opened, or encoding failed
  Output,         // the output cannot be written (folder missing, disk full)
  Option,         // an argument is out of range or inconsistent
  Model,          // a depth model or its checkpoint cannot be used
  Device,         // the requested device is not available
  Cancelled,      // the caller cancelled the run
  Internal,       // a bug in sbsconv
};

const char* error_kind_name(ErrorKind kind);

// The one exception type the C++ core throws. It carries the file, the pipeline stage and
// the reason separately so that the Python exception can expose them as attributes; what()
// is the assembled message "stage: reason [file] (FFmpeg: ...)".
//
// Threading: immutable once constructed; safe to copy across threads (the engine records a
// failing stage's Error and rethrows it on the caller's thread).
class Error : public std::runtime_error {
 public:
  Error(
      ErrorKind kind,
      std::string stage,
      std::string reason,
      std::string file = {},
      std::string ffmpeg_message = {});

  ErrorKind kind() const {
    return kind_;
  }
  const std::string& stage() const {
    return stage_;
  }
  const std::string& reason() const {
    return reason_;
  }
  const std::string& file() const {
    return file_;
  }
  const std::string& ffmpeg_message() const {
    return ffmpeg_message_;
  }

 private:
  ErrorKind kind_;
  std::string stage_;
  std::string reason_;
  std::string file_;
  std::string ffmpeg_message_;
};

[[noreturn]] void throw_error(
    ErrorKind kind,
    const std::string& stage,
    const std::string& reason,
    const std::string& file = {});

} // namespace sbsconv

// Argument and invariant checks that throw sbsconv::Error. The FFmpeg-aware variant,
// SBSCONV_CHECK_AV, lives in common/FFmpeg.h.
#define SBSCONV_CHECK(cond, kind, stage, reason)                        \
  do {                                                                  \
    if (!(cond)) {                                                      \
      ::sbsconv::throw_error(::sbsconv::ErrorKind::kind, stage, reason); \
    }                                                                   \
  } while (0)
