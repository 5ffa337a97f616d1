#include "sbsconv/media/EncoderSelection.h"

#include "sbsconv/media/CudaDevice.h"
#include "sbsconv/media/MvHevcEncoder.h"

#include <c10/core/Device.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <thread>

#ifdef __linux__
#include <sched.h>
#endif

#include "sbsconv/common/Logging.h"
#include "sbsconv/media/OutputContainer.h"

namespace sbsconv {

namespace {

constexpr const char* kStage = "encode";

// Tries one encoder; on success fills `opened` (context, formats, hardware frames) and
// returns true; otherwise says why in *why.
bool try_encoder(
    const WriterOptions& o,
    bool global_header,
    const std::string& name,
    OpenedEncoder& opened,
    std::string* why) {
  const AVCodec* codec = avcodec_find_encoder_by_name(name.c_str());
  if (codec == nullptr) {
    *why = "not in this FFmpeg build";
    return false;
  }
  const bool nvenc = name.find("nvenc") != std::string::npos;
  const bool videotoolbox = name.find("videotoolbox") != std::string::npos;
  const bool x26x = name == "libx264" || name == "libx265";
  const bool ten_bit = o.bit_depth == 10;
  const bool cuda_input = nvenc && c10::Device(o.device).is_cuda();

  UniqueAVCodecContext context(avcodec_alloc_context3(codec));
  SBSCONV_CHECK(context != nullptr, Internal, kStage, "avcodec_alloc_context3 failed");
  context->width = o.width + (o.width & 1);
  context->height = o.height + (o.height & 1);
  context->time_base = AVRational{o.time_base.num, o.time_base.den};
  context->framerate = AVRational{o.frame_rate.num, o.frame_rate.den};
  context->sample_aspect_ratio = encoded_sample_aspect(o);
  context->color_primaries = AVCOL_PRI_BT709;
  context->color_trc = AVCOL_TRC_BT709;
  context->colorspace = AVCOL_SPC_BT709;
  context->color_range = AVCOL_RANGE_MPEG;
  context->chroma_sample_location = AVCHROMA_LOC_LEFT;
  context->thread_count = o.threads;
  if (global_header) {
    context->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  }

  AVPixelFormat sw_format = AV_PIX_FMT_NONE;
  for (AVPixelFormat candidate : ten_bit
           ? std::vector<AVPixelFormat>{AV_PIX_FMT_YUV420P10LE, AV_PIX_FMT_P010LE}
           : std::vector<AVPixelFormat>{AV_PIX_FMT_YUV420P, AV_PIX_FMT_NV12}) {
    if (encoder_supports_pixel_format(codec, candidate)) {
      sw_format = candidate;
      break;
    }
  }
  if (sw_format == AV_PIX_FMT_NONE) {
    *why = ten_bit ? "no 10-bit 4:2:0 input format" : "no 8-bit 4:2:0 input format";
    return false;
  }

  UniqueAVBufferRef device_ref;
  UniqueAVBufferRef frames_ref;
  if (cuda_input) {
    // Note [One CUDA context]: LibTorch's context, and the encode stage's stream.
    const c10::Device dev(o.device);
    std::string failed;
    if (!create_cuda_device(dev.has_index() ? dev.index() : 0, &device_ref, &failed)) {
      *why = "cannot create a CUDA device: " + failed;
      return false;
    }
    int status = 0;
    frames_ref.reset(av_hwframe_ctx_alloc(device_ref.get()));
    SBSCONV_CHECK(frames_ref != nullptr, Internal, kStage, "av_hwframe_ctx_alloc failed");
    auto* frames_ctx = reinterpret_cast<AVHWFramesContext*>(frames_ref->data);
    frames_ctx->format = AV_PIX_FMT_CUDA;
    frames_ctx->sw_format = ten_bit ? AV_PIX_FMT_P010LE : AV_PIX_FMT_NV12;
    frames_ctx->width = context->width;
    frames_ctx->height = context->height;
    frames_ctx->initial_pool_size = 8;
    status = av_hwframe_ctx_init(frames_ref.get());
    if (status < 0) {
      *why = "cannot create CUDA frames: " + av_error_string(status);
      return false;
    }
    context->pix_fmt = AV_PIX_FMT_CUDA;
    context->hw_frames_ctx = av_buffer_ref(frames_ref.get());
    sw_format = frames_ctx->sw_format;
  } else {
    context->pix_fmt = sw_format;
  }

  AVDictionary* raw_options = nullptr;
  if (x26x) {
    const int crf = o.crf.value_or(name == "libx264" ? 16 : 18);
    av_dict_set(&raw_options, "crf", std::to_string(crf).c_str(), 0);
    const std::string preset = !o.preset.empty()                              ? o.preset
                               : !o.chosen_preset.empty()                    ? o.chosen_preset
                                                                             : "medium";
    av_dict_set(&raw_options, "preset", preset.c_str(), 0);
    if (name == "libx265") {
      av_dict_set(&raw_options, "x265-params", "log-level=error", 0);
    }
    if (name == "libx264") {
      // Note [Reproducible encoding]: x264's macroblock-tree rate control makes the output
      // depend on uninitialised memory (the same frames encode differently from run to run,
      // seen with x264 core 164); without it sbsconv's output is the same for the same input
      // and options, which resumed conversions rely on. The cost is a few percent of bit rate
      // at equal quality, which the default CRF (16) more than covers.
      av_dict_set(&raw_options, "x264-params", "mbtree=0", 0);
    }
  } else if (nvenc) {
    av_dict_set(&raw_options, "preset", o.preset.empty() ? "p5" : o.preset.c_str(), 0);
    av_dict_set(&raw_options, "rc", "vbr", 0);
    av_dict_set(&raw_options, "cq", std::to_string(o.cq.value_or(21)).c_str(), 0);
    context->bit_rate = 0;
  } else if (videotoolbox) {
    context->flags |= AV_CODEC_FLAG_QSCALE;
    context->global_quality = o.quality.value_or(65) * FF_QP2LAMBDA;
  } else {
    // Encoders without a constant-quality mode (libopenh264): a generous bit rate.
    context->bit_rate = static_cast<int64_t>(
        0.15 * context->width * context->height * av_q2d(context->framerate));
    if (!o.preset.empty()) {
      av_dict_set(&raw_options, "preset", o.preset.c_str(), 0);
    }
  }
  UniqueAVDictionary options(raw_options);
  AVDictionary* pass = options.release();
  clear_last_ffmpeg_message();
  const int status = avcodec_open2(context.get(), codec, &pass);
  options.reset(pass);
  if (status < 0) {
    *why = av_error_string(status);
    const std::string last = take_last_ffmpeg_message();
    if (!last.empty()) {
      *why += " (" + last + ")";
    }
    return false;
  }
  for (const AVDictionaryEntry* e = nullptr;
       (e = av_dict_get(options.get(), "", e, AV_DICT_IGNORE_SUFFIX)) != nullptr;) {
    opened.warnings.push_back(name + " ignored the option " + e->key + "=" + e->value);
  }
  opened.context = std::move(context);
  opened.name = name;
  opened.sw_format = sw_format;
  opened.device_frames = cuda_input;
  opened.hw_device = std::move(device_ref);
  opened.hw_frames = std::move(frames_ref);
  return true;
}

} // namespace

std::vector<std::string> encoder_candidates(const std::string& codec_in, const std::string& encoder_in) {
  const std::string codec = lowercase(codec_in);
  const std::string encoder = lowercase(encoder_in);
  if (codec != "h264" && codec != "hevc" && codec != "h265") {
    throw Error(ErrorKind::Option, "open output", "codec must be 'auto', 'h264' or 'hevc', not '" + codec_in + "'");
  }
  const bool hevc = codec != "h264";
  const std::string nvenc = hevc ? "hevc_nvenc" : "h264_nvenc";
  const std::string vt = hevc ? "hevc_videotoolbox" : "h264_videotoolbox";
  const std::vector<std::string> software =
      hevc ? std::vector<std::string>{"libx265"} : std::vector<std::string>{"libx264", "libopenh264"};
  if (encoder == "auto" || encoder.empty()) {
    std::vector<std::string> all{nvenc, vt};
    all.insert(all.end(), software.begin(), software.end());
    return all;
  }
  if (encoder == "nvenc") {
    return {nvenc};
  }
  if (encoder == "videotoolbox") {
    return {vt};
  }
  if (encoder == "software") {
    return software;
  }
  const AVCodec* found = avcodec_find_encoder_by_name(encoder.c_str());
  if (found != nullptr && found->type != AVMEDIA_TYPE_VIDEO) {
    throw Error(ErrorKind::Option, "open output", "'" + encoder_in + "' is not a video encoder");
  }
  if (found != nullptr && found->id != (hevc ? AV_CODEC_ID_HEVC : AV_CODEC_ID_H264)) {
    throw Error(
        ErrorKind::Option,
        "open output",
        "encoder '" + encoder_in + "' does not produce " + (hevc ? "HEVC" : "H.264"));
  }
  return {encoder};
}

void validate_frame_format(const WriterOptions& o) {
  if (o.width <= 0 || o.height <= 0) {
    throw Error(ErrorKind::Option, "open output", "frame size must be positive", o.path);
  }
  if (o.time_base.num <= 0 || o.time_base.den <= 0) {
    throw Error(ErrorKind::Option, "open output", "time_base must be a positive fraction", o.path);
  }
  if (o.frame_rate.num <= 0 || o.frame_rate.den <= 0) {
    throw Error(ErrorKind::Option, "open output", "frame_rate must be a positive fraction", o.path);
  }
}

void validate_encoder_settings(const WriterOptions& o) {
  if (o.bit_depth != 8 && o.bit_depth != 10) {
    throw Error(ErrorKind::Option, "open output", "bit_depth must be 8 or 10", o.path);
  }
  if (o.bit_depth == 10 && lowercase(o.codec) == "h264") {
    throw Error(ErrorKind::Option, "open output", "10-bit output needs codec='hevc'", o.path);
  }
  if (o.crf && (*o.crf < 0 || *o.crf > 51)) {
    throw Error(ErrorKind::Option, "open output", "crf must be within 0..51", o.path);
  }
  if (o.cq && (*o.cq < 0 || *o.cq > 51)) {
    throw Error(ErrorKind::Option, "open output", "cq must be within 0..51", o.path);
  }
  if (o.quality && (*o.quality < 1 || *o.quality > 100)) {
    throw Error(ErrorKind::Option, "open output", "quality must be within 1..100", o.path);
  }
  if (o.sample_aspect.num != 0 && (o.sample_aspect.num < 0 || o.sample_aspect.den <= 0)) {
    throw Error(
        ErrorKind::Option,
        "open output",
        "sample_aspect must be a positive fraction (0/1: unknown, square pixels)",
        o.path);
  }
}

AVRational encoded_sample_aspect(const WriterOptions& o) {
  if (o.sample_aspect.num <= 0 || o.sample_aspect.den <= 0) {
    return AVRational{1, 1};
  }
  AVRational reduced{1, 1};
  av_reduce(&reduced.num, &reduced.den, o.sample_aspect.num, o.sample_aspect.den, 65535);
  return reduced;
}

std::string resolve_codec(const WriterOptions& o, std::vector<std::string>* notes) {
  const std::string requested = lowercase(o.codec);
  const bool automatic = requested == "auto" || requested.empty();
  const int width = o.width + (o.width & 1);
  const int height = o.height + (o.height & 1);
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  // Note [H.264 level limits]: H.264's highest level that headsets' hardware decoders play
  // (5.2: Quest, Pico, Vision Pro, phones) takes frames up to 4096 pixels a side and 8.9
  // megapixels (4096x2176); a VR180 pair from HD (5760x2880) or a full side-by-side 4K pair
  // (7680x2160) would be level 6 H.264, which they refuse. "auto" is HEVC there, for every
  // encoder (HEVC level 6.1 takes 8192x4320), and says why.
  const bool beyond_h264 = std::max(width, height) > kH264Level52MaxSide ||
      static_cast<int64_t>(width) * height > kH264Level52MaxPixels;
  if (automatic && o.bit_depth != 10 && beyond_h264) {
    if (notes != nullptr) {
      notes->push_back(
          "frames of " + size + " are beyond H.264 level 5.2 (4096 pixels a side, 8.9 megapixels), which headsets' "
          "decoders do not play: encoding HEVC (give codec='h264' to keep H.264 anyway)");
    }
    return "hevc";
  }
  const std::string codec = automatic ? (o.bit_depth == 10 ? "hevc" : "h264") : requested;
  if (codec != "h264") {
    return codec;
  }
  // Note [H.264 on NVENC]: NVENC's H.264 takes frames up to 4096 pixels a side (its HEVC up
  // to 8192); a full side-by-side 4K eye pair is 7680 wide. Known before anything is opened,
  // so a GPU run neither fails late nor falls back to the CPU's encoder without a word.
  const std::string encoder = lowercase(o.encoder);
  const bool named_nvenc = encoder == "nvenc" || encoder == "h264_nvenc";
  const bool gpu_auto = (encoder == "auto" || encoder.empty()) && c10::Device(o.device).is_cuda();
  if (std::max(width, height) <= kNvencH264MaxSide || !(named_nvenc || gpu_auto)) {
    return codec;
  }
  if (automatic && encoder != "h264_nvenc") {
    if (notes != nullptr) {
      notes->push_back(
          "frames of " + size + " are larger than H.264 on NVENC takes (" + std::to_string(kNvencH264MaxSide) +
          " pixels a side): encoding HEVC on NVENC instead (codec='h264', encoder='software' keeps H.264, on "
          "the CPU)");
    }
    return "hevc";
  }
  throw Error(
      ErrorKind::Option,
      "open output",
      "frames of " + size + " do not fit H.264 on NVENC, which takes up to " + std::to_string(kNvencH264MaxSide) +
          " pixels a side: use codec='hevc' (NVENC's HEVC takes up to 8192), a smaller eye_size or a half-width "
          "layout (half-sbs), or encoder='software' (libx264 on the CPU, slower)",
      o.path);
}

OpenedEncoder open_video_encoder(const WriterOptions& o_in, bool global_header) {
  OpenedEncoder opened;
  WriterOptions o = o_in;
  o.codec = resolve_codec(o_in, &opened.warnings);
  const std::vector<std::string> candidates = encoder_candidates(o.codec, o.encoder);
  for (const std::string& name : candidates) {
    std::string why;
    if (try_encoder(o, global_header, name, opened, &why)) {
      if (!opened.skipped.empty()) {
        log(LogLevel::Info,
            "encoding with " + name + " (skipped " + std::to_string(opened.skipped.size()) + ")");
      }
      return opened;
    }
    opened.skipped.push_back(name + ": " + why);
    log(LogLevel::Debug, "encoder " + name + " skipped: " + why);
  }
  std::string reasons;
  for (const std::string& s : opened.skipped) {
    reasons += (reasons.empty() ? "" : "; ") + s;
  }
  throw Error(
      ErrorKind::Encode,
      kStage,
      "no " + o.codec + " encoder could be opened (" + reasons + ")",
      o.path);
}

namespace {

struct PresetCost {
  const char* name;
  double cost; // core time per frame, relative to medium
};
// The presets sbsconv may choose, slowest first: medium (each encoder's default) down to
// veryfast, the quality floor (faster ones only when the caller names them). Core time per
// pixel of medium and the others relative to it, in the steady state, measured with
// benchmarks/bench_encoder.py at 2560x720 and 3840x1080 on this project's 2-core machines
// (benchmarks/RESULTS.md, "Encoder presets": libx264 medium 75-81 ns a pixel on an Intel Xeon,
// as on the AMD EPYC before). libx265 3.5's veryfast costs about what faster does on these
// frames; the table keeps the measured order, and where nothing keeps pace the cheapest is
// taken.
constexpr PresetCost kX264Presets[] = {{"medium", 1.0}, {"fast", 0.84}, {"faster", 0.66}, {"veryfast", 0.43}};
constexpr double kX264MediumSecondsPerPixel = 75e-9;
constexpr PresetCost kX265Presets[] = {{"medium", 1.0}, {"fast", 0.87}, {"faster", 0.74}, {"veryfast", 0.78}};
constexpr double kX265MediumSecondsPerPixel = 145e-9;
// A CPU run: the encoder's core time a frame, at most this share of the model's. On shared
// cores every core-second another stage takes comes out of the model's (two cores: the model's
// two threads wait for each other), so end to end at 0.9 of the model alone (issue 31's goal)
// leaves about 11 % of the model's core time for all the other stages together. Decoding, the
// stabiliser and the stereo stage take 8-10 % of it at 720p with a random network's noisy
// depth (benchmarks/RESULTS.md, "The CPU's pace at the default input"; a trained model's
// smoother depth leaves the fills less to do): the encoder gets 5 %, about what veryfast, the
// floor, takes there. At input 518 on two cores that is faster or veryfast for 720p side by
// side (medium would take 8-9 %); a slower model (Base, Large) keeps medium.
constexpr double kEncoderShare = 0.05;
// A GPU run: the encoder's frames per second must exceed the model's by this margin, its
// threads counted at this efficiency, and one instance keeping at most kCoresPerInstance cores
// busy: libx264's frame threads at 1080p do not scale further (issue 31 measured medium on a
// 3840x1080 frame at 20.8 frames/s on 16 cores: about 6.5 cores' worth of its 0.31
// core-seconds a frame). More cores need more instances (Note [Chunk-parallel encoding]), up
// to kMaxInstances.
constexpr double kPaceMargin = 1.1;
constexpr double kThreadEfficiency = 0.75;
constexpr double kCoresPerInstance = 6.0;
constexpr int kMaxInstances = 8;

const PresetCost* presets_of(const std::string& encoder, size_t* count, double* medium_seconds_per_pixel) {
  if (encoder == "libx264") {
    *count = std::size(kX264Presets);
    *medium_seconds_per_pixel = kX264MediumSecondsPerPixel;
    return kX264Presets;
  }
  if (encoder == "libx265") {
    *count = std::size(kX265Presets);
    *medium_seconds_per_pixel = kX265MediumSecondsPerPixel;
    return kX265Presets;
  }
  *count = 0;
  return nullptr;
}

} // namespace

int usable_cores() {
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    return std::max(1, CPU_COUNT(&set));
  }
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

bool chooses_preset_for(const std::string& encoder) {
  size_t count = 0;
  double unused = 0.0;
  return presets_of(encoder, &count, &unused) != nullptr;
}

std::string preset_chosen_for(const WriterOptions& options) {
  if (!options.preset.empty() || options.spatial) {
    return "";
  }
  const std::string encoder = probe_encoder(options).encoder;
  return chooses_preset_for(encoder) ? encoder : "";
}

bool is_preset_choice(const std::string& encoder, const std::string& name) {
  size_t count = 0;
  double unused = 0.0;
  const PresetCost* table = presets_of(encoder, &count, &unused);
  return table != nullptr && std::any_of(table, table + count, [&](const PresetCost& p) { return name == p.name; });
}

int max_encoder_instances(int cores) {
  const double usable = std::max(cores, 1) * kThreadEfficiency;
  return std::clamp(static_cast<int>(std::ceil(usable / kCoresPerInstance)), 1, kMaxInstances);
}

PresetChoice choose_encoder_preset(const EncoderPace& pace) {
  size_t count = 0;
  double medium_per_pixel = 0.0;
  const PresetCost* table = presets_of(pace.encoder, &count, &medium_per_pixel);
  if (table == nullptr) {
    return {};
  }
  const double medium_core_s = medium_per_pixel * static_cast<double>(pace.width * pace.height);
  const double model_s = std::max(pace.model_seconds, 1e-9);
  const double model_core_s = model_s * std::max(pace.model_threads, 1);
  const double usable = std::max(pace.cores, 1) * kThreadEfficiency;
  // the instances to try: the caller's, else 1 .. the most that add cores (a GPU run with
  // parallel segments only; on the CPU the cores are the model's)
  const int most = pace.instances > 0 ? pace.instances
      : pace.parallel_segments && !pace.shared_cores ? max_encoder_instances(pace.cores)
                                                     : 1;
  const int least = pace.instances > 0 ? pace.instances : 1;
  // the cores `k` instances keep busy
  auto busy_cores = [&](int k) { return std::min(usable, k * kCoresPerInstance); };
  auto keeps_pace = [&](const PresetCost& p, int k) {
    const double enc = medium_core_s * p.cost;
    return pace.shared_cores ? enc <= kEncoderShare * model_core_s : busy_cores(k) / enc >= kPaceMargin / model_s;
  };
  const PresetCost* chosen = std::min_element(table, table + count, [](const PresetCost& a, const PresetCost& b) {
    return a.cost < b.cost;
  }); // where nothing keeps pace: the cheapest allowed, on the most instances
  int instances = most;
  bool fits = false;
  for (size_t i = 0; i < count && !fits; ++i) {
    for (int k = least; k <= most; ++k) {
      if (keeps_pace(table[i], k)) {
        chosen = table + i;
        instances = k;
        fits = true;
        break;
      }
    }
  }
  const double enc = medium_core_s * chosen->cost;
  const std::string on = instances > 1 ? " (" + std::to_string(instances) + " instances encoding segments at once)" : "";
  char why[500];
  if (pace.shared_cores) {
    std::snprintf(
        why, sizeof why,
        "%s preset %s%s: the model takes %.2f core-seconds a frame, %s %s about %.2f at %lldx%lld (%.1f %% of the model's)%s",
        pace.encoder.c_str(), chosen->name, on.c_str(), model_core_s, pace.encoder.c_str(), chosen->name, enc,
        static_cast<long long>(pace.width), static_cast<long long>(pace.height), 100.0 * enc / model_core_s,
        fits ? "" : "; the encoder sets the pace: name a faster preset (preset=) or a hardware encoder to go faster");
  } else {
    std::snprintf(
        why, sizeof why,
        "%s preset %s%s: %s runs at %.1f frames/s, %s %s at about %.1f on %d core%s at %lldx%lld%s",
        pace.encoder.c_str(), chosen->name, on.c_str(), pace.pacer.empty() ? "the model" : pace.pacer.c_str(),
        1.0 / model_s, pace.encoder.c_str(), chosen->name,
        busy_cores(instances) / enc, std::max(pace.cores, 1), pace.cores > 1 ? "s" : "", static_cast<long long>(pace.width),
        static_cast<long long>(pace.height),
        fits ? "" : "; the encoder sets the pace: name a faster preset (preset=) or a hardware encoder to go faster");
  }
  return PresetChoice{chosen->name, why, fits, instances};
}

StreamParams probe_encoder(const WriterOptions& options) {
  install_ffmpeg_log_handler();
  if (options.spatial) {
    validate_frame_format(options);
    return probe_mvhevc_encoder(options); // an external x265: one frame, for its headers
  }
  const std::string container = resolve_container(options);
  validate_frame_format(options);
  validate_encoder_settings(options);
  const OpenedEncoder opened = open_video_encoder(options, container_wants_global_header(container));
  return stream_params_of(opened.context.get(), opened.name);
}

} // namespace sbsconv
