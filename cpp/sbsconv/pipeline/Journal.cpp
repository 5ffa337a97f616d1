#include "sbsconv/pipeline/Journal.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "sbsconv/common/Error.h"

namespace fs = std::filesystem;

namespace sbsconv {

namespace {
constexpr const char* kHeader = "sbsconv-journal 1";
constexpr const char* kFile = "journal.txt";

// The fingerprint is one line: newlines would break the format.
std::string one_line(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    if (c == '\n' || c == '\r') {
      c = ' ';
    }
  }
  return out;
}
} // namespace

Journal::Journal(std::string folder, std::string fingerprint)
    : folder_(std::move(folder)), fingerprint_(one_line(fingerprint)) {}

std::string Journal::path_of(const std::string& name) const {
  return (fs::path(folder_) / name).string();
}

std::vector<SegmentRecord> Journal::load(bool* discarded) {
  if (discarded != nullptr) {
    *discarded = false;
  }
  records_.clear();
  std::ifstream f(path_of(kFile));
  if (f) {
    std::string header;
    std::string fingerprint_line;
    std::getline(f, header);
    std::getline(f, fingerprint_line);
    const bool compatible = header == kHeader && fingerprint_line == "fingerprint " + fingerprint_;
    std::string line;
    while (compatible && std::getline(f, line)) {
      std::istringstream in(line);
      std::string tag;
      SegmentRecord r;
      in >> tag >> r.index >> r.first_frame >> r.frames >> r.next_pts >> r.file >> r.state;
      // Keep a segment only if it continues the previous one and its files are complete.
      const int64_t expected = records_.empty() ? 0 : records_.back().first_frame + records_.back().frames;
      if (!in || tag != "segment" || r.index != static_cast<int64_t>(records_.size()) ||
          r.first_frame != expected || !fs::exists(path_of(r.file)) || !fs::exists(path_of(r.state))) {
        break;
      }
      records_.push_back(r);
    }
    if (!compatible) {
      if (discarded != nullptr) {
        *discarded = true;
      }
      remove();
    }
  }
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec) {
    throw Error(ErrorKind::Output, "resume", "cannot create the resume folder: " + ec.message(), folder_);
  }
  // Anything in the folder the journal does not list (a segment being written when the run
  // stopped) is stale.
  for (const auto& entry : fs::directory_iterator(folder_, ec)) {
    const std::string name = entry.path().filename().string();
    bool listed = name == kFile;
    for (const auto& r : records_) {
      listed = listed || name == r.file || name == r.state;
    }
    if (!listed) {
      fs::remove_all(entry.path(), ec);
    }
  }
  write();
  return records_;
}

void Journal::append(const SegmentRecord& record) {
  records_.push_back(record);
  write();
}

void Journal::write() const {
  const fs::path final_path = path_of(kFile);
  fs::path temp = final_path;
  temp += ".part";
  {
    std::ofstream f(temp);
    f << kHeader << "\n" << "fingerprint " << fingerprint_ << "\n";
    for (const auto& r : records_) {
      f << "segment " << r.index << " " << r.first_frame << " " << r.frames << " " << r.next_pts << " " << r.file
        << " " << r.state << "\n";
    }
    if (!f) {
      throw Error(ErrorKind::Output, "resume", "cannot write the journal", final_path.string());
    }
  }
  std::error_code ec;
  fs::rename(temp, final_path, ec);
  if (ec) {
    throw Error(ErrorKind::Output, "resume", "cannot write the journal: " + ec.message(), final_path.string());
  }
}

void Journal::remove() {
  std::error_code ec;
  fs::remove_all(folder_, ec);
  records_.clear();
}

} // namespace sbsconv
