// Fuzz harness: arbitrary bytes through the media entry points, probe() and VideoReader.
// The public API takes paths, so each input is written to a scratch file first (no file name
// extension: FFmpeg recognises the container from the bytes alone).
//
// Work per input is bounded: at most kMaxFrames frames in the first pass and a few in the
// second, one decoder thread, software decoding, and an output picture of at most 64x64
// (small sources at their own size, larger ones scaled down by the reader).

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "FuzzCommon.h"
#include "sbsconv/media/Probe.h"
#include "sbsconv/media/VideoReader.h"

using namespace sbsconv;
using sbsconv::fuzz::finding;

namespace {

constexpr const char* kHarness = "fuzz_media";
constexpr int kMaxFrames = 8;
constexpr int64_t kNativeArea = 64 * 64; // decode at the source's own size up to this area

void check_batch(const FrameBatch& batch, const VideoStreamDescription& stream, int asked) {
  const at::Tensor& f = batch.frames;
  const int64_t n = batch.size();
  const bool ok = f.defined() && f.dim() == 4 && f.scalar_type() == at::kByte && f.size(0) == n &&
      f.size(1) == 3 && f.size(2) == stream.height && f.size(3) == stream.width &&
      static_cast<int64_t>(batch.durations.size()) == n && n <= asked;
  if (!ok) {
    finding(kHarness, "VideoReader::read returned a batch that breaks its contract: " +
                          (f.defined() ? std::string(f.toString()) + " " + c10::str(f.sizes()) : "undefined") +
                          ", " + std::to_string(n) + " pts, " + std::to_string(batch.durations.size()) +
                          " durations, asked for " + std::to_string(asked) + ", stream " +
                          std::to_string(stream.width) + "x" + std::to_string(stream.height));
  }
  if (n > 0) {
    // Touch every byte, so that the sanitizers see the picture the converter wrote.
    (void)f.sum().item<int64_t>();
  }
}

// Decodes up to `budget` frames in batches of `batch`.
void read_frames(const std::string& path, const ReaderOptions& options, int batch, int budget) {
  VideoReader reader(path, options);
  const VideoStreamDescription& stream = reader.stream();
  if (stream.width <= 0 || stream.height <= 0 || stream.width > 16384 || stream.height > 16384) {
    finding(kHarness, "VideoReader opened a stream with an output size of " + std::to_string(stream.width) +
                          "x" + std::to_string(stream.height));
  }
  int read = 0;
  while (read < budget) {
    const int asked = std::min(batch, budget - read);
    FrameBatch frames = reader.read(asked);
    check_batch(frames, stream, asked);
    if (frames.size() == 0) {
      break;
    }
    read += static_cast<int>(frames.size());
  }
  if (reader.damaged_frames() < 0 || reader.frames_read() != read) {
    finding(kHarness, "VideoReader's counters disagree with what it returned (" + std::to_string(reader.frames_read()) +
                          " frames read, " + std::to_string(read) + " returned, " +
                          std::to_string(reader.damaged_frames()) + " damaged)");
  }
  (void)reader.truncated();
  for (const std::string& w : reader.take_warnings()) {
    fuzz::note("warning: " + w);
  }
  fuzz::note("read " + std::to_string(read) + " frames of " + stream.codec + " " + std::to_string(stream.width) + "x" +
             std::to_string(stream.height));
}

// Runs `body`, treating sbsconv::Error as an accepted outcome so that the next pass runs.
template <typename Body>
void allowing_errors(Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    fuzz::note(std::string("refused: ") + e.what());
  }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  fuzz::init_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::guarded(kHarness, [&] {
    const std::string path = (fuzz::scratch_dir() / "input").string();
    fuzz::write_file(path, data, size);

    const MediaInfo info = probe(path);
    if (info.video_stream < 0 || info.video_stream >= static_cast<int>(info.streams.size()) ||
        info.streams[info.video_stream].type != "video") {
      finding(kHarness, "probe() succeeded without naming a video stream (video_stream " +
                            std::to_string(info.video_stream) + " of " + std::to_string(info.streams.size()) + ")");
    }
    const StreamInfo& video = info.streams[info.video_stream];

    ReaderOptions options;
    options.threads = 1;
    options.hwaccel = "none";
    options.device = "cpu";
    const int64_t area = static_cast<int64_t>(video.width) * video.height;
    if (video.width <= 0 || video.height <= 0 || area > kNativeArea) {
      // Cap the output. Moderate aspect ratios give only the width (the reader derives the
      // height); others give both sides.
      options.width = 48;
      const double aspect = video.width > 0 && video.height > 0
          ? static_cast<double>(video.width) / video.height
          : 0.0;
      if (!(aspect >= 0.25 && aspect <= 4.0)) {
        options.height = 48;
      }
    }

    // Pass 1: the whole stream from the start, forgiving (strict = false), a few batches.
    allowing_errors([&] { read_frames(path, options, 3, kMaxFrames); });

    // Pass 2: a window that needs a seek, in strict mode (corruption is an error).
    options.strict = true;
    options.start = 0.04;
    options.duration = 0.2;
    allowing_errors([&] { read_frames(path, options, 2, 4); });
  });
}
