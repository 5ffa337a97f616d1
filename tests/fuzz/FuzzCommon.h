#pragma once

// Shared by the fuzz harnesses (tests/fuzz/fuzz_*.cpp), which are built two ways: with
// libFuzzer (cmake/Fuzz.cmake, SBSCONV_FUZZ=ON) and, without it, into the replay runners
// that ctest runs over tests/fuzz/corpus/ and tests/fuzz/regressions/ (Replay.cpp).
//
// The rule every harness follows: sbsconv::Error is the expected way for the core to refuse
// an input; any other exception, a crash, a sanitizer report or a hang is a finding. A
// finding prints what it was and aborts, so that libFuzzer saves the input and the replay
// runner fails.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/Logging.h"

namespace sbsconv::fuzz {

// Reports a finding and stops the process (libFuzzer then writes the reproducer).
[[noreturn]] inline void finding(const char* harness, const std::string& what) {
  std::fprintf(stderr, "\n==== sbsconv fuzz finding (%s): %s\n", harness, what.c_str());
  std::fflush(stderr);
  std::abort();
}

// A folder of this process's own for temporary files: $SBSCONV_FUZZ_SCRATCH (scripts/fuzz.sh
// points it into its scratch folder) or the system's temporary folder, plus the pid. Removed
// at a normal exit; a crashing run leaves it behind for the script to clear.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* base = std::getenv("SBSCONV_FUZZ_SCRATCH");
    std::filesystem::path root = base != nullptr && *base != '\0'
        ? std::filesystem::path(base)
        : std::filesystem::temp_directory_path();
    std::filesystem::path d = root / ("sbsconv-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) {
    finding("harness", "cannot write the scratch file " + path.string());
  }
}

// SBSCONV_FUZZ_VERBOSE=1: say what happened to each input (for writing seeds and triage).
inline bool verbose() {
  static const bool on = [] {
    const char* v = std::getenv("SBSCONV_FUZZ_VERBOSE");
    return v != nullptr && *v != '\0' && *v != '0';
  }();
  return on;
}

inline void note(const std::string& what) {
  if (verbose()) {
    std::fprintf(stderr, "  -> %s\n", what.c_str());
  }
}

// Once per process: no log chatter on stderr (every input would print FFmpeg's complaints)
// and one intra-op thread (the fuzz machines are small and runs must be reproducible).
inline void init_process() {
  set_log_level(LogLevel::Error);
  at::set_num_threads(1);
  (void)scratch_dir();
}

// Runs one input through `body`, applying the exception rule above.
template <typename Body>
int guarded(const char* harness, Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    note(std::string("refused: ") + e.what()); // as it should
  } catch (const std::exception& e) {
    finding(harness, std::string("an exception other than sbsconv::Error escaped: ") + e.what());
  } catch (...) {
    finding(harness, "an exception of unknown type escaped");
  }
  return 0;
}

// Reads an input as a stream of small numbers: missing bytes read as zero, so that every
// input, however short, decodes to something.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const {
    return pos_ >= size_;
  }
  uint8_t u8() {
    return pos_ < size_ ? data_[pos_++] : 0;
  }
  uint16_t u16() {
    const uint16_t lo = u8();
    return static_cast<uint16_t>(lo | (static_cast<uint16_t>(u8()) << 8));
  }
  std::string bytes(size_t n) {
    const size_t take = std::min(n, size_ - std::min(pos_, size_));
    std::string out(reinterpret_cast<const char*>(data_ + pos_), take);
    pos_ += take;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

} // namespace sbsconv::fuzz
