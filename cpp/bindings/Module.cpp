// sbsconv._core: type conversion between Python and the C++ core, nothing else. Every call
// that decodes, encodes or waits releases the GIL.

#include <torch/csrc/utils/pybind.h>

#include <pybind11/stl.h>

#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>
#include <string>

#include "bindings/Conversions.h"
#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/common/Heap.h"
#include "sbsconv/common/Versions.h"
#include "sbsconv/depth/DepthAnything3.h"
#include "sbsconv/depth/DepthAnythingV2.h"
#include "sbsconv/depth/DepthPro.h"
#include "sbsconv/depth/DinoV2.h"
#include "sbsconv/depth/Int8Linear.h"
#include "sbsconv/depth/U2Net.h"
#include "sbsconv/depth/VideoDepthAnything.h"
#include "sbsconv/common/Logging.h"
#include "sbsconv/media/ImageFile.h"
#include "sbsconv/media/EncoderSelection.h"
#include "sbsconv/media/MediaWriter.h"
#include "sbsconv/media/ColorConversion.h"
#include "sbsconv/media/HevcBitstream.h"
#include "sbsconv/media/MvHevcEncoder.h"
#include "sbsconv/media/Probe.h"
#include "sbsconv/media/VideoReader.h"
#include "sbsconv/pipeline/Engine.h"
#include "sbsconv/pipeline/SegmentEncoders.h"
#include "sbsconv/stereo/Disparity.h"
#include "sbsconv/stereo/PatchFill.h"
#include "sbsconv/stereo/Stereo.h"
#include "sbsconv/stereo/TemporalFill.h"
#include "sbsconv/stereo/Vr180.h"
#include "sbsconv/stereo/Warp.h"
#include "sbsconv/temporal/ComfortBudget.h"
#include "sbsconv/temporal/DepthStabilizer.h"
#include "sbsconv/temporal/OpticalFlow.h"
#include "sbsconv/temporal/SceneCutDetector.h"
#include "sbsconv/temporal/SubjectPlane.h"

namespace py = pybind11;
using namespace sbsconv;
using sbsconv::bindings::to_rational;

namespace {

// Raises the sbsconv.errors class named after the error's kind, with its parts as attributes.
void raise_python_error(const Error& e) {
  py::module_ errors = py::module_::import("sbsconv.errors");
  py::object cls = errors.attr(error_kind_name(e.kind()));
  py::object instance = cls(
      e.what(),
      py::arg("stage") = e.stage(),
      py::arg("reason") = e.reason(),
      py::arg("path") = e.file().empty() ? py::object(py::none()) : py::object(py::str(e.file())),
      py::arg("ffmpeg_message") =
          e.ffmpeg_message().empty() ? py::object(py::none()) : py::object(py::str(e.ffmpeg_message())));
  PyErr_SetObject(cls.ptr(), instance.ptr());
}

py::object fraction(const Rational& r) {
  static py::object Fraction = py::module_::import("fractions").attr("Fraction");
  if (r.den == 0) {
    return py::none();
  }
  return Fraction(r.num, r.den);
}

py::object seconds_or_none(double value) {
  return std::isnan(value) ? py::object(py::none()) : py::object(py::float_(value));
}

py::dict stream_dict(const StreamInfo& s) {
  py::dict d;
  d["index"] = s.index;
  d["type"] = s.type;
  d["codec"] = s.codec;
  d["codec_long_name"] = s.codec_long_name;
  d["profile"] = s.profile.empty() ? py::object(py::none()) : py::object(py::str(s.profile));
  d["language"] = s.language.empty() ? py::object(py::none()) : py::object(py::str(s.language));
  d["title"] = s.title.empty() ? py::object(py::none()) : py::object(py::str(s.title));
  d["is_default"] = s.is_default;
  d["attached_picture"] = s.attached_picture;
  d["bit_rate"] = s.bit_rate > 0 ? py::object(py::int_(s.bit_rate)) : py::object(py::none());
  d["start_time"] = s.start_time;
  d["duration"] = seconds_or_none(s.duration);
  d["num_frames"] = s.num_frames >= 0 ? py::object(py::int_(s.num_frames)) : py::object(py::none());
  d["time_base"] = fraction(s.time_base);
  d["coded_width"] = s.coded_width;
  d["coded_height"] = s.coded_height;
  d["width"] = s.width;
  d["height"] = s.height;
  d["rotation"] = s.rotation;
  d["avg_frame_rate"] = s.avg_frame_rate.num > 0 ? fraction(s.avg_frame_rate) : py::object(py::none());
  d["r_frame_rate"] = s.r_frame_rate.num > 0 ? fraction(s.r_frame_rate) : py::object(py::none());
  d["sample_aspect_ratio"] =
      s.sample_aspect_ratio.num > 0 ? fraction(s.sample_aspect_ratio) : py::object(py::none());
  d["pix_fmt"] = s.pix_fmt;
  d["bit_depth"] = s.bit_depth;
  d["color_range"] = s.color_range;
  d["color_space"] = s.color_space;
  d["color_transfer"] = s.color_transfer;
  d["color_primaries"] = s.color_primaries;
  d["field_order"] = s.field_order;
  d["stereo3d"] = s.stereo3d;
  d["spherical"] = s.spherical;
  d["sample_rate"] = s.sample_rate;
  d["channels"] = s.channels;
  d["channel_layout"] = s.channel_layout;
  d["sample_fmt"] = s.sample_fmt;
  d["tags"] = s.tags;
  return d;
}

py::dict media_dict(const MediaInfo& info) {
  py::dict d;
  d["path"] = info.path;
  d["format_name"] = info.format_name;
  d["format_long_name"] = info.format_long_name;
  d["start_time"] = info.start_time;
  d["duration"] = seconds_or_none(info.duration);
  d["bit_rate"] = info.bit_rate > 0 ? py::object(py::int_(info.bit_rate)) : py::object(py::none());
  d["video_stream"] = info.video_stream;
  py::list streams;
  for (const StreamInfo& s : info.streams) {
    streams.append(stream_dict(s));
  }
  d["streams"] = streams;
  d["tags"] = info.tags;
  return d;
}

py::dict description_dict(const VideoStreamDescription& s) {
  py::dict d;
  d["index"] = s.index;
  d["codec"] = s.codec;
  d["pix_fmt"] = s.pix_fmt;
  d["width"] = s.width;
  d["height"] = s.height;
  d["rotation"] = s.rotation;
  d["time_base"] = fraction(s.time_base);
  d["frame_rate"] = fraction(s.frame_rate);
  d["start_time"] = s.start_time;
  d["duration"] = seconds_or_none(s.duration);
  d["num_frames"] = s.num_frames >= 0 ? py::object(py::int_(s.num_frames)) : py::object(py::none());
  return d;
}

WeightMap to_weights(const py::dict& weights) {
  WeightMap map;
  for (auto item : weights) {
    map.emplace(item.first.cast<std::string>(), item.second.cast<at::Tensor>());
  }
  return map;
}

template <typename T>
T get_or(const py::dict& d, const char* key, T fallback) {
  return d.contains(key) ? d[key].cast<T>() : fallback;
}

VitConfig vit_config(const py::dict& d) {
  VitConfig c;
  c.embed_dim = d["embed_dim"].cast<int64_t>();
  c.depth = d["depth"].cast<int64_t>();
  c.num_heads = d["num_heads"].cast<int64_t>();
  c.mlp_hidden = d["mlp_hidden"].cast<int64_t>();
  c.swiglu = get_or<bool>(d, "swiglu", false);
  c.patch_size = get_or<int64_t>(d, "patch_size", 14);
  c.layer_norm_eps = get_or<double>(d, "layer_norm_eps", 1e-6);
  c.layer_scale = get_or<bool>(d, "layer_scale", true);
  c.alt_start = get_or<int64_t>(d, "alt_start", -1);
  c.qknorm_start = get_or<int64_t>(d, "qknorm_start", -1);
  c.rope_start = get_or<int64_t>(d, "rope_start", -1);
  c.rope_frequency = get_or<double>(d, "rope_frequency", 100.0);
  c.cat_token = get_or<bool>(d, "cat_token", false);
  c.final_norm_eps = get_or<double>(d, "final_norm_eps", -1.0);
  const std::string resize = get_or<std::string>(d, "pos_embed_resize", "scale_factor_with_offset");
  if (resize == "scale_factor_with_offset") {
    c.pos_embed_resize = PosEmbedResize::ScaleFactorWithOffset;
  } else if (resize == "exact_size") {
    c.pos_embed_resize = PosEmbedResize::ExactSize;
  } else {
    throw Error(ErrorKind::Model, "build model", "unknown pos_embed_resize '" + resize + "'");
  }
  return c;
}

py::dict depth_output_dict(const DepthOutput& out) {
  py::dict result;
  result["depth"] = out.depth.defined() ? py::cast(out.depth) : py::none();
  result["fov_degrees"] = out.fov_degrees ? py::cast(*out.fov_degrees) : py::none();
  result["camera_to_world"] = out.camera_to_world ? py::cast(*out.camera_to_world) : py::none();
  return result;
}

std::array<int64_t, 4> out_channels_of(const py::dict& d) {
  auto oc = d["out_channels"].cast<std::vector<int64_t>>();
  if (oc.size() != 4) {
    throw Error(ErrorKind::Model, "build model", "out_channels must have four entries");
  }
  return {oc[0], oc[1], oc[2], oc[3]};
}

DptHeadConfig head_config(const py::dict& d) {
  DptHeadConfig c;
  c.features = d["features"].cast<int64_t>();
  c.out_channels = out_channels_of(d);
  c.head_hidden = get_or<int64_t>(d, "head_hidden", 32);
  c.metric = get_or<bool>(d, "metric", false);
  c.max_depth = get_or<double>(d, "max_depth", 1.0);
  return c;
}

// A finished writer's result (MediaWriter.finish(), assemble_parts) as Python sees it.
py::dict writer_result_dict(const WriterResult& r) {
  py::dict d;
  d["path"] = r.path;
  d["encoder"] = r.encoder;
  d["skipped_encoders"] = r.skipped_encoders;
  d["frames"] = r.frames;
  d["streams"] = r.streams;
  d["warnings"] = r.warnings;
  return d;
}

py::dict export_summary(const DepthExportSummary& s) {
  py::dict d;
  d["path"] = s.path;
  d["sidecar"] = s.sidecar;
  d["frames"] = s.frames;
  d["warnings"] = s.warnings;
  return d;
}

py::list stage_list(const std::vector<StageStats>& stages) {
  py::list out;
  for (const StageStats& s : stages) {
    py::dict d;
    d["name"] = s.name;
    d["frames"] = s.frames;
    d["busy_seconds"] = s.busy_seconds;
    d["batches"] = s.batches;
    d["host_syncs"] = s.host_syncs;
    d["threads"] = s.threads;
    d["threads_after_model"] = s.threads_after_model;
    out.append(d);
  }
  return out;
}

} // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "sbsconv's C++ core (decode, encode, depth, stereo, engine)";
  // Note [Large blocks stay in the heap]: before the process's threads take arenas of their own
  sbsconv::keep_large_blocks_in_heap();
  m.attr("__version__") = SBSCONV_VERSION;
  m.attr("torch_version") = SBSCONV_TORCH_VERSION;
  m.attr("PREPARED_INT8_FORMAT") = kPreparedInt8Format; // Note [Prepared int8 weights]
  // Note [H.264 level limits]: what codec="auto" keeps as H.264 (the plan asks the same question)
  m.attr("H264_MAX_SIDE") = kH264Level52MaxSide;
  m.attr("H264_MAX_PIXELS") = kH264Level52MaxPixels;

  sbsconv::bindings::bind_engine_options(m);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) {
        std::rethrow_exception(p);
      }
    } catch (const Error& e) {
      raise_python_error(e);
    }
  });

  // ---- logging: see Note [Deferred logging] ----
  m.def("set_log_deferred", &set_log_deferred);
  m.def("set_log_level", [](int level) { set_log_level(static_cast<LogLevel>(level)); });
  m.def("drain_log", [] {
    py::list out;
    for (const LogRecord& r : drain_log()) {
      out.append(py::make_tuple(static_cast<int>(r.level), r.message));
    }
    return out;
  });

  m.def(
      "probe",
      [](const std::string& path) {
        MediaInfo info;
        {
          py::gil_scoped_release release;
          info = probe(path);
        }
        return media_dict(info);
      },
      py::arg("path"));

  m.def("encoder_candidates", &encoder_candidates, py::arg("codec"), py::arg("encoder"));
  m.def("ffmpeg_info", &ffmpeg_info);

  // ---- depth models: see Note [DepthModel contract] ----
  py::class_<DepthModel, std::shared_ptr<DepthModel>>(m, "DepthModel")
      .def_property_readonly("name", &DepthModel::name)
      .def_property_readonly("kind", [](const DepthModel& d) { return depth_kind_name(d.kind()); })
      .def_property_readonly("device", [](const DepthModel& d) { return d.device().str(); })
      .def_property_readonly(
          "dtype", [](const DepthModel& d) { return std::string(c10::toString(d.dtype())); })
      .def_property_readonly(
          "head_dtype", [](const DepthModel& d) { return std::string(c10::toString(d.head_dtype())); })
      .def_property_readonly("temporal", &DepthModel::temporal)
      .def("preferred_batch", &DepthModel::preferred_batch, py::arg("on_gpu"))
      .def("forward", &DepthModel::forward, py::arg("pixel_values"), py::call_guard<py::gil_scoped_release>())
      .def(
          "infer",
          [](DepthModel& d, const at::Tensor& frames) {
            DepthOutput out;
            {
              py::gil_scoped_release release;
              out = d.infer(frames);
            }
            return depth_output_dict(out);
          },
          py::arg("frames"))
      .def("reset", &DepthModel::reset)
      .def(
          "flush",
          [](DepthModel& d) {
            DepthOutput out;
            {
              py::gil_scoped_release release;
              out = d.flush();
            }
            return depth_output_dict(out);
          })
      .def(
          "pipeline_depth",
          [](const DepthModel& d, const at::Tensor& depth) { return pipeline_depth(d.kind(), depth); },
          py::arg("depth"))
      .def("set_field_of_view", &DepthModel::set_field_of_view, py::arg("degrees"))
      .def("state", &DepthModel::state)
      .def("prepared_weights", &DepthModel::prepared_weights)
      .def("load_state", &DepthModel::load_state, py::arg("state"));

  m.def(
      "create_video_depth_anything",
      [](const std::string& name,
         const py::dict& config,
         const py::dict& weights,
         const std::string& device,
         const std::string& precision,
         int64_t input_size,
         const std::string& mode,
         int64_t window_batch) -> std::shared_ptr<DepthModel> {
        VideoDepthAnythingConfig c;
        c.encoder = vit_config(config["encoder"].cast<py::dict>());
        c.head = head_config(config["head"].cast<py::dict>());
        c.layers = config["layers"].cast<std::vector<int64_t>>();
        c.metric = get_or<bool>(config, "metric", false);
        VideoDepthOptions video;
        if (mode == "windowed") {
          video.mode = VideoDepthMode::Windowed;
        } else if (mode == "streaming") {
          video.mode = VideoDepthMode::Streaming;
        } else {
          throw Error(ErrorKind::Option, "build model", "temporal mode must be 'windowed' or 'streaming', not '" + mode + "'");
        }
        video.window_batch = window_batch;
        WeightMap map = to_weights(weights);
        py::gil_scoped_release release;
        ModelOptions options = make_model_options(device, precision, input_size);
        return std::make_shared<VideoDepthAnything>(name, c, map, options, video);
      },
      py::arg("name"),
      py::arg("config"),
      py::arg("weights"),
      py::arg("device") = "auto",
      py::arg("precision") = "auto",
      py::arg("input_size") = 518,
      py::arg("mode") = "windowed",
      py::arg("window_batch") = 1);
  m.def(
      "create_depth_pro",
      [](const std::string& name,
         const py::dict& config,
         const py::dict& weights,
         const std::string& device,
         const std::string& precision) -> std::shared_ptr<DepthModel> {
        DepthProConfig c;
        c.patch_vit = vit_config(config["patch_vit"].cast<py::dict>());
        c.image_vit = vit_config(config["image_vit"].cast<py::dict>());
        c.use_fov = config["use_fov"].cast<bool>();
        if (c.use_fov) {
          c.fov_vit = vit_config(config["fov_vit"].cast<py::dict>());
        }
        c.tile = config["tile"].cast<int64_t>();
        c.image_size = config["image_size"].cast<int64_t>();
        c.ratios = config["ratios"].cast<std::vector<double>>();
        c.overlaps = config["overlaps"].cast<std::vector<double>>();
        c.scaled_dims = config["scaled_dims"].cast<std::vector<int64_t>>();
        c.hook_ids = config["hook_ids"].cast<std::vector<int64_t>>();
        c.hook_dims = config["hook_dims"].cast<std::vector<int64_t>>();
        c.merge_padding = config["merge_padding"].cast<int64_t>();
        c.fusion = config["fusion"].cast<int64_t>();
        c.fov_head_layers = config["fov_head_layers"].cast<int64_t>();
        c.fusion_bias = config["fusion_bias"].cast<bool>();
        WeightMap map = to_weights(weights);
        py::gil_scoped_release release;
        ModelOptions options = make_model_options(device, precision, c.image_size);
        return std::make_shared<DepthPro>(name, c, map, options);
      },
      py::arg("name"),
      py::arg("config"),
      py::arg("weights"),
      py::arg("device") = "auto",
      py::arg("precision") = "auto");
  m.def(
      "create_u2net",
      [](const std::string& name,
         bool small,
         const py::dict& weights,
         const std::string& device,
         const std::string& precision,
         int64_t input_size) -> std::shared_ptr<DepthModel> {
        WeightMap map = to_weights(weights);
        py::gil_scoped_release release;
        ModelOptions options = make_model_options(device, precision, input_size);
        const U2NetConfig config{.small = small, .input_size = input_size};
        return std::make_shared<U2Net>(name, config, map, options);
      },
      py::arg("name"),
      py::arg("small"),
      py::arg("weights"),
      py::arg("device") = "auto",
      py::arg("precision") = "auto",
      py::arg("input_size") = 320);
  m.def(
      "depth_pro_forward",
      [](DepthModel& model, const at::Tensor& pixel_values) {
        auto* pro = dynamic_cast<DepthPro*>(&model);
        if (pro == nullptr) {
          throw Error(ErrorKind::Option, "depth", "not a Depth Pro model");
        }
        std::pair<at::Tensor, at::Tensor> out;
        {
          py::gil_scoped_release release;
          out = pro->forward_with_fov(pixel_values);
        }
        return py::make_tuple(out.first, out.second.defined() ? py::cast(out.second) : py::none());
      },
      py::arg("model"),
      py::arg("pixel_values"));
  m.def(
      "align_scale_shift",
      [](const at::Tensor& prediction, const at::Tensor& target) { return align_scale_shift(prediction, target); },
      py::arg("prediction"),
      py::arg("target"));

  m.def(
      "create_depth_anything_v2",
      [](const std::string& name,
         const py::dict& config,
         const py::dict& weights,
         const std::string& device,
         const std::string& precision,
         int64_t input_size) -> std::shared_ptr<DepthModel> {
        DepthAnythingV2Config c;
        c.encoder = vit_config(config["encoder"].cast<py::dict>());
        c.head = head_config(config["head"].cast<py::dict>());
        c.layers = config["layers"].cast<std::vector<int64_t>>();
        WeightMap map = to_weights(weights);
        py::gil_scoped_release release;
        ModelOptions options = make_model_options(device, precision, input_size);
        return std::make_shared<DepthAnythingV2>(name, c, map, options);
      },
      py::arg("name"),
      py::arg("config"),
      py::arg("weights"),
      py::arg("device") = "auto",
      py::arg("precision") = "auto",
      py::arg("input_size") = 518);
  m.def(
      "create_depth_anything_3",
      [](const std::string& name,
         const py::dict& config,
         const py::dict& weights,
         const std::string& device,
         const std::string& precision,
         int64_t input_size,
         int64_t window,
         int64_t overlap,
         const std::string& reference) -> std::shared_ptr<DepthModel> {
        DepthAnything3Config c;
        c.encoder = vit_config(config["encoder"].cast<py::dict>());
        c.layers = config["layers"].cast<std::vector<int64_t>>();
        c.features = config["features"].cast<int64_t>();
        c.out_channels = out_channels_of(config);
        c.any_view = config["any_view"].cast<bool>();
        c.metric = get_or<bool>(config, "metric", false);
        DepthAnything3Options video;
        video.window = window;
        video.overlap = overlap;
        if (reference == "first") {
          video.reference = ReferenceView::First;
        } else if (reference == "middle") {
          video.reference = ReferenceView::Middle;
        } else if (reference == "saddle_balanced") {
          video.reference = ReferenceView::SaddleBalanced;
        } else {
          throw Error(ErrorKind::Option, "build model", "reference view must be first, middle or saddle_balanced, not '" + reference + "'");
        }
        WeightMap map = to_weights(weights);
        py::gil_scoped_release release;
        ModelOptions options = make_model_options(device, precision, input_size);
        return std::make_shared<DepthAnything3>(name, c, map, options, video);
      },
      py::arg("name"),
      py::arg("config"),
      py::arg("weights"),
      py::arg("device") = "auto",
      py::arg("precision") = "auto",
      py::arg("input_size") = 504,
      py::arg("window") = 8,
      py::arg("overlap") = 2,
      py::arg("reference") = "saddle_balanced");
  m.def(
      "depth_anything_3_predict",
      [](DepthModel& model, const at::Tensor& pixel_values, int64_t batch) {
        auto* da3 = dynamic_cast<DepthAnything3*>(&model);
        if (da3 == nullptr) {
          throw Error(ErrorKind::Option, "depth", "not a Depth Anything 3 model");
        }
        DepthAnything3Output out;
        {
          py::gil_scoped_release release;
          out = da3->predict(pixel_values, batch);
        }
        py::dict result;
        auto put = [&](const char* key, const at::Tensor& t) { result[key] = t.defined() ? py::cast(t) : py::none(); };
        put("depth", out.depth);
        put("confidence", out.confidence);
        put("sky", out.sky);
        put("world_to_camera", out.world_to_camera);
        put("intrinsics", out.intrinsics);
        return result;
      },
      py::arg("model"),
      py::arg("pixel_values"),
      py::arg("batch") = 1);
  m.def(
      "depth_anything_3_preprocess",
      [](DepthModel& model, const at::Tensor& frames) {
        auto* da3 = dynamic_cast<DepthAnything3*>(&model);
        if (da3 == nullptr) {
          throw Error(ErrorKind::Option, "depth", "not a Depth Anything 3 model");
        }
        py::gil_scoped_release release;
        return da3->preprocess(frames);
      },
      py::arg("model"),
      py::arg("frames"));
  m.def("upper_bound_size", &upper_bound_size, py::arg("height"), py::arg("width"), py::arg("input_size"),
        py::arg("multiple") = 14);
  m.def(
      "lower_bound_size",
      &lower_bound_size,
      py::arg("height"),
      py::arg("width"),
      py::arg("input_size"),
      py::arg("multiple") = 14);

  // ---- stereo: see Note [Occlusion-correct eye rendering] ----
  m.def(
      "render_stereo",
      [](const at::Tensor& frames,
         const at::Tensor& disparity,
         const std::string& layout,
         const std::string& synthetic_view,
         bool fill_holes,
         int64_t edge_dilation,
         int64_t eye_width,
         int64_t eye_height,
         bool keep_aspect,
         int64_t vr180_canvas,
         double vr180_fov) {
        StereoOptions o;
        o.vr180 = vr180_canvas > 0; // Note [VR180 projection]
        o.vr180_canvas = vr180_canvas;
        o.vr180_fov = vr180_fov;
        o.layout = parse_layout(layout);
        o.synthetic_view = parse_synthetic_view(synthetic_view);
        o.fill = fill_holes ? Fill::Spatial : Fill::None; // one call: no frame history
        o.edge_dilation = edge_dilation;
        o.eye_width = eye_width;
        o.eye_height = eye_height;
        o.keep_aspect = keep_aspect;
        StereoFrames r;
        {
          py::gil_scoped_release release;
          r = render_stereo(frames, disparity, o);
        }
        py::dict d;
        d["packed"] = r.packed.defined() ? py::cast(r.packed) : py::none();
        d["left"] = r.left;
        d["right"] = r.right;
        d["left_holes"] = r.left_holes;
        d["right_holes"] = r.right_holes;
        return d;
      },
      py::arg("frames"),
      py::arg("disparity"),
      py::arg("layout") = "full-sbs",
      py::arg("synthetic_view") = "both",
      py::arg("fill_holes") = true,
      py::arg("edge_dilation") = 0,
      py::arg("eye_width") = 0,
      py::arg("eye_height") = 0,
      py::arg("keep_aspect") = true,
      py::arg("vr180_canvas") = 0,
      py::arg("vr180_fov") = 60.0);
  m.def(
      "render_eye",
      [](const at::Tensor& frames, const at::Tensor& disparity, double share, bool fill_holes, const std::string& impl) {
        py::gil_scoped_release release;
        EyeResult r = impl == "tensor" ? render_eye_tensor(frames, disparity, share, fill_holes)
            : impl == "cpu"            ? render_eye_cpu(frames, disparity, share, fill_holes)
                                       : render_eye(frames, disparity, share, fill_holes);
        return std::make_pair(r.image, r.holes);
      },
      py::arg("frames"),
      py::arg("disparity"),
      py::arg("share"),
      py::arg("fill_holes") = true,
      py::arg("impl") = "auto");
  // Note [Depth edges within their pixel]: an eye with its edge blend (holes streaked), and
  // the blend applied to a copy of an image
  m.def(
      "render_eye_edges",
      [](const at::Tensor& frames, const at::Tensor& disparity, double share, const std::string& impl) {
        py::gil_scoped_release release;
        EyeResult r = impl == "tensor" ? render_eye_tensor(frames, disparity, share, true, true)
            : impl == "cpu"            ? render_eye_cpu(frames, disparity, share, true, {}, true)
                                       : render_eye(frames, disparity, share, true, {}, true);
        return std::make_tuple(r.image, r.holes, r.edge_blend);
      },
      py::arg("frames"),
      py::arg("disparity"),
      py::arg("share"),
      py::arg("impl") = "auto");
  m.def(
      "blend_depth_edges",
      [](const at::Tensor& image, const at::Tensor& edge_blend, const std::string& impl) {
        py::gil_scoped_release release;
        at::Tensor out = image.clone();
        if (impl == "tensor") {
          blend_depth_edges_tensor(out, edge_blend);
        } else if (impl == "cpu") {
          blend_depth_edges_cpu(out, edge_blend);
        } else {
          EyeResult r{out, {}, {}, edge_blend};
          blend_depth_edges(r);
        }
        return out;
      },
      py::arg("image"),
      py::arg("edge_blend"),
      py::arg("impl") = "auto");
  // Note [Depth-guided patch fill]: an eye rendered, then its holes filled from the
  // background's texture (as render_stereo does when no frame history is at hand; its edges
  // are left as the warp draws them, unblended)
  m.def(
      "render_eye_patched",
      [](const at::Tensor& frames, const at::Tensor& disparity, double share, const std::string& impl) {
        py::gil_scoped_release release;
        EyeResult r = render_eye(frames, disparity, share, true, {}, true);
        if (impl == "tensor") {
          fill_from_patches_tensor(frames, disparity, share, r);
        } else if (impl == "cpu") {
          fill_from_patches_cpu(frames, disparity, {{share, &r}});
        } else {
          fill_from_patches(frames, disparity, {{share, &r}});
        }
        return std::make_pair(r.image, r.holes);
      },
      py::arg("frames"),
      py::arg("disparity"),
      py::arg("share"),
      py::arg("impl") = "auto");
  // Note [Depth edges snapped to colour edges]
  m.def(
      "dilate_foreground",
      [](const at::Tensor& disparity, const at::Tensor& frames, int64_t radius, const std::string& impl) {
        return impl == "tensor" ? dilate_foreground_tensor(disparity, frames, radius)
            : impl == "cpu"     ? dilate_foreground_cpu(disparity, frames, radius)
                                : dilate_foreground(disparity, frames, radius);
      },
      py::arg("disparity"),
      py::arg("frames"),
      py::arg("radius"),
      py::arg("impl") = "auto",
      py::call_guard<py::gil_scoped_release>());
  // Note [Temporal fill]: the window on its own, for the tests (the engine's stereo stage
  // holds one per run)
  py::class_<TemporalFill>(m, "TemporalFill")
      .def(
          py::init([](int64_t past, int64_t ahead, int64_t batch_size, int64_t flow_width, int64_t memory_bytes) {
            TemporalFillOptions t;
            t.past = past;
            t.ahead = ahead;
            t.batch_size = batch_size;
            t.flow_width = flow_width;
            t.memory_bytes = memory_bytes;
            return std::make_unique<TemporalFill>(t);
          }),
          py::kw_only(),
          py::arg("past") = TemporalFillOptions{}.past,
          py::arg("ahead") = TemporalFillOptions{}.ahead,
          py::arg("batch_size") = 1,
          py::arg("flow_width") = TemporalFillOptions{}.flow_width,
          py::arg("memory_bytes") = TemporalFillOptions{}.memory_bytes)
      .def_property_readonly("ahead", &TemporalFill::ahead)
      .def("push", &TemporalFill::push, py::arg("first"), py::arg("frames"), py::arg("disparity"),
           py::arg("starts_shot"), py::arg("starts_segment") = false, py::call_guard<py::gil_scoped_release>())
      .def(
          "render",
          [](TemporalFill& tf, int64_t first, const at::Tensor& frames, const at::Tensor& disparity,
             const std::vector<double>& shares, const std::string& impl, bool patch, bool steady) {
            SBSCONV_CHECK(patch || !steady, Option, "stereo",
                          "steady=True steadies the patch fill's pixels: it needs patch=True");
            py::gil_scoped_release release;
            std::vector<EyeResult> rendered;
            for (double share : shares) {
              rendered.push_back(render_eye(frames, disparity, share, true, {}, true));
            }
            std::vector<std::pair<double, EyeResult*>> eyes;
            std::vector<at::Tensor> described; // holes with a background side, before the fill
            for (size_t i = 0; i < shares.size(); ++i) {
              eyes.emplace_back(shares[i], &rendered[i]);
              described.push_back(rendered[i].holes.logical_and(rendered[i].hole_sides.narrow(1, 3, 1).ne(0)));
            }
            const auto chosen = impl == "tensor" ? TemporalFill::Impl::Tensor
                : impl == "cpu"                  ? TemporalFill::Impl::Cpu
                                                 : TemporalFill::Impl::Auto;
            tf.fill(first, eyes, chosen);
            // the pixels taken from other frames: marked side 0 in the description
            std::vector<std::tuple<at::Tensor, at::Tensor, at::Tensor>> out;
            for (size_t i = 0; i < rendered.size(); ++i) {
              EyeResult& r = rendered[i];
              const at::Tensor from_window = described[i].logical_and(r.hole_sides.narrow(1, 3, 1).eq(0));
              if (patch) { // then what no frame saw, as render_stereo does (Note [Depth-guided patch fill])
                fill_from_patches(frames, disparity, {{shares[i], &r}});
              }
              out.emplace_back(r.image, r.holes, from_window);
            }
            if (steady) { // and steadied over time (step 6), as render_stereo does
              tf.steady(first, eyes, chosen);
            }
            return out;
          },
          py::arg("first"), py::arg("frames"), py::arg("disparity"), py::arg("shares"), py::arg("impl") = "auto",
          py::arg("patch") = false, py::arg("steady") = false);
  // Note [Dense optical flow]
  m.def(
      "dense_flow",
      [](const at::Tensor& a, const at::Tensor& b, int64_t window_radius, int64_t iterations, const std::string& impl) {
        FlowOptions f;
        f.window_radius = window_radius;
        f.iterations = iterations;
        SBSCONV_CHECK(impl == "auto" || impl == "tensor" || impl == "cpu", Option, "optical flow",
                      "impl must be auto, tensor or cpu");
        return dense_flow(a, b, f, impl == "tensor" ? FlowImpl::Tensor : impl == "cpu" ? FlowImpl::Cpu : FlowImpl::Auto);
      },
      py::arg("a"),
      py::arg("b"),
      py::arg("window_radius") = FlowOptions{}.window_radius,
      py::arg("iterations") = FlowOptions{}.iterations,
      py::arg("impl") = "auto",
      py::call_guard<py::gil_scoped_release>());
  m.def("flow_gray", &flow_gray, py::arg("frames"), py::arg("max_width"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "render_eye_naive",
      &render_eye_naive,
      py::arg("frames"),
      py::arg("disparity"),
      py::arg("share"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "disparity_from_relative",
      py::overload_cast<const at::Tensor&, int64_t, double, double, std::optional<double>>(&disparity_from_relative),
      py::arg("depth"),
      py::arg("eye_width"),
      py::arg("divergence"),
      py::arg("convergence"),
      py::arg("max_shift") = py::none());
  m.def(
      "disparity_from_metric",
      py::overload_cast<const at::Tensor&, int64_t, double, const at::Tensor&, double>(&disparity_from_metric),
      py::arg("depth"),
      py::arg("eye_width"),
      py::arg("ipd"),
      py::arg("fov_degrees"),
      py::arg("screen_distance"));
  m.def("colorize_depth", &colorize_depth, py::arg("depth"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "encode_png",
      [](const at::Tensor& rgb) {
        std::string bytes;
        {
          py::gil_scoped_release release;
          bytes = encode_png(rgb);
        }
        return py::bytes(bytes);
      },
      py::arg("rgb"));
  m.def("packed_size", [](const std::string& layout, int64_t h, int64_t w) {
    return packed_size(parse_layout(layout), h, w);
  });

  // ---- temporal: see Note [Depth stabilisation] and Note [Scene cut detection] ----
  py::class_<DepthStabilizer>(m, "DepthStabilizer")
      .def(
          py::init([](bool relative, double low, double high, double range_decay, bool align, double alpha,
                      double motion_threshold) {
            StabilizerOptions o;
            o.relative = relative;
            o.low_percentile = low;
            o.high_percentile = high;
            o.range_decay = range_decay;
            o.align = align;
            o.alpha = alpha;
            o.motion_threshold = motion_threshold;
            return std::make_unique<DepthStabilizer>(o);
          }),
          py::arg("relative") = true,
          py::arg("low_percentile") = 1.0,
          py::arg("high_percentile") = 99.0,
          py::arg("range_decay") = 0.9,
          py::arg("align") = true,
          py::arg("alpha") = 0.0,
          py::arg("motion_threshold") = 0.08)
      .def(
          "process",
          [](DepthStabilizer& s, const at::Tensor& depth, std::optional<at::Tensor> frames, std::vector<bool> starts) {
            py::gil_scoped_release release;
            return s.process(depth, frames ? *frames : at::Tensor(), starts);
          },
          py::arg("depth"),
          py::arg("frames"),
          py::arg("starts_shot"))
      .def("reset", &DepthStabilizer::reset)
      .def("state", &DepthStabilizer::state)
      .def("load_state", &DepthStabilizer::load_state);

  // Note [Subject on the screen plane]
  py::class_<SubjectPlane>(m, "SubjectPlane")
      .def(
          py::init([](bool relative, double smoothing, double fallback) {
            SubjectPlaneOptions o;
            o.relative = relative;
            o.smoothing = smoothing;
            o.fallback = fallback;
            return std::make_unique<SubjectPlane>(o);
          }),
          py::kw_only(),
          py::arg("relative"),
          py::arg("smoothing"),
          py::arg("fallback"))
      .def("process", [](SubjectPlane& p, const at::Tensor& depth, const at::Tensor& masks, std::vector<bool> starts) {
            py::gil_scoped_release release;
            return p.process(depth, masks, starts);
          }, py::arg("depth"), py::arg("masks"), py::arg("starts_shot"))
      .def("reset", &SubjectPlane::reset)
      .def("state", &SubjectPlane::state)
      .def("load_state", &SubjectPlane::load_state);

  py::class_<SceneCutDetector>(m, "SceneCutDetector")
      .def(
          py::init([](double sensitivity, int64_t min_scene_length) {
            SceneCutOptions o;
            o.sensitivity = sensitivity;
            o.min_scene_length = min_scene_length;
            return std::make_unique<SceneCutDetector>(o);
          }),
          py::arg("sensitivity") = 0.5,
          py::arg("min_scene_length") = 8)
      .def("push", &SceneCutDetector::push, py::arg("frames"), py::call_guard<py::gil_scoped_release>())
      .def("flush", &SceneCutDetector::flush)
      .def_property_readonly("frames_seen", &SceneCutDetector::frames_seen)
      .def_property_readonly("scores", &SceneCutDetector::scores)
      .def("reset", &SceneCutDetector::reset)
      .def("state", &SceneCutDetector::state)
      .def("load_state", &SceneCutDetector::load_state);

  py::class_<ComfortBudget>(m, "ComfortBudget")
      .def(
          py::init([](double limit, bool auto_strength, double decay) {
            ComfortOptions o;
            o.limit_percent = limit;
            o.auto_strength = auto_strength;
            o.decay = decay;
            return std::make_unique<ComfortBudget>(o);
          }),
          py::arg("limit_percent") = 3.0,
          py::arg("auto_strength") = false,
          py::arg("decay") = 0.9)
      .def(
          "process",
          &ComfortBudget::process,
          py::arg("disparity"),
          py::arg("starts_shot"),
          py::call_guard<py::gil_scoped_release>())
      .def("scenes", [](ComfortBudget& c) {
        py::list out;
        for (const SceneComfort& s : c.scenes()) {
          py::dict d;
          d["first_frame"] = s.first_frame;
          d["frames"] = s.frames;
          d["max_percent"] = s.max_percent;
          d["p99_percent"] = s.p99_percent;
          d["frames_over_limit"] = s.frames_over_limit;
          d["min_scale"] = s.min_scale;
          out.append(d);
        }
        return out;
      })
      .def_property_readonly("frames_over_limit", &ComfortBudget::frames_over_limit)
      .def_property_readonly("max_percent", &ComfortBudget::max_percent)
      .def("state", &ComfortBudget::state)
      .def("load_state", &ComfortBudget::load_state);

  // ---- the engine: see Note [Engine] ----
  // The engine joins its threads when destroyed: without the GIL, so that other Python
  // threads run meanwhile (and nothing the threads wait for can need it).
  struct EngineDeleter {
    void operator()(Engine* engine) const {
      if (PyGILState_Check()) {
        py::gil_scoped_release release;
        delete engine;
      } else {
        delete engine;
      }
    }
  };
  using EngineHolder = std::unique_ptr<Engine, EngineDeleter>;
  py::class_<Engine, EngineHolder>(m, "Engine")
      .def(py::init([](const EngineOptions& options) { return EngineHolder(new Engine(options)); }))
      .def("start", &Engine::start)
      .def("wait", &Engine::wait, py::arg("timeout"), py::call_guard<py::gil_scoped_release>())
      .def("cancel", &Engine::cancel, py::call_guard<py::gil_scoped_release>())
      .def("progress", [](const Engine& e) {
        EngineProgress p = e.progress();
        py::dict d;
        d["phase"] = p.phase;
        d["frames_done"] = p.frames_done;
        d["frames_total"] = p.frames_total >= 0 ? py::object(py::int_(p.frames_total)) : py::object(py::none());
        d["resumed_from"] = p.resumed_from;
        d["elapsed"] = p.elapsed;
        d["stages"] = stage_list(p.stages);
        return d;
      })
      .def("result", [](Engine& e) {
        EngineResult r;
        {
          py::gil_scoped_release release;
          r = e.result();
        }
        py::dict d;
        d["output"] = r.output;
        d["frames"] = r.frames;
        d["resumed_from"] = r.resumed_from;
        d["batch_size"] = r.batch_size;
        d["seconds"] = r.seconds;
        d["width"] = r.width;
        d["height"] = r.height;
        d["stages"] = stage_list(r.stages);
        d["encoder"] = r.encoder;
        d["skipped_encoders"] = r.skipped_encoders;
        d["encoder_preset"] = r.encoder_preset;
        d["encoder_preset_reason"] = r.encoder_preset_reason;
        d["encoder_instances"] = r.encoder_instances;
        d["chunk_frames"] = r.chunk_frames;
        d["streams"] = r.streams;
        d["warnings"] = r.warnings;
        d["cuts"] = r.cuts;
        py::list comfort;
        for (const SceneComfort& s : r.comfort) {
          py::dict c;
          c["first_frame"] = s.first_frame;
          c["frames"] = s.frames;
          c["max_percent"] = s.max_percent;
          c["p99_percent"] = s.p99_percent;
          c["frames_over_limit"] = s.frames_over_limit;
          c["min_scale"] = s.min_scale;
          comfort.append(c);
        }
        d["comfort"] = comfort;
        d["fov_degrees"] = r.fov_degrees ? py::object(py::float_(*r.fov_degrees)) : py::object(py::none());
        d["damaged_frames"] = r.damaged_frames;
        d["truncated"] = r.truncated;
        d["depth_export"] = r.depth_export ? py::object(export_summary(*r.depth_export)) : py::object(py::none());
        d["mask_export"] = r.mask_export ? py::object(export_summary(*r.mask_export)) : py::object(py::none());
        d["screen_plane"] = r.screen_plane;
        return d;
      });

  m.def("apple_stereo_boxes", [](const AppleStereo& a) { return py::bytes(apple_stereo_boxes(a)); },
        py::arg("apple"));
  m.def("copy_with_sample_entry_boxes", [](const std::string& in, const std::string& out, const py::bytes& boxes,
                                           bool moov_first) {
    const std::string b = boxes;
    py::gil_scoped_release release;
    copy_with_sample_entry_boxes(in, out, b, nullptr, moov_first);
  }, py::arg("input"), py::arg("output"), py::arg("boxes"), py::arg("moov_first") = false);
  m.def("edited_moov", [](const std::string& in, const py::bytes& boxes, bool moov_first) {
    return py::bytes(edited_moov(in, std::string(boxes), moov_first));
  }, py::arg("input"), py::arg("boxes"), py::arg("moov_first") = false);
  // Note [Spatial video through x265]: the x265 that layout 'spatial' would use, checked
  // before a conversion starts: {"path", "version"}, or {"error": the full explanation}.
  m.def("find_mvhevc_encoder", []() {
    py::dict d;
    std::string why;
    if (const std::optional<MvHevcTool> tool = find_mvhevc_encoder(&why)) {
      d["path"] = tool->path;
      d["version"] = tool->version;
    } else {
      d["error"] = mvhevc_missing_message(why);
    }
    return d;
  });
  // Note [MV-HEVC bitstreams], for the tests: a raw HEVC stream's access units in decoding
  // order, each (display_index, keyframe, layers), and the reorder delay.
  // Note [int8 linear layers], for its test.
  m.def(
      "_int8_linear",
      [](const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
        at::InferenceMode guard;
        return Int8Linear(weight, bias.value_or(at::Tensor()))(x);
      },
      py::arg("x"),
      py::arg("weight"),
      py::arg("bias") = py::none());
  // Note [int8 MLP], for its test: fc2(GELU(fc1(x))) with the middle fused.
  m.def(
      "_int8_mlp",
      [](const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
        at::InferenceMode guard;
        return Int8Linear(w1, b1).gelu_then(Int8Linear(w2, b2), x);
      },
      py::arg("x"),
      py::arg("w1"),
      py::arg("b1"),
      py::arg("w2"),
      py::arg("b2"));
  // Note [int8 attention], for its test and benchmark: (output, whether the values ran in
  // bfloat16, the block's query rows); block_rows 0 = as the model runs it.
  m.def(
      "_int8_attention",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t block_rows) {
        SBSCONV_CHECK(block_rows >= 0, Option, "int8 attention", "block_rows must be >= 0");
        at::InferenceMode guard;
        const int64_t rows = block_rows > 0 ? block_rows : int8_attention_block_rows(q);
        return py::make_tuple(int8_attention(q, k, v, rows), int8_attention_uses_bf16(), rows);
      },
      py::arg("q"),
      py::arg("k"),
      py::arg("v"),
      py::arg("block_rows") = 0);
  // Note [Device colour conversion], for its test on CPU tensors.
  m.def(
      "_semi_planar_to_rgb",
      [](const at::Tensor& y, const at::Tensor& uv, bool wide, int colorspace, bool full_range) {
        return semi_planar_to_rgb(
            y, uv, wide, static_cast<AVColorSpace>(colorspace), full_range ? AVCOL_RANGE_JPEG : AVCOL_RANGE_MPEG);
      },
      py::arg("y"),
      py::arg("uv"),
      py::arg("wide"),
      py::arg("colorspace"),
      py::arg("full_range"));
  // Note [Host synchronisation]: the counter's own test (check mode, the CPU as the device).
  m.def("_count_host_syncs", [](const at::Tensor& x) {
    py::dict d;
    auto count = [&](auto&& body) {
      HostSyncCounter counter(/*cpu_counts_as_device=*/true);
      body();
      return counter.count();
    };
    d["item"] = count([&] { (void)x.sum().item<double>(); });
    d["masked_select"] = count([&] { (void)x.masked_select(x.gt(2)).sum(); });
    d["host_scope"] = count([&] {
      HostScope host;
      (void)x.max().item<double>();
    });
    d["to_host"] = count([&] { (void)to_host(x.mul(2)); });
    return d;
  });
  m.def("_hevc_stream_order", [](const py::bytes& data) {
    const std::string bytes = data;
    const hevc::Stream s = hevc::parse_stream(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    py::list units;
    for (const hevc::AccessUnit& u : s.units) {
      units.append(py::make_tuple(u.display_index, u.keyframe, u.layers));
    }
    return py::make_tuple(units, s.reorder_delay);
  });
  // Note [Parts of one video]: joins a split conversion's parts (engine options as for the
  // runs, with the whole window) into the output; returns the writer's result.
  m.def("keyframe_times", &keyframe_times, py::arg("path"), py::arg("stream") = -1);
  // Note [Encoder preset chosen to keep pace]: the rule the engine applies, for split
  // conversions to choose one preset for all their parts before they start; and the encoder a
  // writer with these options opens (probe_encoder), the one the rule is for
  m.def(
      "choose_encoder_preset",
      [](const std::string& encoder, int64_t width, int64_t height, double model_seconds, int model_threads,
         bool shared_cores, int cores, bool parallel_segments, int instances) {
        EncoderPace p{encoder, width, height, model_seconds, model_threads, shared_cores, cores, parallel_segments, instances};
        const PresetChoice c = choose_encoder_preset(p);
        return py::make_tuple(c.preset, c.reason, c.keeps_pace, c.instances);
      },
      py::arg("encoder"), py::arg("width"), py::arg("height"), py::arg("model_seconds"), py::arg("model_threads") = 1,
      py::arg("shared_cores") = true, py::arg("cores") = 0, py::arg("parallel_segments") = false,
      py::arg("instances") = 0);
  m.def("usable_cores", &usable_cores);
  // Note [Chunk-parallel encoding]: the engine's parallel segment encoders on given frames,
  // for benchmarks/bench_parallel_encoding.py: `frames` ([N,3,H,W] uint8) cut into segments of
  // `segment_frames`, each a NUT file in `folder` encoded by `encoder` at `preset` with
  // `threads` threads, `instances` at once, handed over `batch` frames at a time. Returns the
  // wall seconds and the segments' paths in order.
  m.def(
      "encode_segments",
      [](const at::Tensor& frames, const std::string& folder, const std::string& encoder, const std::string& preset,
         int64_t segment_frames, int instances, int threads, int64_t batch) {
        SBSCONV_CHECK(frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte, Option,
                      "encode", "frames must be [N,3,H,W] uint8");
        SBSCONV_CHECK(segment_frames >= 1 && batch >= 1, Option, "encode", "segment_frames and batch must be >= 1");
        py::gil_scoped_release release;
        SegmentEncoders::Options po;
        po.instances = instances;
        po.max_buffered_frames = instances * segment_frames + batch;
        SegmentEncoders pool(po);
        std::vector<std::string> paths;
        const auto t0 = std::chrono::steady_clock::now();
        const int64_t n = frames.size(0);
        for (int64_t first = 0, s = 0; first < n; first += segment_frames, ++s) {
          WriterOptions w;
          w.path = folder + "/segment_" + std::to_string(s) + ".nut";
          w.container = "nut";
          w.width = static_cast<int>(frames.size(3));
          w.height = static_cast<int>(frames.size(2));
          w.time_base = Rational{1, 30};
          w.frame_rate = Rational{30, 1};
          w.encoder = encoder;
          w.codec = encoder == "libx265" ? "hevc" : "h264";
          w.preset = preset;
          w.threads = threads;
          w.audio = "none";
          w.subtitles = "none";
          pool.open(w, s);
          const int64_t end = std::min(n, first + segment_frames);
          for (int64_t k = first; k < end; k += batch) {
            const int64_t m = std::min(batch, end - k);
            std::vector<int64_t> pts(static_cast<size_t>(m));
            for (int64_t i = 0; i < m; ++i) {
              pts[static_cast<size_t>(i)] = k + i;
            }
            pool.write(frames.narrow(0, k, m), pts, nullptr);
          }
          pool.close();
          for (auto& f : pool.take_finished()) {
            paths.push_back(f.result.path);
          }
        }
        for (auto& f : pool.drain()) {
          paths.push_back(f.result.path);
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return std::make_pair(seconds, paths);
      },
      py::arg("frames"), py::arg("folder"), py::arg("encoder") = "libx264", py::arg("preset") = "medium",
      py::arg("segment_frames") = 32, py::arg("instances") = 1, py::arg("threads") = 0, py::arg("batch") = 4);
  m.def(
      "preset_chosen_for",
      [](WriterOptions o, int width, int height) {
        o.width = width; // what the engine sets per run: the frames' size, a nominal timing
        o.height = height;
        o.time_base = Rational{1, 30};
        o.frame_rate = Rational{30, 1};
        return preset_chosen_for(o);
      },
      py::arg("writer"), py::arg("width"), py::arg("height"), py::call_guard<py::gil_scoped_release>());
  m.def("assemble_parts", [](const EngineOptions& o, const std::vector<std::string>& parts, double fov_degrees) {
    WriterResult r;
    {
      py::gil_scoped_release release;
      r = assemble_parts(o, parts, fov_degrees);
    }
    return writer_result_dict(r);
  }, py::arg("options"), py::arg("parts"), py::arg("fov_degrees") = 60.0);
  m.def("vr180_default_canvas", &vr180_default_canvas, py::arg("height"), py::arg("width"), py::arg("hfov_degrees"));
  m.def("read_stereo_boxes", [](const std::string& path) {
    StereoBoxes s;
    {
      py::gil_scoped_release release;
      s = read_stereo_boxes(path);
    }
    py::dict d;
    auto opt = [](const auto& v) { return v ? py::cast(*v) : py::object(py::none()); };
    d["found"] = s.found;
    d["sample_entry"] = s.sample_entry;
    d["mv_hevc"] = s.second_layer;
    d["st3d"] = opt(s.st3d);
    d["spherical"] = s.spherical;
    d["equi_bounds"] = s.equi_left ? py::object(py::make_tuple(*s.equi_top, *s.equi_bottom, *s.equi_left, *s.equi_right))
                                   : py::object(py::none());
    d["vexu"] = s.vexu;
    d["stri"] = opt(s.stri);
    d["hero"] = opt(s.hero);
    d["baseline_um"] = opt(s.baseline_um);
    d["disparity_adjustment"] = opt(s.disparity_adjustment);
    d["projection"] = s.projection;
    d["packing"] = s.packing;
    d["hfov_millidegrees"] = opt(s.hfov_millidegrees);
    return d;
  }, py::arg("path"));

  // ---- depth files: see Note [Depth files] ----
  m.def("pack_rgb_depth", [](const at::Tensor& depth, double max_depth) { return pack_rgb_depth(depth, max_depth); },
        py::arg("depth"), py::arg("max_depth"), py::call_guard<py::gil_scoped_release>());
  m.def("unpack_rgb_depth", &unpack_rgb_depth, py::arg("rgb"), py::arg("max_depth"),
        py::call_guard<py::gil_scoped_release>());
  py::class_<DepthReader>(m, "DepthReader")
      .def(py::init([](const DepthSourceOptions& options) { return std::make_unique<DepthReader>(options); }))
      .def_property_readonly("width", &DepthReader::width)
      .def_property_readonly("height", &DepthReader::height)
      .def_property_readonly("frame_count", &DepthReader::frame_count)
      .def_property_readonly("frame_rate", &DepthReader::frame_rate)
      .def("read", [](DepthReader& r, int max_frames) {
        DepthFrames f;
        {
          py::gil_scoped_release release;
          f = r.read(max_frames);
        }
        return py::make_tuple(
            f.depth.defined() ? py::cast(f.depth) : py::object(py::none()),
            f.times,
            f.fov.defined() ? py::cast(f.fov) : py::object(py::none()));
      }, py::arg("max_frames"));
  py::class_<DepthWriter>(m, "DepthWriter")
      .def(py::init([](DepthWriterOptions options, int width, int height, const py::object& time_base,
                       const py::object& frame_rate, double time_origin, double source_start) {
        options.width = width;
        options.height = height;
        options.time_base = to_rational(time_base);
        options.frame_rate = to_rational(frame_rate);
        options.time_origin = time_origin;
        options.source_start = source_start;
        return std::make_unique<DepthWriter>(options);
      }), py::arg("options"), py::kw_only(), py::arg("width"), py::arg("height"), py::arg("time_base"),
      py::arg("frame_rate"), py::arg("time_origin"), py::arg("source_start"))
      .def("write", [](DepthWriter& w, const at::Tensor& depth, const std::vector<int64_t>& pts,
                       const std::vector<double>& times, std::optional<at::Tensor> fov,
                       std::optional<at::Tensor> camera) {
        py::gil_scoped_release release;
        w.write(depth, pts, times, fov ? *fov : at::Tensor(), camera ? *camera : at::Tensor());
      }, py::arg("depth"), py::arg("pts"), py::arg("times"), py::arg("fov") = py::none(), py::arg("camera") = py::none())
      .def("finish", [](DepthWriter& w, const std::vector<int64_t>& cuts) {
        DepthExportSummary s;
        {
          py::gil_scoped_release release;
          s = w.finish(cuts);
        }
        return export_summary(s);
      }, py::arg("cuts") = std::vector<int64_t>{});

  py::class_<VideoReader>(m, "VideoReader")
      .def(
          py::init([](const std::string& path,
                      int stream,
                      std::optional<double> start,
                      std::optional<double> duration,
                      int threads,
                      const std::string& hwaccel,
                      const std::string& device,
                      bool strict,
                      int width,
                      int height) {
            ReaderOptions o;
            o.width = width;
            o.height = height;
            o.stream_index = stream;
            o.start = start;
            o.duration = duration;
            o.threads = threads;
            o.hwaccel = hwaccel;
            o.device = device;
            o.strict = strict;
            py::gil_scoped_release release;
            return std::make_unique<VideoReader>(path, o);
          }),
          py::arg("path"),
          py::arg("stream") = -1,
          py::arg("start") = py::none(),
          py::arg("duration") = py::none(),
          py::arg("threads") = 0,
          py::arg("hwaccel") = "auto",
          py::arg("device") = "cpu",
          py::arg("strict") = false,
          py::arg("width") = 0,
          py::arg("height") = 0)
      .def("stream_info", [](const VideoReader& r) { return description_dict(r.stream()); })
      .def(
          "read",
          [](VideoReader& r, int max_frames) {
            FrameBatch batch;
            {
              py::gil_scoped_release release;
              batch = r.read(max_frames);
            }
            return py::make_tuple(batch.frames, batch.pts, batch.durations);
          },
          py::arg("max_frames"))
      .def_property_readonly("finished", &VideoReader::finished)
      .def_property_readonly("frames_read", &VideoReader::frames_read)
      .def_property_readonly("hardware_decoder", &VideoReader::hardware_decoder)
      .def_property_readonly("hardware_fallback_reason", &VideoReader::hardware_fallback_reason)
      .def("take_warnings", &VideoReader::take_warnings);

  py::class_<MediaWriter>(m, "MediaWriter")
      .def(
          py::init([](const std::string& path,
                      int width,
                      int height,
                      const py::object& time_base,
                      const py::object& frame_rate,
                      const std::string& container,
                      const std::string& codec,
                      const std::string& encoder,
                      std::optional<int> crf,
                      std::optional<int> cq,
                      std::optional<int> quality,
                      const std::string& preset,
                      int bit_depth,
                      const std::string& device,
                      int threads,
                      const std::string& source,
                      const std::string& audio,
                      const std::string& subtitles,
                      double time_origin,
                      std::optional<double> time_end,
                      const std::string& stereo,
                      const std::map<std::string, std::string>& metadata) {
            WriterOptions o;
            o.path = path;
            o.width = width;
            o.height = height;
            o.time_base = to_rational(time_base);
            o.frame_rate = to_rational(frame_rate);
            o.container = container;
            o.codec = codec;
            o.encoder = encoder;
            o.crf = crf;
            o.cq = cq;
            o.quality = quality;
            o.preset = preset;
            o.bit_depth = bit_depth;
            o.device = device;
            o.threads = threads;
            o.source = source;
            o.audio = audio;
            o.subtitles = subtitles;
            o.time_origin = time_origin;
            o.time_end = time_end;
            o.stereo = stereo;
            o.metadata = metadata;
            py::gil_scoped_release release;
            return std::make_unique<MediaWriter>(o);
          }),
          py::arg("path"),
          py::arg("width"),
          py::arg("height"),
          py::arg("time_base"),
          py::arg("frame_rate"),
          py::arg("container") = "",
          py::arg("codec") = "h264",
          py::arg("encoder") = "auto",
          py::arg("crf") = py::none(),
          py::arg("cq") = py::none(),
          py::arg("quality") = py::none(),
          py::arg("preset") = "",
          py::arg("bit_depth") = 8,
          py::arg("device") = "cpu",
          py::arg("threads") = 0,
          py::arg("source") = "",
          py::arg("audio") = "copy",
          py::arg("subtitles") = "copy",
          py::arg("time_origin") = 0.0,
          py::arg("time_end") = py::none(),
          py::arg("stereo") = "",
          py::arg("metadata") = std::map<std::string, std::string>{})
      .def(
          "write",
          &MediaWriter::write,
          py::arg("frames"),
          py::arg("pts"),
          py::call_guard<py::gil_scoped_release>())
      .def("finish", [](MediaWriter& w) {
        WriterResult result;
        {
          py::gil_scoped_release release;
          result = w.finish();
        }
        return writer_result_dict(result);
      })
      .def("abort", &MediaWriter::abort, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("encoder", &MediaWriter::encoder_name)
      .def_property_readonly("skipped_encoders", &MediaWriter::skipped_encoders);
}
