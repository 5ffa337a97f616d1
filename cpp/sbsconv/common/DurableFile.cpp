#include "sbsconv/common/DurableFile.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>

#include "sbsconv/common/Error.h"

namespace fs = std::filesystem;

namespace sbsconv {

namespace {

[[noreturn]] void fail(const char* stage, const std::string& what, const std::string& path, int err) {
  throw Error(ErrorKind::Output, stage, what + ": " + std::strerror(err), path);
}

std::string folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

} // namespace

void sync_file(const std::string& path, const char* stage) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fail(stage, "cannot open the file to flush it", path, errno);
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    fail(stage, "cannot flush the file to the disk", path, err);
  }
}

void sync_folder(const std::string& folder, const char* stage) {
#ifdef O_DIRECTORY
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
#else
  const int fd = ::open(folder.c_str(), O_RDONLY | O_CLOEXEC);
#endif
  if (fd < 0) {
    fail(stage, "cannot open the folder to flush it", folder, errno);
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems (and macOS for folders) refuse fsync on a folder: nothing more can be
  // done there, and the rename itself is still atomic.
  if (rc != 0 && err != EINVAL && err != ENOTSUP && err != EBADF) {
    fail(stage, "cannot flush the folder to the disk", folder, err);
  }
}

void durable_rename(const std::string& from, const std::string& to, const char* stage) {
  sync_file(from, stage);
  if (::rename(from.c_str(), to.c_str()) != 0) {
    fail(stage, "cannot rename " + from + " into place", to, errno);
  }
  sync_folder(folder_of(to), stage);
}

void write_file_durably(const std::string& path, std::string_view bytes, const char* stage) {
  const std::string temp = path + ".part";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    fail(stage, "cannot create the file", temp, errno);
  }
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int err = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      fail(stage, "cannot write the file", temp, err);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    fail(stage, "cannot flush the file to the disk", temp, err);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    fail(stage, "cannot write the file", temp, err);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    fail(stage, "cannot rename the file into place", path, err);
  }
  sync_folder(folder_of(path), stage);
}

uint64_t fnv1a64(std::string_view bytes, uint64_t seed) {
  uint64_t h = seed;
  for (const char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

} // namespace sbsconv
