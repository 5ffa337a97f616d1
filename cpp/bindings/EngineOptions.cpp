// The engine's options as typed Python classes (Note [Engine options at the boundary]).

#include <pybind11/stl.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bindings/Conversions.h"
#include "sbsconv/media/DepthFile.h"
#include "sbsconv/media/IsoBmff.h"
#include "sbsconv/media/MediaWriter.h"
#include "sbsconv/pipeline/Engine.h"
#include "sbsconv/stereo/Stereo.h"

// Note [Engine options at the boundary]
// The engine is configured from Python (sbsconv.plan makes the options, sbsconv.engine turns
// them into these classes, nothing else does) through one class per option struct, whose
// constructor takes every field the caller decides as a required keyword argument: a field
// Python leaves out, or one it names that the class does not have, is a TypeError at once,
// never a silent default on either side. Each constructor builds its struct with designated
// initialisers, and this file is compiled with -Werror=missing-field-initializers: a field
// added to a C++ struct and not given a value here, by the caller or explicitly by the
// engine's own rule ("set by the engine"), does not compile.

namespace py = pybind11;

namespace sbsconv::bindings {

namespace {

template <typename T>
std::optional<T> optional_cast(const py::object& value) {
  return value.is_none() ? std::nullopt : std::optional<T>(value.cast<T>());
}

} // namespace

void bind_engine_options(py::module_& m) {
  py::class_<StabilizerOptions>(m, "StabilizerOptions")
      .def(
          py::init([](bool relative, double low_percentile, double high_percentile, double range_decay, bool align,
                      double alpha, double motion_threshold) {
            return StabilizerOptions{
                .relative = relative,
                .low_percentile = low_percentile,
                .high_percentile = high_percentile,
                .range_decay = range_decay,
                .align = align,
                .alpha = alpha,
                .motion_threshold = motion_threshold,
                .sample_pixels = StabilizerOptions{}.sample_pixels, // the engine's own
            };
          }),
          py::kw_only(),
          py::arg("relative"),
          py::arg("low_percentile"),
          py::arg("high_percentile"),
          py::arg("range_decay"),
          py::arg("align"),
          py::arg("alpha"),
          py::arg("motion_threshold"))
      .def_readonly("relative", &StabilizerOptions::relative)
      .def_readonly("alpha", &StabilizerOptions::alpha);

  py::class_<ComfortOptions>(m, "ComfortOptions")
      .def(
          py::init([](double limit_percent, bool auto_strength) {
            return ComfortOptions{
                .limit_percent = limit_percent,
                .auto_strength = auto_strength,
                .decay = ComfortOptions{}.decay, // the engine's own
            };
          }),
          py::kw_only(),
          py::arg("limit_percent"),
          py::arg("auto_strength"))
      .def_readonly("limit_percent", &ComfortOptions::limit_percent);

  py::class_<DisparityOptions>(m, "DisparityOptions")
      .def(
          py::init([](double divergence, std::optional<double> max_shift, double convergence, double ipd_metres,
                      std::optional<double> fov_degrees, double screen_distance) {
            return DisparityOptions{
                .divergence = divergence,
                .max_shift = max_shift,
                .convergence = convergence,
                .ipd_metres = ipd_metres,
                .fov_degrees = fov_degrees,
                .screen_distance = screen_distance,
            };
          }),
          py::kw_only(),
          py::arg("divergence"),
          py::arg("max_shift").none(true),
          py::arg("convergence"),
          py::arg("ipd_metres"),
          py::arg("fov_degrees").none(true),
          py::arg("screen_distance"))
      .def_readonly("divergence", &DisparityOptions::divergence)
      .def_readonly("convergence", &DisparityOptions::convergence);

  py::class_<StereoOptions>(m, "StereoOptions")
      .def(
          py::init([](const std::string& layout, const std::string& synthetic_view, const std::string& fill,
                      int64_t edge_dilation, int64_t eye_width, int64_t eye_height, bool keep_aspect,
                      double pixel_aspect, bool vr180, int64_t vr180_canvas, double vr180_fov) {
            return StereoOptions{
                .layout = parse_layout(layout),
                .synthetic_view = parse_synthetic_view(synthetic_view),
                .fill = parse_fill(fill),
                .edge_dilation = edge_dilation,
                .eye_width = eye_width,
                .eye_height = eye_height,
                .keep_aspect = keep_aspect,
                .pixel_aspect = pixel_aspect,
                .vr180 = vr180,
                .vr180_canvas = vr180_canvas,
                .vr180_fov = vr180_fov,
            };
          }),
          py::kw_only(),
          py::arg("layout"),
          py::arg("synthetic_view"),
          py::arg("fill"),
          py::arg("edge_dilation"),
          py::arg("eye_width"),
          py::arg("eye_height"),
          py::arg("keep_aspect"),
          py::arg("pixel_aspect"),
          py::arg("vr180"),
          py::arg("vr180_canvas"),
          py::arg("vr180_fov"))
      .def_property_readonly("layout", [](const StereoOptions& s) { return std::string(layout_name(s.layout)); })
      .def_property_readonly("fill", [](const StereoOptions& s) { return std::string(fill_name(s.fill)); });

  // Note [Editing ISO-BMFF files]: Apple's stereo description.
  py::class_<AppleStereo>(m, "AppleStereo")
      .def(
          py::init([](const std::string& packing, const std::string& projection, uint32_t baseline_um,
                      int32_t disparity_adjustment, std::optional<double> hfov_degrees) {
            return AppleStereo{
                .packing = packing,
                .projection = projection,
                .baseline_um = baseline_um,
                .disparity_adjustment = disparity_adjustment,
                .hfov_degrees = hfov_degrees,
            };
          }),
          py::kw_only(),
          py::arg("packing"),
          py::arg("projection"),
          py::arg("baseline_um"),
          py::arg("disparity_adjustment"),
          py::arg("hfov_degrees").none(true))
      .def_readonly("packing", &AppleStereo::packing)
      .def_readonly("hfov_degrees", &AppleStereo::hfov_degrees);

  py::class_<WriterOptions>(m, "WriterOptions")
      .def(
          py::init([](const std::string& path, const std::string& container, const std::string& codec,
                      const std::string& encoder, std::optional<int> crf, std::optional<int> cq,
                      std::optional<int> quality, const std::string& preset, int bit_depth, int threads,
                      const std::string& audio, const std::string& subtitles, const std::string& stereo,
                      const std::map<std::string, std::string>& metadata, std::optional<AppleStereo> apple,
                      bool vr180, bool spatial) {
            return WriterOptions{
                .path = path,
                .container = container,
                .codec = codec,
                .encoder = encoder,
                .crf = crf,
                .cq = cq,
                .quality = quality,
                .preset = preset,
                .chosen_preset = "", // set by the engine (Note [Encoder preset chosen to keep pace])
                .bit_depth = bit_depth,
                // the frames' size and timing, the device and the source: set by the engine
                .width = 0,
                .height = 0,
                .time_base = {},
                .frame_rate = {},
                .device = "cpu",
                .threads = threads,
                .sample_aspect = {0, 1},
                .source = "",
                .audio = audio,
                .subtitles = subtitles,
                .time_origin = 0.0,
                .time_end = std::nullopt,
                .stereo = stereo,
                .metadata = metadata,
                .apple = apple,
                .vr180 = vr180,
                .spatial = spatial,
                .video_segments = {}, // set by the engine (resume segments, parts)
                .segment_offset = 0.0,
                .cancel = nullptr,
            };
          }),
          py::kw_only(),
          py::arg("path"),
          py::arg("container"),
          py::arg("codec"),
          py::arg("encoder"),
          py::arg("crf").none(true),
          py::arg("cq").none(true),
          py::arg("quality").none(true),
          py::arg("preset"),
          py::arg("bit_depth"),
          py::arg("threads"),
          py::arg("audio"),
          py::arg("subtitles"),
          py::arg("stereo"),
          py::arg("metadata"),
          py::arg("apple").none(true),
          py::arg("vr180"),
          py::arg("spatial"))
      .def_readonly("path", &WriterOptions::path)
      .def_readonly("codec", &WriterOptions::codec);

  // Note [Depth files]: what a depth export writes (its size and timing are the stream's).
  py::class_<DepthWriterOptions>(m, "DepthExportOptions")
      .def(
          py::init([](const std::string& path, const std::string& format, bool relative, double max_depth, bool half,
                      std::optional<double> fov_degrees, const std::string& sidecar_extra) {
            return DepthWriterOptions{
                .path = path,
                .format = parse_depth_format(format),
                .relative = relative,
                .max_depth = max_depth,
                .half = half,
                // the frames' size and timing: set by the engine, or by DepthWriter's caller
                .width = 0,
                .height = 0,
                .time_base = {},
                .frame_rate = {},
                .time_origin = 0.0,
                .source_start = 0.0,
                .fov_degrees = fov_degrees,
                .sidecar_extra = sidecar_extra,
                .cancel = nullptr,
            };
          }),
          py::kw_only(),
          py::arg("path"),
          py::arg("format"),
          py::arg("relative"),
          py::arg("max_depth"),
          py::arg("half"),
          py::arg("fov_degrees").none(true),
          py::arg("sidecar_extra"))
      .def_readonly("path", &DepthWriterOptions::path);

  py::class_<DepthSourceOptions>(m, "DepthSourceOptions")
      .def(
          py::init([](const std::string& path, const std::string& format, bool relative, double max_depth,
                      const std::string& pattern, const std::vector<double>& times, const std::vector<float>& low,
                      const std::vector<float>& high, const std::vector<float>& fov) {
            return DepthSourceOptions{
                .path = path,
                .format = parse_depth_format(format),
                .relative = relative,
                .max_depth = max_depth,
                .pattern = pattern,
                .times = times,
                .low = low,
                .high = high,
                .fov = fov,
            };
          }),
          py::kw_only(),
          py::arg("path"),
          py::arg("format"),
          py::arg("relative"),
          py::arg("max_depth"),
          py::arg("pattern"),
          py::arg("times"),
          py::arg("low"),
          py::arg("high"),
          py::arg("fov"))
      .def_readonly("path", &DepthSourceOptions::path);

  // Note [Subject on the screen plane]
  py::class_<SubjectOptions>(m, "SubjectOptions")
      .def(
          py::init([](std::shared_ptr<DepthModel> mask_model, std::optional<DepthSourceOptions> mask_source,
                      double mask_smoothing, bool convergence, bool relative, double plane_smoothing, double fallback,
                      std::optional<DepthWriterOptions> mask_export) {
            return SubjectOptions{
                .mask_model = std::move(mask_model),
                .mask_source = std::move(mask_source),
                .mask_smoothing = mask_smoothing,
                .convergence = convergence,
                .plane =
                    SubjectPlaneOptions{
                        .relative = relative,
                        .smoothing = plane_smoothing,
                        .threshold = 0.5, // the mask's own middle
                        .min_area = 0.002,
                        .fallback = fallback,
                        .sample_pixels = 65536,
                    },
                .mask_export = mask_export,
            };
          }),
          py::kw_only(),
          py::arg("mask_model").none(true),
          py::arg("mask_source").none(true),
          py::arg("mask_smoothing"),
          py::arg("convergence"),
          py::arg("relative"),
          py::arg("plane_smoothing"),
          py::arg("fallback"),
          py::arg("mask_export").none(true));

  py::class_<EngineOptions>(m, "EngineOptions")
      .def(
          py::init([](const std::string& input, std::optional<double> start, std::optional<double> duration, int stream,
                      const std::string& hwaccel, int threads, const std::string& device, bool strict,
                      int64_t batch_size, bool batch_size_auto, std::shared_ptr<DepthModel> model, bool detect_cuts,
                      double cut_sensitivity, int64_t min_scene_length, const StabilizerOptions& stabilizer,
                      const ComfortOptions& comfort, const DisparityOptions& disparity, const StereoOptions& stereo,
                      const WriterOptions& writer, const py::object& fps, double preview_every,
                      std::optional<std::string> image_dir, std::optional<std::string> depth_video,
                      std::optional<DepthWriterOptions> depth_export, bool render_stereo,
                      std::optional<DepthSourceOptions> depth_source, std::optional<std::string> infill_mask,
                      std::optional<SubjectOptions> subject, std::optional<double> output_start, bool part, double timeline_start, bool resume,
                      const std::string& fingerprint, int64_t segment_frames, int encoder_instances,
                      bool check_float64, bool check_syncs, const std::string& fault) {
            return EngineOptions{
                .input = input,
                .reader =
                    ReaderOptions{
                        .stream_index = stream,
                        .start = start,
                        .duration = duration,
                        .resume_pts = std::nullopt, // set by the engine (Note [Resumable runs])
                        .threads = threads,
                        .width = 0, // the displayed size
                        .height = 0,
                        .hwaccel = hwaccel,
                        .device = device,
                        .strict = strict,
                        .pixels = FramePixels::Rgb,
                    },
                .batch_size = batch_size,
                .batch_size_auto = batch_size_auto,
                .model = std::move(model),
                .detect_cuts = detect_cuts,
                .cuts = SceneCutOptions{.sensitivity = cut_sensitivity, .min_scene_length = min_scene_length},
                .stabilizer = stabilizer,
                .comfort = comfort,
                .disparity = disparity,
                .stereo = stereo,
                .writer = writer,
                .fps = fps.is_none() ? std::nullopt : std::optional<Rational>(to_rational(fps)),
                .preview_every = preview_every,
                .image_dir = image_dir.value_or(""),
                .depth_video = depth_video.value_or(""),
                .depth_export = depth_export,
                .render_stereo = render_stereo,
                .depth_source = depth_source,
                .infill_mask = infill_mask.value_or(""),
                .subject = std::move(subject),
                .device = device,
                .output_start = output_start,
                .part = part,
                .timeline_start = timeline_start,
                .resume = resume,
                .fingerprint = fingerprint,
                .segment_frames = segment_frames,
                .encoder_instances = encoder_instances,
                .check_float64 = check_float64,
                .check_syncs = check_syncs,
                .fault = fault,
            };
          }),
          py::kw_only(),
          py::arg("input"),
          py::arg("start").none(true),
          py::arg("duration").none(true),
          py::arg("stream"),
          py::arg("hwaccel"),
          py::arg("threads"),
          py::arg("device"),
          py::arg("strict"),
          py::arg("batch_size"),
          py::arg("batch_size_auto"),
          py::arg("model").none(true),
          py::arg("detect_cuts"),
          py::arg("cut_sensitivity"),
          py::arg("min_scene_length"),
          py::arg("stabilizer"),
          py::arg("comfort"),
          py::arg("disparity"),
          py::arg("stereo"),
          py::arg("writer"),
          py::arg("fps").none(true),
          py::arg("preview_every"),
          py::arg("image_dir").none(true),
          py::arg("depth_video").none(true),
          py::arg("depth_export").none(true),
          py::arg("render_stereo"),
          py::arg("depth_source").none(true),
          py::arg("infill_mask").none(true),
          py::arg("subject").none(true),
          py::arg("output_start").none(true),
          py::arg("part"),
          py::arg("timeline_start"),
          py::arg("resume"),
          py::arg("fingerprint"),
          py::arg("segment_frames"),
          py::arg("encoder_instances"),
          py::arg("check_float64"),
          py::arg("check_syncs"),
          py::arg("fault"))
      .def_readonly("input", &EngineOptions::input)
      .def_readonly("batch_size", &EngineOptions::batch_size)
      .def_readonly("stereo", &EngineOptions::stereo)
      .def_readonly("writer", &EngineOptions::writer);
}

} // namespace sbsconv::bindings
