#include <gtest/gtest.h>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/Logging.h"

using namespace sbsconv;

TEST(Error, CarriesItsPartsAndAssemblesTheMessage) {
  Error e(ErrorKind::Input, "decode", "no video stream", "clip.mp4", "Invalid data");
  EXPECT_EQ(e.kind(), ErrorKind::Input);
  EXPECT_EQ(e.stage(), "decode");
  EXPECT_EQ(e.reason(), "no video stream");
  EXPECT_EQ(e.file(), "clip.mp4");
  EXPECT_EQ(e.ffmpeg_message(), "Invalid data");
  EXPECT_STREQ(e.what(), "decode: no video stream [clip.mp4] (FFmpeg: Invalid data)");
}

TEST(Error, OmitsAbsentParts) {
  Error e(ErrorKind::Option, "", "batch size must be > 0");
  EXPECT_STREQ(e.what(), "batch size must be > 0");
}

TEST(Error, KindNamesMatchThePythonClasses) {
  // python/sbsconv/errors.py defines a class for each of these names.
  EXPECT_STREQ(error_kind_name(ErrorKind::Input), "InputError");
  EXPECT_STREQ(error_kind_name(ErrorKind::InputNotFound), "InputNotFoundError");
  EXPECT_STREQ(error_kind_name(ErrorKind::Decode), "DecodeError");
  EXPECT_STREQ(error_kind_name(ErrorKind::Encode), "EncoderError");
  EXPECT_STREQ(error_kind_name(ErrorKind::Output), "OutputError");
  EXPECT_STREQ(error_kind_name(ErrorKind::Option), "OptionError");
  EXPECT_STREQ(error_kind_name(ErrorKind::Model), "ModelError");
  EXPECT_STREQ(error_kind_name(ErrorKind::Device), "DeviceError");
  EXPECT_STREQ(error_kind_name(ErrorKind::Cancelled), "CancelledError");
  EXPECT_STREQ(error_kind_name(ErrorKind::Internal), "InternalError");
}

TEST(Error, CheckMacroThrowsOnlyWhenTheConditionFails) {
  EXPECT_NO_THROW(SBSCONV_CHECK(1 + 1 == 2, Internal, "test", "arithmetic"));
  try {
    SBSCONV_CHECK(1 + 1 == 3, Option, "test", "arithmetic");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Option);
    EXPECT_EQ(e.stage(), "test");
  }
}

TEST(Logging, DeferredRecordsAreQueuedInOrderAndFiltered) {
  set_log_deferred(true);
  set_log_level(LogLevel::Info);
  drain_log();
  log(LogLevel::Debug, "dropped");
  log(LogLevel::Info, "first");
  log(LogLevel::Warning, "second");
  auto records = drain_log();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].message, "first");
  EXPECT_EQ(records[1].level, LogLevel::Warning);
  EXPECT_TRUE(drain_log().empty());
  set_log_deferred(false);
  set_log_level(LogLevel::Warning);
}
