#include "sbsconv/common/Heap.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "sbsconv/common/Logging.h"

#if defined(__GLIBC__)
#include <malloc.h>
#include <unistd.h> // environ
#endif

namespace sbsconv {
namespace {

#if defined(__GLIBC__)
// Whether the environment sets any of malloc's own settings: the user's choice stands.
bool user_chose_malloc_settings() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) {
    return true;
  }
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, "MALLOC_", 7) == 0) { // MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, ...
      return true;
    }
  }
  return false;
}

bool apply() {
  if (user_chose_malloc_settings()) {
    log(LogLevel::Debug, "heap: malloc's settings are the user's (environment); left as they are");
    return false;
  }
  constexpr int kThreshold = 1 << 30;
  // Older glibc caps the mmap threshold at 32 MB; take the largest it accepts.
  const bool mmap_set = mallopt(M_MMAP_THRESHOLD, kThreshold) == 1 || mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  const bool trim_set = mallopt(M_TRIM_THRESHOLD, kThreshold) == 1;
  const bool arenas_set = mallopt(M_ARENA_MAX, 1) == 1;
  log(LogLevel::Debug,
      std::string("heap: large blocks stay in the heap (mmap threshold ") + (mmap_set ? "raised" : "unchanged") +
          ", trim threshold " + (trim_set ? "raised" : "unchanged") + ", " +
          (arenas_set ? "one arena" : "arenas unchanged") + ")");
  return mmap_set || trim_set || arenas_set;
}
#endif

std::once_flag once;
bool applied = false;

} // namespace

bool keep_large_blocks_in_heap() {
  std::call_once(once, [] {
#if defined(__GLIBC__)
    applied = apply();
#endif
  });
  return applied;
}

void release_free_heap() {
#if defined(__GLIBC__)
  if (keep_large_blocks_in_heap()) {
    malloc_trim(0);
  }
#endif
}

} // namespace sbsconv
