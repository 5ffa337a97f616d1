#!/usr/bin/env bash
# Regenerates the committed seed corpora under tests/fuzz/corpus/ (see tests/fuzz/README.md).
# Media seeds come from the ffmpeg command line (16x16, 2-3 frames) and from the first bytes of
# clips in ../shared/data; state, journal and weights seeds come from make_seeds.cpp, built in
# the fuzz preset's folder (build/fuzz; configured here if needed) so that they are written by
# the core's own writers. Output is deterministic apart from the encoders' version strings.
set -euo pipefail
cd "$(dirname "$0")"
out=corpus/fuzz_media
data=${SBSCONV_TEST_DATA_DIR:-../../../shared/data}
rm -rf "$out"
mkdir -p "$out"

ff() { ffmpeg -hide_banner -loglevel error -nostdin -y "$@"; }
src="testsrc2=size=16x16:rate=25:duration=0.12"  # 3 frames
tone="sine=frequency=440:sample_rate=8000:duration=0.12"
meta=(-map_metadata -1 -fflags +bitexact -flags:v +bitexact)

ff -f lavfi -i "$src" -c:v libx264 -preset ultrafast -pix_fmt yuv420p -x264-params log=0 "${meta[@]}" "$out/h264.mp4"
# The same with a 90-degree display matrix in the track header (FFmpeg 5.1's muxer has no
# option for it): the tkhd matrix is rewritten in place.
python3 - "$out/h264.mp4" "$out/h264_rotated.mp4" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
at = data.index(b"tkhd") + 4 + 40  # version/flags .. volume/reserved, then the matrix (version 0)
struct.pack_into(">9I", data, at, 0, 0x00010000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
open(sys.argv[2], "wb").write(data)
PY
ff -f lavfi -i "$src" -c:v libx264 -preset ultrafast -bsf:v h264_mp4toannexb -x264-params log=0 "${meta[@]}" -f h264 "$out/h264.annexb"
ff -f lavfi -i "$src" -f lavfi -i "$tone" -c:v libx264 -preset ultrafast -x264-params log=0 -c:a aac -b:a 16k \
  -shortest "${meta[@]}" -movflags +faststart "$out/h264_aac_faststart.mp4"
ff -f lavfi -i "$src" -c:v libx265 -preset ultrafast -x265-params log-level=none "${meta[@]}" -tag:v hvc1 "$out/hevc.mp4"
ff -f lavfi -i "$src" -c:v libx265 -preset ultrafast -x265-params log-level=none:output-depth=10 -pix_fmt yuv420p10le "${meta[@]}" "$out/hevc10.mkv"
ff -f lavfi -i "$src" -c:v mpeg4 -q:v 10 "${meta[@]}" "$out/mpeg4.avi"
ff -f lavfi -i "$src" -c:v libvpx -b:v 20k "${meta[@]}" "$out/vp8.webm"
ff -f lavfi -i "$src" -f lavfi -i "$tone" -c:v libvpx-vp9 -b:v 20k -c:a libopus -b:a 8k -shortest "${meta[@]}" "$out/vp9_opus.webm"
ff -f lavfi -i "$src" -c:v libaom-av1 -cpu-used 8 -b:v 20k "${meta[@]}" "$out/av1.mkv"
ff -f lavfi -i "$src" -c:v ffv1 "${meta[@]}" "$out/ffv1.nut"
ff -f lavfi -i "$src" -c:v mjpeg -q:v 20 "${meta[@]}" "$out/mjpeg.avi"
ff -f lavfi -i "$src" -c:v rawvideo -pix_fmt rgb24 "${meta[@]}" "$out/raw_rgb24.nut"
ff -f lavfi -i "$src" -c:v mpeg2video -q:v 10 "${meta[@]}" "$out/mpeg2.ts"
ff -f lavfi -i "$src" -c:v mpeg2video -q:v 10 "${meta[@]}" -f vob "$out/mpeg2.mpg"
ff -f lavfi -i "$src" -c:v flv "${meta[@]}" "$out/flv1.flv"
ff -f lavfi -i "$src" -c:v qtrle "${meta[@]}" "$out/qtrle.mov"
ff -f lavfi -i "$src" -c:v libtheora -q:v 1 "${meta[@]}" "$out/theora.ogv"
ff -f lavfi -i "$src" -pix_fmt yuv444p "${meta[@]}" -f yuv4mpegpipe "$out/yuv444.y4m"
ff -f lavfi -i "$src" -vf "split[a][b];[a]palettegen[p];[b][p]paletteuse" "${meta[@]}" "$out/anim.gif"
ff -f lavfi -i "$src" -frames:v 1 -c:v png "${meta[@]}" "$out/still.png"
# A subtitle stream beside the video (Matroska keeps the text in the file).
printf '1\n00:00:00,000 --> 00:00:00,100\nhi\n' > /tmp/sbsconv-seed.srt
ff -f lavfi -i "$src" -i /tmp/sbsconv-seed.srt -c:v libx264 -preset ultrafast -x264-params log=0 -c:s srt "${meta[@]}" "$out/h264_srt.mkv"
rm -f /tmp/sbsconv-seed.srt

# Real clips: the first 4 KB (where the index comes first, the headers and some packets), a
# few frames remuxed with the index first ("faststart") and a truncated copy of those.
if [ -d "$data" ]; then
  for clip in echo-hereweare.webm nasa_13013.mp4 h265_10bits.mp4 bt601_limited_range.mp4; do
    head -c 4096 "$data/$clip" > "$out/head4k_$clip"
  done
  head -c 4000 "$data/apple_spatial_160x120.mp4" > "$out/truncated_apple_spatial_160x120.mp4"
  head -c 24576 "$data/echo-hereweare.webm" > "$out/truncated_echo-hereweare.webm"
  # every stream of nasa_13013 (two videos, two audios, two subtitles), a fifth of a second
  ff -i "$data/nasa_13013.mp4" -map 0 -c copy -t 0.2 -movflags +faststart "${meta[@]}" "$out/remux_nasa_13013_all_streams.mp4"
  for clip in h265_10bits.mp4 test_non_zero_start.mp4 testsrc2_odd_height_and_width_444.mp4; do
    ff -i "$data/$clip" -map 0:v:0 -c copy -frames:v 3 -movflags +faststart "${meta[@]}" "$out/remux_$clip"
    size=$(stat -c %s "$out/remux_$clip")
    head -c $((size * 2 / 3)) "$out/remux_$clip" > "$out/truncated_remux_$clip"
  done
else
  echo "make_seeds.sh: $data not found; clip-derived seeds skipped" >&2
fi

# fuzz_hevc: raw HEVC byte streams as an encoder writes them: Apple's two-layer spatial video
# taken out of its MP4 by the tests' box reader, a one-layer libx265 stream with B-frames, and
# the first half of each.
hevc=corpus/fuzz_hevc
rm -rf "$hevc"
mkdir -p "$hevc"
if [ -d "$data" ]; then
  python3 - "$data/apple_spatial_160x120.mp4" "$hevc/apple_spatial_mvhevc.hevc" <<'PY'
import sys
sys.path.insert(0, "../python")
import isobmff
open(sys.argv[2], "wb").write(isobmff.hevc_annexb(sys.argv[1]))
PY
fi
ff -f lavfi -i "testsrc2=size=32x24:rate=25:duration=0.4" -c:v libx265 -preset ultrafast \
  -x265-params log-level=none:bframes=3:keyint=5 "${meta[@]}" -f hevc "$hevc/x265_bframes.hevc"
for f in "$hevc"/*.hevc; do
  size=$(stat -c %s "$f")
  head -c $((size / 2)) "$f" > "${f%.hevc}_half.hevc"
done

repo=$(cd ../.. && pwd)
if [ ! -f "$repo/build/fuzz/CMakeCache.txt" ]; then
  (cd "$repo" && flock /tmp/sbsconv-build.lock cmake --preset fuzz >/dev/null)
fi
(cd "$repo" && flock /tmp/sbsconv-build.lock cmake --build build/fuzz --target sbsconv_fuzz_make_seeds)
ASAN_OPTIONS=detect_leaks=0 "$repo/build/fuzz/sbsconv_fuzz_make_seeds" corpus
du -sh corpus corpus/*
