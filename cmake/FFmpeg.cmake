# FFmpeg from the system, through pkg-config (Debian/Ubuntu libav*-dev, Homebrew ffmpeg).
# Supported: FFmpeg 4.4 (libavcodec 58.134, Ubuntu 22.04 / Colab) to 8.x (libavcodec 62).
# Version differences are handled in cpp/sbsconv/common/FFmpeg.h; this is the one place the
# version range is checked.
#
# Defines: sbsconv::ffmpeg

find_package(PkgConfig REQUIRED)
pkg_check_modules(SBSCONV_FFMPEG REQUIRED IMPORTED_TARGET
  libavformat libavcodec libavutil libswscale libswresample)

set(_avcodec_version "${SBSCONV_FFMPEG_libavcodec_VERSION}")
string(REGEX MATCH "^([0-9]+)\\.([0-9]+)" _ "${_avcodec_version}")
set(_avcodec_major "${CMAKE_MATCH_1}")
set(_avcodec_minor "${CMAKE_MATCH_2}")
if(_avcodec_major LESS 58 OR (_avcodec_major EQUAL 58 AND _avcodec_minor LESS 134))
  message(FATAL_ERROR
    "libavcodec ${_avcodec_version} is older than FFmpeg 4.4 (libavcodec 58.134), the oldest "
    "FFmpeg sbsconv supports. Install a newer FFmpeg (Debian 12: apt-get install libavcodec-dev ...).")
endif()
if(_avcodec_major GREATER 62)
  message(WARNING "libavcodec ${_avcodec_version} is newer than sbsconv has been checked with (FFmpeg 8.x).")
endif()
message(STATUS "sbsconv: FFmpeg libavcodec ${_avcodec_version}, libavformat ${SBSCONV_FFMPEG_libavformat_VERSION}")

add_library(sbsconv_ffmpeg INTERFACE)
add_library(sbsconv::ffmpeg ALIAS sbsconv_ffmpeg)
target_link_libraries(sbsconv_ffmpeg INTERFACE PkgConfig::SBSCONV_FFMPEG)
