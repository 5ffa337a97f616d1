#include "sbsconv/common/Error.h"

#include <utility>

namespace sbsconv {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Input:
      return "InputError";
    case ErrorKind::InputNotFound:
      return "InputNotFoundError";
    case ErrorKind::Decode:
      return "DecodeError";
    case ErrorKind::Encode:
      return "EncoderError";
    case ErrorKind::Output:
      return "OutputError";
    case ErrorKind::Option:
      return "OptionError";
    case ErrorKind::Model:
      return "ModelError";
    case ErrorKind::Device:
      return "DeviceError";
    case ErrorKind::Cancelled:
      return "CancelledError";
    case ErrorKind::Internal:
      return "InternalError";
  }
  return "SbsconvError";
}

namespace {

std::string assemble(
    const std::string& stage,
    const std::string& reason,
    const std::string& file,
    const std::string& ffmpeg_message) {
  std::string message = stage.empty() ? reason : stage + ": " + reason;
  if (!file.empty()) {
    message += " [" + file + "]";
  }
  if (!ffmpeg_message.empty()) {
    message += " (FFmpeg: " + ffmpeg_message + ")";
  }
  return message;
}

} // namespace

Error::Error(
    ErrorKind kind,
    std::string stage,
    std::string reason,
    std::string file,
    std::string ffmpeg_message)
    : std::runtime_error(assemble(stage, reason, file, ffmpeg_message)),
      kind_(kind),
      stage_(std::move(stage)),
      reason_(std::move(reason)),
      file_(std::move(file)),
      ffmpeg_message_(std::move(ffmpeg_message)) {}

void throw_error(
    ErrorKind kind,
    const std::string& stage,
    const std::string& reason,
    const std::string& file) {
  throw Error(kind, stage, reason, file);
}

} // namespace sbsconv
