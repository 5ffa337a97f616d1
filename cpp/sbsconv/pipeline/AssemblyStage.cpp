// Assembly: a resumable run's segments joined, with the source's audio and subtitles, into the output.
// (Note [Resumable runs] in Journal.h; Engine::Impl in EngineImpl.h)

#include "sbsconv/pipeline/EngineImpl.h"

namespace sbsconv {

void Engine::Impl::assemble() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    phase = "assembling";
  }
  WriterOptions w = o.writer;
  w.source = o.input;
  w.time_origin = origin;
  w.time_end = end_time;
  for (const SegmentRecord& r : segments) {
    w.video_segments.push_back(journal->path_of(r.file));
  }
  w.segment_offset = kSegmentOffset;
  w.cancel = &cancelled; // Ctrl-C during assembly stops it; nothing is renamed into place
  if (result.encoder.empty() && !segments.empty()) {
    // every segment was made by an earlier run
    std::lock_guard<std::mutex> lock(mutex);
    result.encoder = segments.front().encoder;
  }
  if (w.encoder.empty() || w.encoder == "auto") {
    w.encoder = result.encoder.empty() ? "copy" : result.encoder;
  }
  MediaWriter writer(w);
  writer.set_apple_field_of_view(apple_fov());
  inject_fault("assemble", 0);
  writer.copy_segments();
  inject_fault("assemble", 1); // copied, not yet renamed into place
  WriterResult r = writer.finish();
  std::lock_guard<std::mutex> lock(mutex);
  result.output = r.path;
  result.streams = r.streams;
  for (const auto& warning : r.warnings) {
    warnings.push_back(warning);
  }
}

} // namespace sbsconv
