// Fuzz harness: reading a raw (two-layer) HEVC byte stream back for muxing (media/HevcBitstream.h,
// Note [MV-HEVC bitstreams]). The stream comes from an external x265 (Note [Spatial video
// through x265]), so its parser must refuse anything it cannot mux with sbsconv::Error only, and
// what it accepts must be consistent: every access unit has one display position (a permutation
// of 0..n-1), no unit is shown more than the reorder delay before it is decoded, the extradata
// holds only the base layer's parameter sets, the samples hold none, and lhvC has the size it says.

#include <algorithm>
#include <string>
#include <vector>

#include "FuzzCommon.h"
#include "sbsconv/media/HevcBitstream.h"

using namespace sbsconv;
using sbsconv::fuzz::finding;

namespace {
constexpr const char* kHarness = "fuzz_hevc";
} // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  fuzz::init_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::guarded(kHarness, [&] {
    hevc::Stream stream;
    try {
      stream = hevc::parse_stream(data, size);
    } catch (const Error& e) {
      fuzz::note(std::string("refused: ") + e.what());
      return;
    }
    const size_t n = stream.units.size();
    std::vector<bool> shown(n, false);
    for (size_t i = 0; i < n; ++i) {
      const int64_t d = stream.units[i].display_index;
      if (d < 0 || d >= static_cast<int64_t>(n) || shown[static_cast<size_t>(d)]) {
        finding(kHarness, "display positions are not a permutation of the access units");
      }
      shown[static_cast<size_t>(d)] = true;
      if (d < static_cast<int64_t>(i) - stream.reorder_delay) {
        finding(kHarness, "a unit is shown earlier than the reorder delay allows");
      }
      const std::string sample = hevc::sample_annexb(stream.units[i]);
      if (!sample.empty()) {
        for (const hevc::Nal& nal : hevc::split_annexb(reinterpret_cast<const uint8_t*>(sample.data()), sample.size())) {
          if (nal.type >= 32 && nal.type <= 35) {
            finding(kHarness, "a sample keeps a parameter set or delimiter");
          }
        }
      }
    }
    const std::string extradata = hevc::base_extradata(stream);
    if (!extradata.empty()) {
      for (const hevc::Nal& nal : hevc::split_annexb(reinterpret_cast<const uint8_t*>(extradata.data()), extradata.size())) {
        if (nal.layer != 0 || nal.type < 32 || nal.type > 34) {
          finding(kHarness, "the extradata holds something other than base-layer parameter sets");
        }
      }
    }
    const std::string lhvc = hevc::lhvc_box(stream);
    if (!lhvc.empty()) {
      const uint32_t declared = (static_cast<uint32_t>(static_cast<uint8_t>(lhvc[0])) << 24) |
          (static_cast<uint32_t>(static_cast<uint8_t>(lhvc[1])) << 16) |
          (static_cast<uint32_t>(static_cast<uint8_t>(lhvc[2])) << 8) | static_cast<uint8_t>(lhvc[3]);
      if (declared != lhvc.size() || lhvc.compare(4, 4, "lhvC") != 0) {
        finding(kHarness, "the lhvC box's size is not its length");
      }
    }
  });
}
