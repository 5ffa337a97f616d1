#include "sbsconv/media/MediaWriter.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "sbsconv/common/DurableFile.h"
#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/CarriedStreams.h"
#include "sbsconv/media/EncoderSelection.h"
#include "sbsconv/media/InputFile.h"
#include "sbsconv/media/MvHevcEncoder.h"
#include "sbsconv/media/OutputContainer.h"
#include "sbsconv/media/SegmentAssembler.h"
#include "sbsconv/media/VideoEncoder.h"

namespace fs = std::filesystem;

namespace sbsconv {

// The writer is a façade over one room per job: EncoderSelection (which encoder, opened
// how), VideoEncoder (RGB frames -> packets), SegmentAssembler (copy mode: packets from
// earlier segments), CarriedStreams (the source's audio and subtitles). It owns the output
// file itself: the temporary name, the header, the interleaving of the video with the
// carried streams, the trailer and the final durable rename (Note [Durable files]).

namespace {

constexpr const char* kStage = "encode";
constexpr const char* kMuxStage = "mux";

// ".<output name>.sbsconv-": every temporary of that output starts so, then "<pid>.part".
std::string temporary_prefix_for(const fs::path& final_path) {
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on "." + string.
  std::string name = ".";
  name += final_path.filename().string();
  name += ".sbsconv-";
  return name;
}

void set_extradata(AVCodecParameters* par, const std::string& bytes) {
  av_freep(&par->extradata);
  par->extradata_size = 0;
  par->extradata = static_cast<uint8_t*>(av_mallocz(bytes.size() + AV_INPUT_BUFFER_PADDING_SIZE));
  SBSCONV_CHECK(par->extradata != nullptr, Internal, kMuxStage, "out of memory");
  std::memcpy(par->extradata, bytes.data(), bytes.size());
  par->extradata_size = static_cast<int>(bytes.size());
}

fs::path temporary_path_for(const fs::path& final_path) {
  return fs::path(temporary_path(final_path.string()));
}

} // namespace

std::string temporary_path(const std::string& output) {
  const fs::path final_path(output);
  const fs::path dir = final_path.parent_path();
  const std::string name = temporary_prefix_for(final_path) + std::to_string(::getpid()) + ".part";
  return (dir.empty() ? fs::path(name) : dir / name).string();
}

int remove_abandoned_temporaries(const std::string& output) {
  const fs::path out(output);
  const fs::path folder = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  const std::string prefix = temporary_prefix_for(out);
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > prefix.size() + 5 && name.compare(0, prefix.size(), prefix) == 0 &&
        name.compare(name.size() - 5, 5, ".part") == 0) {
      // a file, or the folder of an image-sequence export (DepthWriter)
      if (entry.is_directory(ec) ? fs::remove_all(entry.path(), ec) > 0 : fs::remove(entry.path(), ec)) {
        ++removed;
      }
    }
  }
  return removed;
}

struct MediaWriter::Impl {
  WriterOptions o;
  std::string container;
  fs::path final_path;
  fs::path temp_path;
  UniqueOutputFormatContext out;
  AVStream* video = nullptr;
  std::unique_ptr<VideoEncoder> encoder; // encoding mode
  std::unique_ptr<MvHevcEncoder> spatial; // encoding mode, MV-HEVC (the header waits for it)
  std::string lhvc; // spatial video in MP4/MOV: the second view's parameter sets, beside hvcC
  std::unique_ptr<SegmentAssembler> assembler; // copy mode
  std::unique_ptr<CarriedStreams> carried; // when a source is given
  std::string encoder_name;
  std::vector<std::string> skipped;
  std::vector<std::string> warnings;
  StreamParams video_params;
  bool stereo_side_data = false; // an st3d box is to be written
  bool done = false; // renamed into place
  bool aborted = false;

  explicit Impl(WriterOptions options) : o(std::move(options)) {}
  ~Impl() {
    discard();
  }

  void validate();
  void open();
  void open_spatial();
  void tag_stereo();
  // Note [Editing ISO-BMFF files]: the boxes added to the video's sample entry after muxing:
  // Apple's (MP4/MOV), and in QuickTime files Google's, which FFmpeg's muxer writes only in MP4
  // mode. Empty when nothing is added.
  std::string sample_entry_boxes() const {
    std::string boxes;
    boxes += lhvc;
    if (container == "mov") {
      const int st3d = o.stereo == "sbs" ? 2 : o.stereo == "tb" ? 1 : 0;
      boxes += google_stereo_boxes(st3d, o.vr180);
    }
    if (o.apple && is_isobmff(container)) {
      boxes += apple_stereo_boxes(*o.apple);
    }
    return boxes;
  }
  void write_header();
  // Every video packet goes through here: the carried streams are brought up to its time
  // first, so the muxer's interleaving buffer stays small.
  void mux_video(AVPacket* packet, AVRational time_base);
  void check_cancel() const;
  void discard();

  // The video written (or copied) so far, in video_time_base().
  AVRational video_time_base() const {
    return encoder ? encoder->time_base() : spatial ? spatial->time_base() : assembler->time_base();
  }
  int64_t video_last_pts() const {
    return encoder ? encoder->last_pts() : spatial ? spatial->last_pts() : assembler->last_pts();
  }
  int64_t video_end() const {
    return encoder ? encoder->end() : spatial ? spatial->end() : assembler->end();
  }
  int64_t frames() const {
    return encoder ? encoder->frames() : spatial ? spatial->frames() : assembler->frames();
  }
};

void MediaWriter::Impl::discard() {
  spatial.reset(); // stops x265, removes its files
  out.reset();
  carried.reset();
  if (!done && !temp_path.empty()) {
    std::error_code ec;
    fs::remove(temp_path, ec);
  }
}

void MediaWriter::Impl::check_cancel() const {
  if (o.cancel != nullptr && o.cancel->load()) {
    throw Error(ErrorKind::Cancelled, "assemble", "cancelled");
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
    validate_frame_format(o);
  }
  validate_encoder_settings(o);
  const std::string audio = lowercase(o.audio);
  if (audio != "copy" && audio != "aac" && audio != "none") {
    throw Error(ErrorKind::Option, "open output", "audio must be 'copy', 'aac' or 'none'", o.path);
  }
  const std::string subs = lowercase(o.subtitles);
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
  temp_path = temporary_path_for(final_path);

  AVFormatContext* raw = nullptr;
  const int status =
      avformat_alloc_output_context2(&raw, nullptr, muxer_for(container), temp_path.c_str());
  if (status < 0) {
    throw_av_error(ErrorKind::Output, kMuxStage, "cannot create the " + container + " muxer", o.path, status);
  }
  SBSCONV_CHECK(raw != nullptr, Internal, kMuxStage, "avformat_alloc_output_context2 gave no context");
  out.reset(raw);

  video = avformat_new_stream(out.get(), nullptr);
  SBSCONV_CHECK(video != nullptr, Internal, kMuxStage, "avformat_new_stream failed");
  const AVRational sample_aspect = encoded_sample_aspect(o);
  if (o.spatial && o.video_segments.empty()) {
    open_spatial();
  } else if (!o.video_segments.empty()) {
    assembler = std::make_unique<SegmentAssembler>(o, video);
    encoder_name = o.encoder;
    AVRational& copied_aspect = video->codecpar->sample_aspect_ratio;
    if (o.sample_aspect.num > 0) {
      copied_aspect = sample_aspect;
    } else if (copied_aspect.num > 0 && copied_aspect.den > 0 && copied_aspect.num != copied_aspect.den) {
      video->sample_aspect_ratio = copied_aspect; // anamorphic segments stay anamorphic
    }
    video_params = stream_params_of(video->codecpar, assembler->encoder_tag());
    if (o.spatial && is_isobmff(container)) {
      // spatial segments keep both views' parameter sets; MP4/MOV splits them (hvcC, lhvC)
      AVCodecParameters* par = video->codecpar;
      const SpatialHeaders headers = split_spatial_headers(par->extradata, static_cast<size_t>(par->extradata_size));
      set_extradata(par, headers.extradata);
      lhvc = headers.lhvc;
    }
    if (!assembler->encoder_tag().empty()) {
      av_dict_set(&video->metadata, "encoder", assembler->encoder_tag().c_str(), 0);
    }
  } else {
    OpenedEncoder opened = open_video_encoder(o, (out->oformat->flags & AVFMT_GLOBALHEADER) != 0);
    encoder_name = opened.name;
    skipped = opened.skipped;
    warnings.insert(warnings.end(), opened.warnings.begin(), opened.warnings.end());
    const AVCodecContext* context = opened.context.get();
    SBSCONV_CHECK_AV(
        avcodec_parameters_from_context(video->codecpar, context),
        Encode,
        kMuxStage,
        "cannot describe the video stream",
        o.path);
    video->time_base = context->time_base;
    video->avg_frame_rate = context->framerate;
    video_params = stream_params_of(context, encoder_name);
    // Segments name their encoder (inspect_segment reads it back); MKV keeps it as a track
    // tag, MP4/MOV as the sample description's compressor name.
    av_dict_set(&video->metadata, "encoder", encoder_name.c_str(), 0);
    encoder = std::make_unique<VideoEncoder>(o, std::move(opened));
  }
  if (o.sample_aspect.num > 0) {
    // Both layers must agree, or avformat_write_header refuses the stream.
    video->sample_aspect_ratio = sample_aspect;
  }
  if (video->codecpar->codec_id == AV_CODEC_ID_HEVC && is_isobmff(container)) {
    // 'hvc1' (parameter sets in the sample description) is what QuickTime, the Vision Pro
    // and most headsets require; FFmpeg's default is 'hev1'.
    video->codecpar->codec_tag = MKTAG('h', 'v', 'c', '1');
  }
  tag_stereo();

  if (!o.source.empty()) {
    carried = std::make_unique<CarriedStreams>(o, container, out.get(), video);
  }
  for (const auto& [key, value] : o.metadata) {
    av_dict_set(&out->metadata, key.c_str(), value.c_str(), 0);
  }
  if (!spatial) {
    write_header(); // (spatial video: when x265 has given the parameter sets, in finish())
  }
}

void MediaWriter::Impl::open_spatial() {
  if (!is_isobmff(container) && container != "nut") { // (NUT: the segments of a resumable run)
    throw Error(ErrorKind::Option, "open output", "spatial video is written as MP4 or MOV", o.path);
  }
  std::string why;
  std::optional<MvHevcTool> tool = find_mvhevc_encoder(&why);
  if (!tool) {
    throw Error(ErrorKind::Encode, "open output", mvhevc_missing_message(why), o.path);
  }
  spatial = std::make_unique<MvHevcEncoder>(o, *tool, temp_path.string());
  encoder_name = spatial->name();
  AVCodecParameters* par = video->codecpar;
  par->codec_type = AVMEDIA_TYPE_VIDEO;
  par->codec_id = AV_CODEC_ID_HEVC;
  par->width = spatial->eye_width();
  par->height = spatial->eye_height();
  par->format = AV_PIX_FMT_YUV420P;
  par->color_primaries = AVCOL_PRI_BT709;
  par->color_trc = AVCOL_TRC_BT709;
  par->color_space = AVCOL_SPC_BT709;
  par->color_range = AVCOL_RANGE_MPEG;
  par->sample_aspect_ratio = encoded_sample_aspect(o);
  video->time_base = spatial->time_base();
  video->avg_frame_rate = AVRational{o.frame_rate.num, o.frame_rate.den};
  av_dict_set(&video->metadata, "encoder", encoder_name.c_str(), 0);
}

void MediaWriter::Impl::tag_stereo() {
  if (o.vr180) {
    if (attach_vr180_spherical(video)) {
      stereo_side_data = true;
    } else {
      warnings.push_back("this FFmpeg cannot tag the video as VR180 in " + container);
    }
  }
  if (o.stereo.empty()) {
    return;
  }
  const bool tb = o.stereo == "tb";
  const bool right_first = o.stereo == "sbs-rl";
  if (container == "mkv") {
    // matroskaenc turns this stream tag into the StereoMode element (right_left is value 11,
    // which demuxers report as side-by-side with the inverted flag).
    const char* mode = tb ? "top_bottom" : (right_first ? "right_left" : "left_right");
    av_dict_set(&video->metadata, "stereo_mode", mode, 0);
  } else if (right_first) {
    // st3d (and FFmpeg's side data without its inverted flag, which movenc ignores) can only
    // say "side by side, left eye first": tagging it would make every player swap the eyes.
    // A cross-eyed file is a deliberate choice, named _RL by headset_suffix: no tag, no
    // warning.
  } else if (attach_stereo3d(video, tb ? AV_STEREO3D_TOPBOTTOM : AV_STEREO3D_SIDEBYSIDE)) {
    stereo_side_data = true;
  } else {
    warnings.push_back("this FFmpeg cannot tag the stereo layout in " + container);
  }
}

void MediaWriter::Impl::write_header() {
  AVDictionary* raw = nullptr;
  if (is_isobmff(container) && sample_entry_boxes().empty()) {
    // (a file that gets boxes after muxing is put in faststart order by that edit)
    av_dict_set(&raw, "movflags", "+faststart", 0);
  }
  if (container == "nut") {
    // Segments end with their index: inspect_segment() relies on it (Note [Complete
    // segments] in SegmentAssembler.cpp). FFmpeg's default, stated so it stays that way.
    av_dict_set(&raw, "write_index", "1", 0);
  }
  if (stereo_side_data && is_isobmff(container)) {
    // The st3d box is written only at this compliance level.
    out->strict_std_compliance = FF_COMPLIANCE_UNOFFICIAL;
  }
  UniqueAVDictionary options(raw);
  clear_last_ffmpeg_message();
  int status = avio_open(&out->pb, temp_path.c_str(), AVIO_FLAG_WRITE);
  if (status < 0) {
    throw_av_error(ErrorKind::Output, kMuxStage, "cannot create the output file", o.path, status);
  }
  AVDictionary* pass = options.release();
  status = avformat_write_header(out.get(), &pass);
  options.reset(pass);
  if (status < 0) {
    throw_av_error(ErrorKind::Output, kMuxStage, "cannot write the " + container + " header", o.path, status);
  }
  if (carried) {
    carried->header_written();
  }
}

void MediaWriter::Impl::mux_video(AVPacket* packet, AVRational time_base) {
  av_packet_rescale_ts(packet, time_base, video->time_base);
  if (carried) {
    const int64_t ts = packet->dts != AV_NOPTS_VALUE ? packet->dts : packet->pts;
    carried->pull(ts * av_q2d(video->time_base), video_end(), video_time_base());
  }
  write_packet(out.get(), video, packet, o.path);
}

// ---- MediaWriter ---------------------------------------------------------------------------

MediaWriter::MediaWriter(WriterOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->open();
}

MediaWriter::~MediaWriter() = default;

void MediaWriter::write(const at::Tensor& frames, const std::vector<int64_t>& pts) {
  Impl& d = *impl_;
  SBSCONV_CHECK(!d.done && !d.aborted, Option, kStage, "the writer is already finished");
  if (d.spatial) {
    d.spatial->write(frames, pts); // muxed in finish(), when x265 has made the whole stream
    return;
  }
  SBSCONV_CHECK(d.encoder != nullptr, Option, kStage, "the writer was opened to copy segments");
  d.encoder->write(frames, pts, [&](AVPacket* packet, AVRational tb) { d.mux_video(packet, tb); });
  if (d.carried) {
    // Carried streams keep up with the video so the interleaving buffer stays small.
    d.carried->pull(
        d.encoder->last_pts() * av_q2d(d.encoder->time_base()), d.encoder->end(), d.encoder->time_base());
  }
}

void MediaWriter::copy_segments() {
  Impl& d = *impl_;
  SBSCONV_CHECK(!d.o.video_segments.empty(), Option, kStage, "the writer was not opened to copy segments");
  SBSCONV_CHECK(!d.done && !d.aborted, Option, kStage, "the writer is already finished");
  try {
    d.assembler->copy([&](AVPacket* packet, AVRational tb) { d.mux_video(packet, tb); });
  } catch (...) {
    d.aborted = true;
    d.discard();
    throw;
  }
}

WriterResult MediaWriter::finish() {
  Impl& d = *impl_;
  SBSCONV_CHECK(!d.done && !d.aborted, Option, kStage, "the writer is already finished");
  try {
    d.check_cancel();
    if (d.frames() == 0) {
      throw Error(ErrorKind::Encode, kStage, "no frames were written", d.o.path);
    }
    if (d.encoder) {
      d.encoder->flush([&](AVPacket* packet, AVRational tb) { d.mux_video(packet, tb); });
    }
    if (d.spatial) {
      const std::string headers = d.spatial->finish();
      AVCodecParameters* par = d.video->codecpar;
      if (is_isobmff(d.container)) {
        const SpatialHeaders split = split_spatial_headers(
            reinterpret_cast<const uint8_t*>(headers.data()), headers.size());
        set_extradata(par, split.extradata);
        d.lhvc = split.lhvc;
      } else {
        set_extradata(par, headers); // a segment keeps both views' (split when assembled)
      }
      d.write_header();
      d.video_params = stream_params_of(par, d.encoder_name);
      d.spatial->emit([&](AVPacket* packet, AVRational tb) { d.mux_video(packet, tb); });
    }
    if (d.carried) {
      double end = d.video_end() * av_q2d(d.video_time_base());
      if (d.o.time_end) {
        end = std::min(end, *d.o.time_end - d.o.time_origin);
      }
      d.carried->finish(end, d.video_end(), d.video_time_base());
      const auto& carried_warnings = d.carried->warnings();
      d.warnings.insert(d.warnings.end(), carried_warnings.begin(), carried_warnings.end());
    }
    d.check_cancel();
    clear_last_ffmpeg_message();
    int status = av_write_trailer(d.out.get());
    if (status < 0) {
      throw_av_error(ErrorKind::Output, kMuxStage, "cannot finish the output file", d.o.path, status);
    }
    status = avio_closep(&d.out->pb);
    if (status < 0) {
      throw_av_error(ErrorKind::Output, kMuxStage, "cannot close the output file", d.o.path, status);
    }
    d.out.reset();
    d.check_cancel();
    if (const std::string boxes = d.sample_entry_boxes(); !boxes.empty()) {
      // a second temporary of the same output, written with the moov first (this copy is the
      // faststart pass, which the muxer was told not to make), then the first is dropped
      const fs::path edited = fs::path(d.temp_path.string() + ".boxes.part");
      try {
        copy_with_sample_entry_boxes(d.temp_path.string(), edited.string(), boxes, d.o.cancel, /*moov_first=*/true);
      } catch (...) {
        std::error_code ec;
        fs::remove(edited, ec);
        throw;
      }
      std::error_code ec;
      fs::remove(d.temp_path, ec);
      d.temp_path = edited;
    }
    durable_rename(d.temp_path.string(), d.final_path.string(), kMuxStage);
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
  result.frames = d.frames();
  if (d.carried) {
    result.streams = d.carried->notes();
  }
  result.warnings = d.warnings;
  result.video_params = d.video_params;
  d.carried.reset();
  return result;
}

void MediaWriter::set_apple_field_of_view(double degrees) {
  if (impl_->o.apple) {
    impl_->o.apple->hfov_degrees = degrees;
  }
}

void MediaWriter::abort() {
  impl_->aborted = true;
  impl_->discard();
}

const std::string& MediaWriter::encoder_name() const {
  return impl_->encoder_name;
}

const std::vector<std::string>& MediaWriter::skipped_encoders() const {
  return impl_->skipped;
}

} // namespace sbsconv
