// Fuzz harness: the resume journal's parser, parse_journal() (pipeline/Journal.h, Note
// [Journal integrity]). It must never throw or crash, and what it accepts must be consistent
// (consecutive indices and frames, distinct files) and round-trip through format_journal().
//
// Each input is parsed twice: as it is, and with the checksum of every line after the header
// recomputed, so that mutations reach the checks behind the checksums (a fuzzer cannot forge
// FNV-1a sums).

#include <cinttypes>
#include <cstdio>
#include <set>
#include <string>
#include <string_view>

#include "FuzzCommon.h"
#include "sbsconv/common/DurableFile.h"
#include "sbsconv/pipeline/Journal.h"

using namespace sbsconv;
using sbsconv::fuzz::finding;

namespace {

constexpr const char* kHarness = "fuzz_journal";

std::string describe(const SegmentRecord& r) {
  return "segment " + std::to_string(r.index) + " first_frame " + std::to_string(r.first_frame) + " frames " +
      std::to_string(r.frames) + " file '" + r.file + "' state '" + r.state + "'";
}

void check(const ParsedJournal& parsed) {
  fuzz::note("format " + std::to_string(parsed.version) + ", " + std::to_string(parsed.records.size()) +
             " segments" + (parsed.fingerprint ? ", fingerprint '" + *parsed.fingerprint + "'" : ", no fingerprint") +
             (parsed.problem.empty() ? "" : "; problem: " + parsed.problem));
  if (!parsed.fingerprint && !parsed.records.empty()) {
    finding(kHarness, "parse_journal returned segments without a fingerprint");
  }
  int64_t next_frame = 0;
  std::set<std::string> files;
  for (size_t i = 0; i < parsed.records.size(); ++i) {
    const SegmentRecord& r = parsed.records[i];
    if (r.index != static_cast<int64_t>(i) || r.first_frame != next_frame || r.frames < 0 || r.file.empty() ||
        r.state.empty() || !files.insert(r.file).second || !files.insert(r.state).second) {
      finding(kHarness, "parse_journal accepted an inconsistent segment: " + describe(r));
    }
    // Wrapping, so that an overflow is the parser's to report, not this check's.
    next_frame = static_cast<int64_t>(static_cast<uint64_t>(r.first_frame) + static_cast<uint64_t>(r.frames));
  }
  if (!parsed.fingerprint) {
    return;
  }
  // What was accepted is written back exactly.
  const std::string text = format_journal(*parsed.fingerprint, parsed.records, parsed.choices);
  const ParsedJournal again = parse_journal(text);
  if (again.fingerprint != parsed.fingerprint || again.records != parsed.records || again.choices != parsed.choices ||
      !again.problem.empty()) {
    finding(kHarness, "parse_journal(format_journal(...)) does not give the journal back (" +
                          std::to_string(parsed.records.size()) + " segments, then " +
                          std::to_string(again.records.size()) + "; problem: '" + again.problem + "')");
  }
}

// Every line after the first with its trailing checksum (a 16-hex-digit last token, added when
// absent) replaced by the right one.
std::string with_checksums(std::string_view text) {
  std::string out;
  bool first = true;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    const bool has_newline = end != std::string_view::npos;
    std::string_view line = text.substr(0, has_newline ? end : text.size());
    text.remove_prefix(has_newline ? end + 1 : text.size());
    if (first || line.empty()) {
      out += line;
    } else {
      const size_t last = line.rfind(' ');
      std::string_view body = line;
      if (last != std::string_view::npos && line.size() - last - 1 == 16) {
        body = line.substr(0, last);
      }
      char sum[17];
      std::snprintf(sum, sizeof(sum), "%016" PRIx64, fnv1a64(body));
      out += body;
      out += ' ';
      out += sum;
    }
    if (has_newline) {
      out += '\n';
    }
    first = false;
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
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    check(parse_journal(text));
    check(parse_journal(with_checksums(text)));
  });
}
