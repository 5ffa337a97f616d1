#include "sbsconv/media/MediaWriter.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <unistd.h>

#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/common/Logging.h"
#include "sbsconv/media/ColorConversion.h"
#include "sbsconv/media/InputFile.h"

namespace fs = std::filesystem;

namespace sbsconv {

namespace {

constexpr const char* kStage = "encode";
constexpr const char* kMuxStage = "mux";
constexpr int kSubtitleBufferSize = 1 << 20;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// "mp4" / "mov" / "mkv" from the option or the output's extension.
std::string resolve_container(const WriterOptions& o) {
  std::string c = lower(o.container);
  if (c.empty()) {
    c = lower(fs::path(o.path).extension().string());
    if (!c.empty() && c[0] == '.') {
      c = c.substr(1);
    }
  }
  if (c == "mp4" || c == "m4v") {
    return "mp4";
  }
  if (c == "mov") {
    return "mov";
  }
  if (c == "mkv" || c == "matroska") {
    return "mkv";
  }
  if (c == "nut") {
    return "nut"; // FFmpeg's own container: any time base, no edit lists (resume segments)
  }
  throw Error(
      ErrorKind::Option,
      "open output",
      "unsupported output container '" + (c.empty() ? std::string("(no extension)") : c) +
          "': use .mp4, .mov or .mkv",
      o.path);
}

const char* muxer_for(const std::string& container) {
  return container == "mkv" ? "matroska" : container.c_str();
}

bool is_isobmff(const std::string& container) {
  return container == "mp4" || container == "mov";
}

// Audio codecs MP4/MOV players handle when stream-copied. avformat_query_codec accepts more
// (Opus, FLAC, Vorbis in some FFmpeg versions only with -strict experimental), which headsets
// and QuickTime then refuse; those are transcoded to AAC instead.
bool mp4_audio_copyable(AVCodecID id) {
  switch (id) {
    case AV_CODEC_ID_AAC:
    case AV_CODEC_ID_MP3:
    case AV_CODEC_ID_AC3:
    case AV_CODEC_ID_EAC3:
    case AV_CODEC_ID_ALAC:
      return true;
    default:
      return false;
  }
}

bool is_text_subtitle(AVCodecID id) {
  const AVCodecDescriptor* desc = avcodec_descriptor_get(id);
  return desc != nullptr && (desc->props & AV_CODEC_PROP_TEXT_SUB);
}

std::string stream_label(const AVStream* stream) {
  const char* type = av_get_media_type_string(stream->codecpar->codec_type);
  std::string label = std::string(type != nullptr ? type : "stream") + " #" +
      std::to_string(stream->index) + " " + avcodec_get_name(stream->codecpar->codec_id);
  const AVDictionaryEntry* language = av_dict_get(stream->metadata, "language", nullptr, 0);
  if (language != nullptr) {
    label += std::string(" (") + language->value + ")";
  }
  return label;
}

fs::path temporary_path_for(const fs::path& final_path) {
  fs::path dir = final_path.parent_path();
  const std::string name = "." + final_path.filename().string() + ".sbsconv-" +
      std::to_string(::getpid()) + ".part";
  return dir.empty() ? fs::path(name) : dir / name;
}

const int kAacRates[] = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050,
                         16000, 12000, 11025, 8000, 7350};

// One audio or subtitle stream of the source, carried into the output.
struct CarriedStream {
  enum class Mode { Copy, TranscodeAudio, ConvertSubtitle };
  Mode mode = Mode::Copy;
  AVStream* in = nullptr;
  AVStream* out = nullptr;
  int64_t origin = 0; // the output's zero, in the output stream's time base
  // copy: the packet held back so the last one can be trimmed to the video's end
  UniqueAVPacket held;
  bool has_held = false;
  // transcode / convert
  UniqueAVCodecContext decoder;
  UniqueAVCodecContext encoder;
  UniqueSwrContext resampler;
  UniqueAudioFifo fifo;
  UniqueAVFrame decoded;
  UniqueAVFrame encoded;
  bool started = false;
  int64_t next_sample = 0; // output pts (1/sample_rate) of the next sample leaving the fifo
  int frame_size = 1024;
};

} // namespace

std::vector<std::string> encoder_candidates(const std::string& codec_in, const std::string& encoder_in) {
  const std::string codec = lower(codec_in);
  const std::string encoder = lower(encoder_in);
  if (codec != "h264" && codec != "hevc" && codec != "h265") {
    throw Error(ErrorKind::Option, "open output", "codec must be 'h264' or 'hevc', not '" + codec_in + "'");
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

struct MediaWriter::Impl {
  WriterOptions o;
  std::string container;
  fs::path final_path;
  fs::path temp_path;
  UniqueOutputFormatContext out;
  UniqueAVCodecContext enc;
  std::string encoder_name;
  std::vector<std::string> skipped;
  AVStream* video = nullptr;
  bool device_frames = false; // NVENC takes CUDA frames directly
  UniqueAVBufferRef hw_device;
  UniqueAVBufferRef hw_frames;
  std::unique_ptr<YuvConverter> yuv;
  UniqueAVFrame frame = make_frame();
  UniqueAVPacket packet = make_packet();
  AVRational video_tb{1, 1}; // the time base of last_pts/last_end (the encoder's, or the copied stream's)
  int64_t video_origin = 0; // output zero in video_tb
  int64_t last_pts = AV_NOPTS_VALUE;
  int64_t last_end = 0; // end of the last frame given, encoder time base, output timeline
  int64_t frames = 0;

  UniqueInputFormatContext source;
  std::vector<std::unique_ptr<CarriedStream>> carried; // by source stream index (null = not)
  UniqueAVPacket source_packet = make_packet();
  bool source_pending = false;
  bool source_eof = false;
  bool trim_start = false; // the output starts part-way into the source

  bool header_written = false;
  bool done = false; // renamed into place
  bool aborted = false;
  std::vector<std::string> notes;
  std::vector<std::string> warnings;

  explicit Impl(WriterOptions options) : o(std::move(options)) {}
  ~Impl() {
    discard();
  }

  void open();
  void validate();
  void open_encoder(const std::vector<std::string>& candidates);
  bool try_encoder(const std::string& name, std::string* why);
  void open_source();
  void add_carried(AVStream* in);
  void write_header();
  void encode(AVFrame* input);
  void copy_segments();
  void mux(AVPacket* pkt, AVStream* stream);
  void pull_source(double until_seconds, bool final_pass);
  void process_source_packet(AVPacket* pkt, double end_seconds, bool final_pass);
  void transcode_audio(CarriedStream& s, AVPacket* pkt);
  void encode_audio(CarriedStream& s, int64_t limit_sample, bool final);
  void send_audio_frame(CarriedStream& s, AVFrame* f);
  void convert_subtitle(CarriedStream& s, AVPacket* pkt, int64_t end_ts);
  // Writes the stream's previously held packet and holds this one (see finish_carried).
  void hold(CarriedStream& s, AVPacket* pkt);
  void finish_carried(double end_seconds);
  void discard();
  [[noreturn]] void fail(ErrorKind kind, const char* stage, const std::string& what, int code);
};

void MediaWriter::Impl::fail(ErrorKind kind, const char* stage, const std::string& what, int code) {
  if (code < 0) {
    throw_av_error(kind, stage, what, final_path.string(), code);
  }
  throw Error(kind, stage, what, final_path.string());
}

void MediaWriter::Impl::discard() {
  out.reset();
  source.reset();
  if (!done && !temp_path.empty()) {
    std::error_code ec;
    fs::remove(temp_path, ec);
  }
}

void MediaWriter::Impl::validate() {
  install_ffmpeg_log_handler();
  if (o.path.empty()) {
    throw Error(ErrorKind::Option, "open output", "no output path given");
  }
  final_path = fs::path(o.path);
  container = resolve_container(o);
  const fs::path dir = final_path.parent_path();
  std::error_code ec;
  if (!dir.empty() && !fs::is_directory(dir, ec)) {
    throw Error(ErrorKind::Output, "open output", "the output folder does not exist", o.path);
  }
  if (fs::is_directory(final_path, ec)) {
    throw Error(ErrorKind::Output, "open output", "the output path is a folder", o.path);
  }
  if (!o.source.empty() && !is_url(o.source) && fs::exists(final_path, ec) &&
      fs::equivalent(final_path, fs::path(o.source), ec)) {
    throw Error(ErrorKind::Option, "open output", "the output would overwrite the input", o.path);
  }
  // Copying encoded segments: size and timing come from them.
  if (o.video_segments.empty()) {
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
  if (o.bit_depth != 8 && o.bit_depth != 10) {
    throw Error(ErrorKind::Option, "open output", "bit_depth must be 8 or 10", o.path);
  }
  const std::string codec = lower(o.codec);
  if (o.bit_depth == 10 && codec == "h264") {
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
  const std::string audio = lower(o.audio);
  if (audio != "copy" && audio != "aac" && audio != "none") {
    throw Error(ErrorKind::Option, "open output", "audio must be 'copy', 'aac' or 'none'", o.path);
  }
  const std::string subs = lower(o.subtitles);
  if (subs != "copy" && subs != "none") {
    throw Error(ErrorKind::Option, "open output", "subtitles must be 'copy' or 'none'", o.path);
  }
  if (!o.stereo.empty() && o.stereo != "sbs" && o.stereo != "sbs-rl" && o.stereo != "tb") {
    throw Error(
        ErrorKind::Option, "open output", "stereo must be '', 'sbs', 'sbs-rl' or 'tb'", o.path);
  }
}

void MediaWriter::Impl::open() {
  validate();
  const bool copying = !o.video_segments.empty();
  const std::vector<std::string> candidates =
      copying ? std::vector<std::string>{} : encoder_candidates(o.codec, o.encoder);
  temp_path = temporary_path_for(final_path);

  AVFormatContext* raw = nullptr;
  int status =
      avformat_alloc_output_context2(&raw, nullptr, muxer_for(container), temp_path.c_str());
  if (status < 0 || raw == nullptr) {
    fail(ErrorKind::Output, kMuxStage, "cannot create the " + container + " muxer", status);
  }
  out.reset(raw);

  video = avformat_new_stream(out.get(), nullptr);
  SBSCONV_CHECK(video != nullptr, Internal, kMuxStage, "avformat_new_stream failed");
  if (copying) {
    // See Note [Resumable runs]: the video was encoded into segments already; its packets
    // are copied, with their timestamps (already on the output's timeline).
    UniqueInputFormatContext first = open_input(o.video_segments.front(), "assemble");
    const int index = choose_video_stream(first.get(), -1, o.video_segments.front());
    const AVStream* in = first->streams[index];
    SBSCONV_CHECK_AV(
        avcodec_parameters_copy(video->codecpar, in->codecpar), Encode, kMuxStage, "stream copy", o.path);
    video->codecpar->codec_tag = 0;
    video->time_base = in->time_base;
    video->avg_frame_rate = in->avg_frame_rate.num > 0 ? in->avg_frame_rate
                                                       : AVRational{o.frame_rate.num, o.frame_rate.den};
    video_tb = in->time_base;
    encoder_name = o.encoder;
    video_origin = 0;
  } else {
    open_encoder(candidates);
    SBSCONV_CHECK_AV(
        avcodec_parameters_from_context(video->codecpar, enc.get()),
        Encode,
        kMuxStage,
        "cannot describe the video stream",
        o.path);
    video->time_base = enc->time_base;
    video->avg_frame_rate = enc->framerate;
    video_tb = enc->time_base;
    video_origin = av_rescale_q(
        static_cast<int64_t>(std::llround(o.time_origin * AV_TIME_BASE)), AV_TIME_BASE_Q, video_tb);
  }
  if (video->codecpar->codec_id == AV_CODEC_ID_HEVC && is_isobmff(container)) {
    // 'hvc1' (parameter sets in the sample description) is what QuickTime, the Vision Pro
    // and most headsets require; FFmpeg's default is 'hev1'.
    video->codecpar->codec_tag = MKTAG('h', 'v', 'c', '1');
  }
  if (!o.stereo.empty()) {
    const bool tb = o.stereo == "tb";
    if (container == "mkv") {
      av_dict_set(
          &video->metadata,
          "stereo_mode",
          tb ? "top_bottom" : (o.stereo == "sbs-rl" ? "right_left" : "left_right"),
          0);
    } else if (!attach_stereo3d(video, tb ? AV_STEREO3D_TOPBOTTOM : AV_STEREO3D_SIDEBYSIDE)) {
      warnings.push_back("this FFmpeg cannot tag the stereo layout in " + container);
    }
  }

  if (!o.source.empty()) {
    open_source();
  }
  for (const auto& [key, value] : o.metadata) {
    av_dict_set(&out->metadata, key.c_str(), value.c_str(), 0);
  }
  write_header();
}

void MediaWriter::Impl::copy_segments() {
  for (const std::string& segment : o.video_segments) {
    UniqueInputFormatContext in = open_input(segment, "assemble");
    const int index = choose_video_stream(in.get(), -1, segment);
    const AVStream* stream = in->streams[index];
    // A segment is short: read it whole, so that the decode timestamps NUT leaves unknown at
    // its start (until the reorder depth is reached) can be filled in backwards from the
    // first known one, one packet duration at a time.
    std::vector<UniqueAVPacket> packets;
    while (true) {
      UniqueAVPacket pkt = make_packet();
      const int status = av_read_frame(in.get(), pkt.get());
      if (status == AVERROR_EOF) {
        break;
      }
      if (status < 0) {
        fail(ErrorKind::Output, kMuxStage, "cannot read the segment " + segment, status);
      }
      if (pkt->stream_index == index) {
        packets.push_back(std::move(pkt));
      }
    }
    size_t known = 0;
    while (known < packets.size() && packets[known]->dts == AV_NOPTS_VALUE) {
      ++known;
    }
    for (size_t k = known; k-- > 0;) {
      const AVPacket* next = k + 1 < packets.size() ? packets[k + 1].get() : nullptr;
      packets[k]->dts = next != nullptr && next->dts != AV_NOPTS_VALUE
          ? next->dts - std::max<int64_t>(packets[k]->duration, 1)
          : packets[k]->pts;
    }
    const int64_t offset = av_rescale_q(
        static_cast<int64_t>(std::llround(o.segment_offset * AV_TIME_BASE)), AV_TIME_BASE_Q, stream->time_base);
    for (UniqueAVPacket& pkt : packets) {
      for (int64_t* ts : {&pkt->pts, &pkt->dts}) {
        if (*ts != AV_NOPTS_VALUE) {
          *ts -= offset;
        }
      }
      av_packet_rescale_ts(pkt.get(), stream->time_base, video_tb);
      if (pkt->pts != AV_NOPTS_VALUE) {
        last_pts = last_pts == AV_NOPTS_VALUE ? pkt->pts : std::max(last_pts, pkt->pts);
        last_end = std::max(last_end, pkt->pts + std::max<int64_t>(pkt->duration, 1));
      }
      ++frames;
      const int64_t ts = pkt->dts != AV_NOPTS_VALUE ? pkt->dts : pkt->pts;
      if (source) {
        pull_source(ts * av_q2d(video_tb), false);
      }
      av_packet_rescale_ts(pkt.get(), video_tb, video->time_base);
      mux(pkt.get(), video);
    }
  }
}

bool MediaWriter::Impl::try_encoder(const std::string& name, std::string* why) {
  const AVCodec* codec = avcodec_find_encoder_by_name(name.c_str());
  if (codec == nullptr) {
    *why = "not in this FFmpeg build";
    return false;
  }
  const bool nvenc = name.find("nvenc") != std::string::npos;
  const bool videotoolbox = name.find("videotoolbox") != std::string::npos;
  const bool x26x = name == "libx264" || name == "libx265";
  const bool ten_bit = o.bit_depth == 10;
  const bool cuda_input = nvenc && at::Device(o.device).is_cuda();

  UniqueAVCodecContext context(avcodec_alloc_context3(codec));
  SBSCONV_CHECK(context != nullptr, Internal, kStage, "avcodec_alloc_context3 failed");
  context->width = o.width + (o.width & 1);
  context->height = o.height + (o.height & 1);
  context->time_base = AVRational{o.time_base.num, o.time_base.den};
  context->framerate = AVRational{o.frame_rate.num, o.frame_rate.den};
  context->sample_aspect_ratio = AVRational{1, 1};
  context->color_primaries = AVCOL_PRI_BT709;
  context->color_trc = AVCOL_TRC_BT709;
  context->colorspace = AVCOL_SPC_BT709;
  context->color_range = AVCOL_RANGE_MPEG;
  context->chroma_sample_location = AVCHROMA_LOC_LEFT;
  context->thread_count = o.threads;
  if (out->oformat->flags & AVFMT_GLOBALHEADER) {
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
    AVDictionary* raw = nullptr;
    av_dict_set(&raw, "primary_ctx", "1", 0);
    UniqueAVDictionary hw_options(raw);
    const at::Device dev(o.device);
    const std::string index = std::to_string(dev.has_index() ? dev.index() : 0);
    AVBufferRef* ref = nullptr;
    int status = av_hwdevice_ctx_create(&ref, AV_HWDEVICE_TYPE_CUDA, index.c_str(), hw_options.get(), 0);
    if (status < 0) {
      *why = "cannot create a CUDA device: " + av_error_string(status);
      return false;
    }
    device_ref.reset(ref);
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
  } else {
    context->pix_fmt = sw_format;
  }

  AVDictionary* raw_options = nullptr;
  if (x26x) {
    const int crf = o.crf.value_or(name == "libx264" ? 16 : 18);
    av_dict_set(&raw_options, "crf", std::to_string(crf).c_str(), 0);
    av_dict_set(&raw_options, "preset", o.preset.empty() ? "medium" : o.preset.c_str(), 0);
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
    warnings.push_back(name + " ignored the option " + e->key + "=" + e->value);
  }
  enc = std::move(context);
  hw_device = std::move(device_ref);
  hw_frames = std::move(frames_ref);
  device_frames = cuda_input;
  encoder_name = name;
  if (!device_frames) {
    yuv = std::make_unique<YuvConverter>(o.width, o.height, sw_format);
  }
  return true;
}

void MediaWriter::Impl::open_encoder(const std::vector<std::string>& candidates) {
  for (const std::string& name : candidates) {
    std::string why;
    if (try_encoder(name, &why)) {
      if (!skipped.empty()) {
        log(LogLevel::Info, "encoding with " + name + " (skipped " + std::to_string(skipped.size()) + ")");
      }
      return;
    }
    skipped.push_back(name + ": " + why);
    log(LogLevel::Debug, "encoder " + name + " skipped: " + why);
  }
  std::string reasons;
  for (const std::string& s : skipped) {
    reasons += (reasons.empty() ? "" : "; ") + s;
  }
  throw Error(
      ErrorKind::Encode,
      kStage,
      "no " + o.codec + " encoder could be opened (" + reasons + ")",
      o.path);
}

void MediaWriter::Impl::open_source() {
  source = open_input(o.source, "open source");
  carried.resize(source->nb_streams);
  const double source_start = format_start_seconds(source.get());
  for (unsigned i = 0; i < source->nb_streams; ++i) {
    AVStream* in = source->streams[i];
    const AVMediaType type = in->codecpar->codec_type;
    const bool wanted = (type == AVMEDIA_TYPE_AUDIO && lower(o.audio) != "none") ||
        (type == AVMEDIA_TYPE_SUBTITLE && lower(o.subtitles) != "none");
    in->discard = AVDISCARD_ALL;
    if (!wanted) {
      continue;
    }
    try {
      add_carried(in);
    } catch (const Error& e) {
      warnings.push_back(stream_label(in) + " dropped: " + e.reason());
      carried[i].reset();
      continue;
    }
    if (carried[i]) {
      in->discard = AVDISCARD_DEFAULT;
    }
  }
  trim_start = o.time_origin > source_start + 1e-6;
  if (trim_start) {
    const int64_t ts = static_cast<int64_t>(std::floor(o.time_origin * AV_TIME_BASE));
    const int status = avformat_seek_file(source.get(), -1, INT64_MIN, ts, ts, 0);
    if (status < 0) {
      log(LogLevel::Debug, "source seek failed; reading carried streams from the start");
    }
  }
  for (const auto& av_dict : {source->metadata}) {
    av_dict_copy(&out->metadata, av_dict, AV_DICT_DONT_OVERWRITE);
  }
  // The video stream keeps the source video stream's language.
  const int best = av_find_best_stream(source.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (best >= 0) {
    if (const AVDictionaryEntry* language =
            av_dict_get(source->streams[best]->metadata, "language", nullptr, 0)) {
      av_dict_set(&video->metadata, "language", language->value, 0);
    }
  }
}

void MediaWriter::Impl::add_carried(AVStream* in) {
  const AVCodecParameters* par = in->codecpar;
  const AVMediaType type = par->codec_type;
  auto s = std::make_unique<CarriedStream>();
  s->in = in;
  std::string what;

  auto container_accepts = [&](AVCodecID id) {
    if (is_isobmff(container) && type == AVMEDIA_TYPE_AUDIO) {
      return mp4_audio_copyable(id);
    }
    const int answer = avformat_query_codec(out->oformat, id, FF_COMPLIANCE_NORMAL);
    return answer != 0; // negative: the muxer keeps no list and takes what it is given
  };

  if (type == AVMEDIA_TYPE_AUDIO) {
    const bool copy = lower(o.audio) == "copy" && container_accepts(par->codec_id);
    s->mode = copy ? CarriedStream::Mode::Copy : CarriedStream::Mode::TranscodeAudio;
  } else {
    if (container_accepts(par->codec_id)) {
      s->mode = CarriedStream::Mode::Copy;
    } else if (is_text_subtitle(par->codec_id)) {
      s->mode = CarriedStream::Mode::ConvertSubtitle;
    } else {
      throw Error(
          ErrorKind::Option,
          kMuxStage,
          std::string("bitmap subtitles (") + avcodec_get_name(par->codec_id) + ") cannot be stored in " +
              container);
    }
  }

  if (s->mode != CarriedStream::Mode::Copy) {
    const AVCodec* decoder = avcodec_find_decoder(par->codec_id);
    if (decoder == nullptr) {
      throw Error(ErrorKind::Option, kMuxStage, "no decoder to convert it");
    }
    s->decoder.reset(avcodec_alloc_context3(decoder));
    SBSCONV_CHECK(s->decoder != nullptr, Internal, kMuxStage, "avcodec_alloc_context3 failed");
    SBSCONV_CHECK_AV(
        avcodec_parameters_to_context(s->decoder.get(), par), Encode, kMuxStage, "decoder set-up", o.source);
    s->decoder->pkt_timebase = in->time_base;
    int status = avcodec_open2(s->decoder.get(), decoder, nullptr);
    if (status < 0) {
      throw Error(ErrorKind::Option, kMuxStage, "cannot decode it: " + av_error_string(status));
    }
  }

  if (s->mode == CarriedStream::Mode::TranscodeAudio) {
    const AVCodec* aac = avcodec_find_encoder(AV_CODEC_ID_AAC);
    if (aac == nullptr) {
      throw Error(ErrorKind::Option, kMuxStage, "this FFmpeg has no AAC encoder");
    }
    int rate = s->decoder->sample_rate;
    if (std::find(std::begin(kAacRates), std::end(kAacRates), rate) == std::end(kAacRates) ||
        !encoder_supports_sample_rate(aac, rate)) {
      rate = 48000;
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      UniqueAVCodecContext context(avcodec_alloc_context3(aac));
      SBSCONV_CHECK(context != nullptr, Internal, kMuxStage, "avcodec_alloc_context3 failed");
      int channels = 0;
      if (attempt == 0) {
        channels = copy_channel_layout(context.get(), s->decoder.get());
      } else {
        UniqueAVCodecContext stereo(avcodec_alloc_context3(nullptr));
#if SBSCONV_FFMPEG_HAS_CH_LAYOUT
        av_channel_layout_default(&stereo->ch_layout, 2);
#else
        stereo->channels = 2;
        stereo->channel_layout = AV_CH_LAYOUT_STEREO;
#endif
        channels = copy_channel_layout(context.get(), stereo.get());
      }
      context->sample_rate = rate;
      context->sample_fmt = AV_SAMPLE_FMT_FLTP;
      context->time_base = AVRational{1, rate};
      context->bit_rate = channels <= 1 ? 96000 : (channels == 2 ? 160000 : 64000LL * channels);
      if (out->oformat->flags & AVFMT_GLOBALHEADER) {
        context->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
      }
      if (avcodec_open2(context.get(), aac, nullptr) >= 0) {
        s->encoder = std::move(context);
        break;
      }
    }
    if (!s->encoder) {
      throw Error(ErrorKind::Option, kMuxStage, "the AAC encoder refused its channel layout");
    }
    s->resampler = make_resampler(s->encoder.get(), s->decoder.get());
    if (!s->resampler) {
      throw Error(ErrorKind::Option, kMuxStage, "cannot set up resampling to AAC");
    }
    s->frame_size = s->encoder->frame_size > 0 ? s->encoder->frame_size : 1024;
#if SBSCONV_FFMPEG_HAS_CH_LAYOUT
    const int channels = s->encoder->ch_layout.nb_channels;
#else
    const int channels = s->encoder->channels;
#endif
    s->fifo.reset(av_audio_fifo_alloc(s->encoder->sample_fmt, channels, s->frame_size * 4));
    s->decoded = make_frame();
    s->encoded = make_frame();
    what = std::string("-> aac ") + std::to_string(s->encoder->bit_rate / 1000) + " kb/s";
  } else if (s->mode == CarriedStream::Mode::ConvertSubtitle) {
    const AVCodecID target = is_isobmff(container) ? AV_CODEC_ID_MOV_TEXT : AV_CODEC_ID_SUBRIP;
    const AVCodec* encoder = avcodec_find_encoder(target);
    if (encoder == nullptr) {
      throw Error(ErrorKind::Option, kMuxStage, "this FFmpeg has no subtitle encoder for the container");
    }
    UniqueAVCodecContext context(avcodec_alloc_context3(encoder));
    SBSCONV_CHECK(context != nullptr, Internal, kMuxStage, "avcodec_alloc_context3 failed");
    context->time_base = AVRational{1, 1000};
    if (s->decoder->subtitle_header != nullptr && s->decoder->subtitle_header_size > 0) {
      context->subtitle_header = static_cast<uint8_t*>(av_mallocz(s->decoder->subtitle_header_size + 1));
      std::memcpy(context->subtitle_header, s->decoder->subtitle_header, s->decoder->subtitle_header_size);
      context->subtitle_header_size = s->decoder->subtitle_header_size;
    }
    const int status = avcodec_open2(context.get(), encoder, nullptr);
    if (status < 0) {
      throw Error(ErrorKind::Option, kMuxStage, "cannot convert it: " + av_error_string(status));
    }
    s->encoder = std::move(context);
    what = std::string("-> ") + encoder->name;
  } else {
    what = "copied";
  }

  s->out = avformat_new_stream(out.get(), nullptr);
  SBSCONV_CHECK(s->out != nullptr, Internal, kMuxStage, "avformat_new_stream failed");
  if (s->mode == CarriedStream::Mode::Copy) {
    SBSCONV_CHECK_AV(
        avcodec_parameters_copy(s->out->codecpar, par), Encode, kMuxStage, "stream copy", o.source);
    s->out->codecpar->codec_tag = 0; // let the muxer choose the tag for its container
    s->out->time_base = in->time_base;
  } else {
    SBSCONV_CHECK_AV(
        avcodec_parameters_from_context(s->out->codecpar, s->encoder.get()),
        Encode,
        kMuxStage,
        "stream set-up",
        o.source);
    s->out->time_base = s->encoder->time_base;
  }
  av_dict_copy(&s->out->metadata, in->metadata, 0);
  s->out->disposition = in->disposition;
  s->held = make_packet();
  notes.push_back(stream_label(in) + ": " + what);
  carried[in->index] = std::move(s);
}

void MediaWriter::Impl::write_header() {
  AVDictionary* raw = nullptr;
  if (is_isobmff(container)) {
    av_dict_set(&raw, "movflags", "+faststart", 0);
  }
  if (!o.stereo.empty() && is_isobmff(container)) {
    // The st3d box is written only at this compliance level.
    out->strict_std_compliance = FF_COMPLIANCE_UNOFFICIAL;
  }
  UniqueAVDictionary options(raw);
  clear_last_ffmpeg_message();
  int status = avio_open(&out->pb, temp_path.c_str(), AVIO_FLAG_WRITE);
  if (status < 0) {
    fail(ErrorKind::Output, kMuxStage, "cannot create the output file", status);
  }
  AVDictionary* pass = options.release();
  status = avformat_write_header(out.get(), &pass);
  options.reset(pass);
  if (status < 0) {
    fail(ErrorKind::Output, kMuxStage, "cannot write the " + container + " header", status);
  }
  header_written = true;
  // The muxer may have changed the stream time bases; recompute the carried origins.
  for (auto& s : carried) {
    if (s) {
      s->origin = av_rescale_q(
          static_cast<int64_t>(std::llround(o.time_origin * AV_TIME_BASE)),
          AV_TIME_BASE_Q,
          s->out->time_base);
    }
  }
}

void MediaWriter::Impl::mux(AVPacket* pkt, AVStream* stream) {
  pkt->stream_index = stream->index;
  const int status = av_interleaved_write_frame(out.get(), pkt);
  if (status < 0) {
    fail(ErrorKind::Output, kMuxStage, "cannot write to the output file", status);
  }
}

void MediaWriter::Impl::encode(AVFrame* input) {
  clear_last_ffmpeg_message();
  int status = avcodec_send_frame(enc.get(), input);
  if (status < 0) {
    fail(ErrorKind::Encode, kStage, encoder_name + " rejected a frame", status);
  }
  while (true) {
    status = avcodec_receive_packet(enc.get(), packet.get());
    if (status == AVERROR(EAGAIN) || status == AVERROR_EOF) {
      return;
    }
    if (status < 0) {
      fail(ErrorKind::Encode, kStage, encoder_name + " failed", status);
    }
    PacketUnref unref(packet.get());
    av_packet_rescale_ts(packet.get(), enc->time_base, video->time_base);
    const int64_t ts = packet->dts != AV_NOPTS_VALUE ? packet->dts : packet->pts;
    if (source) {
      pull_source(ts * av_q2d(video->time_base), false);
    }
    mux(packet.get(), video);
  }
}

void MediaWriter::Impl::pull_source(double until_seconds, bool final_pass) {
  while (!source_eof) {
    if (!source_pending) {
      const int status = av_read_frame(source.get(), source_packet.get());
      if (status < 0) {
        if (status != AVERROR_EOF) {
          warnings.push_back(
              "reading audio/subtitles from the source stopped early: " + av_error_string(status));
        }
        source_eof = true;
        return;
      }
      if (source_packet->stream_index < 0 ||
          source_packet->stream_index >= static_cast<int>(carried.size()) ||
          !carried[source_packet->stream_index]) {
        av_packet_unref(source_packet.get());
        continue;
      }
      source_pending = true;
    }
    CarriedStream& s = *carried[source_packet->stream_index];
    int64_t ts = source_packet->pts != AV_NOPTS_VALUE ? source_packet->pts : source_packet->dts;
    const double seconds = ts == AV_NOPTS_VALUE ? -1e300 : ts * av_q2d(s.in->time_base) - o.time_origin;
    if (seconds >= until_seconds) {
      if (!final_pass) {
        return; // keep it for later
      }
      // Past the end. Interleaving skew means other streams may still have packets before
      // the end a little further on; stop after a generous margin.
      av_packet_unref(source_packet.get());
      source_pending = false;
      if (seconds > until_seconds + 10.0) {
        source_eof = true;
        return;
      }
      continue;
    }
    process_source_packet(source_packet.get(), until_seconds, final_pass);
    av_packet_unref(source_packet.get());
    source_pending = false;
  }
}

void MediaWriter::Impl::process_source_packet(AVPacket* pkt, double /*end_seconds*/, bool /*final_pass*/) {
  CarriedStream& s = *carried[pkt->stream_index];
  switch (s.mode) {
    case CarriedStream::Mode::TranscodeAudio:
      transcode_audio(s, pkt);
      // Encode what lies before the video written so far; the rest waits for finish().
      encode_audio(
          s,
          av_rescale_q(last_end, video_tb, s.encoder->time_base),
          false);
      return;
    case CarriedStream::Mode::ConvertSubtitle:
      convert_subtitle(s, pkt, std::numeric_limits<int64_t>::max());
      return;
    case CarriedStream::Mode::Copy:
      break;
  }
  av_packet_rescale_ts(pkt, s.in->time_base, s.out->time_base);
  if (pkt->pts != AV_NOPTS_VALUE) {
    pkt->pts -= s.origin;
  }
  if (pkt->dts != AV_NOPTS_VALUE) {
    pkt->dts -= s.origin;
  }
  // When the output starts part-way into the source, packets entirely before its start are
  // dropped (one straddling zero is kept; the MP4 muxer writes an edit list for its lead-in).
  // From the source's own start everything is kept, encoder priming packets included.
  if (trim_start && pkt->pts != AV_NOPTS_VALUE && pkt->duration > 0 &&
      pkt->pts + pkt->duration <= 0) {
    return;
  }
  hold(s, pkt);
}

void MediaWriter::Impl::hold(CarriedStream& s, AVPacket* pkt) {
  // A subtitle shown past the window's end is cut there (audio packets are short; only the
  // last one can reach past the end, and finish_carried trims it).
  const bool subtitle = s.in->codecpar->codec_type == AVMEDIA_TYPE_SUBTITLE;
  if (subtitle && pkt->pts != AV_NOPTS_VALUE && pkt->pts < 0 && pkt->duration > 0) {
    // Shown across the output's start: keep the part after it (subtitle tracks have no
    // edit list to hide a lead-in).
    pkt->duration += pkt->pts;
    pkt->pts = 0;
    pkt->dts = 0;
  }
  if (o.time_end && subtitle && pkt->pts != AV_NOPTS_VALUE && pkt->duration > 0) {
    const int64_t end = static_cast<int64_t>(
        std::floor((*o.time_end - o.time_origin) / av_q2d(s.out->time_base)));
    if (pkt->pts + pkt->duration > end) {
      pkt->duration = std::max<int64_t>(1, end - pkt->pts);
    }
  }
  if (s.has_held) {
    mux(s.held.get(), s.out);
    av_packet_unref(s.held.get());
  }
  av_packet_move_ref(s.held.get(), pkt);
  s.has_held = true;
}

void MediaWriter::Impl::transcode_audio(CarriedStream& s, AVPacket* pkt) {
  int status = avcodec_send_packet(s.decoder.get(), pkt);
  if (status < 0 && status != AVERROR(EAGAIN)) {
    warnings.push_back(stream_label(s.in) + ": a corrupt audio packet was skipped");
    return;
  }
  while (true) {
    status = avcodec_receive_frame(s.decoder.get(), s.decoded.get());
    if (status < 0) {
      return;
    }
    FrameUnref unref(s.decoded.get());
    AVFrame* f = s.decoded.get();
    const int rate = s.encoder->sample_rate;
    int64_t start = AV_NOPTS_VALUE;
    if (f->best_effort_timestamp != AV_NOPTS_VALUE) {
      start = av_rescale_q(f->best_effort_timestamp, s.in->time_base, AVRational{1, rate}) -
          av_rescale_q(
                  static_cast<int64_t>(std::llround(o.time_origin * AV_TIME_BASE)),
                  AV_TIME_BASE_Q,
                  AVRational{1, rate});
    }
    const int capacity = swr_get_out_samples(s.resampler.get(), f->nb_samples);
    if (capacity <= 0) {
      continue;
    }
    uint8_t** buffers = nullptr;
#if SBSCONV_FFMPEG_HAS_CH_LAYOUT
    const int channels = s.encoder->ch_layout.nb_channels;
#else
    const int channels = s.encoder->channels;
#endif
    if (av_samples_alloc_array_and_samples(&buffers, nullptr, channels, capacity, s.encoder->sample_fmt, 0) < 0) {
      fail(ErrorKind::Encode, kMuxStage, "out of memory resampling audio", AVERROR(ENOMEM));
    }
    const int converted = swr_convert(
        s.resampler.get(), buffers, capacity, const_cast<const uint8_t**>(f->extended_data), f->nb_samples);
    if (converted > 0) {
      int skip = 0;
      if (!s.started) {
        s.started = true;
        const int64_t first = start == AV_NOPTS_VALUE ? 0 : start;
        // Samples before the output's zero are cut; a late start keeps its offset.
        s.next_sample = std::max<int64_t>(0, first);
        if (first < 0) {
          skip = static_cast<int>(std::min<int64_t>(-first, converted));
        }
      }
      if (converted > skip) {
        uint8_t* shifted[AV_NUM_DATA_POINTERS] = {nullptr};
        const int bytes = av_get_bytes_per_sample(s.encoder->sample_fmt);
        const bool planar = av_sample_fmt_is_planar(s.encoder->sample_fmt);
        for (int c = 0; c < (planar ? channels : 1); ++c) {
          shifted[c] = buffers[c] + static_cast<ptrdiff_t>(skip) * bytes * (planar ? 1 : channels);
        }
        av_audio_fifo_write(s.fifo.get(), reinterpret_cast<void**>(shifted), converted - skip);
      }
    }
    av_freep(&buffers[0]);
    av_freep(&buffers);
  }
}

void MediaWriter::Impl::send_audio_frame(CarriedStream& s, AVFrame* f) {
  int status = avcodec_send_frame(s.encoder.get(), f);
  if (status < 0 && status != AVERROR_EOF) {
    fail(ErrorKind::Encode, kMuxStage, "the AAC encoder failed", status);
  }
  UniqueAVPacket pkt = make_packet();
  while (avcodec_receive_packet(s.encoder.get(), pkt.get()) >= 0) {
    av_packet_rescale_ts(pkt.get(), s.encoder->time_base, s.out->time_base);
    mux(pkt.get(), s.out);
    av_packet_unref(pkt.get());
  }
}

void MediaWriter::Impl::encode_audio(CarriedStream& s, int64_t limit_sample, bool final) {
  while (true) {
    const int available = av_audio_fifo_size(s.fifo.get());
    int64_t room = limit_sample - s.next_sample;
    int n = std::min<int64_t>({static_cast<int64_t>(available), static_cast<int64_t>(s.frame_size), room});
    if (n <= 0 || (!final && n < s.frame_size)) {
      break;
    }
    AVFrame* f = s.encoded.get();
    av_frame_unref(f);
    if (prepare_audio_frame(f, s.encoder.get(), n) < 0) {
      fail(ErrorKind::Encode, kMuxStage, "out of memory encoding audio", AVERROR(ENOMEM));
    }
    av_audio_fifo_read(s.fifo.get(), reinterpret_cast<void**>(f->data), n);
    f->pts = s.next_sample;
    s.next_sample += n;
    send_audio_frame(s, f);
    if (n < s.frame_size) {
      break; // a short frame can only be the last one
    }
  }
  if (final) {
    send_audio_frame(s, nullptr);
  }
}

void MediaWriter::Impl::convert_subtitle(CarriedStream& s, AVPacket* pkt, int64_t /*end_ts*/) {
  SubtitleHolder subtitle;
  int got = 0;
  if (decode_subtitle(s.decoder.get(), subtitle, &got, pkt) < 0 || !got) {
    return;
  }
  if (subtitle.get()->num_rects == 0) {
    return;
  }
  std::vector<uint8_t> buffer(kSubtitleBufferSize);
  const int size =
      avcodec_encode_subtitle(s.encoder.get(), buffer.data(), static_cast<int>(buffer.size()), subtitle.get());
  if (size <= 0) {
    return;
  }
  UniqueAVPacket converted = make_packet();
  if (av_new_packet(converted.get(), size) < 0) {
    fail(ErrorKind::Encode, kMuxStage, "out of memory converting subtitles", AVERROR(ENOMEM));
  }
  std::memcpy(converted->data, buffer.data(), size);
  int64_t duration = pkt->duration;
  if (duration <= 0 && subtitle.get()->end_display_time > 0) {
    duration = av_rescale_q(subtitle.get()->end_display_time, AVRational{1, 1000}, s.in->time_base);
  }
  converted->pts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
  converted->dts = converted->pts;
  converted->duration = duration;
  av_packet_rescale_ts(converted.get(), s.in->time_base, s.out->time_base);
  converted->pts -= s.origin;
  converted->dts -= s.origin;
  if (trim_start && converted->pts + converted->duration <= 0) {
    return;
  }
  hold(s, converted.get());
}

void MediaWriter::Impl::finish_carried(double end_seconds) {
  pull_source(end_seconds, true);
  for (auto& s : carried) {
    if (!s) {
      continue;
    }
    const int64_t end_ts = static_cast<int64_t>(std::floor(end_seconds / av_q2d(s->out->time_base)));
    if (s->mode == CarriedStream::Mode::TranscodeAudio) {
      encode_audio(*s, static_cast<int64_t>(std::llround(end_seconds * s->encoder->sample_rate)), true);
      continue;
    }
    if (s->has_held) {
      AVPacket* last = s->held.get();
      // The last packet ends with the video: its payload is kept bit-exact, its stated
      // duration is shortened so the stream does not outlast the picture.
      if (last->pts != AV_NOPTS_VALUE && last->duration > 0 && last->pts + last->duration > end_ts) {
        last->duration = std::max<int64_t>(1, end_ts - last->pts);
      }
      mux(last, s->out);
      av_packet_unref(last);
      s->has_held = false;
    }
  }
}

// ---- MediaWriter ---------------------------------------------------------------------------

MediaWriter::MediaWriter(WriterOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->open();
}

MediaWriter::~MediaWriter() = default;

void MediaWriter::write(const at::Tensor& frames_in, const std::vector<int64_t>& pts) {
  Impl& d = *impl_;
  SBSCONV_CHECK(!d.done && !d.aborted, Option, kStage, "the writer is already finished");
  SBSCONV_CHECK(
      frames_in.dim() == 4 && frames_in.size(1) == 3 && frames_in.scalar_type() == at::kByte,
      Option,
      kStage,
      "frames must be a uint8 tensor [N,3,H,W]");
  SBSCONV_CHECK(
      frames_in.size(2) == d.o.height && frames_in.size(3) == d.o.width,
      Option,
      kStage,
      "frames are " + std::to_string(frames_in.size(3)) + "x" + std::to_string(frames_in.size(2)) +
          ", the writer was opened for " + std::to_string(d.o.width) + "x" + std::to_string(d.o.height));
  SBSCONV_CHECK(
      static_cast<int64_t>(pts.size()) == frames_in.size(0),
      Option,
      kStage,
      "one pts per frame is needed");
  at::Tensor frames = frames_in;
  if (!d.device_frames && !frames.is_cpu()) {
    frames = frames.to(at::kCPU);
  }
  const int64_t nominal =
      std::max<int64_t>(1, av_rescale_q(1, AVRational{d.o.frame_rate.den, d.o.frame_rate.num}, d.enc->time_base));
  for (int64_t i = 0; i < frames.size(0); ++i) {
    int64_t t = pts[i] - d.video_origin;
    if (d.last_pts != AV_NOPTS_VALUE && t <= d.last_pts) {
      t = d.last_pts + 1;
    }
    d.last_pts = t;
    d.last_end = std::max(d.last_end, t + nominal);
    AVFrame* f = d.frame.get();
    if (d.device_frames) {
      av_frame_unref(f);
      SBSCONV_CHECK_AV(
          av_hwframe_get_buffer(d.hw_frames.get(), f, 0), Encode, kStage, "no CUDA frame", d.o.path);
      if (!device_rgb_to_yuv(frames[i], f)) {
        d.fail(ErrorKind::Encode, kStage, "cannot convert frames on the GPU", 0);
      }
    } else {
      if (f->data[0] == nullptr) {
        f->format = d.enc->pix_fmt;
        f->width = d.enc->width;
        f->height = d.enc->height;
        SBSCONV_CHECK_AV(av_frame_get_buffer(f, 0), Encode, kStage, "frame allocation", d.o.path);
      }
      SBSCONV_CHECK_AV(av_frame_make_writable(f), Encode, kStage, "frame allocation", d.o.path);
      d.yuv->convert(frames[i], f);
    }
    f->pts = t;
    f->color_primaries = AVCOL_PRI_BT709;
    f->color_trc = AVCOL_TRC_BT709;
    f->colorspace = AVCOL_SPC_BT709;
    f->color_range = AVCOL_RANGE_MPEG;
    d.encode(f);
    ++d.frames;
  }
  if (d.source) {
    // Carried streams keep up with the video so the interleaving buffer stays small.
    d.pull_source(d.last_pts * av_q2d(d.video_tb), false);
  }
}

WriterResult MediaWriter::finish() {
  Impl& d = *impl_;
  SBSCONV_CHECK(!d.done && !d.aborted, Option, kStage, "the writer is already finished");
  try {
    if (d.frames == 0) {
      throw Error(ErrorKind::Encode, kStage, "no frames were written", d.o.path);
    }
    if (d.enc) {
      d.encode(nullptr); // drain the encoder
    }
    if (d.source) {
      double end = d.last_end * av_q2d(d.video_tb);
      if (d.o.time_end) {
        end = std::min(end, *d.o.time_end - d.o.time_origin);
      }
      d.finish_carried(end);
    }
    clear_last_ffmpeg_message();
    int status = av_write_trailer(d.out.get());
    if (status < 0) {
      d.fail(ErrorKind::Output, kMuxStage, "cannot finish the output file", status);
    }
    status = avio_closep(&d.out->pb);
    if (status < 0) {
      d.fail(ErrorKind::Output, kMuxStage, "cannot close the output file", status);
    }
    d.out.reset();
    d.source.reset();
    std::error_code ec;
    fs::rename(d.temp_path, d.final_path, ec);
    if (ec) {
      throw Error(
          ErrorKind::Output, kMuxStage, "cannot rename the finished file: " + ec.message(), d.o.path);
    }
    d.done = true;
  } catch (...) {
    d.aborted = true;
    d.discard();
    throw;
  }
  WriterResult result;
  result.path = d.final_path.string();
  result.encoder = d.encoder_name;
  result.skipped_encoders = d.skipped;
  result.frames = d.frames;
  result.streams = d.notes;
  result.warnings = d.warnings;
  return result;
}

void MediaWriter::abort() {
  impl_->aborted = true;
  impl_->discard();
}

void MediaWriter::copy_segments() {
  Impl& d = *impl_;
  SBSCONV_CHECK(!d.o.video_segments.empty(), Option, kStage, "the writer was not opened to copy segments");
  try {
    d.copy_segments();
  } catch (...) {
    d.aborted = true;
    d.discard();
    throw;
  }
}

const std::string& MediaWriter::encoder_name() const {
  return impl_->encoder_name;
}

const std::vector<std::string>& MediaWriter::skipped_encoders() const {
  return impl_->skipped;
}

} // namespace sbsconv
