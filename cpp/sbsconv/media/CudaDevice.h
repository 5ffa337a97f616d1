#pragma once

#include <string>

#include "sbsconv/common/FFmpeg.h"

namespace sbsconv {

// Note [One CUDA context]
// LibTorch works in each device's primary context, which it creates with the driver's default
// flags. FFmpeg's own way to share that context (av_hwdevice_ctx_create with primary_ctx=1)
// asks for blocking-sync flags and refuses a primary context already active with others
// ("Primary context already active with incompatible flags"), which it always is once LibTorch
// has used the device: so NVDEC and NVENC would never share memory with the tensors. sbsconv
// therefore hands FFmpeg the primary context itself: it retains it through the CUDA driver
// (libcuda, loaded at run time as FFmpeg loads it, so nothing here needs the CUDA toolkit)
// and fills in FFmpeg's CUDA device context with it and with the calling thread's current
// LibTorch stream, on which FFmpeg then queues its own copies (NVDEC's output, NVENC's input),
// in order with that stage's tensor work (Note [Streams and hand-overs]).
//
// Creates such a device for CUDA device `index` into *out. On failure returns false and says
// why in *why (no driver, no such device, FFmpeg refused).
bool create_cuda_device(int index, UniqueAVBufferRef* out, std::string* why);

} // namespace sbsconv
