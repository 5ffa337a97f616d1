#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sbsconv::hevc {

// Note [MV-HEVC bitstreams]
// An external MV-HEVC encoder (x265 built with multiview support) writes a raw two-layer H.265
// byte stream (Annex B): NAL units after start codes, in decoding order, with no timestamps.
// To mux it, sbsconv reads it back here:
// - NAL units are grouped into access units (H.265 7.4.2.4.4: a new unit starts at the first
//   layer-0 AUD, parameter set, prefix SEI or reserved prefix NAL, or layer-0 slice that begins a
//   picture, after a picture has been seen). A unit holds both layers' pictures of one instant.
// - Each unit's presentation position comes from its base-layer picture order count (8.3.1,
//   with the MSB carried from the previous TemporalId-0 reference picture), read from the first
//   slice header with the SPS/PPS it names. POC restarts at every IRAP picture with
//   NoRaslOutputFlag (IDR, BLA, the first picture, a CRA after an end of sequence), so
//   display order is "period by period, by POC within a period".
// - Parameter sets go to the sample description, not the samples (MP4 'hvc1'): the base layer's
//   (VPS, SPS, PPS with nuh_layer_id 0) to hvcC, the second layer's (nuh_layer_id 1) to lhvC
//   (ISO/IEC 14496-15's L-HEVC configuration, as Apple's spatial videos carry it). A parameter
//   set re-sent with the same id must not change: hvc1 cannot carry two versions of one.
// - The decoding delay (how far a unit's display position can lie before its decoding
//   position) gives decode timestamps that never pass presentation timestamps.

struct Nal {
  const uint8_t* data = nullptr; // from the 2-byte NAL header on, escaped (as in the stream)
  size_t size = 0;
  int type = 0; // nal_unit_type
  int layer = 0; // nuh_layer_id
  int temporal_id = 0; // nuh_temporal_id_plus1 - 1
};

// The NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01; trailing zero
// bytes dropped). Throws Error(Encode) for bytes that are not such a stream.
std::vector<Nal> split_annexb(const uint8_t* data, size_t size);

struct AccessUnit {
  std::vector<Nal> nals; // every NAL unit of the unit, in stream order
  int base_type = -1; // nal_unit_type of the base-layer picture
  bool keyframe = false; // the base-layer picture is IRAP (a random access point)
  int layers = 0; // how many layers have a picture in this unit
  int64_t poc = 0; // base-layer picture order count
  int64_t display_index = 0; // position in presentation order, over the whole stream
};

struct Stream {
  std::vector<AccessUnit> units; // decoding order
  std::vector<std::string> base_parameter_sets; // VPS, SPS, PPS of layer 0, each a NAL unit
  std::vector<std::string> layer1_parameter_sets; // SPS, PPS (and VPS) of layer 1
  int max_layers = 1; // layers with pictures anywhere in the stream
  int sub_layers = 1; // vps_max_sub_layers_minus1 + 1
  bool temporal_id_nested = false;
  // Units' display position minus decoding position never exceeds this (>= 0).
  int64_t reorder_delay = 0;
};

// Parses a whole stream (Note above). Throws Error(Encode, "encode", reason) for a stream that
// cannot be muxed: no pictures, more than two layers, an undecodable header, a parameter set
// changed under the same id, two pictures with one POC in a period, RASL pictures that a
// decoder would drop.
Stream parse_stream(const uint8_t* data, size_t size);

// Only the parameter sets of an Annex B byte string (units stays empty when it has no
// pictures): how a spatial segment's extradata (all_parameter_sets) is read back to be split
// into hvcC and lhvC. Throws as parse_stream.
Stream read_parameter_sets(const uint8_t* data, size_t size);

// The base layer's parameter sets as Annex B (each after a 4-byte start code): what FFmpeg's
// MP4 muxer turns into hvcC.
std::string base_extradata(const Stream& stream);

// Both layers' parameter sets as Annex B, the base layer's first: the extradata of a spatial
// segment (NUT keeps it whole; the final MP4/MOV splits it again).
std::string all_parameter_sets(const Stream& stream);

// The complete lhvC box for the second layer's parameter sets (LHEVCDecoderConfigurationRecord,
// 4-byte NAL lengths, arrays complete). Empty for a one-layer stream.
std::string lhvc_box(const Stream& stream);

// One sample's NAL units as Annex B: every unit except parameter sets, access unit delimiters
// and end of sequence/bitstream (they live in the sample description or mean nothing in MP4).
std::string sample_annexb(const AccessUnit& unit);

} // namespace sbsconv::hevc
