#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace sbsconv::nal {

// The bit-level syntax of H.264/HEVC NAL units, as far as sbsconv reads it: StreamParams (an
// encoder's or a segment's profile, chroma format and depth) and HevcBitstream (access units and
// picture order of a raw MV-HEVC stream) share these.
//
// Threading: plain functions and a reader over the caller's bytes; safe from any thread.

// A NAL unit payload's RBSP: emulation-prevention bytes (00 00 03 -> 00 00) removed.
inline std::vector<uint8_t> unescape(const uint8_t* data, size_t size) {
  std::vector<uint8_t> out;
  out.reserve(size);
  int zeros = 0;
  for (size_t i = 0; i < size; ++i) {
    if (zeros >= 2 && data[i] == 3) {
      zeros = 0;
      continue;
    }
    zeros = data[i] == 0 ? zeros + 1 : 0;
    out.push_back(data[i]);
  }
  return out;
}

// Reads bits of an RBSP. Never reads past the end: reading there gives 0 and clears ok().
class BitReader {
 public:
  explicit BitReader(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}

  uint32_t bits(int n) {
    uint32_t value = 0;
    for (int i = 0; i < n; ++i) {
      const size_t byte = position_ / 8;
      if (byte >= bytes_.size()) {
        ok_ = false;
        return 0;
      }
      value = (value << 1) | ((bytes_[byte] >> (7 - position_ % 8)) & 1u);
      ++position_;
    }
    return value;
  }

  void skip(size_t n) {
    position_ += n;
    if (position_ > bytes_.size() * 8) {
      ok_ = false;
    }
  }

  // Unsigned Exp-Golomb code, ue(v).
  uint32_t exp_golomb() {
    int zeros = 0;
    while (ok_ && bits(1) == 0) {
      if (++zeros > 31) {
        ok_ = false;
        return 0;
      }
    }
    return ok_ ? ((1u << zeros) - 1u) + bits(zeros) : 0;
  }

  bool ok() const {
    return ok_;
  }

 private:
  const std::vector<uint8_t>& bytes_;
  size_t position_ = 0;
  bool ok_ = true;
};

// HEVC profile_tier_level(1, max_sub_layers_minus1) after general_profile_idc has been read
// (reader just past general_profile_space, tier and profile_idc): skipped.
inline void skip_hevc_profile_tier_level_rest(BitReader& r, uint32_t max_sub_layers_minus1) {
  r.skip(32 + 48 + 8); // compatibility flags, constraint flags, general_level_idc
  std::vector<std::pair<bool, bool>> present(max_sub_layers_minus1);
  for (auto& [profile, level] : present) {
    profile = r.bits(1) != 0;
    level = r.bits(1) != 0;
  }
  if (max_sub_layers_minus1 > 0) {
    r.skip(2 * (8 - max_sub_layers_minus1)); // reserved_zero_2bits
  }
  for (const auto& [profile, level] : present) {
    r.skip((profile ? 88 : 0) + (level ? 8 : 0));
  }
}

// The head of an HEVC seq_parameter_set_rbsp that carries its own profile (every base-layer
// SPS), up to log2_max_pic_order_cnt_lsb_minus4.
struct HevcSpsHead {
  int profile = -1; // general_profile_idc
  uint32_t id = 0; // sps_seq_parameter_set_id
  int chroma_format = 1; // 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4
  bool separate_colour_planes = false;
  int bit_depth = 8; // luma
  int log2_max_poc_lsb = 4;
};

// nullopt for an RBSP that ends early or holds values out of range.
inline std::optional<HevcSpsHead> read_hevc_sps_head(const std::vector<uint8_t>& rbsp) {
  BitReader r(rbsp);
  HevcSpsHead h;
  r.skip(4); // sps_video_parameter_set_id
  const uint32_t sub_layers = r.bits(3); // sps_max_sub_layers_minus1
  r.skip(1); // sps_temporal_id_nesting_flag
  r.skip(3); // general_profile_space, general_tier_flag
  h.profile = static_cast<int>(r.bits(5));
  if (sub_layers > 6) {
    return std::nullopt;
  }
  skip_hevc_profile_tier_level_rest(r, sub_layers);
  h.id = r.exp_golomb();
  const uint32_t chroma = r.exp_golomb(); // (checked before it becomes an int: ue(v) is 32-bit)
  if (chroma == 3) {
    h.separate_colour_planes = r.bits(1) != 0;
  }
  r.exp_golomb(); // pic_width_in_luma_samples
  r.exp_golomb(); // pic_height_in_luma_samples
  if (r.bits(1) != 0) { // conformance_window_flag
    for (int k = 0; k < 4; ++k) {
      r.exp_golomb();
    }
  }
  const uint32_t depth_minus8 = r.exp_golomb();
  r.exp_golomb(); // bit_depth_chroma_minus8
  const uint32_t log2_minus4 = r.exp_golomb();
  if (!r.ok() || h.id > 15 || chroma > 3 || depth_minus8 > 8 || log2_minus4 > 12) {
    return std::nullopt;
  }
  h.chroma_format = static_cast<int>(chroma);
  h.bit_depth = static_cast<int>(depth_minus8) + 8;
  h.log2_max_poc_lsb = static_cast<int>(log2_minus4) + 4;
  return h;
}

} // namespace sbsconv::nal
