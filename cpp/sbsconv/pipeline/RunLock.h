#pragma once

#include <cstdint>
#include <string>

namespace sbsconv {

// Note [Run lock]
// Two runs writing the same output (two notebook cells, a CLI call beside a notebook) would
// interleave segments, delete each other's files and assemble garbage. A run therefore takes a
// lock file before it writes anything: it creates the file atomically (O_CREAT | O_EXCL) and
// fills it with "sbsconv-lock 1", its PID, its host name and (on Linux) its process start
// time. A run that finds the file reads it:
// - a process on this host with that PID is alive (kill(pid, 0) succeeds or says EPERM) and,
//   where the start time can be read, started when the lock says: the lock is held, and the
//   run fails at once with ErrorKind::Output naming the PID;
// - the PID is dead, or was reused by a process that started later, or the content cannot be
//   read (a run that crashed between creating and filling the file) and the file is older
//   than a short grace period: the lock is stale; it is removed (only if it is still the same
//   file that was read) and the O_EXCL creation is retried once; losing that retry to
//   another run means that run holds the lock;
// - another host wrote it (a shared network folder): whether that run is alive cannot be
//   told from here, so the run fails with a message that says which file to delete if no run
//   is active.
// The lock is released (the file removed, if it is still the one this object created: same
// inode, same content) by release() and by the destructor. A process that dies leaves the file
// behind; the next run takes it over as stale.
//
// Threading: not thread-safe; one owner.
class RunLock {
 public:
  // Takes the lock at `lock_path` (its folder must exist) for a run that writes `what` (the
  // output path, named in errors). Throws Error(ErrorKind::Output, "resume", ...) when another
  // live run holds it or the file cannot be created.
  RunLock(std::string lock_path, std::string what);
  ~RunLock();

  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // Removes the lock file if it is still the one this object created. Idempotent; never throws.
  void release() noexcept;

  bool held() const {
    return held_;
  }
  const std::string& path() const {
    return path_;
  }

 private:
  bool try_create();

  std::string path_;
  std::string what_;
  bool held_ = false;
  uint64_t device_ = 0; // identity of the file this object created
  uint64_t inode_ = 0;
  std::string content_;
};

} // namespace sbsconv
