#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

namespace sbsconv {

// Note [Editing ISO-BMFF files]
// FFmpeg's MP4/MOV muxer (in every version sbsconv supports) cannot write Apple's stereo boxes
// (vexu, hfov), so they are added after muxing: the finished file is copied box by box into a
// new one whose moov has the new boxes appended to the video track's sample entry. The sizes
// of the sample entry and of every box above it (stsd, stbl, minf, mdia, trak, moov) grow by
// the inserted bytes. Top-level boxes are written in the input's order, or with the moov moved
// to the front (right after ftyp: what faststart does), so a writer that adds boxes lets this
// copy be its faststart pass instead of copying the file twice. Every chunk offset (stco,
// co64) of every track moves with the top-level box its chunk lies in, and a 32-bit stco whose
// offsets would pass 4 GiB becomes a co64 (which grows the moov again: repeated until nothing
// changes). Media data is streamed, never held in memory; only the moov is (it is refused above
// 256 MiB). Boxes with 64-bit sizes are read; written sizes are 32-bit where they fit.

// One box: `type` (four characters) around `payload`; a full box has version and flags first.
std::string make_box(const std::string& type, const std::string& payload);
std::string make_full_box(const std::string& type, uint8_t version, uint32_t flags, const std::string& payload);
std::string be32(uint32_t value);

// Apple's stereo description of a frame-packed or spatial video (the Video Extended Usage box
// and the field of view beside it; Apple's "ISO Base Media File Format and Apple HEVC Stereo
// Video" and the Apple Projected Media Profile): both eyes present, the left eye the hero,
// the camera baseline, the horizontal disparity adjustment, and how the eyes are packed and
// projected.
struct AppleStereo {
  std::string packing; // "side" (side by side), "over" (over-under) or "" (two layers: spatial)
  std::string projection; // "rect", "hequ" (180 degrees), "equi" (360), or "" (none written)
  uint32_t baseline_um = 63000; // micrometres
  int32_t disparity_adjustment = 0; // 1/10000 of the image width, signed
  std::optional<double> hfov_degrees; // written as thousandths of a degree
};

// vexu{eyes{stri, hero, cams{blin}, cmfy{dadj}}, proj{prji}, pack{pkin}} followed by hfov, as
// sample-entry children.
std::string apple_stereo_boxes(const AppleStereo& apple);

// Google's stereo and spherical boxes (st3d; sv3d{svhd, proj{prhd, equi}} for VR180: the middle
// 180 degrees of longitude), for QuickTime files, where FFmpeg's muxer writes them only in MP4
// mode. st3d_mode: 1 top-bottom, 2 left-right; 0 writes no st3d.
std::string google_stereo_boxes(int st3d_mode, bool vr180);

// Copies the MP4/MOV file `in` to `out` with `boxes` (complete serialised boxes) appended to
// the children of the first video track's sample entry, fixing sizes and chunk offsets (Note
// above); `moov_first` also moves the moov to the front. `out` is written directly (the caller
// writes it under a temporary name). Throws
// Error(Output) for a file it cannot edit (no moov, no video track, damaged boxes), naming
// `in`; Error(Cancelled) when *cancel becomes true.
void copy_with_sample_entry_boxes(
    const std::string& in,
    const std::string& out,
    const std::string& boxes,
    const std::atomic<bool>* cancel = nullptr,
    bool moov_first = false);

// The moov that copy_with_sample_entry_boxes writes for `in` (for checking the edit without
// copying the media data).
std::string edited_moov(const std::string& in, const std::string& boxes, bool moov_first = false);

// The stereo and spherical signalling of an MP4/MOV file's first video track, as the boxes
// say it (for `sbsconv probe`). Everything is optional: a file without such boxes gives an
// empty description; a file that is not ISO-BMFF gives `found == false`.
struct StereoBoxes {
  bool found = false; // an ISO-BMFF file with a video sample entry
  std::string sample_entry; // "hvc1", "avc1" ...
  bool second_layer = false; // lhvC: MV-HEVC (spatial video)
  std::optional<int> st3d; // 0 mono, 1 top-bottom, 2 left-right, 4 right-left
  std::string spherical; // "equirectangular", "cubemap", "" (no sv3d)
  std::optional<double> equi_left, equi_right, equi_top, equi_bottom; // bounds, fractions
  bool vexu = false;
  std::optional<int> stri, hero;
  std::optional<uint32_t> baseline_um;
  std::optional<int32_t> disparity_adjustment;
  std::string projection; // vexu/proj/prji
  std::string packing; // vexu/pack/pkin
  std::optional<uint32_t> hfov_millidegrees;
};
StereoBoxes read_stereo_boxes(const std::string& path);

} // namespace sbsconv
