// Fuzz harness: the depth-file reader (media/DepthFile.h, Note [Depth files]). A re-render or
// a format conversion reads depth files that other tools (or damaged disks) made: the .npy
// header and data, 16-bit PNG and float EXR frames, and FFV1/RGB videos whose channels may
// not be packed depth. Whatever the bytes, DepthReader and DepthMatcher throw sbsconv::Error
// or return frames of the size they announced, with finite times.
//
// Input: byte 0 chooses the format (npy, png16 sequence, exr sequence, rgb-packed or gray16
// video), byte 1 the number of frames the "sidecar" lists (1-8); the rest is the file (for a
// sequence, every frame file gets the same bytes).

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "FuzzCommon.h"
#include "sbsconv/media/DepthFile.h"

using namespace sbsconv;
using sbsconv::fuzz::finding;

namespace {
constexpr const char* kHarness = "fuzz_depth_file";
}

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  fuzz::init_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::guarded(kHarness, [&] {
    if (size < 2) {
      return;
    }
    const int kind = data[0] % 5;
    const int listed = 1 + data[1] % 8;
    const uint8_t* body = data + 2;
    const size_t n = size - 2;
    namespace fs = std::filesystem;
    const fs::path dir = fuzz::scratch_dir() / "depth";
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(dir);
    DepthSourceOptions o;
    for (int k = 0; k < listed; ++k) {
      o.times.push_back(k / 25.0);
    }
    o.relative = (data[1] & 0x80) == 0;
    // Note [Bounded inputs]: a few bytes of EXR may declare a 16000x16000 picture, which is
    // legal, takes gigabytes and seconds, and tests nothing the bytes do not; the harness takes
    // what a service reading untrusted files would (max_pixels), so such inputs are refused
    // before they are decoded. The reader's 256 MB reads are DepthFileTest's.
    o.max_pixels = int64_t{2048} * 2048;
    o.max_depth = 6.0;
    switch (kind) {
      case 0:
        o.format = DepthFormat::Npy;
        o.path = (dir / "d.npy").string();
        fuzz::write_file(o.path, body, n);
        break;
      case 1:
      case 2:
        o.format = kind == 1 ? DepthFormat::Png16 : DepthFormat::Exr;
        o.path = dir.string();
        o.low = {0.0f};
        o.high = {1.0f};
        for (int k = 1; k <= listed; ++k) {
          char name[32];
          std::snprintf(name, sizeof(name), "depth_%06d%s", k, kind == 1 ? ".png" : ".exr");
          fuzz::write_file(dir / name, body, n);
        }
        break;
      default:
        o.format = kind == 3 ? DepthFormat::RgbPacked : DepthFormat::Gray16;
        o.path = (dir / "d.mkv").string();
        if (kind == 3 && (data[1] & 0x40)) {
          o.times.clear(); // no sidecar: the video's own timestamps
        }
        o.low = {0.0f};
        o.high = {1.0f};
        fuzz::write_file(o.path, body, n);
        break;
    }
    std::unique_ptr<DepthReader> reader;
    try {
      reader = std::make_unique<DepthReader>(o);
    } catch (const Error& e) {
      fuzz::note(std::string("refused: ") + e.what());
      return;
    }
    const int w = reader->width();
    const int h = reader->height();
    if (w <= 0 || h <= 0) {
      finding(kHarness, "a depth file opened with an empty picture size");
    }
    try {
      for (int round = 0; round < 4; ++round) {
        DepthFrames f = reader->read(3);
        if (f.size() == 0) {
          break;
        }
        if (f.depth.dim() != 4 || f.depth.size(0) != f.size() || f.depth.size(1) != 1 || f.depth.size(2) != h ||
            f.depth.size(3) != w) {
          finding(kHarness, "a depth batch does not have the announced size");
        }
        for (double t : f.times) {
          if (!std::isfinite(t)) {
            finding(kHarness, "a depth frame has a time that is not a number");
          }
        }
      }
      // the matcher over the same file, from the start
      DepthMatcher matcher(std::make_unique<DepthReader>(o), 0.02);
      at::Tensor fov;
      (void)matcher.depth_for({0.0}, &fov);
    } catch (const Error& e) {
      fuzz::note(std::string("stopped: ") + e.what());
    }
  });
}
