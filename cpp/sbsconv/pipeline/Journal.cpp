#include "sbsconv/pipeline/Journal.h"

#include <charconv>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>

#include "sbsconv/common/DurableFile.h"
#include "sbsconv/common/Error.h"

namespace fs = std::filesystem;

namespace sbsconv {

namespace {

constexpr int kVersion = 2;
constexpr std::string_view kHeaderPrefix = "sbsconv-journal ";
constexpr const char* kFile = "journal.txt";
constexpr const char* kLockName = "lock";
// A journal holds a line per segment (~200 bytes); anything near this is not one of ours.
constexpr uint64_t kMaxJournalBytes = uint64_t{64} << 20;
// State files are small (Note [Journal integrity]); the state loader refuses larger ones too.
constexpr uint64_t kMaxStateBytes = uint64_t{1} << 30;

// ---- tokens ----

std::string encode_token(std::string_view s) {
  if (s.empty()) {
    return "-";
  }
  if (s == "-") {
    return "%2D";
  }
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '%') {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

std::optional<std::string> decode_token(std::string_view t) {
  if (t == "-") {
    return std::string();
  }
  if (t.empty()) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    const auto u = static_cast<unsigned char>(t[i]);
    if (t[i] == '%') {
      if (i + 2 >= t.size()) {
        return std::nullopt;
      }
      const int hi = hex_digit(t[i + 1]);
      const int lo = hex_digit(t[i + 2]);
      if (hi < 0 || lo < 0) {
        return std::nullopt;
      }
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (u <= 0x20 || u >= 0x7f) {
      return std::nullopt;
    } else {
      out += t[i];
    }
  }
  return out;
}

std::optional<int64_t> parse_int(std::string_view s) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return value;
}

std::optional<uint64_t> parse_hex64(std::string_view s) {
  uint64_t value = 0;
  if (s.size() != 16) {
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value, 16);
  if (ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return value;
}

std::string hex64(uint64_t v) {
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(v));
  return buffer;
}

// A line as written: its fields, then the checksum of everything before the last space.
std::string checked_line(const std::string& body) {
  return body + " " + hex64(fnv1a64(body)) + "\n";
}

// The fields of a line whose checksum matches; nullopt (and *why) otherwise.
std::optional<std::vector<std::string_view>> checked_fields(std::string_view line, std::string* why) {
  const size_t last = line.rfind(' ');
  const auto sum = last == std::string_view::npos ? std::nullopt : parse_hex64(line.substr(last + 1));
  if (!sum) {
    *why = "no checksum";
    return std::nullopt;
  }
  const std::string_view body = line.substr(0, last);
  if (fnv1a64(body) != *sum) {
    *why = "checksum mismatch";
    return std::nullopt;
  }
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (true) {
    const size_t end = body.find(' ', start);
    fields.push_back(body.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (fields.back().empty()) {
      *why = "malformed";
      return std::nullopt;
    }
    if (end == std::string_view::npos) {
      break;
    }
    start = end + 1;
  }
  return fields;
}

// A file name the journal may list: one entry inside its folder, none of its own files.
bool valid_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name != kFile && name != kLockName &&
      name.find_first_of(std::string_view("/\\\0", 3)) == std::string::npos;
}

std::optional<SegmentRecord> parse_record(const std::vector<std::string_view>& f) {
  if (f.size() != 12 || f[0] != "segment") {
    return std::nullopt;
  }
  SegmentRecord r;
  const auto index = parse_int(f[1]);
  const auto first_frame = parse_int(f[2]);
  const auto frames = parse_int(f[3]);
  const auto next_pts = parse_int(f[4]);
  auto file = decode_token(f[5]);
  auto state = decode_token(f[6]);
  auto encoder = decode_token(f[7]);
  auto stream_params = decode_token(f[8]);
  const auto packets = parse_int(f[9]);
  const auto bytes = parse_int(f[10]);
  const auto state_checksum = parse_hex64(f[11]);
  if (!index || !first_frame || !frames || !next_pts || !file || !state || !encoder || !stream_params || !packets ||
      !bytes || !state_checksum || *frames < 0 || *packets < 0 || *bytes < 0 || !valid_name(*file) ||
      !valid_name(*state) || *file == *state) {
    return std::nullopt;
  }
  int64_t end_frame = 0;
  if (__builtin_add_overflow(*first_frame, *frames, &end_frame)) {
    return std::nullopt;
  }
  r.index = *index;
  r.first_frame = *first_frame;
  r.frames = *frames;
  r.next_pts = *next_pts;
  r.file = std::move(*file);
  r.state = std::move(*state);
  r.encoder = std::move(*encoder);
  r.stream_params = std::move(*stream_params);
  r.packets = *packets;
  r.bytes = *bytes;
  r.state_checksum = *state_checksum;
  return r;
}

enum class ReadStatus { Ok, Missing, TooLarge, Failed };

ReadStatus read_small_file(const std::string& path, uint64_t limit, std::string* out, std::string* why) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) {
    *why = ec.message();
    return ec == std::errc::no_such_file_or_directory ? ReadStatus::Missing : ReadStatus::Failed;
  }
  if (size > limit) {
    *why = std::to_string(size) + " bytes";
    return ReadStatus::TooLarge;
  }
  std::ifstream f(path, std::ios::binary);
  out->assign(static_cast<size_t>(size), '\0');
  f.read(out->data(), static_cast<std::streamsize>(size));
  if (!f || f.gcount() != static_cast<std::streamsize>(size)) {
    *why = "cannot read it";
    return ReadStatus::Failed;
  }
  return ReadStatus::Ok;
}

// The entries of a folder, listed before any is removed.
std::vector<fs::path> entries_of(const std::string& folder) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    out.push_back(it->path());
  }
  return out;
}

// The first frame of the segment after `records`; nullopt when it does not fit in 64 bits.
std::optional<int64_t> next_first_frame(const std::vector<SegmentRecord>& records) {
  int64_t next = 0;
  if (!records.empty() && __builtin_add_overflow(records.back().first_frame, records.back().frames, &next)) {
    return std::nullopt;
  }
  return next;
}

std::string continuing(size_t kept) {
  return kept == 0 ? "starting from the beginning" : "continuing after segment " + std::to_string(kept - 1);
}

} // namespace

// ---- text --------------------------------------------------------------------------------------

std::string format_journal(
    const std::string& fingerprint,
    const std::vector<SegmentRecord>& records,
    const std::map<std::string, std::string>& choices) {
  std::string text = std::string(kHeaderPrefix) + std::to_string(kVersion) + "\n";
  text += checked_line("fingerprint " + encode_token(fingerprint));
  for (const auto& [key, value] : choices) {
    text += checked_line("choice " + encode_token(key) + " " + encode_token(value));
  }
  for (const auto& r : records) {
    text += checked_line(
        "segment " + std::to_string(r.index) + " " + std::to_string(r.first_frame) + " " + std::to_string(r.frames) +
        " " + std::to_string(r.next_pts) + " " + encode_token(r.file) + " " + encode_token(r.state) + " " +
        encode_token(r.encoder) + " " + encode_token(r.stream_params) + " " + std::to_string(r.packets) + " " +
        std::to_string(r.bytes) + " " + hex64(r.state_checksum));
  }
  return text;
}

ParsedJournal parse_journal(std::string_view text) {
  ParsedJournal out;
  size_t line_number = 0;
  std::string_view line;
  auto next_line = [&] {
    if (text.empty()) {
      return false;
    }
    const size_t end = text.find('\n');
    line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++line_number;
    return true;
  };
  auto stop = [&](const std::string& why) { out.problem = "line " + std::to_string(line_number) + ": " + why; };

  if (!next_line()) {
    out.problem = "it is empty";
    return out;
  }
  const auto version = line.rfind(kHeaderPrefix, 0) == 0 ? parse_int(line.substr(kHeaderPrefix.size())) : std::nullopt;
  if (!version || *version <= 0 || *version > 1000000) {
    stop("not an sbsconv journal");
    return out;
  }
  out.version = static_cast<int>(*version);
  if (out.version != kVersion) {
    stop("format " + std::to_string(out.version) + ", not " + std::to_string(kVersion));
    return out;
  }
  if (!next_line()) {
    out.problem = "it ends before the fingerprint";
    return out;
  }
  std::string why;
  const auto fingerprint_fields = checked_fields(line, &why);
  if (!fingerprint_fields) {
    stop(why);
    return out;
  }
  const auto fingerprint = fingerprint_fields->size() == 2 && (*fingerprint_fields)[0] == "fingerprint"
      ? decode_token((*fingerprint_fields)[1])
      : std::nullopt;
  if (!fingerprint) {
    stop("malformed fingerprint");
    return out;
  }
  out.fingerprint = *fingerprint;

  while (next_line()) {
    const auto fields = checked_fields(line, &why);
    if (!fields) {
      stop(why);
      return out;
    }
    if (!fields->empty() && (*fields)[0] == "choice") {
      const auto key = fields->size() == 3 ? decode_token((*fields)[1]) : std::nullopt;
      const auto value = fields->size() == 3 ? decode_token((*fields)[2]) : std::nullopt;
      if (!key || !value || key->empty() || !out.records.empty()) {
        stop("malformed choice");
        return out;
      }
      out.choices[*key] = *value;
      continue;
    }
    auto record = parse_record(*fields);
    if (!record) {
      stop("malformed segment");
      return out;
    }
    const int64_t index = static_cast<int64_t>(out.records.size());
    const auto first_frame = next_first_frame(out.records);
    if (!first_frame) {
      stop("the frame count overflows");
      return out;
    }
    if (record->index != index || record->first_frame != *first_frame) {
      stop("segment " + std::to_string(record->index) + " (frames from " + std::to_string(record->first_frame) +
           ") does not continue the journal (segment " + std::to_string(index) + ", frames from " +
           std::to_string(*first_frame) + ")");
      return out;
    }
    for (const auto& earlier : out.records) {
      if (earlier.file == record->file || earlier.state == record->state || earlier.file == record->state ||
          earlier.state == record->file) {
        stop("segment " + std::to_string(index) + " reuses the files of segment " + std::to_string(earlier.index));
        return out;
      }
    }
    out.records.push_back(std::move(*record));
  }
  return out;
}

// ---- Journal -----------------------------------------------------------------------------------

Journal::Journal(std::string folder, std::string fingerprint)
    : folder_(std::move(folder)), fingerprint_(std::move(fingerprint)) {}

Journal::~Journal() = default;

std::string Journal::path_of(const std::string& name) const {
  return (fs::path(folder_) / name).string();
}

std::string Journal::lock_path() const {
  return path_of(kLockName);
}

void Journal::lock(const std::string& output) {
  if (locked()) {
    return;
  }
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec) {
    throw Error(ErrorKind::Output, "resume", "cannot create the resume folder: " + ec.message(), folder_);
  }
  lock_ = std::make_unique<RunLock>(lock_path(), output);
}

void Journal::unlock() noexcept {
  if (lock_ != nullptr) {
    lock_->release();
    lock_.reset();
  }
}

std::vector<SegmentRecord> Journal::load(
    bool* discarded,
    std::vector<std::string>* warnings,
    const SegmentVerifier& verify_segment) {
  if (discarded != nullptr) {
    *discarded = false;
  }
  auto warn = [&](std::string message) {
    if (warnings != nullptr) {
      warnings->push_back(std::move(message));
    }
  };
  records_.clear();
  choices_.clear();
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec || !fs::is_directory(folder_, ec)) {
    throw Error(
        ErrorKind::Output,
        "resume",
        "cannot create the resume folder" + (ec ? ": " + ec.message() : std::string(": a file has its name")),
        folder_);
  }

  std::string text;
  std::string why;
  switch (read_small_file(path_of(kFile), kMaxJournalBytes, &text, &why)) {
    case ReadStatus::Missing:
      break;
    case ReadStatus::TooLarge:
    case ReadStatus::Failed:
      warn("the resume journal cannot be used (" + why + "); starting from the beginning");
      break;
    case ReadStatus::Ok: {
      ParsedJournal parsed = parse_journal(text);
      if (!parsed.fingerprint) {
        if (parsed.version != 0 && parsed.version != kVersion) {
          warn("the resume journal was written by another version of sbsconv (format " +
               std::to_string(parsed.version) + "); starting from the beginning");
        } else {
          warn("the resume journal is damaged (" + parsed.problem + "); starting from the beginning");
        }
      } else if (*parsed.fingerprint != fingerprint_) {
        if (discarded != nullptr) {
          *discarded = true;
        }
      } else {
        records_ = std::move(parsed.records);
        choices_ = std::move(parsed.choices);
        if (!parsed.problem.empty()) {
          warn("the resume journal is damaged (" + parsed.problem + "); " + continuing(records_.size()));
        }
      }
      break;
    }
  }

  // Keep the longest prefix whose files check out.
  for (size_t i = 0; i < records_.size(); ++i) {
    const SegmentRecord& r = records_[i];
    std::string problem;
    const std::string segment_path = path_of(r.file);
    const uintmax_t size = fs::file_size(segment_path, ec);
    std::string state;
    if (ec) {
      problem = r.file + " is missing";
    } else if (size != static_cast<uintmax_t>(r.bytes)) {
      problem = "size " + std::to_string(size) + ", journal says " + std::to_string(r.bytes);
    } else if (const ReadStatus s = read_small_file(path_of(r.state), kMaxStateBytes, &state, &why);
               s != ReadStatus::Ok) {
      problem = s == ReadStatus::Missing ? r.state + " is missing" : r.state + ": " + why;
    } else if (fnv1a64(state) != r.state_checksum) {
      problem = "the state file " + r.state + " does not match its checksum";
    } else if (verify_segment) {
      try {
        std::string verdict;
        if (!verify_segment(r, segment_path, &verdict)) {
          problem = verdict.empty() ? "it does not check out" : verdict;
        }
      } catch (const std::exception& e) {
        problem = e.what();
      } catch (...) {
        problem = "it could not be checked";
      }
    }
    if (!problem.empty()) {
      warn("segment " + std::to_string(r.index) + " is damaged (" + problem + "); " + continuing(i));
      records_.resize(i);
      break;
    }
  }

  delete_unlisted();
  write();
  return records_;
}

void Journal::delete_unlisted() const {
  // Anything in the folder the journal does not list (a segment being written when the run
  // stopped, the files of segments that did not check out, a journal's temporary) is stale.
  for (const fs::path& entry : entries_of(folder_)) {
    const std::string name = entry.filename().string();
    std::error_code ec;
    bool listed = (name == kFile && fs::is_regular_file(entry, ec)) || name == kLockName;
    for (const auto& r : records_) {
      listed = listed || name == r.file || name == r.state;
    }
    if (!listed) {
      fs::remove_all(entry, ec);
    }
  }
}

void Journal::append(const SegmentRecord& record) {
  const int64_t index = static_cast<int64_t>(records_.size());
  const int64_t first_frame = next_first_frame(records_).value_or(-1);
  int64_t end_frame = 0;
  if (record.index != index || record.first_frame != first_frame || record.frames < 0 || record.packets < 0 ||
      __builtin_add_overflow(record.first_frame, record.frames, &end_frame) ||
      !valid_name(record.file) || !valid_name(record.state) || record.file == record.state) {
    throw Error(
        ErrorKind::Internal,
        "resume",
        "segment " + std::to_string(record.index) + " (frames from " + std::to_string(record.first_frame) +
            ") does not continue the journal (segment " + std::to_string(index) + ", frames from " +
            std::to_string(first_frame) + ") or names invalid files",
        folder_);
  }
  SegmentRecord r = record;
  const std::string segment_path = path_of(r.file);
  std::error_code ec;
  const uintmax_t size = fs::file_size(segment_path, ec);
  if (ec) {
    throw Error(ErrorKind::Output, "resume", "the finished segment cannot be read: " + ec.message(), segment_path);
  }
  if (r.bytes == 0) {
    r.bytes = static_cast<int64_t>(size);
  } else if (static_cast<uintmax_t>(r.bytes) != size) {
    throw Error(
        ErrorKind::Internal,
        "resume",
        "the segment has " + std::to_string(size) + " bytes, its record says " + std::to_string(r.bytes),
        segment_path);
  }
  const std::string state_path = path_of(r.state);
  std::string state;
  std::string why;
  if (read_small_file(state_path, kMaxStateBytes, &state, &why) != ReadStatus::Ok) {
    throw Error(ErrorKind::Output, "resume", "the state file cannot be read: " + why, state_path);
  }
  const uint64_t checksum = fnv1a64(state);
  if (r.state_checksum == 0) {
    r.state_checksum = checksum;
  } else if (r.state_checksum != checksum) {
    throw Error(ErrorKind::Internal, "resume", "the state file does not match its record's checksum", state_path);
  }
  // The journal must never list data that is not on the disk yet.
  sync_file(segment_path, "resume");
  sync_file(state_path, "resume");
  records_.push_back(std::move(r));
  try {
    write();
  } catch (...) {
    records_.pop_back();
    throw;
  }
}

void Journal::truncate(size_t keep) {
  if (keep >= records_.size()) {
    return;
  }
  const std::vector<SegmentRecord> dropped(records_.begin() + static_cast<std::ptrdiff_t>(keep), records_.end());
  records_.resize(keep);
  write(); // first, so that a crash in between never leaves the journal listing a deleted file
  std::error_code ec;
  for (const auto& r : dropped) {
    fs::remove(path_of(r.file), ec);
    fs::remove(path_of(r.state), ec);
  }
}

void Journal::write() const {
  write_file_durably(path_of(kFile), format_journal(fingerprint_, records_, choices_), "resume");
}

std::optional<std::string> Journal::choice(const std::string& key) const {
  const auto it = choices_.find(key);
  return it == choices_.end() ? std::nullopt : std::optional<std::string>(it->second);
}

void Journal::record_choice(const std::string& key, const std::string& value) {
  if (key.empty()) {
    throw Error(ErrorKind::Internal, "resume", "a journal choice needs a key");
  }
  choices_[key] = value;
  write();
}

void Journal::remove() {
  records_.clear();
  std::error_code ec;
  if (!locked()) {
    fs::remove_all(folder_, ec);
    lock_.reset();
    return;
  }
  // Everything but the lock first, so that no other run starts in the folder while it is
  // being emptied; then the lock, then the folder if nothing new appeared in it.
  for (const fs::path& entry : entries_of(folder_)) {
    if (entry.filename() != kLockName) {
      fs::remove_all(entry, ec);
    }
  }
  unlock();
  fs::remove(folder_, ec);
}

} // namespace sbsconv
