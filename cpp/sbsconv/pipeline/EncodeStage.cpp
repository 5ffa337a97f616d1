// The encode stage: the packed frames into the output or the resume segments, and the depth products.
// (Engine::Impl in EngineImpl.h; Note [Engine] in Engine.h)

#include "sbsconv/pipeline/EngineImpl.h"
#include "sbsconv/pipeline/SegmentEncoders.h"

namespace sbsconv {

// ---- encode ------------------------------------------------------------------------------------

void Engine::Impl::encode_stage() {
  guarded("encode", [&] {
    StageGuard stage_guard(*this, "encode");
    int64_t batch_number = 0;
    std::unique_ptr<MediaWriter> writer;
    std::unique_ptr<MediaWriter> depth_writer; // the colour-mapped depth video
    std::unique_ptr<DepthWriter> export_writer; // Note [Depth products]
    std::unique_ptr<LosslessVideoWriter> mask_writer; // Note [Infill masks]
    std::unique_ptr<DepthWriter> subject_writer; // the subject's masks (mask_out)
    int64_t segment_first = start_index;
    frames_done = start_index.load();
    auto writer_options = [&](const Batch& b) {
      return output_writer_options(
          static_cast<int>(b.packed.size(3)), static_cast<int>(b.packed.size(2)), b.packed.device().str());
    };
    // a depth file (the depth export, the subject's masks) of `like`'s size on the output's timing
    auto open_depth_file = [&](DepthWriterOptions options, const at::Tensor& like) {
      options.width = static_cast<int>(like.size(3));
      options.height = static_cast<int>(like.size(2));
      options.time_base = out_time_base;
      options.frame_rate = out_frame_rate;
      options.time_origin = origin;
      options.source_start = source_start;
      options.cancel = &cancelled;
      return std::make_unique<DepthWriter>(options);
    };
    // a finished segment into the journal, in order
    auto record_segment = [&](const WriterResult& r, int64_t first, int64_t next_index, int64_t next_pts,
                              const TensorMap& state) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        // each segment's encoder says the same things (a codec chosen for the frame size ...): once
        for (const auto& w : r.warnings) {
          if (std::find(warnings.begin(), warnings.end(), w) == warnings.end()) {
            warnings.push_back(w);
          }
        }
        result.encoder = r.encoder;
        result.skipped_encoders = r.skipped_encoders;
      }
      SegmentRecord record;
      record.index = static_cast<int64_t>(segments.size());
      record.first_frame = first;
      record.frames = next_index - first;
      record.next_pts = next_pts;
      record.file = fs::path(r.path).filename().string();
      record.encoder = r.encoder;
      record.stream_params = r.video_params.to_string();
      // Counted from the file as written (and so checked once), as a later load counts it.
      record.packets = inspect_segment(journal->path_of(record.file)).packets;
      record.state = numbered("segment_%05lld.state", record.index);
      {
        HostFloat64Scope host; // the states are CPU tensors, written as they are
        save_tensors(journal->path_of(record.state), state);
      }
      journal->append(record);
      segments.push_back(record);
    };
    auto close_segment = [&](int64_t next_index, int64_t next_pts, const TensorMap& state) {
      WriterResult r = writer->finish();
      writer.reset();
      record_segment(r, segment_first, next_index, next_pts, state);
      segment_first = next_index;
    };
    // Note [Chunk-parallel encoding]: segments encoded by several instances at once; what each
    // closed segment's record needs, by its tag (the order opened), until it has finished.
    struct Closing {
      int64_t first = 0;
      int64_t next_index = 0;
      int64_t next_pts = -1;
      TensorMap state;
    };
    std::atomic<int64_t> segment_batches{0}; // read by the encoders' threads: outlives `parallel`
    std::map<int64_t, Closing> closing;
    int64_t opened = 0;
    bool segment_open = false;
    std::unique_ptr<SegmentEncoders> parallel;
    auto record_finished = [&](std::vector<SegmentEncoders::Finished> done) {
      for (auto& f : done) {
        auto it = closing.find(f.tag);
        SBSCONV_CHECK(it != closing.end(), Internal, "encode", "a segment finished that was not closed");
        record_segment(f.result, it->second.first, it->second.next_index, it->second.next_pts, it->second.state);
        closing.erase(it);
      }
    };
    auto close_parallel = [&](int64_t next_index, int64_t next_pts, const TensorMap& state) {
      closing[opened - 1] = Closing{segment_first, next_index, next_pts, state};
      parallel->close();
      segment_open = false;
      segment_first = next_index;
    };
    int64_t next_index = start_index;
    // a failure in the parallel encoders: what finished before it is recorded first
    auto keeping_finished = [&](auto&& step) {
      try {
        step();
      } catch (...) {
        if (parallel && !cancelled) {
          try {
            record_finished(parallel->take_finished());
          } catch (...) {
            // the original failure is what the run reports
          }
        }
        throw;
      }
    };
    while (auto batch = rendered.pop()) {
      if (cancelled) {
        return;
      }
      Batch b = std::move(*batch);
      stage_guard.received(b);
      {
        Busy busy{stage_busy_us[4]};
        if (o.render_stereo) {
          if (batch_number == 0) {
            choose_encoding(writer_options(b), b);
            std::lock_guard<std::mutex> lock(mutex);
            result.width = b.packed.size(3);
            result.height = b.packed.size(2);
          }
          if (encoder_instances > 1) {
            if (!parallel) {
              SegmentEncoders::Options po;
              po.instances = encoder_instances;
              po.max_buffered_frames = encoder_instances * std::max<int64_t>(chunk_frames.load(), 1) + b.size();
              po.device = b.packed.device().str();
              po.cancel = &cancelled;
              po.before_write = [this, &segment_batches](int64_t, int64_t) {
                inject_fault("encode-segment", segment_batches++);
              };
              parallel = std::make_unique<SegmentEncoders>(po);
            }
            if (!segment_open) {
              WriterOptions w = writer_options(b);
              w.path = journal->path_of(numbered("segment_%05lld.nut", static_cast<int64_t>(segments.size()) + parallel->pending()));
              if (w.threads == 0) {
                w.threads = std::max(1, usable_cores() / encoder_instances); // each its share of the cores
              }
              keeping_finished([&] { parallel->open(w, opened); });
              ++opened;
              segment_open = true;
            }
            keeping_finished([&] { parallel->write(b.packed, b.pts, stage_guard.stream.mark()); });
          } else {
            if (!writer) {
              writer = std::make_unique<MediaWriter>(writer_options(b));
            }
            writer->write(b.packed, b.pts);
          }
        }
        if (b.export_depth.defined()) {
          if (!export_writer) {
            export_writer = open_depth_file(*o.depth_export, b.export_depth);
          }
          export_writer->write(b.export_depth, b.pts, source_times(b), b.fov, b.camera);
        }
        if (b.mask.defined() && o.subject && o.subject->mask_export) {
          if (!subject_writer) {
            subject_writer = open_depth_file(*o.subject->mask_export, b.mask);
          }
          subject_writer->write(b.mask, b.pts, source_times(b), at::Tensor(), at::Tensor());
        }
        if (b.infill_mask.defined()) {
          if (!mask_writer) {
            LosslessVideoOptions mw;
            mw.path = o.infill_mask;
            mw.width = static_cast<int>(b.infill_mask.size(3));
            mw.height = static_cast<int>(b.infill_mask.size(2));
            mw.time_base = out_time_base;
            mw.frame_rate = out_frame_rate;
            mw.time_origin = origin;
            mw.metadata["comment"] =
                "sbsconv infill mask: black = visible; coloured = disoccluded, red/green = (n+1)/2 with n pointing to the background side";
            mw.cancel = &cancelled;
            mask_writer = std::make_unique<LosslessVideoWriter>(mw);
          }
          mask_writer->write(b.infill_mask, b.pts);
        }
        if (b.depth_colors.defined()) {
          if (!depth_writer) {
            WriterOptions dw = o.writer;
            dw.path = o.depth_video;
            dw.container.clear();
            dw.width = static_cast<int>(b.depth_colors.size(3));
            dw.height = static_cast<int>(b.depth_colors.size(2));
            dw.time_base = out_time_base;
            dw.frame_rate = out_frame_rate;
            dw.time_origin = origin;
            dw.source.clear();
            dw.audio = "none";
            dw.subtitles = "none";
            dw.stereo.clear();
            dw.device = "cpu";
            depth_writer = std::make_unique<MediaWriter>(dw);
          }
          depth_writer->write(b.depth_colors, b.pts);
        }
        if (!o.image_dir.empty()) {
          for (int64_t k = 0; k < b.size(); ++k) {
            write_png((fs::path(o.image_dir) / numbered("frame_%06lld.png", b.first_index + k + 1)).string(), b.packed[k]);
          }
        }
        next_index = b.first_index + b.size();
        if (o.resume && b.segment_end) {
          if (segment_open) {
            keeping_finished([&] { close_parallel(next_index, b.next_source_pts, b.state); });
          } else if (writer) {
            close_segment(next_index, b.next_source_pts, b.state);
          }
        }
        if (parallel) {
          record_finished(parallel->take_finished());
        }
      }
      inject_fault("encode", batch_number++);
      stage_guard.check();
      stage_frames[4] += b.size();
      frames_done = next_index;
    }
    if (cancelled) {
      return;
    }
    if (depth_writer) {
      depth_writer->finish();
    }
    // a depth file's sidecar lists the shots; its warnings join the run's
    auto finish_depth_file = [&](DepthWriter& file, std::optional<DepthExportSummary>& into) {
      std::vector<int64_t> shot_starts;
      {
        std::lock_guard<std::mutex> lock(mutex);
        shot_starts = cuts;
      }
      DepthExportSummary summary = file.finish(shot_starts);
      std::lock_guard<std::mutex> lock(mutex);
      warnings.insert(warnings.end(), summary.warnings.begin(), summary.warnings.end());
      into = summary;
    };
    if (export_writer) {
      finish_depth_file(*export_writer, result.depth_export);
    }
    if (subject_writer) {
      finish_depth_file(*subject_writer, result.mask_export);
    }
    if (mask_writer) {
      mask_writer->finish();
    }
    if (parallel) {
      Busy busy{stage_busy_us[4]};
      keeping_finished([&] {
        if (segment_open) {
          close_parallel(next_index, -1, TensorMap{});
        }
        record_finished(parallel->drain());
      });
      parallel.reset();
    } else if (writer) {
      Busy busy{stage_busy_us[4]};
      if (o.resume) {
        close_segment(next_index, -1, TensorMap{});
      } else {
        writer->set_apple_field_of_view(apple_fov());
        WriterResult r = writer->finish();
        std::lock_guard<std::mutex> lock(mutex);
        result.encoder = r.encoder;
        result.skipped_encoders = r.skipped_encoders;
        result.streams = r.streams;
        result.output = r.path;
        for (const auto& w : r.warnings) {
          warnings.push_back(w);
        }
      }
    } else if ((!o.resume || segments.empty()) && o.render_stereo) {
      throw Error(ErrorKind::Input, "decode", "the window holds no frames", o.input);
    } else if (!o.render_stereo && !export_writer && !depth_writer) {
      throw Error(ErrorKind::Input, "decode", "the window holds no frames", o.input);
    }
  });
}

} // namespace sbsconv
