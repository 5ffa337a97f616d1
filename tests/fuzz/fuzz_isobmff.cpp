// Fuzz harness: the ISO-BMFF box reader and editor (media/IsoBmff.h, Note [Editing ISO-BMFF
// files]). `sbsconv probe` reads any file's stereo boxes, and every MP4/MOV output passes
// through the editor, so neither may crash, hang or read out of bounds on any input:
// read_stereo_boxes() never throws; copy_with_sample_entry_boxes() throws only sbsconv::Error,
// and what it writes reads back with the inserted boxes in the video's sample entry and with
// the moov grown by exactly the edit (edited_moov agrees with the file written).

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "FuzzCommon.h"
#include "sbsconv/media/IsoBmff.h"

using namespace sbsconv;
using sbsconv::fuzz::finding;

namespace {

constexpr const char* kHarness = "fuzz_isobmff";

std::string read_all(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  fuzz::init_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::guarded(kHarness, [&] {
    const auto in = fuzz::scratch_dir() / "input.mp4";
    const auto out = fuzz::scratch_dir() / "edited.mp4";
    fuzz::write_file(in, data, size);
    (void)read_stereo_boxes(in.string()); // never throws
    AppleStereo apple;
    apple.packing = "side";
    apple.projection = "rect";
    apple.hfov_degrees = 63.4;
    const std::string boxes = apple_stereo_boxes(apple) + google_stereo_boxes(2, false);
    std::error_code ec;
    std::filesystem::remove(out, ec);
    const bool moov_first = (size & 1) != 0; // both orders of the output
    try {
      copy_with_sample_entry_boxes(in.string(), out.string(), boxes, nullptr, moov_first);
    } catch (const Error& e) {
      fuzz::note(std::string("refused: ") + e.what());
      return;
    }
    const StereoBoxes edited = read_stereo_boxes(out.string());
    if (!edited.found || !edited.vexu || edited.packing != "side" || !edited.hfov_millidegrees ||
        *edited.hfov_millidegrees != 63400 || edited.st3d != 2) {
      finding(kHarness, "the edited file does not read back with the inserted boxes");
    }
    const std::string written = read_all(out);
    const std::string moov = edited_moov(in.string(), boxes, moov_first);
    if (written.find(moov) == std::string::npos) {
      finding(kHarness, "the file written does not hold the moov edited_moov() gives");
    }
  });
}
