// Fuzz harness: the stage-state file parser (pipeline/StateFile.h, Note [State files]), which
// reads files that a crash, a full disk or a user may have damaged.
//
// Each input is parsed twice with load_tensors_from_bytes(): as it is, and with its trailing
// checksum recomputed, so that mutations reach the checks behind the checksum (a fuzzer cannot
// forge FNV-1a sums). What parses must survive serialize_tensors() and a second parse
// unchanged.

#include <ATen/ATen.h>

#include <cstring>
#include <string>
#include <string_view>

#include "FuzzCommon.h"
#include "sbsconv/common/DurableFile.h"
#include "sbsconv/pipeline/StateFile.h"

using namespace sbsconv;
using sbsconv::fuzz::finding;

namespace {

constexpr const char* kHarness = "fuzz_state_file";

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) {
    return false;
  }
  const at::Tensor ca = a.contiguous();
  const at::Tensor cb = b.contiguous();
  const size_t bytes = static_cast<size_t>(ca.numel()) * ca.element_size();
  return bytes == 0 || std::memcmp(ca.const_data_ptr(), cb.const_data_ptr(), bytes) == 0;
}

void round_trip(const TensorMap& loaded) {
  TensorMap again;
  try {
    again = load_tensors_from_bytes(serialize_tensors(loaded), "resaved");
  } catch (const Error& e) {
    finding(kHarness, std::string("a state that loaded cannot be saved and loaded again: ") + e.what());
  }
  if (again.size() != loaded.size()) {
    finding(kHarness, "a state file that loaded does not round-trip: " + std::to_string(loaded.size()) +
                          " tensors became " + std::to_string(again.size()));
  }
  for (const auto& [name, tensor] : loaded) {
    auto it = again.find(name);
    if (it == again.end() || !same_bytes(tensor, it->second)) {
      finding(kHarness, "a state file that loaded does not round-trip: tensor '" + name + "' changed");
    }
  }
  // The prefix helpers the engine applies to a loaded state.
  if (under_prefix(with_prefix(loaded, "stage."), "stage.").size() != loaded.size()) {
    finding(kHarness, "with_prefix/under_prefix lost entries");
  }
}

void parse(std::string_view bytes) {
  TensorMap loaded;
  try {
    loaded = load_tensors_from_bytes(bytes, "fuzz-input");
  } catch (const Error& e) {
    fuzz::note(std::string("refused: ") + e.what());
    return; // as a damaged file should be
  }
  fuzz::note("loaded " + std::to_string(loaded.size()) + " tensors");
  round_trip(loaded);
}

// The input with its last 8 bytes replaced by the FNV-1a 64 of the bytes before them, as
// save_tensors() writes it (little-endian).
std::string with_checksum(std::string_view bytes) {
  std::string out(bytes);
  if (out.size() < 8) {
    return out;
  }
  const uint64_t sum = fnv1a64(std::string_view(out).substr(0, out.size() - 8));
  for (size_t i = 0; i < 8; ++i) {
    out[out.size() - 8 + i] = static_cast<char>((sum >> (8 * i)) & 0xff);
  }
  return out;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  fuzz::init_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::guarded(kHarness, [&] {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    parse(bytes);
    parse(with_checksum(bytes));
  });
}
