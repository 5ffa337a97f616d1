#include "sbsconv/media/CarriedStreams.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "sbsconv/common/Logging.h"
#include "sbsconv/media/InputFile.h"
#include "sbsconv/media/OutputContainer.h"

namespace sbsconv {

namespace {

constexpr const char* kStage = "mux";
constexpr int kSubtitleBufferSize = 1 << 20;

const int kAacRates[] = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050,
                         16000, 12000, 11025, 8000, 7350};

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

int64_t origin_in(double seconds, AVRational time_base) {
  return av_rescale_q(static_cast<int64_t>(std::llround(seconds * AV_TIME_BASE)), AV_TIME_BASE_Q, time_base);
}

} // namespace

// One audio or subtitle stream of the source, carried into the output.
struct CarriedStreams::Stream {
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

CarriedStreams::CarriedStreams(
    const WriterOptions& options,
    const std::string& container,
    AVFormatContext* out,
    AVStream* video)
    : options_(options), container_(container), out_(out) {
  const WriterOptions& o = options_;
  source_ = open_input(o.source, "open source", o.cancel);
  streams_.resize(source_->nb_streams);
  const double source_start = format_start_seconds(source_.get());
  for (unsigned i = 0; i < source_->nb_streams; ++i) {
    AVStream* in = source_->streams[i];
    const AVMediaType type = in->codecpar->codec_type;
    const bool wanted = (type == AVMEDIA_TYPE_AUDIO && lowercase(o.audio) != "none") ||
        (type == AVMEDIA_TYPE_SUBTITLE && lowercase(o.subtitles) != "none");
    in->discard = AVDISCARD_ALL;
    if (!wanted) {
      continue;
    }
    try {
      add(in);
    } catch (const Error& e) {
      warnings_.push_back(stream_label(in) + " dropped: " + e.reason());
      streams_[i].reset();
      continue;
    }
    if (streams_[i]) {
      in->discard = AVDISCARD_DEFAULT;
    }
  }
  trim_start_ = o.time_origin > source_start + 1e-6;
  if (trim_start_) {
    const int64_t ts = static_cast<int64_t>(std::floor(o.time_origin * AV_TIME_BASE));
    const int status = avformat_seek_file(source_.get(), -1, INT64_MIN, ts, ts, 0);
    if (status < 0) {
      log(LogLevel::Debug, "source seek failed; reading carried streams from the start");
    }
  }
  av_dict_copy(&out_->metadata, source_->metadata, AV_DICT_DONT_OVERWRITE);
  // The video stream keeps the source video stream's language.
  const int best = av_find_best_stream(source_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (best >= 0) {
    if (const AVDictionaryEntry* language =
            av_dict_get(source_->streams[best]->metadata, "language", nullptr, 0)) {
      av_dict_set(&video->metadata, "language", language->value, 0);
    }
  }
}

CarriedStreams::~CarriedStreams() = default;

void CarriedStreams::fail(ErrorKind kind, const std::string& what, int code) const {
  if (code < 0) {
    throw_av_error(kind, kStage, what, options_.path, code);
  }
  throw Error(kind, kStage, what, options_.path);
}

void CarriedStreams::add(AVStream* in) {
  const WriterOptions& o = options_;
  const AVCodecParameters* par = in->codecpar;
  const AVMediaType type = par->codec_type;
  auto s = std::make_unique<Stream>();
  s->in = in;
  std::string what;

  auto container_accepts = [&](AVCodecID id) {
    if (is_isobmff(container_) && type == AVMEDIA_TYPE_AUDIO) {
      return mp4_audio_copyable(id);
    }
    const int answer = avformat_query_codec(out_->oformat, id, FF_COMPLIANCE_NORMAL);
    return answer != 0; // negative: the muxer keeps no list and takes what it is given
  };

  if (type == AVMEDIA_TYPE_AUDIO) {
    const bool copy = lowercase(o.audio) == "copy" && container_accepts(par->codec_id);
    s->mode = copy ? Stream::Mode::Copy : Stream::Mode::TranscodeAudio;
  } else {
    if (container_accepts(par->codec_id)) {
      s->mode = Stream::Mode::Copy;
    } else if (is_text_subtitle(par->codec_id)) {
      s->mode = Stream::Mode::ConvertSubtitle;
    } else {
      throw Error(
          ErrorKind::Option,
          kStage,
          std::string("bitmap subtitles (") + avcodec_get_name(par->codec_id) + ") cannot be stored in " +
              container_);
    }
  }

  if (s->mode != Stream::Mode::Copy) {
    const AVCodec* decoder = avcodec_find_decoder(par->codec_id);
    if (decoder == nullptr) {
      throw Error(ErrorKind::Option, kStage, "no decoder to convert it");
    }
    s->decoder.reset(avcodec_alloc_context3(decoder));
    SBSCONV_CHECK(s->decoder != nullptr, Internal, kStage, "avcodec_alloc_context3 failed");
    SBSCONV_CHECK_AV(
        avcodec_parameters_to_context(s->decoder.get(), par), Encode, kStage, "decoder set-up", o.source);
    s->decoder->pkt_timebase = in->time_base;
    int status = avcodec_open2(s->decoder.get(), decoder, nullptr);
    if (status < 0) {
      throw Error(ErrorKind::Option, kStage, "cannot decode it: " + av_error_string(status));
    }
  }

  if (s->mode == Stream::Mode::TranscodeAudio) {
    const AVCodec* aac = avcodec_find_encoder(AV_CODEC_ID_AAC);
    if (aac == nullptr) {
      throw Error(ErrorKind::Option, kStage, "this FFmpeg has no AAC encoder");
    }
    int rate = s->decoder->sample_rate;
    if (std::find(std::begin(kAacRates), std::end(kAacRates), rate) == std::end(kAacRates) ||
        !encoder_supports_sample_rate(aac, rate)) {
      rate = 48000;
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      UniqueAVCodecContext context(avcodec_alloc_context3(aac));
      SBSCONV_CHECK(context != nullptr, Internal, kStage, "avcodec_alloc_context3 failed");
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
      if (out_->oformat->flags & AVFMT_GLOBALHEADER) {
        context->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
      }
      if (avcodec_open2(context.get(), aac, nullptr) >= 0) {
        s->encoder = std::move(context);
        break;
      }
    }
    if (!s->encoder) {
      throw Error(ErrorKind::Option, kStage, "the AAC encoder refused its channel layout");
    }
    s->resampler = make_resampler(s->encoder.get(), s->decoder.get());
    if (!s->resampler) {
      throw Error(ErrorKind::Option, kStage, "cannot set up resampling to AAC");
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
  } else if (s->mode == Stream::Mode::ConvertSubtitle) {
    const AVCodecID target = is_isobmff(container_) ? AV_CODEC_ID_MOV_TEXT : AV_CODEC_ID_SUBRIP;
    const AVCodec* encoder = avcodec_find_encoder(target);
    if (encoder == nullptr) {
      throw Error(ErrorKind::Option, kStage, "this FFmpeg has no subtitle encoder for the container");
    }
    UniqueAVCodecContext context(avcodec_alloc_context3(encoder));
    SBSCONV_CHECK(context != nullptr, Internal, kStage, "avcodec_alloc_context3 failed");
    context->time_base = AVRational{1, 1000};
    if (s->decoder->subtitle_header != nullptr && s->decoder->subtitle_header_size > 0) {
      context->subtitle_header = static_cast<uint8_t*>(av_mallocz(s->decoder->subtitle_header_size + 1));
      std::memcpy(context->subtitle_header, s->decoder->subtitle_header, s->decoder->subtitle_header_size);
      context->subtitle_header_size = s->decoder->subtitle_header_size;
    }
    const int status = avcodec_open2(context.get(), encoder, nullptr);
    if (status < 0) {
      throw Error(ErrorKind::Option, kStage, "cannot convert it: " + av_error_string(status));
    }
    s->encoder = std::move(context);
    what = std::string("-> ") + encoder->name;
  } else {
    what = "copied";
  }

  s->out = avformat_new_stream(out_, nullptr);
  SBSCONV_CHECK(s->out != nullptr, Internal, kStage, "avformat_new_stream failed");
  if (s->mode == Stream::Mode::Copy) {
    SBSCONV_CHECK_AV(
        avcodec_parameters_copy(s->out->codecpar, par), Encode, kStage, "stream copy", o.source);
    s->out->codecpar->codec_tag = 0; // let the muxer choose the tag for its container
    s->out->time_base = in->time_base;
  } else {
    SBSCONV_CHECK_AV(
        avcodec_parameters_from_context(s->out->codecpar, s->encoder.get()),
        Encode,
        kStage,
        "stream set-up",
        o.source);
    s->out->time_base = s->encoder->time_base;
  }
  av_dict_copy(&s->out->metadata, in->metadata, 0);
  s->out->disposition = in->disposition;
  s->held = make_packet();
  notes_.push_back(stream_label(in) + ": " + what);
  streams_[in->index] = std::move(s);
}

void CarriedStreams::header_written() {
  for (auto& s : streams_) {
    if (s) {
      s->origin = origin_in(options_.time_origin, s->out->time_base);
    }
  }
}

void CarriedStreams::pull(double until_seconds, int64_t video_end, AVRational video_time_base) {
  read_until(until_seconds, video_end, video_time_base, false);
}

void CarriedStreams::read_until(
    double until_seconds,
    int64_t video_end,
    AVRational video_time_base,
    bool final_pass) {
  while (!eof_) {
    if (final_pass && options_.cancel != nullptr && options_.cancel->load()) {
      throw Error(ErrorKind::Cancelled, "assemble", "cancelled");
    }
    if (!pending_) {
      const int status = av_read_frame(source_.get(), packet_.get());
      if (status < 0) {
        if (status != AVERROR_EOF) {
          warnings_.push_back(
              "reading audio/subtitles from the source stopped early: " + av_error_string(status));
        }
        eof_ = true;
        return;
      }
      if (packet_->stream_index < 0 || packet_->stream_index >= static_cast<int>(streams_.size()) ||
          !streams_[packet_->stream_index]) {
        av_packet_unref(packet_.get());
        continue;
      }
      pending_ = true;
    }
    Stream& s = *streams_[packet_->stream_index];
    int64_t ts = packet_->pts != AV_NOPTS_VALUE ? packet_->pts : packet_->dts;
    const double seconds =
        ts == AV_NOPTS_VALUE ? -1e300 : ts * av_q2d(s.in->time_base) - options_.time_origin;
    if (seconds >= until_seconds) {
      if (!final_pass) {
        return; // keep it for later
      }
      // Past the end. Interleaving skew means other streams may still have packets before
      // the end a little further on; stop after a generous margin.
      av_packet_unref(packet_.get());
      pending_ = false;
      if (seconds > until_seconds + 10.0) {
        eof_ = true;
        return;
      }
      continue;
    }
    process(packet_.get(), video_end, video_time_base);
    av_packet_unref(packet_.get());
    pending_ = false;
  }
}

void CarriedStreams::process(AVPacket* pkt, int64_t video_end, AVRational video_time_base) {
  Stream& s = *streams_[pkt->stream_index];
  switch (s.mode) {
    case Stream::Mode::TranscodeAudio:
      transcode_audio(s, pkt);
      // Encode what lies before the video written so far; the rest waits for finish().
      encode_audio(s, av_rescale_q(video_end, video_time_base, s.encoder->time_base), false);
      return;
    case Stream::Mode::ConvertSubtitle:
      convert_subtitle(s, pkt);
      return;
    case Stream::Mode::Copy:
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
  if (trim_start_ && pkt->pts != AV_NOPTS_VALUE && pkt->duration > 0 && pkt->pts + pkt->duration <= 0) {
    return;
  }
  hold(s, pkt);
}

void CarriedStreams::hold(Stream& s, AVPacket* pkt) {
  const WriterOptions& o = options_;
  // A subtitle shown past the window's end is cut there (audio packets are short; only the
  // last one can reach past the end, and finish() trims it).
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
    write_packet(out_, s.out, s.held.get(), o.path);
    av_packet_unref(s.held.get());
  }
  av_packet_move_ref(s.held.get(), pkt);
  s.has_held = true;
}

void CarriedStreams::transcode_audio(Stream& s, AVPacket* pkt) {
  int status = avcodec_send_packet(s.decoder.get(), pkt);
  if (status < 0 && status != AVERROR(EAGAIN)) {
    warnings_.push_back(stream_label(s.in) + ": a corrupt audio packet was skipped");
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
          origin_in(options_.time_origin, AVRational{1, rate});
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
      fail(ErrorKind::Encode, "out of memory resampling audio", AVERROR(ENOMEM));
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

void CarriedStreams::send_audio_frame(Stream& s, AVFrame* f) {
  int status = avcodec_send_frame(s.encoder.get(), f);
  if (status < 0 && status != AVERROR_EOF) {
    fail(ErrorKind::Encode, "the AAC encoder failed", status);
  }
  UniqueAVPacket pkt = make_packet();
  while (avcodec_receive_packet(s.encoder.get(), pkt.get()) >= 0) {
    av_packet_rescale_ts(pkt.get(), s.encoder->time_base, s.out->time_base);
    write_packet(out_, s.out, pkt.get(), options_.path);
    av_packet_unref(pkt.get());
  }
}

void CarriedStreams::encode_audio(Stream& s, int64_t limit_sample, bool final) {
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
      fail(ErrorKind::Encode, "out of memory encoding audio", AVERROR(ENOMEM));
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

void CarriedStreams::convert_subtitle(Stream& s, AVPacket* pkt) {
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
    fail(ErrorKind::Encode, "out of memory converting subtitles", AVERROR(ENOMEM));
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
  if (trim_start_ && converted->pts + converted->duration <= 0) {
    return;
  }
  hold(s, converted.get());
}

void CarriedStreams::finish(double end_seconds, int64_t video_end, AVRational video_time_base) {
  read_until(end_seconds, video_end, video_time_base, true);
  for (auto& s : streams_) {
    if (!s) {
      continue;
    }
    const int64_t end_ts = static_cast<int64_t>(std::floor(end_seconds / av_q2d(s->out->time_base)));
    if (s->mode == Stream::Mode::TranscodeAudio) {
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
      write_packet(out_, s->out, last, options_.path);
      av_packet_unref(last);
      s->has_held = false;
    }
  }
}

} // namespace sbsconv
