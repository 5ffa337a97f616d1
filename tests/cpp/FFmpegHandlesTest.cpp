#include <gtest/gtest.h>

#include "sbsconv/common/FFmpeg.h"

using namespace sbsconv;

namespace {
int g_frees = 0;
void counting_free(AVBufferRef** ref) {
  ++g_frees;
  av_buffer_unref(ref);
}
} // namespace

TEST(FFmpegHandles, UniquePointersReleaseTheirObjects) {
  // A deleter built like the production ones, counting its calls.
  using Counted = std::unique_ptr<AVBufferRef, detail::FreeByAddress<AVBufferRef, counting_free>>;
  g_frees = 0;
  {
    Counted a(av_buffer_alloc(16));
    Counted b(nullptr); // no call for an empty holder
    ASSERT_NE(a, nullptr);
  }
  EXPECT_EQ(g_frees, 1);
}

TEST(FFmpegHandles, FramesAndPacketsAllocateAndMove) {
  UniqueAVFrame frame = make_frame();
  frame->format = AV_PIX_FMT_YUV420P;
  frame->width = 64;
  frame->height = 48;
  ASSERT_GE(av_frame_get_buffer(frame.get(), 0), 0);
  UniqueAVFrame moved = std::move(frame);
  EXPECT_EQ(frame, nullptr);
  EXPECT_NE(moved->data[0], nullptr);
}

TEST(FFmpegHandles, PacketUnrefReleasesThePayloadAtScopeEnd) {
  UniqueAVPacket packet = make_packet();
  ASSERT_GE(av_new_packet(packet.get(), 128), 0);
  {
    PacketUnref unref(packet.get());
    EXPECT_EQ(packet->size, 128);
  }
  EXPECT_EQ(packet->size, 0);
  EXPECT_EQ(packet->data, nullptr);
}

TEST(FFmpegHandles, PacketUnrefRunsWhenTheTurnThrows) {
  UniqueAVPacket packet = make_packet();
  ASSERT_GE(av_new_packet(packet.get(), 64), 0);
  try {
    PacketUnref unref(packet.get());
    throw std::runtime_error("stage failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(packet->data, nullptr);
}

TEST(FFmpegErrors, ErrorStringsComeFromFFmpeg) {
  EXPECT_EQ(av_error_string(AVERROR(ENOENT)), "No such file or directory");
  EXPECT_EQ(av_error_string(AVERROR_INVALIDDATA), "Invalid data found when processing input");
}

TEST(FFmpegErrors, MissingFileBecomesInputNotFound) {
  try {
    throw_av_error(ErrorKind::Input, "open", "cannot open", "x.mp4", AVERROR(ENOENT));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InputNotFound);
    EXPECT_EQ(e.file(), "x.mp4");
    EXPECT_NE(e.ffmpeg_message().find("No such file"), std::string::npos);
  }
}

TEST(FFmpegErrors, TheLastLoggedFFmpegErrorJoinsTheException) {
  install_ffmpeg_log_handler();
  clear_last_ffmpeg_message();
  av_log(nullptr, AV_LOG_ERROR, "moov atom not found\n");
  try {
    throw_av_error(ErrorKind::Input, "open", "cannot open", "x.mp4", AVERROR_INVALIDDATA);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Input);
    EXPECT_NE(e.ffmpeg_message().find("moov atom not found"), std::string::npos) << e.ffmpeg_message();
  }
  EXPECT_TRUE(take_last_ffmpeg_message().empty()); // consumed by the exception
}

TEST(FFmpegErrors, CheckMacroPassesSuccessAndThrowsFailure) {
  EXPECT_NO_THROW(SBSCONV_CHECK_AV(0, Encode, "encode", "ok", ""));
  EXPECT_THROW(SBSCONV_CHECK_AV(AVERROR(EINVAL), Encode, "encode", "bad", ""), Error);
}
