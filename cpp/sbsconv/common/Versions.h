#pragma once

#include <map>
#include <string>

namespace sbsconv {

// Versions of the FFmpeg libraries in use, and whether each encoder sbsconv can use exists in
// this build ("1"/"0" under "encoder:<name>"), for environment reports. (Declared apart from
// common/FFmpeg.h so that callers need no FFmpeg headers.)
std::map<std::string, std::string> ffmpeg_info();

} // namespace sbsconv
