#include "cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_map>

#if defined(__SANITIZE_ADDRESS__)  // GCC
#define BERTGATE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)  // Clang
#define BERTGATE_ASAN 1
#endif
#endif

#if defined(BERTGATE_ASAN)
#include <sanitizer/asan_interface.h>
// Mapped buffers have no redzones: under ASan a cached buffer is poisoned whole and a reused one
// past what was asked, so a read after free or past the end is caught as with malloc.
#define BERTGATE_POISON(data, bytes) ASAN_POISON_MEMORY_REGION(data, bytes)
#define BERTGATE_UNPOISON(data, bytes) ASAN_UNPOISON_MEMORY_REGION(data, bytes)
#else
#define BERTGATE_POISON(data, bytes) ((void)(data), (void)(bytes))
#define BERTGATE_UNPOISON(data, bytes) ((void)(data), (void)(bytes))
#endif

namespace bertgate {
namespace {

// Below this glibc serves requests from its arenas without trouble (and below its initial
// mmap threshold, 128 KiB, it never maps them), so small tensors keep libtorch's own path.
constexpr size_t kLargeBytes = size_t{128} << 10;
constexpr size_t kPageBytes = size_t{4} << 10;
constexpr int64_t kMinCacheBytes = int64_t{128} << 20;
// Past this no machine has the memory, and size classes would overflow: refused as libtorch's own
// allocator refuses what it cannot allocate.
constexpr size_t kMaxBytes = size_t{1} << 62;

// Eight classes per power of two: a request wastes at most an eighth of itself, and the
// batch shapes of a server fall into few enough classes for the cache to serve them.
size_t SizeClass(size_t bytes) {
  bytes = (bytes + kPageBytes - 1) / kPageBytes * kPageBytes;
  size_t octave = kPageBytes;
  while (octave <= bytes / 2) octave *= 2;
  const size_t step = std::max(kPageBytes, octave / 8);
  return (bytes + step - 1) / step * step;
}

using Clock = std::chrono::steady_clock;

// A buffer idle in the cache this long is unmapped, by the next free or by the sweeper thread when
// no pass comes: a server busy enough to reuse its buffers frees them again within milliseconds,
// while one huge call (2,048 texts: GiBs of activations) must not pin its memory for the life of a
// quiet process, against which the tokenizer's and V8's own allocations would then fail under an
// address-space limit.
constexpr std::chrono::milliseconds kIdleAge{30'000};

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    // The context is the data pointer itself, as for libtorch's own allocator, so
    // raw_allocate/raw_deleter work: the deleter tells large from small by its table.
    void* data = bytes < kLargeBytes ? c10::alloc_cpu(bytes) : AllocateLarge(bytes);
    return {data, data, &Delete, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  CpuCacheStats Snapshot() {
    const std::lock_guard<std::mutex> lock(mutex_);
    CpuCacheStats stats = stats_;
    stats.cache_limit_bytes = CacheLimit();
    return stats;
  }

  // Unmaps the buffers idle in the cache for longer than the idle age before `now`.
  void Sweep(Clock::time_point now) {
    Lru expired;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      Expire(now, expired);
    }
    Unmap(expired);
  }

  void SetIdleAge(std::chrono::milliseconds age) { idle_ms_ = age.count(); }
  std::chrono::milliseconds IdleAge() const { return std::chrono::milliseconds(idle_ms_.load()); }

  // Unmaps every cached buffer and restarts the peak from what is live now.
  void Trim() {
    Lru gone;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      gone.splice(gone.end(), lru_);
      by_size_.clear();
      stats_.unmapped += static_cast<int64_t>(gone.size());
      stats_.cached_bytes = 0;
      stats_.peak_live_bytes = stats_.live_bytes;
    }
    Unmap(gone);
  }

  static void Delete(void* data) noexcept;

 private:
  struct Cached {
    void* data;
    size_t bytes;
    Clock::time_point freed;
  };
  using Lru = std::list<Cached>;  // most recently freed first

  int64_t CacheLimit() const { return std::max(kMinCacheBytes, 2 * stats_.peak_live_bytes); }

  static void Unmap(const Lru& buffers) noexcept {
    for (const Cached& gone : buffers) {
      BERTGATE_UNPOISON(gone.data, gone.bytes);  // the next mapping at this address starts clean
      munmap(gone.data, gone.bytes);             // fails only for an address not mapped: none here
    }
  }

  void* AllocateLarge(size_t requested) {
    TORCH_CHECK_WITH(OutOfMemoryError, requested <= kMaxBytes,
                     "DefaultCPUAllocator: can't allocate memory: you tried to allocate ", requested, " bytes.");
    const size_t bytes = SizeClass(requested);
    if (void* reused = Reuse(bytes, requested)) return reused;
    void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED) {
      // Under an address-space limit (or strict overcommit) the idle cache counts against the
      // process: hand it back before calling the memory gone.
      Trim();
      data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (data == MAP_FAILED) {
      // What libtorch's own allocator raises when the memory is not there.
      TORCH_CHECK_WITH(OutOfMemoryError, false, "DefaultCPUAllocator: can't allocate memory: you tried to allocate ",
                       requested, " bytes (", std::strerror(errno), ").");
    }
    BERTGATE_POISON(static_cast<char*>(data) + requested, bytes - requested);
    try {
      const std::lock_guard<std::mutex> lock(mutex_);
      Live(data, bytes);
      ++stats_.mapped;
    } catch (...) {
      munmap(data, bytes);
      throw;
    }
    return data;
  }

  // The smallest cached buffer that fits, up to twice the size: mixed batch shapes ask for
  // many sizes, and a cache that served only its own class mapped fresh memory for one request
  // in five (page faults that cost more than the glibc arena it replaces). Null when none does.
  void* Reuse(size_t bytes, size_t requested) {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto fit = by_size_.lower_bound(bytes);
    if (fit == by_size_.end() || fit->first > 2 * bytes) return nullptr;
    const Cached cached = *fit->second;
    try {
      live_.emplace(cached.data, cached.bytes);  // the only step that can fail, so first
    } catch (...) {
      return nullptr;  // left in the cache; the caller maps afresh (and reports that failing)
    }
    lru_.erase(fit->second);
    by_size_.erase(fit);
    stats_.cached_bytes -= static_cast<int64_t>(cached.bytes);
    Counted(cached.bytes);
    ++stats_.reused;
    BERTGATE_UNPOISON(cached.data, requested);
    BERTGATE_POISON(static_cast<char*>(cached.data) + requested, cached.bytes - requested);
    return cached.data;
  }

  // Called with the lock held; may throw (the table grows).
  void Live(void* data, size_t bytes) {
    live_.emplace(data, bytes);
    Counted(bytes);
  }

  void Counted(size_t bytes) noexcept {
    stats_.live_bytes += static_cast<int64_t>(bytes);
    stats_.peak_live_bytes = std::max(stats_.peak_live_bytes, stats_.live_bytes);
  }

  // False when `data` is not a large buffer of this allocator. Runs in DataPtr's destructor, so
  // it may not throw: a buffer the cache cannot take (its tables failed to grow) is unmapped.
  bool Release(void* data) noexcept {
    Lru evicted;
    size_t bytes = 0;
    bool kept = false;
    const Clock::time_point now = Clock::now();
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto found = live_.find(data);
      if (found == live_.end()) return false;
      bytes = found->second;
      live_.erase(found);
      stats_.live_bytes -= static_cast<int64_t>(bytes);
      try {
        lru_.push_front({data, bytes, now});
        try {
          // Before equal sizes already cached: the newest of a size is reused first (warm in the
          // CPU's caches) and the oldest is last among its equals, where eviction looks.
          by_size_.emplace_hint(by_size_.lower_bound(bytes), bytes, lru_.begin());
          kept = true;
        } catch (...) {
          lru_.pop_front();
        }
      } catch (...) {
      }
      if (kept) {
        BERTGATE_POISON(data, bytes);
        stats_.cached_bytes += static_cast<int64_t>(bytes);
        while (stats_.cached_bytes > CacheLimit()) Evict(evicted);
      } else {
        ++stats_.unmapped;
      }
      Expire(now, evicted);
    }
    // The kernel's work outside the lock: other threads' passes need not wait for it.
    if (!kept) munmap(data, bytes);
    Unmap(evicted);
    return true;
  }

  // The oldest cached buffer, moved to `evicted` (no allocation: a splice). Lock held.
  void Evict(Lru& evicted) noexcept {
    const auto oldest = std::prev(lru_.end());
    auto range = by_size_.equal_range(oldest->bytes);
    for (auto it = range.second; it != range.first;) {
      if ((--it)->second == oldest) {
        by_size_.erase(it);
        break;
      }
    }
    stats_.cached_bytes -= static_cast<int64_t>(oldest->bytes);
    ++stats_.unmapped;
    evicted.splice(evicted.end(), lru_, oldest);
  }

  // Moves the buffers freed longer than the idle age before `now` to `expired`. Lock held.
  void Expire(Clock::time_point now, Lru& expired) noexcept {
    const Clock::time_point cutoff = now - IdleAge();
    while (!lru_.empty() && lru_.back().freed < cutoff) Evict(expired);
  }

  std::atomic<int64_t> idle_ms_{kIdleAge.count()};
  std::mutex mutex_;
  std::unordered_map<void*, size_t> live_;
  Lru lru_;
  std::multimap<size_t, Lru::iterator> by_size_;
  CpuCacheStats stats_;
};

// Never destroyed: tensors freed while the process exits (a classifier not closed, libtorch's
// own statics) still find it.
CachingCpuAllocator* const g_allocator = new CachingCpuAllocator();
std::atomic<bool> g_installed{false};

void CachingCpuAllocator::Delete(void* data) noexcept {
  if (data == nullptr) return;
  // Large buffers are mapped, so page-aligned; most small ones are not, and skip the lock.
  if (reinterpret_cast<uintptr_t>(data) % kPageBytes != 0 || !g_allocator->Release(data)) c10::free_cpu(data);
}

// Expires idle buffers when no pass frees anything (a quiet server). Detached and never stopped:
// it touches only the allocator, which is never destroyed either. A process that cannot start a
// thread still expires buffers on each free.
void StartSweeper() {
  try {
    std::thread([] {
      // Named for itself: a thread inherits its creator's name, here the inference thread's.
      pthread_setname_np(pthread_self(), "bertgate-sweep");
      for (;;) {
        // At least 10 ms: a test's tiny idle age must not make the thread spin.
        std::this_thread::sleep_for(
            std::clamp(g_allocator->IdleAge() / 2, std::chrono::milliseconds(10), std::chrono::milliseconds(5'000)));
        g_allocator->Sweep(Clock::now());
      }
    }).detach();
  } catch (const std::system_error&) {
  }
}

}  // namespace

bool ChooseCpuAllocator(bool cache) {
  static std::mutex mutex;
  static std::optional<bool> chosen;
  const std::lock_guard<std::mutex> lock(mutex);
  if (!chosen) {
    chosen = cache;
    // Above the priority libtorch registers its own with, so a later registration at the
    // default priority does not take the place back.
    if (cache) {
      c10::SetCPUAllocator(g_allocator, /*priority=*/1);
      StartSweeper();
    }
    g_installed = cache;
  }
  return *chosen == cache;
}

CpuCacheStats CpuCacheSnapshot() {
  CpuCacheStats stats = g_allocator->Snapshot();
  stats.installed = g_installed && c10::GetCPUAllocator() == g_allocator;
  if (!stats.installed) stats.cache_limit_bytes = 0;  // no cache, no bound to report
  return stats;
}

void TrimCpuCache() {
  g_allocator->Trim();
}

void SweepCpuCache(std::chrono::steady_clock::time_point now) {
  g_allocator->Sweep(now);
}

void SetCpuCacheIdleAge(std::chrono::milliseconds age) {
  g_allocator->SetIdleAge(age);
}

}  // namespace bertgate
