#include "sbsconv/media/CudaDevice.h"

#include <c10/core/Device.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <dlfcn.h>

// FFmpeg's CUDA header wants cuda.h only for these two opaque handle types; they are declared
// here exactly as cuda.h declares them, so no CUDA toolkit is needed to build.
typedef struct CUctx_st* CUcontext;
typedef struct CUstream_st* CUstream;
#ifndef CUDA_VERSION
#define CUDA_VERSION 0
#define SBSCONV_CUDA_VERSION_DEFINED
#endif
extern "C" {
#include <libavutil/hwcontext_cuda.h>
}
#ifdef SBSCONV_CUDA_VERSION_DEFINED
#undef CUDA_VERSION
#endif

namespace sbsconv {

namespace {

using CUresult = int;
using CUdevice = int;

struct Driver {
  CUresult (*init)(unsigned int) = nullptr;
  CUresult (*device_get)(CUdevice*, int) = nullptr;
  CUresult (*primary_retain)(CUcontext*, CUdevice) = nullptr;
  std::string missing;
};

const Driver& driver() {
  static const Driver d = [] {
    Driver out;
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      out.missing = "the CUDA driver (libcuda.so.1) is not installed";
      return out;
    }
    out.init = reinterpret_cast<decltype(out.init)>(dlsym(lib, "cuInit"));
    out.device_get = reinterpret_cast<decltype(out.device_get)>(dlsym(lib, "cuDeviceGet"));
    out.primary_retain = reinterpret_cast<decltype(out.primary_retain)>(dlsym(lib, "cuDevicePrimaryCtxRetain_v2"));
    if (out.primary_retain == nullptr) {
      out.primary_retain = reinterpret_cast<decltype(out.primary_retain)>(dlsym(lib, "cuDevicePrimaryCtxRetain"));
    }
    if (out.init == nullptr || out.device_get == nullptr || out.primary_retain == nullptr) {
      out.missing = "the CUDA driver lacks cuInit/cuDeviceGet/cuDevicePrimaryCtxRetain";
    }
    return out;
  }();
  return d;
}

} // namespace

bool create_cuda_device(int index, UniqueAVBufferRef* out, std::string* why) {
  const Driver& d = driver();
  if (!d.missing.empty()) {
    *why = d.missing;
    return false;
  }
  CUdevice device = 0;
  CUcontext context = nullptr;
  CUresult status = d.init(0);
  if (status == 0) {
    status = d.device_get(&device, index);
  }
  if (status == 0) {
    // Retained once and kept for the process's life, as LibTorch keeps it.
    status = d.primary_retain(&context, device);
  }
  if (status != 0 || context == nullptr) {
    *why = "the CUDA driver cannot open device " + std::to_string(index) + " (CUresult " + std::to_string(status) + ")";
    return false;
  }
  UniqueAVBufferRef ref(av_hwdevice_ctx_alloc(AV_HWDEVICE_TYPE_CUDA));
  if (!ref) {
    *why = "av_hwdevice_ctx_alloc failed";
    return false;
  }
  auto* hw = reinterpret_cast<AVHWDeviceContext*>(ref->data);
  auto* cuda = static_cast<AVCUDADeviceContext*>(hw->hwctx);
  cuda->cuda_ctx = context;
  try {
    const c10::Device torch_device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
    cuda->stream = static_cast<CUstream>(
        c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(torch_device).native_handle());
  } catch (const std::exception& e) {
    *why = std::string("this LibTorch has no CUDA: ") + e.what();
    return false;
  }
  const int init = av_hwdevice_ctx_init(ref.get());
  if (init < 0) {
    *why = "FFmpeg cannot use the CUDA context: " + av_error_string(init);
    return false;
  }
  *out = std::move(ref);
  return true;
}

} // namespace sbsconv
