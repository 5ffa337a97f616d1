#pragma once

#include <string>
#include <vector>

namespace sbsconv {

// Note [No float64 on devices]
// MPS has no float64, and on CUDA float64 is slow on most cards: no float64 tensor may live on
// a non-CPU device anywhere in the engine. Statistics the CPU needs are computed in float32 on
// the device, copied to the CPU, and finished there in C++ doubles; stage states are saved as
// CPU tensors. This is a checked property, not a convention: a Float64Guard observes every
// tensor operation on the thread that holds it (a thread-local RecordFunction callback) and
// records each operation that produces a float64 tensor on a non-CPU device. With
// `cpu_counts_as_device` (the engine's check mode, used by the tests on CPU-only machines)
// every float64 tensor counts, except where code says it works on the CPU on purpose with a
// HostFloat64Scope, so a CPU-only test run fails for any engine path that would make a float64
// tensor on a GPU.
//
// Threading: a guard observes only the thread that created it and must be destroyed there.
class Float64Guard {
 public:
  explicit Float64Guard(bool cpu_counts_as_device);
  ~Float64Guard();
  Float64Guard(const Float64Guard&) = delete;
  Float64Guard& operator=(const Float64Guard&) = delete;

  // The operations seen producing a forbidden float64 tensor since the last call.
  std::vector<std::string> take_violations();
  // Throws sbsconv::Error (Internal, with `stage`) naming them, if there are any.
  void check(const char* stage);

 private:
  unsigned long long handle_ = 0;
};

// Marks a block that makes float64 tensors on the CPU on purpose (small statistics already
// copied to the host, stage states). Inside it a float64 tensor on a non-CPU device is still
// a violation. Nests; thread-local.
class HostFloat64Scope {
 public:
  HostFloat64Scope();
  ~HostFloat64Scope();
  HostFloat64Scope(const HostFloat64Scope&) = delete;
  HostFloat64Scope& operator=(const HostFloat64Scope&) = delete;
};

} // namespace sbsconv
