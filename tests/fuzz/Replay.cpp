// The replay runner: links with one harness (fuzz_*.cpp) instead of libFuzzer and runs its
// LLVMFuzzerTestOneInput over every file in the folders (or files) given on the command line,
// so that the seed corpora and every reproducer in tests/fuzz/regressions/ stay test cases of
// the ordinary build (ctest: fuzz_replay.<harness>). A folder that does not exist is skipped
// (a harness without regressions yet); finding no input at all is a failure. A finding aborts
// the process, which fails the test with the harness's message and the input's name above it.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> inputs_in(const fs::path& where) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (fs::is_regular_file(where, ec)) {
    out.push_back(where);
  } else if (fs::is_directory(where, ec)) {
    for (const auto& entry : fs::directory_iterator(where)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file() && !name.empty() && name[0] != '.' && name != "README.md") {
        out.push_back(entry.path());
      }
    }
    std::sort(out.begin(), out.end());
  }
  return out;
}

} // namespace

int main(int argc, char** argv) {
  LLVMFuzzerInitialize(&argc, &argv);
  size_t count = 0;
  for (int i = 1; i < argc; ++i) {
    for (const fs::path& path : inputs_in(argv[i])) {
      std::ifstream f(path, std::ios::binary);
      const std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (!f.eof() && f.fail()) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        return 1;
      }
      std::fprintf(stderr, "replay %s (%zu bytes)\n", path.c_str(), bytes.size());
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++count;
    }
  }
  std::fprintf(stderr, "replayed %zu inputs\n", count);
  return count > 0 ? 0 : 1;
}
