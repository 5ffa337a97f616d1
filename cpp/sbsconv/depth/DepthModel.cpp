#include "sbsconv/depth/DepthModel.h"

#include <ATen/ATen.h>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/Heap.h"

namespace sbsconv {

DepthModel::DepthModel() {
  keep_large_blocks_in_heap();
}

const char* depth_kind_name(DepthKind kind) {
  switch (kind) {
    case DepthKind::Metric:
      return "metric";
    case DepthKind::RelativeDepth:
      return "relative-depth";
    case DepthKind::SalientMask:
      return "mask";
    default:
      return "relative";
  }
}

at::Tensor pipeline_depth(DepthKind kind, const at::Tensor& depth) {
  if (kind != DepthKind::RelativeDepth) {
    return depth;
  }
  // Clamped well below any depth the models give (they predict exp(x) > 0), so that a zero
  // never becomes an infinity.
  return depth.clamp_min(1e-6).reciprocal();
}

at::Device resolve_device(const std::string& device) {
  if (device == "auto" || device.empty()) {
    if (at::hasCUDA()) {
      return at::Device(at::kCUDA, 0);
    }
    if (at::hasMPS()) {
      return at::Device(at::kMPS);
    }
    return at::Device(at::kCPU);
  }
  at::Device parsed(at::kCPU);
  try {
    parsed = at::Device(device);
  } catch (const std::exception&) {
    throw Error(ErrorKind::Option, "device", "unknown device '" + device + "' (auto, cpu, cuda, cuda:N, mps)");
  }
  if (parsed.is_cuda() && !at::hasCUDA()) {
    throw Error(ErrorKind::Device, "device", "CUDA was requested but is not available on this machine");
  }
  if (parsed.is_mps() && !at::hasMPS()) {
    throw Error(ErrorKind::Device, "device", "MPS was requested but is not available on this machine");
  }
  if (!parsed.is_cpu() && !parsed.is_cuda() && !parsed.is_mps()) {
    throw Error(ErrorKind::Option, "device", "unsupported device '" + device + "' (cpu, cuda, mps)");
  }
  return parsed;
}

at::ScalarType resolve_precision(const std::string& precision, const at::Device& device) {
  if (precision == "auto" || precision.empty()) {
    return device.is_cpu() ? at::kFloat : at::kHalf;
  }
  if (precision == "fp32" || precision == "float32") {
    return at::kFloat;
  }
  if (precision == "fp16" || precision == "float16") {
    return at::kHalf;
  }
  if (precision == "bf16" || precision == "bfloat16") {
    return at::kBFloat16;
  }
  throw Error(ErrorKind::Option, "precision", "precision must be auto, fp32, fp16, bf16 or int8 (CPU), not '" + precision + "'");
}

} // namespace sbsconv
