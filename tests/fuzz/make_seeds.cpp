// Writes the seed corpora of fuzz_state_file, fuzz_journal and fuzz_weights into
// <corpus>/<harness>/ (tests/fuzz/make_seeds.sh runs it; tests/fuzz/README.md lists the seeds).
// State files and journals are written by the core's own writers (serialize_tensors,
// format_journal), so the seeds follow the current formats; the weights seeds are byte strings
// in fuzz_weights.cpp's input layout.
//
//   sbsconv_fuzz_make_seeds <corpus folder>

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "sbsconv/pipeline/Journal.h"
#include "sbsconv/pipeline/StateFile.h"

using namespace sbsconv;
namespace fs = std::filesystem;

namespace {

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

void state_seeds(const fs::path& dir) {
  write(dir / "empty.state", serialize_tensors({}));
  write(dir / "one_float.state", serialize_tensors({{"x", at::arange(6, at::kFloat).view({2, 3})}}));
  // One tensor of every dtype the format holds, with 0-d, empty and multi-dimensional shapes.
  write(
      dir / "every_dtype.state",
      serialize_tensors({
          {"f32", at::linspace(-1, 1, 4, at::kFloat)},
          {"f64", at::full({}, 3.5, at::kDouble)},
          {"f16", at::ones({2, 2}, at::kHalf)},
          {"bf16", at::ones({1, 3}, at::kBFloat16)},
          {"i64", at::arange(3, at::kLong)},
          {"i32", at::zeros({0, 4}, at::kInt)},
          {"u8", at::arange(5, at::kByte)},
          {"bool", at::ones({2, 1, 2}, at::kBool)},
      }));
  // What the engine saves: prefixed stage states.
  TensorMap stages;
  stages["stabilizer.low"] = at::full({1}, 0.25, at::kDouble);
  stages["stabilizer.high"] = at::full({1}, 0.75, at::kDouble);
  stages["stabilizer.frames"] = at::full({}, 12, at::kLong);
  stages["scene_cut.previous"] = at::zeros({1, 16}, at::kFloat);
  stages["comfort.budget"] = at::ones({3}, at::kFloat);
  stages["model.cache.0"] = at::zeros({1, 2, 4, 8}, at::kHalf);
  write(dir / "engine_like.state", serialize_tensors(stages));
  const std::string whole = serialize_tensors({{"t", at::ones({4}, at::kFloat)}});
  write(dir / "truncated.state", whole.substr(0, whole.size() - 11));
  // The previous format, which the loader must refuse cleanly.
  std::string v1 = "SBSCONV-STATE-1\n";
  v1.append(std::string("\x01\0\0\0\0\0\0\0", 8));
  write(dir / "format1.state", v1);
}

SegmentRecord segment(int64_t index, int64_t first, int64_t frames) {
  SegmentRecord r;
  r.index = index;
  r.first_frame = first;
  r.frames = frames;
  r.next_pts = (first + frames) * 512;
  r.file = "seg" + std::to_string(index) + ".nut";
  r.state = "state" + std::to_string(index) + ".bin";
  r.encoder = "libx264";
  r.stream_params = "h264 yuv420p 64x48 tb=1/12800 crf=18";
  r.packets = frames;
  r.bytes = 4096 + 100 * index;
  r.state_checksum = 0x0123456789abcdefULL + static_cast<uint64_t>(index);
  return r;
}

void journal_seeds(const fs::path& dir) {
  write(dir / "no_segments.txt", format_journal("input=a.mp4 model=depth-anything-v2-small", {}));
  write(dir / "one_segment.txt", format_journal("fp", {segment(0, 0, 48)}));
  write(dir / "three_segments.txt", format_journal("fp", {segment(0, 0, 48), segment(1, 48, 48), segment(2, 96, 7)}));
  SegmentRecord odd = segment(0, 0, 1);
  odd.file = "seg 0%.nut"; // percent-encoded in the text
  odd.state = "st\xc3\xa9te";
  odd.encoder = "";
  odd.stream_params = "-";
  odd.next_pts = -1;
  write(dir / "encoded_fields.txt", format_journal("finger print\twith\nnewline", {odd}));
  std::string damaged = format_journal("fp", {segment(0, 0, 48), segment(1, 48, 48)});
  damaged[damaged.size() - 3] ^= 1; // the last line's checksum no longer matches
  write(dir / "bad_checksum.txt", damaged);
  write(dir / "format1.txt", "sbsconv-journal 1\nfingerprint fp\nsegment 0 0 48 24576 seg0.nut state0.bin\n");
}

// fuzz_weights inputs: byte 0 (bit 7: transformers mode, bits 0-6 with bytes 1-2: the target
// configuration), byte 3 (bit 0: fill, bit 1: metric), then ops. See fuzz_weights.cpp.
void weights_seeds(const fs::path& dir) {
  auto bytes = [](std::initializer_list<int> v) {
    std::string s;
    for (int b : v) {
      s += static_cast<char>(b);
    }
    return s;
  };
  // Complete checkpoints of small targets: c=4 depth=4 patch=1; c=8 depth=12 patch=14 swiglu;
  // c=16 depth=5 patch=2 metric.
  write(dir / "complete_c4_d4_p1.bin", bytes({0x00, 0x00, 0x00, 0x01}));
  write(dir / "complete_c8_d12_p14_swiglu.bin", bytes({0x7d, 0x15, 0x55, 0x01}));
  write(dir / "complete_c16_d5_p2_metric.bin", bytes({0x16, 0x27, 0xe4, 0x03}));
  // Complete, then one key removed (op 3, template 0 = pretrained.cls_token) and one key with a
  // changed dimension (op 4, template 9 = attn.qkv.weight of block 1, dim 0 + 1).
  write(dir / "complete_minus_cls_token.bin", bytes({0x00, 0x00, 0x00, 0x01, 3, 0, 0}));
  write(dir / "complete_qkv_mismatch.bin", bytes({0x00, 0x00, 0x00, 0x01, 4, 9, 0, 1, 0, 1}));
  // Complete plus an unexpected key (op 2: name "extra.weight", shape [2, 2]).
  std::string extra = bytes({0x00, 0x00, 0x00, 0x01, 2, 12});
  extra += "extra.weight";
  extra += bytes({2, 2, 2});
  write(dir / "complete_plus_unexpected.bin", extra);
  // A few keys only (op 0: dictionary keys with their target shapes).
  write(dir / "partial.bin", bytes({0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0, 2, 0, 0, 3, 0, 0, 7, 0, 0}));
  // transformers mode: configuration numbers from "config.json", complete key set.
  write(dir / "transformers_complete.bin", bytes({0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus folder>\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* name : {"fuzz_state_file", "fuzz_journal", "fuzz_weights"}) {
    fs::remove_all(root / name);
    fs::create_directories(root / name);
  }
  state_seeds(root / "fuzz_state_file");
  journal_seeds(root / "fuzz_journal");
  weights_seeds(root / "fuzz_weights");
  return 0;
}
