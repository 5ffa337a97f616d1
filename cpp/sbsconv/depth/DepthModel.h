#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace sbsconv {

// What a model's depth means.
enum class DepthKind {
  Relative, // affine-invariant inverse depth (disparity-like): larger is nearer
  Metric, // metres from the camera
  RelativeDepth, // depth up to an unknown scale: larger is farther (Depth Anything 3)
  SalientMask, // not depth: the salient object's mask in [0,1] (U2-Net; Note [U2-Net salient-object masks])
};

const char* depth_kind_name(DepthKind kind);

// What the pipeline works with: relative depth becomes inverse depth (1 / depth, so larger is
// nearer, as Relative); the other kinds are returned as they are.
at::Tensor pipeline_depth(DepthKind kind, const at::Tensor& depth);

struct DepthOutput {
  // float [K,1,H,W] at frame size, for the next K frames in the order they were given
  // (K equals the frames given to infer() for image models; a temporal model may hold frames
  // back until their window is complete and release them later, or from flush()).
  at::Tensor depth;
  // Horizontal field of view in degrees, one per frame, for models that estimate it.
  std::optional<at::Tensor> fov_degrees;
  // Camera-to-world poses [K,3,4] (OpenCV axes: x right, y down, z forward), the sequence's
  // first frame at the origin, for models that estimate the camera's motion.
  std::optional<at::Tensor> camera_to_world;
};

// Note [DepthModel contract]
// Every model family implements this interface; the engine, the benchmark and the Python
// wrapper only see it.
// - forward(pixel_values): the network on already normalised float [N,3,h,w] input at the
//   model's own resolution rules, returning [N,1,h,w] -- the values the reference
//   implementation's network returns, for parity tests.
// - infer(frames): uint8 RGB [N,3,H,W] on the model's device -> depth at frame size, with the
//   reference pre- and post-processing done on the device.
// - Temporal models keep state across calls: reset() starts a new sequence (a scene cut),
//   state()/load_state() save and restore it for resume, flush() releases held frames at
//   the end of a sequence.
//
// Threading: not thread-safe; one owner (the engine's depth stage).
class DepthModel {
 public:
  // Every model's frames are large and come again each batch: Note [Large blocks stay in the
  // heap] (common/Heap.h) applies from the first model of a process on.
  DepthModel();
  virtual ~DepthModel() = default;

  virtual const std::string& name() const = 0;
  virtual DepthKind kind() const = 0;
  virtual at::Device device() const = 0;
  virtual at::ScalarType dtype() const = 0;
  // The type the depth head's convolutions compute in: the model's, but under int8 where the
  // CPU has bf16 dot products (Note [int8 with the head in bfloat16], DepthAnythingV2.h).
  virtual at::ScalarType head_dtype() const {
    return dtype();
  }

  virtual at::Tensor forward(const at::Tensor& pixel_values) = 0;
  virtual DepthOutput infer(const at::Tensor& frames) = 0;

  virtual bool temporal() const {
    return false;
  }
  // Frames per engine batch when the user does not choose: what fits beside the model.
  virtual int64_t preferred_batch(bool on_gpu) const {
    return on_gpu ? 8 : 2;
  }
  virtual void reset() {}
  virtual DepthOutput flush() {
    return {};
  }
  virtual std::map<std::string, at::Tensor> state() const {
    return {};
  }
  virtual void load_state(const std::map<std::string, at::Tensor>& /*state*/) {}
  // Note [Prepared int8 weights] (DinoV2.h): the tensors quantized at load, under the names a
  // checkpoint holds them by; empty where nothing was (any precision but int8).
  virtual std::map<std::string, at::Tensor> prepared_weights() const {
    return {};
  }
  // Models whose metric depth depends on the camera's field of view (Depth Pro) use this one
  // instead of their estimate; nullopt returns to the estimate.
  virtual void set_field_of_view(std::optional<double> /*degrees*/) {}
};

// Chooses the compute dtype for "auto", "fp32", "fp16", "bf16" on a device: auto is fp16 on
// CUDA and MPS and fp32 on the CPU (where half precision is slower, not faster).
at::ScalarType resolve_precision(const std::string& precision, const at::Device& device);

// Parses "auto", "cpu", "cuda", "cuda:1", "mps"; auto picks cuda, then mps, then cpu.
// Throws a Device error for a device that is not available.
at::Device resolve_device(const std::string& device);

} // namespace sbsconv
