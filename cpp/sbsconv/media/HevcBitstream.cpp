#include "sbsconv/media/HevcBitstream.h"

#include <algorithm>
#include <map>
#include <optional>

#include "sbsconv/common/Error.h"
#include "sbsconv/media/NalBits.h"

namespace sbsconv::hevc {

namespace {

constexpr const char* kStage = "encode";

enum : int {
  kRadlN = 6,
  kRaslR = 9,
  kBlaWLp = 16,
  kIdrWRadl = 19,
  kIdrNLp = 20,
  kIrapLast = 23,
  kVps = 32,
  kSps = 33,
  kPps = 34,
  kAud = 35,
  kEos = 36,
  kEob = 37,
  kPrefixSei = 39,
};

[[noreturn]] void fail(const std::string& reason) {
  throw Error(ErrorKind::Encode, kStage, "the MV-HEVC bitstream " + reason);
}

bool is_vcl(int type) {
  return type < kVps;
}
bool is_irap(int type) {
  return type >= kBlaWLp && type <= kIrapLast;
}
bool is_idr(int type) {
  return type == kIdrWRadl || type == kIdrNLp;
}
bool is_rasl(int type) {
  return type == 8 || type == kRaslR;
}
bool is_radl(int type) {
  return type == kRadlN || type == 7;
}
// sub-layer non-reference pictures: the even types up to RSV_VCL_N14
bool is_sub_layer_non_reference(int type) {
  return type <= 14 && type % 2 == 0;
}
bool is_parameter_set(int type) {
  return type == kVps || type == kSps || type == kPps;
}

// The RBSP of (the first `limit` bytes of) a NAL unit's payload: emulation prevention bytes
// removed, the 2-byte header skipped.
std::vector<uint8_t> rbsp(const Nal& nal, size_t limit = SIZE_MAX) {
  const size_t end = std::min(nal.size, limit);
  return nal::unescape(nal.data + 2, end > 2 ? end - 2 : 0);
}

// A header reader that fails the stream (Error) where nal::BitReader runs out.
class BitReader {
 public:
  explicit BitReader(const std::vector<uint8_t>& bytes) : r_(bytes) {}
  uint32_t bits(int n) {
    return checked(r_.bits(n));
  }
  void skip(size_t n) {
    r_.skip(n);
    checked(0);
  }
  uint32_t ue() {
    return checked(r_.exp_golomb());
  }
  nal::BitReader& raw() {
    return r_;
  }

 private:
  uint32_t checked(uint32_t v) const {
    if (!r_.ok()) {
      fail("has a header that ends too early or an invalid Exp-Golomb code");
    }
    return v;
  }
  nal::BitReader r_;
};

struct SpsInfo {
  int log2_max_poc_lsb = 4;
  bool separate_colour_planes = false;
};
struct PpsInfo {
  uint32_t sps_id = 0;
  bool output_flag_present = false;
  int extra_slice_header_bits = 0;
};

// layer-0 SPS: the fields before the POC's length
std::pair<uint32_t, SpsInfo> parse_sps(const Nal& nal) {
  const std::optional<nal::HevcSpsHead> head = nal::read_hevc_sps_head(rbsp(nal));
  if (!head) {
    fail("has an invalid base-layer SPS");
  }
  return {head->id, SpsInfo{head->log2_max_poc_lsb, head->separate_colour_planes}};
}

std::pair<uint32_t, PpsInfo> parse_pps(const Nal& nal) {
  const std::vector<uint8_t> b = rbsp(nal, 64);
  BitReader r(b);
  const uint32_t id = r.ue();
  PpsInfo info;
  info.sps_id = r.ue();
  r.skip(1); // dependent_slice_segments_enabled_flag
  info.output_flag_present = r.bits(1) != 0;
  info.extra_slice_header_bits = static_cast<int>(r.bits(3));
  if (id > 63 || info.sps_id > 15) {
    fail("has an invalid base-layer PPS");
  }
  return {id, info};
}

// The POC LSB of a base-layer picture's first slice (0 for IDR pictures, which have none) and
// its length in bits (log2_max_pic_order_cnt_lsb of the SPS the slice's PPS names).
std::pair<int64_t, int> slice_poc_lsb(
    const Nal& nal,
    const std::map<uint32_t, SpsInfo>& sps,
    const std::map<uint32_t, PpsInfo>& pps) {
  const std::vector<uint8_t> b = rbsp(nal, 64);
  BitReader r(b);
  r.skip(1); // first_slice_segment_in_pic_flag (set: the caller looks at first slices only)
  if (is_irap(nal.type)) {
    r.skip(1); // no_output_of_prior_pics_flag
  }
  const uint32_t pps_id = r.ue();
  const auto p = pps.find(pps_id);
  if (p == pps.end()) {
    fail("has a slice that names a PPS it never sent");
  }
  const auto s = sps.find(p->second.sps_id);
  if (s == sps.end()) {
    fail("has a PPS that names an SPS it never sent");
  }
  const int log2 = s->second.log2_max_poc_lsb;
  if (is_idr(nal.type)) {
    return {0, log2};
  }
  r.skip(static_cast<size_t>(p->second.extra_slice_header_bits));
  r.ue(); // slice_type
  if (p->second.output_flag_present) {
    r.skip(1);
  }
  if (s->second.separate_colour_planes) {
    r.skip(2);
  }
  return {r.bits(log2), log2};
}

uint32_t parameter_set_id(const Nal& nal) {
  if (nal.type == kVps) {
    return nal.size > 2 ? (nal.data[2] >> 4) : 0;
  }
  const std::vector<uint8_t> b = rbsp(nal, nal.type == kPps ? 64 : SIZE_MAX);
  BitReader r(b);
  if (nal.type == kPps) {
    return r.ue();
  }
  // SPS: a second layer's may leave out its profile (F.7.3.2.2.1, MultiLayerExtSpsFlag)
  r.skip(4);
  const uint32_t sub_layers_or_ext = r.bits(3);
  if (!(nal.layer != 0 && sub_layers_or_ext == 7)) {
    if (sub_layers_or_ext > 6) {
      fail("has an invalid SPS");
    }
    r.skip(1 + 3);
    r.skip(5); // general_profile_idc
    nal::skip_hevc_profile_tier_level_rest(r.raw(), sub_layers_or_ext);
  }
  return r.ue();
}

bool is_base_first_slice(const Nal& nal) {
  return nal.layer == 0 && is_vcl(nal.type) && nal.size > 2 && (nal.data[2] & 0x80) != 0;
}

// F.7.4.2.4.4: of the NAL units between the last VCL unit and the next base-layer picture's
// first slice, the first layer-0 AUD, parameter set, prefix SEI or reserved prefix unit (else
// that slice) starts a new access unit. (A layer-0 SEI after the base picture and before the
// second layer's picture belongs to the same unit, as in Apple's files.)
std::vector<bool> access_unit_starts(const std::vector<Nal>& nals) {
  std::vector<bool> starts(nals.size(), false);
  bool seen_picture = false;
  for (size_t f = 0; f < nals.size(); ++f) {
    if (!is_base_first_slice(nals[f])) {
      continue;
    }
    if (seen_picture) {
      size_t begin = f;
      while (begin > 0 && !is_vcl(nals[begin - 1].type)) {
        --begin;
      }
      size_t start = f;
      for (size_t j = begin; j < f; ++j) {
        const int t = nals[j].type;
        if (nals[j].layer == 0 &&
            ((t >= kVps && t <= kAud) || t == kPrefixSei || (t >= 41 && t <= 44) || (t >= 48 && t <= 55))) {
          start = j;
          break;
        }
      }
      starts[start] = true;
    }
    seen_picture = true;
  }
  return starts;
}

void append_start_code(std::string& out, const Nal& nal) {
  out.append("\0\0\0\1", 4);
  out.append(reinterpret_cast<const char*>(nal.data), nal.size);
}

} // namespace

std::vector<Nal> split_annexb(const uint8_t* data, size_t size) {
  std::vector<Nal> nals;
  // positions just after each start code
  std::vector<size_t> starts;
  for (size_t i = 0; i + 2 < size; ++i) {
    if (data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1) {
      starts.push_back(i + 3);
      i += 2;
    }
  }
  if (starts.empty() || starts.front() > 4) {
    fail("does not begin with a start code");
  }
  for (size_t k = 0; k < starts.size(); ++k) {
    size_t end = k + 1 < starts.size() ? starts[k + 1] - 3 : size;
    while (end > starts[k] && data[end - 1] == 0) {
      --end; // trailing_zero_8bits and the leading zero of a 4-byte start code
    }
    const size_t n = end - starts[k];
    if (n < 2) {
      fail("has an empty NAL unit");
    }
    const uint8_t* p = data + starts[k];
    if ((p[0] & 0x80) != 0 || (p[1] & 7) == 0) {
      fail("has an invalid NAL unit header");
    }
    nals.push_back(Nal{p, n, (p[0] >> 1) & 63, ((p[0] & 1) << 5) | (p[1] >> 3), (p[1] & 7) - 1});
  }
  return nals;
}

namespace {

Stream parse(const uint8_t* data, size_t size, bool pictures_required) {
  const std::vector<Nal> nals = split_annexb(data, size);
  Stream stream;
  std::map<uint32_t, SpsInfo> sps;
  std::map<uint32_t, PpsInfo> pps;
  // (layer, type, id) -> the parameter set's bytes, for "re-sent unchanged"
  std::map<std::tuple<int, int, uint32_t>, std::string> sent;

  const std::vector<bool> unit_starts = access_unit_starts(nals);
  AccessUnit current;
  std::vector<bool> layer_seen(2, false);
  const auto close_unit = [&]() {
    if (!current.nals.empty() && (pictures_required || current.base_type >= 0)) {
      if (current.base_type < 0) {
        fail("has an access unit without a base-layer picture");
      }
      current.layers = static_cast<int>(std::count(layer_seen.begin(), layer_seen.end(), true));
      stream.units.push_back(std::move(current));
    }
    current = AccessUnit{};
    std::fill(layer_seen.begin(), layer_seen.end(), false);
  };

  // 8.3.1: the POC of each base-layer picture
  int64_t prev_lsb = 0;
  int64_t prev_msb = 0;
  bool first_picture = true;
  bool after_eos = false;
  bool rasl_dropped = false;
  std::vector<int64_t> period_of_unit; // IRAP-with-NoRaslOutputFlag periods
  int64_t period = -1;

  for (size_t index = 0; index < nals.size(); ++index) {
    const Nal& nal = nals[index];
    if (nal.layer > 1) {
      fail("has more than two layers (nuh_layer_id " + std::to_string(nal.layer) + ")");
    }
    if (unit_starts[index]) {
      close_unit();
    }
    if (is_parameter_set(nal.type)) {
      const uint32_t id = parameter_set_id(nal);
      const std::string bytes(reinterpret_cast<const char*>(nal.data), nal.size);
      const auto key = std::make_tuple(nal.layer, nal.type, id);
      const auto it = sent.find(key);
      if (it == sent.end()) {
        sent.emplace(key, bytes);
        (nal.layer == 0 ? stream.base_parameter_sets : stream.layer1_parameter_sets).push_back(bytes);
        if (nal.layer == 0 && nal.type == kSps) {
          sps.insert(parse_sps(nal));
        } else if (nal.layer == 0 && nal.type == kPps) {
          pps.insert(parse_pps(nal));
        } else if (nal.layer == 0 && nal.type == kVps && nal.size >= 6) {
          // vps_video_parameter_set_id(4) base_layer_internal(1) base_layer_available(1)
          // max_layers_minus1(6) max_sub_layers_minus1(3) temporal_id_nesting(1)
          const std::vector<uint8_t> b = rbsp(nal, 8);
          BitReader r(b);
          r.skip(12);
          stream.sub_layers = static_cast<int>(r.bits(3)) + 1;
          stream.temporal_id_nested = r.bits(1) != 0;
        }
      } else if (it->second != bytes) {
        fail("changes a parameter set under the same id, which an MP4 'hvc1' track cannot carry");
      }
    }
    if (nal.type == kEos) {
      after_eos = true;
    }
    if (is_vcl(nal.type)) {
      if (nal.type > kIrapLast) {
        fail("has a reserved slice type " + std::to_string(nal.type));
      }
      layer_seen[static_cast<size_t>(nal.layer)] = true;
      const bool first_slice = nal.size > 2 && (nal.data[2] & 0x80) != 0;
      if (nal.layer == 0 && first_slice) {
        const int t = nal.type;
        const auto [lsb, log2] = slice_poc_lsb(nal, sps, pps);
        const bool no_rasl_output = is_irap(t) && (t <= kIdrNLp || first_picture || after_eos);
        if (first_picture && !is_irap(t)) {
          fail("does not begin with a random access point");
        }
        if (is_irap(t)) {
          // RASL pictures of a CRA/BLA with NoRaslOutputFlag are never output by a decoder
          rasl_dropped = no_rasl_output && !is_idr(t);
        } else if (is_rasl(t) && rasl_dropped) {
          fail("has pictures a decoder drops (RASL after a clean random access point)");
        }
        int64_t msb = 0;
        if (no_rasl_output) {
          ++period; // POC MSB restarts at 0
        } else {
          const int64_t max_lsb = int64_t{1} << log2;
          if (lsb < prev_lsb && prev_lsb - lsb >= max_lsb / 2) {
            msb = prev_msb + max_lsb;
          } else if (lsb > prev_lsb && lsb - prev_lsb > max_lsb / 2) {
            msb = prev_msb - max_lsb;
          } else {
            msb = prev_msb;
          }
        }
        current.base_type = t;
        current.keyframe = is_irap(t);
        current.poc = msb + lsb;
        if (nal.temporal_id == 0 && !is_rasl(t) && !is_radl(t) && !is_sub_layer_non_reference(t)) {
          prev_lsb = lsb;
          prev_msb = msb;
        }
        first_picture = false;
        after_eos = false;
        period_of_unit.push_back(period);
      }
    }
    current.nals.push_back(nal);
  }
  close_unit();
  if (!pictures_required && stream.units.empty()) {
    return stream;
  }
  if (stream.units.empty()) {
    fail("holds no pictures");
  }
  if (period_of_unit.size() != stream.units.size()) {
    fail("has access units without a first base-layer slice");
  }
  for (const AccessUnit& u : stream.units) {
    stream.max_layers = std::max(stream.max_layers, u.layers);
  }

  // display order: period by period, by POC within a period
  int64_t period_start = 0;
  for (size_t begin = 0; begin < stream.units.size();) {
    size_t end = begin;
    while (end < stream.units.size() && period_of_unit[end] == period_of_unit[begin]) {
      ++end;
    }
    std::vector<std::pair<int64_t, size_t>> order;
    for (size_t i = begin; i < end; ++i) {
      order.emplace_back(stream.units[i].poc, i);
    }
    std::sort(order.begin(), order.end());
    for (size_t k = 0; k < order.size(); ++k) {
      if (k > 0 && order[k].first == order[k - 1].first) {
        fail("has two pictures with one picture order count");
      }
      stream.units[order[k].second].display_index = period_start + static_cast<int64_t>(k);
    }
    period_start += static_cast<int64_t>(end - begin);
    begin = end;
  }
  for (size_t i = 0; i < stream.units.size(); ++i) {
    stream.reorder_delay =
        std::max(stream.reorder_delay, static_cast<int64_t>(i) - stream.units[i].display_index);
  }
  return stream;
}

// Parameter sets after 4-byte start codes, in VPS, SPS, PPS order, as decoders and hvcC
// writers expect.
std::string annexb_of(const std::vector<std::string>& sets) {
  std::string out;
  for (const int type : {kVps, kSps, kPps}) {
    for (const std::string& ps : sets) {
      if (((static_cast<uint8_t>(ps[0]) >> 1) & 63) == type) {
        out.append("\0\0\0\1", 4);
        out += ps;
      }
    }
  }
  return out;
}

} // namespace

Stream parse_stream(const uint8_t* data, size_t size) {
  return parse(data, size, /*pictures_required=*/true);
}

Stream read_parameter_sets(const uint8_t* data, size_t size) {
  return parse(data, size, /*pictures_required=*/false);
}

std::string base_extradata(const Stream& stream) {
  return annexb_of(stream.base_parameter_sets);
}

std::string all_parameter_sets(const Stream& stream) {
  return annexb_of(stream.base_parameter_sets) + annexb_of(stream.layer1_parameter_sets);
}

std::string lhvc_box(const Stream& stream) {
  if (stream.layer1_parameter_sets.empty()) {
    return {};
  }
  std::string p;
  p.push_back(1); // configurationVersion
  p.push_back(static_cast<char>(0xF0)); // reserved '1111', min_spatial_segmentation_idc 0
  p.push_back(0);
  p.push_back(static_cast<char>(0xFC)); // reserved '111111', parallelismType 0 (unknown)
  // reserved '11', numTemporalLayers(3), temporalIdNested(1), lengthSizeMinusOne(2) = 3
  p.push_back(static_cast<char>(
      0xC0 | ((std::min(stream.sub_layers, 7) & 7) << 3) | (stream.temporal_id_nested ? 4 : 0) | 3));
  std::vector<std::pair<int, std::vector<const std::string*>>> arrays;
  for (const int type : {kVps, kSps, kPps}) {
    std::vector<const std::string*> sets;
    for (const std::string& ps : stream.layer1_parameter_sets) {
      if (((static_cast<uint8_t>(ps[0]) >> 1) & 63) == type) {
        sets.push_back(&ps);
      }
    }
    if (!sets.empty()) {
      arrays.emplace_back(type, std::move(sets));
    }
  }
  p.push_back(static_cast<char>(arrays.size()));
  for (const auto& [type, sets] : arrays) {
    p.push_back(static_cast<char>(0x80 | type)); // array_completeness 1, reserved 0
    p.push_back(static_cast<char>(sets.size() >> 8));
    p.push_back(static_cast<char>(sets.size() & 0xFF));
    for (const std::string* ps : sets) {
      if (ps->size() > 0xFFFF) {
        fail("has a parameter set over 64 KiB");
      }
      p.push_back(static_cast<char>(ps->size() >> 8));
      p.push_back(static_cast<char>(ps->size() & 0xFF));
      p += *ps;
    }
  }
  const uint32_t size = static_cast<uint32_t>(p.size() + 8);
  std::string box;
  for (int shift = 24; shift >= 0; shift -= 8) {
    box.push_back(static_cast<char>((size >> shift) & 0xFF));
  }
  box += "lhvC";
  return box + p;
}

std::string sample_annexb(const AccessUnit& unit) {
  std::string out;
  for (const Nal& nal : unit.nals) {
    if (is_parameter_set(nal.type) || nal.type == kAud || nal.type == kEos || nal.type == kEob) {
      continue;
    }
    append_start_code(out, nal);
  }
  return out;
}

} // namespace sbsconv::hevc
