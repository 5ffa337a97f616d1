#include "sbsconv/common/Heap.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "sbsconv/common/Logging.h"

#if defined(__GLIBC__)
#include <malloc.h>
#include <unistd.h> // environ
#endif

namespace sbsconv {
namespace {

// Note [Large blocks stay in the heap], LibTorch's part: its CPU allocator, with blocks of
// kLargeBlock bytes or more kept when freed (at most kMaxKeptBytes, kMaxKeptBlocks of them) and
// handed out again for a request they hold with at most a quarter to spare.
class LargeBlockCache final : public c10::Allocator {
 public:
  explicit LargeBlockCache(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < kLargeBlock) {
      return base_->allocate(n);
    }
    size_t size = (n + kGranule - 1) / kGranule * kGranule;
    void* block = nullptr;
    std::vector<void*> larger; // kept blocks too large for this request: back to malloc's heap
    {
      // the smallest kept block that holds n, if it is at most a quarter larger
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 4) {
        size = it->first;
        block = it->second;
        free_.erase(it);
        kept_bytes_ -= size;
      } else {
        for (auto j = it; j != free_.end(); ++j) {
          larger.push_back(j->second);
          kept_bytes_ -= j->first;
        }
        free_.erase(it, free_.end());
      }
    }
    for (void* b : larger) {
      c10::free_cpu(b); // where malloc can carve this request from them
    }
    if (block == nullptr) {
      block = c10::alloc_cpu(size); // throws c10::Error (out of memory) as LibTorch's own does
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[block] = size;
    }
    return {block, block, &LargeBlockCache::give_back, c10::Device(c10::DeviceType::CPU)};
  }

  // The same deleter for every block is not promised (the small ones are the base's): raw
  // allocations get the base's deleter, which frees a large block correctly too (uncached).
  c10::DeleterFnPtr raw_deleter() const override {
    return base_->raw_deleter();
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // Frees every kept block.
  void release() {
    std::multimap<size_t, void*> kept;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      kept.swap(free_);
      kept_bytes_ = 0;
    }
    for (auto& [size, block] : kept) {
      c10::free_cpu(block);
    }
  }

  static LargeBlockCache* instance; // set once, when installed; never destroyed

 private:
  static void give_back(void* block) {
    instance->keep(block);
  }

  void keep(void* block) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = sizes_.find(block);
      const size_t size = it == sizes_.end() ? 0 : it->second;
      if (it != sizes_.end()) {
        sizes_.erase(it);
      }
      if (size > 0 && kept_bytes_ + size <= kMaxKeptBytes && free_.size() < kMaxKeptBlocks) {
        free_.emplace(size, block);
        kept_bytes_ += size;
        return;
      }
    }
    c10::free_cpu(block);
  }

  static constexpr size_t kLargeBlock = size_t{16} << 20;
  static constexpr size_t kGranule = size_t{1} << 20;
  static constexpr size_t kMaxKeptBytes = size_t{1} << 30;
  static constexpr size_t kMaxKeptBlocks = 32;

  c10::Allocator* base_;
  std::mutex mutex_;
  std::multimap<size_t, void*> free_; // kept blocks by size
  std::unordered_map<void*, size_t> sizes_; // blocks handed out, by address
  size_t kept_bytes_ = 0;
};

LargeBlockCache* LargeBlockCache::instance = nullptr;

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

// LibTorch's CPU allocator replaced by the cache around it (at the default allocator's priority:
// an allocator someone installed at a higher one stays).
void install_large_block_cache() {
  LargeBlockCache::instance = new LargeBlockCache(c10::GetCPUAllocator());
  c10::SetCPUAllocator(LargeBlockCache::instance, /*priority=*/0);
  if (c10::GetCPUAllocator() != LargeBlockCache::instance) {
    log(LogLevel::Debug, "heap: LibTorch's CPU allocator is another library's; left as it is");
  }
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
  install_large_block_cache();
  log(LogLevel::Debug,
      std::string("heap: large blocks stay in the heap (mmap threshold ") + (mmap_set ? "raised" : "unchanged") +
          ", trim threshold " + (trim_set ? "raised" : "unchanged") + ", " +
          (arenas_set ? "one arena" : "arenas unchanged") + ", LibTorch's large blocks reused)");
  return true;
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
    if (LargeBlockCache::instance != nullptr) {
      LargeBlockCache::instance->release();
    }
    malloc_trim(0);
  }
#endif
}

} // namespace sbsconv
