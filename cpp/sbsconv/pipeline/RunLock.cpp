#include "sbsconv/pipeline/RunLock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string_view>
#include <thread>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/Logging.h"

namespace sbsconv {

namespace {

constexpr std::string_view kHeader = "sbsconv-lock 1";
constexpr size_t kMaxLockBytes = 4096;
// A lock file whose content cannot be read is stale only once it is this old: the run that has
// just created it may not have written its content yet (see Note [Run lock]).
constexpr auto kGrace = std::chrono::seconds(2);

struct Holder {
  int64_t pid = 0;
  std::string host;
  std::optional<uint64_t> start;
};

// What is found under the lock's name.
struct Existing {
  bool missing = false;
  std::optional<Holder> holder; // nullopt: the content cannot be read as a lock
  bool old = false; // older than kGrace
  uint64_t device = 0;
  uint64_t inode = 0;
  std::string text;
};

[[noreturn]] void fail(const std::string& reason, const std::string& what) {
  throw Error(ErrorKind::Output, "resume", reason, what);
}

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof(buffer) - 1) != 0 || buffer[0] == '\0') {
    return "unknown";
  }
  return buffer;
}

template <typename T>
std::optional<T> parse_number(std::string_view s) {
  T value{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
    return std::nullopt;
  }
  return value;
}

// When a process started (clock ticks after boot, field 22 of /proc/<pid>/stat), where the
// system says; it tells a live process from a later one that reuses a dead run's PID.
std::optional<uint64_t> process_start(int64_t pid) {
#ifdef __linux__
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(f, text);
  // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) {
    return std::nullopt;
  }
  std::istringstream in(text.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(in >> field)) {
      return std::nullopt;
    }
  }
  return parse_number<uint64_t>(field);
#else
  return std::nullopt;
#endif
}

std::string lock_content() {
  std::string s = std::string(kHeader) + "\npid " + std::to_string(::getpid()) + "\nhost " + host_name() + "\n";
  if (const auto start = process_start(::getpid())) {
    s += "start " + std::to_string(*start) + "\n";
  }
  return s;
}

std::optional<Holder> parse_holder(std::string_view text) {
  Holder h;
  bool first = true;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    if (end == std::string_view::npos) {
      return std::nullopt; // a line without its end: the content was cut short
    }
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(end + 1);
    if (first) {
      if (line != kHeader) {
        return std::nullopt;
      }
      first = false;
    } else if (line.rfind("pid ", 0) == 0) {
      const auto pid = parse_number<int64_t>(line.substr(4));
      if (!pid || *pid <= 0 || *pid > INT_MAX) {
        return std::nullopt;
      }
      h.pid = *pid;
    } else if (line.rfind("host ", 0) == 0) {
      h.host = std::string(line.substr(5));
    } else if (line.rfind("start ", 0) == 0) {
      h.start = parse_number<uint64_t>(line.substr(6));
      if (!h.start) {
        return std::nullopt;
      }
    }
    // Other lines: written by a later sbsconv; ignored.
  }
  if (first || h.pid == 0 || h.host.empty()) {
    return std::nullopt;
  }
  return h;
}

Existing read_existing(const std::string& path, const std::string& what) {
  Existing e;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      e.missing = true;
      return e;
    }
    fail("cannot read the lock file " + path + ": " + std::strerror(errno), what);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot read the lock file " + path + ": " + std::strerror(err), what);
  }
  std::string text(kMaxLockBytes + 1, '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  text.resize(got);
  e.text = text;
  e.device = static_cast<uint64_t>(st.st_dev);
  e.inode = static_cast<uint64_t>(st.st_ino);
  const auto modified = std::chrono::system_clock::from_time_t(st.st_mtime);
  e.old = std::chrono::system_clock::now() - modified >= kGrace;
  if (got <= kMaxLockBytes) {
    e.holder = parse_holder(text);
  }
  return e;
}

// Whether `path` is still the file that was read or written (same inode, same content: a file
// created since may reuse the inode number).
bool still_the_same(const std::string& path, uint64_t device, uint64_t inode, const std::string& text) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_dev) != device ||
      static_cast<uint64_t>(st.st_ino) != inode) {
    return false;
  }
  std::ifstream f(path, std::ios::binary);
  std::string now(kMaxLockBytes + 1, '\0');
  f.read(now.data(), static_cast<std::streamsize>(now.size()));
  now.resize(static_cast<size_t>(f.gcount()));
  return now == text;
}

bool alive_here(const Holder& h) {
  if (::kill(static_cast<pid_t>(h.pid), 0) != 0 && errno != EPERM) {
    return false;
  }
  if (h.start) {
    const auto now = process_start(h.pid);
    if (now && *now != *h.start) {
      return false; // the PID now belongs to a process that started later
    }
  }
  return true;
}

} // namespace

RunLock::RunLock(std::string lock_path, std::string what) : path_(std::move(lock_path)), what_(std::move(what)) {
  const std::string here = host_name();
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (try_create()) {
      return;
    }
    Existing e = read_existing(path_, what_);
    const auto deadline = std::chrono::steady_clock::now() + kGrace;
    while (!e.missing && !e.holder && !e.old && std::chrono::steady_clock::now() < deadline) {
      // Perhaps a run that has just created the file and is writing it.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      e = read_existing(path_, what_);
    }
    if (e.missing) {
      continue; // released meanwhile
    }
    if (e.holder && e.holder->host != here) {
      fail("another sbsconv run (PID " + std::to_string(e.holder->pid) + " on host " + e.holder->host +
               ") may be writing this output; if none is, delete " + path_,
           what_);
    }
    if (e.holder && alive_here(*e.holder)) {
      fail("another sbsconv run (PID " + std::to_string(e.holder->pid) + ") is writing this output", what_);
    }
    if (attempt > 0) {
      break; // stale again right after a takeover: someone else is racing for it
    }
    // Stale: remove it, but only if it is still the file that was judged (another run may
    // have taken it over meanwhile), then retry the exclusive creation once.
    log(LogLevel::Info,
        "resume: taking over a stale lock " + path_ +
            (e.holder ? " (PID " + std::to_string(e.holder->pid) + " is no longer running)" : " (unreadable)"));
    if (still_the_same(path_, e.device, e.inode, e.text) && ::unlink(path_.c_str()) != 0) {
      const int err = errno;
      if (err != ENOENT) {
        fail("cannot remove the stale lock file " + path_ + ": " + std::strerror(err), what_);
      }
    }
  }
  fail("another sbsconv run is taking the lock of this output (" + path_ + ")", what_);
}

RunLock::~RunLock() {
  release();
}

bool RunLock::try_create() {
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST) {
      return false;
    }
    fail("cannot create the lock file " + path_ + ": " + std::strerror(errno), what_);
  }
  const std::string content = lock_content();
  size_t written = 0;
  int err = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      err = errno;
      break;
    }
    written += static_cast<size_t>(n);
  }
  struct stat st {};
  if (err == 0 && ::fstat(fd, &st) != 0) {
    err = errno;
  }
  ::close(fd);
  if (err != 0) {
    ::unlink(path_.c_str());
    fail("cannot write the lock file " + path_ + ": " + std::strerror(err), what_);
  }
  device_ = static_cast<uint64_t>(st.st_dev);
  inode_ = static_cast<uint64_t>(st.st_ino);
  content_ = content;
  held_ = true;
  return true;
}

void RunLock::release() noexcept {
  if (!held_) {
    return;
  }
  held_ = false;
  try {
    if (still_the_same(path_, device_, inode_, content_)) {
      ::unlink(path_.c_str());
    }
  } catch (...) {
    // Out of memory while reading a few bytes back: leave the file; the next run finds it stale.
  }
}

} // namespace sbsconv
