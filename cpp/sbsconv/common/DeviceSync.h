#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sbsconv {

// Note [Host synchronisation]
// On a GPU the engine's stages overlap only if no stage makes the host wait for the device:
// every `.item()`, every copy of device memory to the host and every operation whose output
// size depends on device data (nonzero, masked_select, unique) waits for everything queued
// before it, the depth batch of another stage included. So the hot path has one sanctioned
// way for device values to reach the host, `to_host` (or `HostReadback`, which defers the wait
// by a batch), and each call counts. Statistics the host needs (cut features, range ends,
// comfort figures) are computed on the device into one small tensor per batch and come over
// in one such transfer.
//
// This is checked, not hoped for: a HostSyncCounter observes every tensor operation of the
// thread that holds it (a thread-local RecordFunction callback, as Float64Guard does) and
// counts the operations that synchronise: a scalar read, a data-dependent shape, a copy from a
// device to the host outside to_host. On a CPU-only machine nothing synchronises, so with
// `cpu_counts_as_device` (the engine's check mode) an operation on CPU tensors counts as if
// they were on the device, except inside a HostScope, where code works on host values on
// purpose (a field of view already on the host, a saved state). A test then converts a video
// on the CPU and fails if any stage synchronises more than once per batch.
//
// Threading: a counter observes only the thread that created it and must be destroyed there.
class HostSyncCounter {
 public:
  explicit HostSyncCounter(bool cpu_counts_as_device);
  ~HostSyncCounter();
  HostSyncCounter(const HostSyncCounter&) = delete;
  HostSyncCounter& operator=(const HostSyncCounter&) = delete;

  // Synchronising operations seen on this thread (to_host calls included) since it was made.
  int64_t count() const;
  // The first few operations counted, by name, for a failing test's message.
  std::vector<std::string> names() const;

 private:
  unsigned long long handle_ = 0;
};

// Synchronisations counted on this thread by to_host/HostReadback, with or without a counter
// (the engine reports them per stage in every run).
int64_t explicit_host_transfers();

// Marks a block that reads host tensors on purpose (not counted in check mode). Nests;
// thread-local.
class HostScope {
 public:
  HostScope();
  ~HostScope();
  HostScope(const HostScope&) = delete;
  HostScope& operator=(const HostScope&) = delete;
};

// The hot path's one device -> host transfer: a CPU copy of `t` (on CUDA through pinned
// memory, waiting only for the current stream's work up to this point). Counted.
at::Tensor to_host(const at::Tensor& t);

// A device -> host transfer read a batch later: submit() starts an asynchronous copy into
// pinned memory and records an event; take() waits for that event (by then long passed) and
// returns the host copy. One submit counts as one transfer. On the CPU the copy is made at
// once. Not thread-safe; one owner.
class HostReadback {
 public:
  void submit(const at::Tensor& t);
  bool pending() const {
    return host_.defined();
  }
  at::Tensor take();

 private:
  at::Tensor host_;
  std::unique_ptr<c10::Event> ready_;
};

// A host tensor on `device` without making the host wait: on CUDA through pinned memory and an
// asynchronous copy (a copy from pageable memory may wait for the stream).
at::Tensor to_device(const at::Tensor& host, const at::Device& device);

// Makes the host wait for the work queued so far on `device`'s current stream (nothing off
// CUDA): for consumers outside LibTorch, such as an encoder reading device memory.
void wait_for_current_stream(const at::Device& device);

// Small constants made on the device by fill kernels: a tensor built on the host and copied
// over would wait for the device when its memory is not pinned.
at::Tensor device_values(const std::vector<double>& values, const at::TensorOptions& options);

// Brings several tensors to the host in one transfer (same dtype; a saved state at a segment's
// end). Counted once.
std::vector<at::Tensor> to_host_all(const std::vector<at::Tensor>& tensors);

// Note [Streams and hand-overs]
// Each stage that works on a device runs its operations on a stream of its own (CUDA: one
// from the pool; other devices: their current stream, which on MPS orders everything
// already), so one stage's kernels need not wait behind another's. A batch handed to the next
// stage carries an event recorded on the producer's stream after its last operation on the
// batch; the consumer makes its own stream wait for that event (on the device, the host does
// not wait) and tells the caching allocator that the batch's tensors are now used on its
// stream, so memory the producer frees is not reused while the consumer's kernels may still
// read it.
class StageStream {
 public:
  // Makes a stream for `device` current on the calling thread until destroyed.
  explicit StageStream(const at::Device& device);
  ~StageStream();
  StageStream(const StageStream&) = delete;
  StageStream& operator=(const StageStream&) = delete;

  bool active() const {
    return stream_.has_value();
  }
  // An event recorded now on this stage's stream (null when not on a CUDA device).
  std::shared_ptr<c10::Event> mark() const;
  // Makes this stage's stream wait for `ready` and records `tensors` as used on it.
  void receive(const std::shared_ptr<c10::Event>& ready, const std::vector<at::Tensor*>& tensors) const;

 private:
  std::optional<c10::Stream> stream_;
  std::optional<c10::Stream> previous_;
};

} // namespace sbsconv
