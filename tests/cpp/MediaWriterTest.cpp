// MediaWriter's rooms: encoder probing, segment inspection, cancellation of assembly, stereo
// tags and anamorphic output. (Round trips of pictures, odd sizes and bad options: MediaTest.)

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <chrono>
#include <random>
#include <thread>
#include <unistd.h>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/FFmpeg.h"
#include "sbsconv/media/EncoderSelection.h"
#include "sbsconv/media/MediaWriter.h"
#include "sbsconv/media/StreamParams.h"
#include "sbsconv/pipeline/SegmentEncoders.h"

namespace fs = std::filesystem;
using namespace sbsconv;

namespace {

constexpr double kOffset = 100.0; // as the engine's segments: every timestamp positive

fs::path scratch(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("sbsconv_writer_tests_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

// Moving gradients: something for the encoder to predict, the same on every run.
at::Tensor frames(int64_t first, int64_t n, int64_t h, int64_t w) {
  at::Tensor t = at::arange(first, first + n, at::kLong).view({n, 1, 1, 1});
  at::Tensor y = at::arange(h, at::kLong).view({1, 1, h, 1});
  at::Tensor x = at::arange(w, at::kLong).view({1, 1, 1, w});
  at::Tensor c = at::arange(3, at::kLong).view({1, 3, 1, 1});
  return ((x * 3 + y * 2 + t * 7 + c * 50) % 256).to(at::kByte);
}

std::vector<int64_t> pts_range(int64_t first, int64_t n) {
  std::vector<int64_t> pts(n);
  for (int64_t i = 0; i < n; ++i) {
    pts[i] = first + i;
  }
  return pts;
}

WriterOptions options_for(const fs::path& path, int width = 64, int height = 48) {
  WriterOptions o;
  o.path = path.string();
  o.width = width;
  o.height = height;
  o.time_base = Rational{1, 25};
  o.frame_rate = Rational{25, 1};
  o.encoder = "software";
  o.preset = "veryfast";
  o.audio = "none";
  o.subtitles = "none";
  return o;
}

// A segment as the engine writes one: NUT, video only, timestamps shifted by kOffset.
WriterResult write_segment(const fs::path& path, int64_t first, int64_t n) {
  WriterOptions o = options_for(path);
  o.time_origin = -kOffset;
  MediaWriter writer(o);
  writer.write(frames(first, n, o.height, o.width), pts_range(first, n));
  return writer.finish();
}

WriterResult write_file(const WriterOptions& o, int64_t n) {
  MediaWriter writer(o);
  writer.write(frames(0, n, o.height, o.width), pts_range(0, n));
  return writer.finish();
}

ErrorKind kind_of(const std::function<void()>& f, std::string* stage = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (stage != nullptr) {
      *stage = e.stage();
    }
    return e.kind();
  }
  ADD_FAILURE() << "no sbsconv::Error thrown";
  return ErrorKind::Internal;
}

void copy_prefix(const fs::path& from, const fs::path& to, uintmax_t bytes) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  fs::resize_file(to, bytes);
}

bool leftovers_of(const fs::path& out) {
  for (const auto& entry : fs::directory_iterator(out.parent_path())) {
    if (entry.path().filename().string().find("." + out.filename().string() + ".sbsconv") == 0) {
      return true;
    }
  }
  return false;
}

struct OpenedFile {
  UniqueInputFormatContext format;
  const AVStream* video = nullptr;
};

OpenedFile open_file(const fs::path& path) {
  OpenedFile f;
  AVFormatContext* raw = nullptr;
  EXPECT_GE(avformat_open_input(&raw, path.string().c_str(), nullptr, nullptr), 0) << path;
  f.format.reset(raw);
  if (raw != nullptr) {
    EXPECT_GE(avformat_find_stream_info(raw, nullptr), 0);
    const int index = av_find_best_stream(raw, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
    EXPECT_GE(index, 0);
    if (index >= 0) {
      f.video = raw->streams[index];
    }
  }
  return f;
}

// The stream's stereo side data as the demuxer reports it (nullptr when none).
const AVStereo3D* stereo_of(const AVStream* stream) {
#if SBSCONV_FFMPEG_HAS_CODED_SIDE_DATA
  const AVPacketSideData* side = av_packet_side_data_get(
      stream->codecpar->coded_side_data, stream->codecpar->nb_coded_side_data, AV_PKT_DATA_STEREO3D);
  return side != nullptr ? reinterpret_cast<const AVStereo3D*>(side->data) : nullptr;
#else
#if LIBAVFORMAT_VERSION_MAJOR < 59
  int size = 0;
#else
  size_t size = 0;
#endif
  uint8_t* data = av_stream_get_side_data(stream, AV_PKT_DATA_STEREO3D, &size);
  return reinterpret_cast<const AVStereo3D*>(data);
#endif
}

} // namespace

// ---- StreamParams ------------------------------------------------------------------------------

// Note [H.264 on NVENC]: decided from the options alone (no GPU needed).
TEST(ResolveCodec, KnowsTheNvencH264SizeLimitInAdvance) {
  auto options = [](int width, const std::string& codec, const std::string& encoder, const std::string& device) {
    WriterOptions o;
    o.width = width;
    o.height = 1080;
    o.codec = codec;
    o.encoder = encoder;
    o.device = device;
    return o;
  };
  std::vector<std::string> notes;
  // within the limits, or H.264 asked for by name on an encoder that takes it: H.264
  EXPECT_EQ(resolve_codec(options(3840, "auto", "auto", "cuda"), &notes), "h264");
  EXPECT_EQ(resolve_codec(options(3840, "auto", "auto", "cpu"), &notes), "h264");
  EXPECT_EQ(resolve_codec(options(7680, "h264", "software", "cuda"), &notes), "h264");
  EXPECT_EQ(resolve_codec(options(7680, "h264", "auto", "cpu"), &notes), "h264");
  EXPECT_EQ(resolve_codec(options(4096, "h264", "nvenc", "cuda"), &notes), "h264");
  EXPECT_TRUE(notes.empty());
  // Note [H.264 level limits]: beyond H.264 level 5.2 (4096 a side, 8.9 megapixels) auto is
  // HEVC for every encoder, and says why
  WriterOptions vr180 = options(5760, "auto", "software", "cpu");
  vr180.height = 2880;
  EXPECT_EQ(resolve_codec(vr180, &notes), "hevc");
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("5760x2880"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("level 5.2"), std::string::npos) << notes[0];
  WriterOptions dci = options(4096, "auto", "auto", "cpu");
  dci.height = 2160; // 8.8 megapixels: still level 5.2
  EXPECT_EQ(resolve_codec(dci, &notes), "h264");
  dci.height = 2304; // 9.4 megapixels
  EXPECT_EQ(resolve_codec(dci, &notes), "hevc");
  notes.clear();
  // too wide for NVENC's H.264: auto picks HEVC and says so
  EXPECT_EQ(resolve_codec(options(7680, "auto", "auto", "cuda:1"), &notes), "hevc");
  EXPECT_EQ(resolve_codec(options(4097, "auto", "nvenc", "cpu"), &notes), "hevc"); // 4098 once even
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_NE(notes[0].find("7680x1080"), std::string::npos);
  EXPECT_NE(notes[0].find("4096"), std::string::npos);
  // an explicit H.264 that NVENC cannot take: a clear error naming the limit and the ways out
  for (const std::string& encoder : {"auto", "nvenc", "h264_nvenc"}) {
    try {
      resolve_codec(options(7680, "h264", encoder, "cuda"), &notes);
      FAIL() << "no error for " << encoder;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Option);
      const std::string what = e.what();
      for (const char* word : {"4096", "codec='hevc'", "half-sbs", "encoder='software'"}) {
        EXPECT_NE(what.find(word), std::string::npos) << word << " missing from: " << what;
      }
    }
  }
  // 10-bit: HEVC
  WriterOptions ten = options(1920, "auto", "auto", "cpu");
  ten.bit_depth = 10;
  EXPECT_EQ(resolve_codec(ten, &notes), "hevc");
}

TEST(StreamParams, RoundTripsThroughOneToken) {
  StreamParams p;
  p.encoder = "libx264";
  p.codec = "h264";
  p.profile = 100;
  p.width = 640;
  p.height = 360;
  p.pix_fmt = "yuv420p";
  p.extradata_hash = "0123456789abcdef";
  EXPECT_EQ(p.to_string(), "libx264|h264|100|640|360|yuv420p|0123456789abcdef");
  EXPECT_EQ(StreamParams::parse(p.to_string()), p);
  p.encoder.clear(); // a container that cannot name its encoder
  p.profile = -1;
  EXPECT_EQ(StreamParams::parse(p.to_string()), p);
  for (const char* bad :
       {"",
        "libx264|h264|100|640|360|yuv420p", // six fields
        "a|h264|x|1|1|y|0123456789abcdef",
        "a|h264|1|1|1|y|0123456789ABCDEF",
        "a|h264|1|1|1|y|0123",
        "a|h264|+1|1|1|y|0123456789abcdef",
        "a|h264|1|-2|1|y|0123456789abcdef",
        "a b|h264|1|1|1|y|0123456789abcdef",
        "a|h264|1|1|1|y|0123456789abcdef|"}) {
    EXPECT_FALSE(StreamParams::parse(bad).has_value()) << bad;
  }
}

// ---- probe_encoder / inspect_segment --------------------------------------------------------------

TEST(ProbeEncoder, DescribesTheStreamAWriteProduces) {
  const fs::path segment = scratch("probe_segment.nut");
  const WriterResult written = write_segment(segment, 0, 12);
  const StreamParams& p = written.video_params;
  EXPECT_EQ(p.encoder, "libx264");
  EXPECT_EQ(p.codec, "h264");
  EXPECT_EQ(p.profile, 100); // High
  EXPECT_EQ(p.width, 64);
  EXPECT_EQ(p.height, 48);
  EXPECT_EQ(p.pix_fmt, "yuv420p");
  EXPECT_EQ(p.extradata_hash.size(), 16u);
  EXPECT_EQ(p.to_string().find(' '), std::string::npos);

  WriterOptions o = options_for(segment);
  o.time_origin = -kOffset;
  EXPECT_EQ(probe_encoder(o), p);
  EXPECT_FALSE(fs::exists(scratch(".probe_again.nut.sbsconv-" + std::to_string(::getpid()) + ".part")));

  // What changes the stream changes the description; MP4 (also global headers) matches MP4.
  WriterOptions other = o;
  other.crf = 30;
  EXPECT_NE(probe_encoder(other).extradata_hash, p.extradata_hash);
  WriterOptions mp4 = options_for(scratch("probe.mp4"), 66, 50);
  EXPECT_EQ(probe_encoder(mp4), write_file(mp4, 3).video_params);
  WriterOptions odd = options_for(scratch("probe_odd.nut"), 65, 49);
  const StreamParams padded = probe_encoder(odd);
  EXPECT_EQ(padded.width, 66);
  EXPECT_EQ(padded.height, 50);

  WriterOptions none = o;
  none.encoder = "no_such_encoder";
  EXPECT_EQ(kind_of([&] { probe_encoder(none); }), ErrorKind::Encode);
  WriterOptions bad = o;
  bad.bit_depth = 10; // needs HEVC
  EXPECT_EQ(kind_of([&] { probe_encoder(bad); }), ErrorKind::Option);
}

TEST(ProbeEncoder, TenBitHevcReadsItsOwnParameterSets) {
  WriterOptions o = options_for(scratch("probe_hevc.nut"));
  o.codec = "hevc";
  o.bit_depth = 10;
  o.preset = "ultrafast";
  StreamParams p;
  try {
    p = probe_encoder(o);
  } catch (const Error& e) {
    GTEST_SKIP() << "no HEVC encoder here: " << e.what();
  }
  EXPECT_EQ(p.codec, "hevc");
  EXPECT_EQ(p.profile, 2); // Main 10
  EXPECT_EQ(p.pix_fmt, "yuv420p10le");
  const fs::path segment = scratch("hevc_segment.nut");
  o.path = segment.string();
  o.time_origin = -kOffset;
  const WriterResult written = write_file(o, 4);
  EXPECT_EQ(written.video_params, p);
  EXPECT_EQ(inspect_segment(segment.string()).params, p);
}

TEST(InspectSegment, CountsPacketsAndReadsTheWritersParams) {
  const fs::path segment = scratch("inspect_segment.nut");
  const WriterResult written = write_segment(segment, 0, 17);
  const SegmentInfo info = inspect_segment(segment.string());
  EXPECT_EQ(info.packets, 17);
  EXPECT_EQ(info.bytes, static_cast<int64_t>(fs::file_size(segment)));
  EXPECT_EQ(info.params, written.video_params); // NUT keeps the encoder's name too
  EXPECT_EQ(info.params.encoder, "libx264");
}

TEST(InspectSegment, DamagedFilesRaiseErrorsNotCrashes) {
  const fs::path segment = scratch("damaged_source.nut");
  write_segment(segment, 0, 20);
  const uintmax_t size = fs::file_size(segment);

  const fs::path half = scratch("half.nut");
  copy_prefix(segment, half, size / 2);
  std::string stage;
  EXPECT_EQ(kind_of([&] { inspect_segment(half.string()); }, &stage), ErrorKind::Input);
  EXPECT_EQ(stage, "resume");

  // Every cut, including one byte short of complete.
  const fs::path cut = scratch("cut.nut");
  const uintmax_t cuts[] = {0, 1, 16, size / 8, size / 3, size - 40, size - 12, size - 1};
  for (uintmax_t bytes : cuts) {
    copy_prefix(segment, cut, bytes);
    EXPECT_EQ(kind_of([&] { inspect_segment(cut.string()); }), ErrorKind::Input) << bytes << " bytes";
  }

  std::mt19937 random(1234);
  std::string noise(static_cast<size_t>(size), '\0');
  for (char& c : noise) {
    c = static_cast<char>(random() & 0xff);
  }
  const fs::path junk = scratch("random.nut");
  std::ofstream(junk, std::ios::binary).write(noise.data(), static_cast<std::streamsize>(noise.size()));
  EXPECT_EQ(kind_of([&] { inspect_segment(junk.string()); }), ErrorKind::Input);

  // Bytes flipped inside a complete file: an error or a result, never a crash.
  std::string bytes(static_cast<size_t>(size), '\0');
  std::ifstream(segment, std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(size));
  const fs::path flipped = scratch("flipped.nut");
  for (int round = 0; round < 8; ++round) {
    std::string damaged = bytes;
    for (int k = 0; k < 16; ++k) {
      damaged[random() % (damaged.size() - 64)] ^= static_cast<char>(1 + random() % 255);
    }
    std::ofstream(flipped, std::ios::binary | std::ios::trunc)
        .write(damaged.data(), static_cast<std::streamsize>(damaged.size()));
    try {
      inspect_segment(flipped.string());
    } catch (const Error&) {
    }
  }

  EXPECT_EQ(kind_of([&] { inspect_segment(scratch("missing.nut").string()); }), ErrorKind::Input);
  EXPECT_EQ(kind_of([&] { inspect_segment(scratch("").string()); }), ErrorKind::Input); // a folder
  EXPECT_EQ(inspect_segment(segment.string()).packets, 20); // the original is still fine
}

// ---- copy mode and cancellation ------------------------------------------------------------------

namespace {

WriterOptions assembly_options(const fs::path& out, const std::vector<fs::path>& segments) {
  WriterOptions o = options_for(out);
  o.encoder = "libx264";
  for (const fs::path& s : segments) {
    o.video_segments.push_back(s.string());
  }
  o.segment_offset = kOffset;
  return o;
}

} // namespace

TEST(Assembly, CopiesSegmentsIntoOneStream) {
  const fs::path a = scratch("assemble_a.nut");
  const fs::path b = scratch("assemble_b.nut");
  const WriterResult first = write_segment(a, 0, 10);
  write_segment(b, 10, 8);
  const fs::path out = scratch("assembled.mkv");
  MediaWriter writer(assembly_options(out, {a, b}));
  writer.copy_segments();
  const WriterResult result = writer.finish();
  EXPECT_EQ(result.frames, 18);
  EXPECT_EQ(result.video_params, first.video_params);
  OpenedFile f = open_file(out);
  ASSERT_NE(f.video, nullptr);
  int64_t packets = 0;
  UniqueAVPacket packet = make_packet();
  while (av_read_frame(f.format.get(), packet.get()) >= 0) {
    packets += packet->stream_index == f.video->index ? 1 : 0;
    av_packet_unref(packet.get());
  }
  EXPECT_EQ(packets, 18);
}

TEST(Assembly, CancelledBeforeCopyLeavesNothing) {
  const fs::path a = scratch("cancel_a.nut");
  write_segment(a, 0, 6);
  const fs::path out = scratch("cancelled.mp4");
  fs::remove(out); // a process of an earlier run with the same pid may have left it (the end of this test)
  std::atomic<bool> cancel{false};
  WriterOptions o = assembly_options(out, {a});
  o.cancel = &cancel;
  {
    MediaWriter writer(o);
    cancel = true;
    std::string stage;
    EXPECT_EQ(kind_of([&] { writer.copy_segments(); }, &stage), ErrorKind::Cancelled);
    EXPECT_EQ(stage, "assemble");
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(leftovers_of(out)) << "the temporary file must be removed at once";
    EXPECT_EQ(kind_of([&] { writer.finish(); }), ErrorKind::Option); // already aborted
  }
  EXPECT_FALSE(fs::exists(out));

  // Cancelled after the copy, before finish(): the trailer and the rename never happen.
  cancel = false;
  {
    MediaWriter writer(o);
    writer.copy_segments();
    cancel = true;
    EXPECT_EQ(kind_of([&] { writer.finish(); }), ErrorKind::Cancelled);
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(leftovers_of(out));

  // Not cancelled: the file appears.
  cancel = false;
  MediaWriter writer(o);
  writer.copy_segments();
  EXPECT_EQ(writer.finish().frames, 6);
  EXPECT_TRUE(fs::exists(out));
  EXPECT_FALSE(leftovers_of(out));
}

// ---- stereo tags and anamorphic output -------------------------------------------------------------

TEST(StereoTag, CrossEyedIsNeverTaggedAsLeftFirst) {
  WriterOptions o = options_for(scratch("cross.mp4"));
  o.stereo = "sbs-rl";
  write_file(o, 3);
  {
    OpenedFile f = open_file(o.path);
    ASSERT_NE(f.video, nullptr);
    EXPECT_EQ(stereo_of(f.video), nullptr) << "st3d cannot say right-eye-first: no tag at all";
  }

  o.stereo = "sbs"; // the control: MP4 does tag left-first side by side
  o.path = scratch("parallel.mp4").string();
  write_file(o, 3);
  {
    OpenedFile f = open_file(o.path);
    ASSERT_NE(f.video, nullptr);
    const AVStereo3D* stereo = stereo_of(f.video);
    ASSERT_NE(stereo, nullptr);
    EXPECT_EQ(stereo->type, AV_STEREO3D_SIDEBYSIDE);
    EXPECT_EQ(stereo->flags & AV_STEREO3D_FLAG_INVERT, 0);
  }

  o.stereo = "sbs-rl";
  o.path = scratch("cross.mkv").string();
  write_file(o, 3);
  {
    OpenedFile f = open_file(o.path);
    ASSERT_NE(f.video, nullptr);
    const AVStereo3D* stereo = stereo_of(f.video);
    ASSERT_NE(stereo, nullptr);
    EXPECT_EQ(stereo->type, AV_STEREO3D_SIDEBYSIDE);
    EXPECT_NE(stereo->flags & AV_STEREO3D_FLAG_INVERT, 0) << "MKV StereoMode right_left";
  }
}

TEST(SampleAspect, IsWrittenAndReadBack) {
  for (const char* name : {"anamorphic.mp4", "anamorphic.mkv", "anamorphic.mov"}) {
    WriterOptions o = options_for(scratch(name));
    o.sample_aspect = Rational{8, 6}; // reduced to 4:3
    write_file(o, 3);
    OpenedFile f = open_file(o.path);
    ASSERT_NE(f.video, nullptr) << name;
    EXPECT_EQ(f.video->sample_aspect_ratio.num, 4) << name;
    EXPECT_EQ(f.video->sample_aspect_ratio.den, 3) << name;
    EXPECT_EQ(f.video->codecpar->sample_aspect_ratio.num, 4) << name;
    EXPECT_EQ(f.video->codecpar->sample_aspect_ratio.den, 3) << name;
  }
  // Segments carry it into the assembled file.
  const fs::path segment = scratch("anamorphic_segment.nut");
  WriterOptions s = options_for(segment);
  s.time_origin = -kOffset;
  s.sample_aspect = Rational{4, 3};
  write_file(s, 3);
  const fs::path out = scratch("anamorphic_assembled.mkv");
  WriterOptions a = assembly_options(out, {segment});
  a.sample_aspect = Rational{4, 3};
  MediaWriter writer(a);
  writer.copy_segments();
  writer.finish();
  OpenedFile f = open_file(out);
  ASSERT_NE(f.video, nullptr);
  EXPECT_EQ(f.video->sample_aspect_ratio.num, 4);
  EXPECT_EQ(f.video->sample_aspect_ratio.den, 3);

  WriterOptions bad = options_for(scratch("bad_aspect.mp4"));
  bad.sample_aspect = Rational{-1, 1};
  EXPECT_EQ(kind_of([&] { MediaWriter w(bad); }), ErrorKind::Option);
}

// ---- Note [Chunk-parallel encoding] --------------------------------------------------------

namespace {
WriterOptions segment_options(const std::string& name) {
  WriterOptions o = options_for(scratch(name));
  o.time_origin = -kOffset;
  o.threads = 1;
  return o;
}
} // namespace

TEST(SegmentEncoders, SegmentsEncodedAtOnceFinishInTheOrderOpenedWithEveryFrame) {
  const std::vector<int64_t> lengths{30, 5, 12, 2, 21};
  std::atomic<int64_t> written{0};
  SegmentEncoders::Options po;
  po.instances = 3;
  po.max_buffered_frames = 8; // less than a segment: write() waits for the encoders
  po.on_frames = [&](int64_t n, double) { written += n; };
  SegmentEncoders pool(po);
  std::vector<SegmentEncoders::Finished> done;
  int64_t first = 0;
  for (size_t s = 0; s < lengths.size(); ++s) {
    pool.open(segment_options("parallel_" + std::to_string(s) + ".nut"), static_cast<int64_t>(s) * 10);
    for (int64_t k = 0; k < lengths[s]; k += 4) {
      const int64_t n = std::min<int64_t>(4, lengths[s] - k);
      pool.write(frames(first + k, n, 48, 64), pts_range(first + k, n), nullptr);
    }
    pool.close();
    first += lengths[s];
    for (auto& f : pool.take_finished()) {
      done.push_back(std::move(f));
    }
  }
  for (auto& f : pool.drain()) {
    done.push_back(std::move(f));
  }
  EXPECT_EQ(pool.pending(), 0);
  EXPECT_EQ(written.load(), first);
  ASSERT_EQ(done.size(), lengths.size());
  for (size_t s = 0; s < lengths.size(); ++s) {
    EXPECT_EQ(done[s].tag, static_cast<int64_t>(s) * 10);
    EXPECT_EQ(inspect_segment(done[s].result.path).packets, lengths[s]) << s;
  }
}

TEST(SegmentEncoders, AnEncodersFailureIsRethrownAndTheSegmentsBeforeItAreKept) {
  SegmentEncoders::Options po;
  po.instances = 2;
  po.before_write = [](int64_t segment, int64_t batch) {
    if (segment == 2 && batch == 1) {
      throw Error(ErrorKind::Encode, "encode", "the encoder broke");
    }
  };
  SegmentEncoders pool(po);
  for (int64_t s = 0; s < 2; ++s) {
    pool.open(segment_options("kept_" + std::to_string(s) + ".nut"), s);
    pool.write(frames(0, 6, 48, 64), pts_range(0, 6), nullptr);
    pool.close();
  }
  const std::vector<SegmentEncoders::Finished> kept = pool.drain();
  ASSERT_EQ(kept.size(), 2u);
  const fs::path broken = scratch("broken_2.nut");
  pool.open(segment_options("broken_2.nut"), 2);
  pool.write(frames(0, 3, 48, 64), pts_range(0, 3), nullptr);
  std::string message;
  try {
    for (int i = 0; i < 1000; ++i) { // the failure surfaces at the next call after it happens
      pool.write(frames(3, 3, 48, 64), pts_range(3 + 3 * i, 3), nullptr);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  } catch (const Error& e) {
    message = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::Encode);
  }
  EXPECT_NE(message.find("the encoder broke"), std::string::npos);
  EXPECT_TRUE(pool.take_finished().empty()); // the failed segment is never handed over
  EXPECT_EQ(kind_of([&] { pool.close(); }), ErrorKind::Encode);
  EXPECT_FALSE(fs::exists(broken)); // its writer discarded what it had
}

TEST(SegmentEncoders, ParallelSegmentsFitTheMemoryBudget) {
  const int64_t gib = int64_t{1} << 30;
  const int64_t full_hd_pair = 3840 * 1080 * 3; // a 1080p full side-by-side frame, uint8 RGB
  // 2 GiB for 2 instances: about 86 frames each, in whole batches of 4
  ParallelSegments p = plan_parallel_segments(2, full_hd_pair, 2 * gib, 300, 4);
  EXPECT_EQ(p.instances, 2);
  EXPECT_EQ(p.segment_frames, 84);
  EXPECT_LE(p.instances * p.segment_frames * full_hd_pair, 2 * gib);
  // a generous budget: the run's own segment length is the most
  EXPECT_EQ(plan_parallel_segments(4, 1280 * 720 * 3, 64 * gib, 300, 4).segment_frames, 300);
  // 8K pairs: only as many instances as can hold 16 frames each
  p = plan_parallel_segments(8, 15360 * 4320 * 3, 2 * gib, 300, 2);
  EXPECT_EQ(p.instances, 1);
  EXPECT_EQ(p.segment_frames, 300);
  p = plan_parallel_segments(8, 7680 * 2160 * 3, 2 * gib, 300, 4);
  EXPECT_EQ(p.instances, 2);
  EXPECT_EQ(p.segment_frames, 20);
  // segments already shorter than the least: kept as they are
  p = plan_parallel_segments(2, 160 * 96 * 3, 2 * gib, 12, 4);
  EXPECT_EQ(p.instances, 2);
  EXPECT_EQ(p.segment_frames, 12);
  EXPECT_THROW(plan_parallel_segments(0, 1, gib, 10, 1), Error);
}

TEST(SegmentEncoders, UpToTheInstancesEncodeAtOnceNeverMore) {
  // every segment's frames handed over at once: the encoders overlap, and never more than
  // `instances` of them (each write is held 20 ms so that overlapping ones meet)
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  SegmentEncoders::Options po;
  po.instances = 2;
  po.max_buffered_frames = 64;
  po.before_write = [&](int64_t, int64_t) {
    const int now = ++inside;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    --inside;
  };
  SegmentEncoders pool(po);
  for (int64_t s = 0; s < 5; ++s) {
    pool.open(segment_options("overlap_" + std::to_string(s) + ".nut"), s);
    for (int64_t k = 0; k < 8; k += 4) {
      pool.write(frames(k, 4, 48, 64), pts_range(k, 4), nullptr);
    }
    pool.close();
  }
  const std::vector<SegmentEncoders::Finished> done = pool.drain();
  ASSERT_EQ(done.size(), 5u);
  EXPECT_EQ(most.load(), 2);
}
