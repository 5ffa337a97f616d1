#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sbsconv/media/Probe.h"

namespace sbsconv {

struct LosslessVideoOptions {
  std::string path; // the final file (Matroska); written under temporary_path(), then renamed
  int width = 0;
  int height = 0;
  FramePixels pixels = FramePixels::Rgb;
  Rational time_base; // of the pts given to write()
  Rational frame_rate; // nominal rate, for the container
  double time_origin = 0.0; // the file's zero on the source clock, in seconds
  std::map<std::string, std::string> metadata; // global tags
  const std::atomic<bool>* cancel = nullptr; // set: write() and finish() stop (Cancelled)
};

// Writes frames losslessly: FFV1 (level 3, slice checksums) in Matroska, gray16le for 16-bit
// grey, gray for 8-bit grey and bgr0 for RGB, so every value reads back exactly (Note [Depth files]). Nothing
// appears under the output name until finish() succeeds; an unfinished writer removes its
// temporary file.
//
// Threading: not thread-safe; one owner.
class LosslessVideoWriter {
 public:
  explicit LosslessVideoWriter(LosslessVideoOptions options);
  ~LosslessVideoWriter();
  LosslessVideoWriter(const LosslessVideoWriter&) = delete;
  LosslessVideoWriter& operator=(const LosslessVideoWriter&) = delete;

  // Gray16: integer [N,1,H,W] with values 0..65535 (any integer type wide enough); Gray8:
  // integer [N,1,H,W] with values 0..255; RGB: uint8
  // [N,3,H,W]; any device and memory layout. pts: one per frame in options.time_base on the
  // source clock, strictly increasing.
  void write(const at::Tensor& frames, const std::vector<int64_t>& pts);
  // Flushes the encoder, writes the trailer, renames the file into place (durably).
  void finish();
  int64_t frames() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace sbsconv
