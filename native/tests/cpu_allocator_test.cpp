// The caching CPU allocator: installed for the process by the first choice, large buffers
// reused and the cache held to its bound, small ones and raw allocations on the right path.
// Tests share the process (and the cache other tests filled), so they check deltas and use
// sizes no other test asks for.

#include "../engine/cpu_allocator.h"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "../engine/engine_api.h"

namespace bertgate {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

at::Tensor Bytes(int64_t bytes) {
  return at::empty({bytes}, at::kByte);
}

class CpuAllocatorTest : public ::testing::Test {
 protected:
  // The engine's loads choose the cache too (LoadOptions.cpu_cache defaults to true).
  void SetUp() override { ASSERT_TRUE(ChooseCpuAllocator(true)); }
};

TEST_F(CpuAllocatorTest, TheFirstChoiceHoldsForTheProcess) {
  EXPECT_TRUE(CpuCacheSnapshot().installed);
  EXPECT_TRUE(ChooseCpuAllocator(true));
  // Asking for libtorch's own afterwards is refused, and nothing changes.
  EXPECT_FALSE(ChooseCpuAllocator(false));
  EXPECT_TRUE(CpuCacheSnapshot().installed);
}

TEST_F(CpuAllocatorTest, AFreedLargeBufferIsReusedWithoutMappingAgain) {
  const int64_t odd = 37 * kMiB + 12345;  // a size class of its own
  void* first = nullptr;
  {
    at::Tensor t = Bytes(odd);
    t.fill_(7);
    first = t.data_ptr();
    EXPECT_GE(CpuCacheSnapshot().live_bytes, odd);
  }
  const CpuCacheStats before = CpuCacheSnapshot();
  at::Tensor again = Bytes(odd);
  const CpuCacheStats after = CpuCacheSnapshot();
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_EQ(after.reused, before.reused + 1);
  EXPECT_EQ(after.mapped, before.mapped);
  EXPECT_LT(after.cached_bytes, before.cached_bytes);
  // A reused buffer holds what it is given.
  again.fill_(3);
  EXPECT_EQ(again.sum().item<int64_t>(), 3 * odd);
}

TEST_F(CpuAllocatorTest, ACachedBufferServesRequestsDownToHalfItsSizeButNotSmaller) {
  // Other tests leave buffers of other sizes cached (the order is shuffled), so a request may
  // be served by one of those: what is certain is which buffer may not serve it.
  void* kept = nullptr;
  int64_t held = 0;  // what the buffer holds: a reused one may be up to twice what was asked
  {
    const int64_t live = CpuCacheSnapshot().live_bytes;
    at::Tensor t = Bytes(91 * kMiB + 777);
    kept = t.data_ptr();
    held = CpuCacheSnapshot().live_bytes - live;
  }
  {
    // 0.6 of it: the big buffer fits, so the cache serves it without mapping.
    const CpuCacheStats before = CpuCacheSnapshot();
    at::Tensor smaller = Bytes(held * 6 / 10);
    const CpuCacheStats after = CpuCacheSnapshot();
    EXPECT_EQ(after.reused, before.reused + 1);
    EXPECT_EQ(after.mapped, before.mapped);
  }
  // 0.3 of it would waste more than half of the big one: never that buffer.
  for (int i = 0; i < 4; ++i) {
    at::Tensor tiny = Bytes(held * 3 / 10);
    EXPECT_NE(tiny.data_ptr(), kept);
  }
}

TEST_F(CpuAllocatorTest, TheCacheIsHeldToItsLimit) {
  const CpuCacheStats start = CpuCacheSnapshot();
  // One buffer at a time, each larger than any before (so none cached can serve it): every one
  // is mapped and kept, and the cache grows past its limit long before the live peak moves it.
  int64_t size = kMiB + 4097;
  CpuCacheStats now = start;
  while (now.unmapped == start.unmapped) {
    ASSERT_LT(size, now.cache_limit_bytes / 2) << "no eviction before buffers reached half the limit";
    (void)Bytes(size);
    now = CpuCacheSnapshot();
    ASSERT_LE(now.cached_bytes, now.cache_limit_bytes) << "after a buffer of " << size << " bytes";
    size += size / 4;  // past the next size class
  }
  EXPECT_EQ(now.cache_limit_bytes, std::max<int64_t>(128 * kMiB, 2 * now.peak_live_bytes));
  EXPECT_GT(now.cached_bytes, now.cache_limit_bytes / 2);
}

TEST_F(CpuAllocatorTest, BuffersUnder128KiBKeepLibtorchsOwnPathAndFromThereTheCaches) {
  const CpuCacheStats before = CpuCacheSnapshot();
  std::vector<at::Tensor> small;
  for (int i = 0; i < 100; ++i) small.push_back(Bytes(128 * 1024 - 1));
  small.push_back(Bytes(0));
  const CpuCacheStats during = CpuCacheSnapshot();
  EXPECT_EQ(during.live_bytes, before.live_bytes);
  EXPECT_EQ(during.mapped + during.reused, before.mapped + before.reused);
  at::Tensor large = Bytes(128 * 1024);
  const CpuCacheStats after = CpuCacheSnapshot();
  // Its own buffer, or a cached one up to twice its size.
  EXPECT_GE(after.live_bytes - before.live_bytes, 128 * 1024);
  EXPECT_LE(after.live_bytes - before.live_bytes, 256 * 1024);
  EXPECT_EQ(after.mapped + after.reused, before.mapped + before.reused + 1);
}

TEST_F(CpuAllocatorTest, ARequestNoMachineCouldServeIsOutOfMemoryNotAHang) {
  const CpuCacheStats before = CpuCacheSnapshot();
  EXPECT_THROW(Bytes(std::numeric_limits<int64_t>::max()), c10::OutOfMemoryError);
  EXPECT_THROW(c10::GetCPUAllocator()->raw_allocate(std::numeric_limits<size_t>::max() - 100), c10::OutOfMemoryError);
  EXPECT_EQ(CpuCacheSnapshot().live_bytes, before.live_bytes);
}

TEST_F(CpuAllocatorTest, TrimHandsTheCacheBackAndRestartsThePeak) {
  { at::Tensor big = Bytes(61 * kMiB + 3); }
  const CpuCacheStats before = CpuCacheSnapshot();
  ASSERT_GE(before.cached_bytes, 61 * kMiB);
  TrimCpuCache();
  const CpuCacheStats after = CpuCacheSnapshot();
  EXPECT_EQ(after.cached_bytes, 0);
  EXPECT_GT(after.unmapped, before.unmapped);
  EXPECT_EQ(after.peak_live_bytes, after.live_bytes);
  // And it still serves.
  at::Tensor again = Bytes(61 * kMiB + 3);
  EXPECT_EQ(CpuCacheSnapshot().mapped, after.mapped + 1);
}

TEST_F(CpuAllocatorTest, ABufferIdleLongerThanTheAgeIsUnmapped) {
  const int64_t odd = 53 * kMiB + 99;
  { at::Tensor t = Bytes(odd); }
  const std::chrono::steady_clock::time_point freed = std::chrono::steady_clock::now();
  const CpuCacheStats cached = CpuCacheSnapshot();
  ASSERT_GE(cached.cached_bytes, odd);
  SweepCpuCache(freed + std::chrono::seconds(29));  // not yet idle 30 s: kept
  EXPECT_EQ(CpuCacheSnapshot().cached_bytes, cached.cached_bytes);
  SweepCpuCache(freed + std::chrono::seconds(31));
  const CpuCacheStats swept = CpuCacheSnapshot();
  EXPECT_EQ(swept.cached_bytes, 0);  // every buffer here was freed before `freed`
  EXPECT_GT(swept.unmapped, cached.unmapped);
  // The next pass of that size maps afresh.
  at::Tensor again = Bytes(odd);
  EXPECT_EQ(CpuCacheSnapshot().mapped, swept.mapped + 1);
}

TEST_F(CpuAllocatorTest, TheSweeperUnmapsIdleBuffersWhenNothingElseIsFreed) {
  { at::Tensor t = Bytes(47 * kMiB + 5); }
  ASSERT_GE(CpuCacheSnapshot().cached_bytes, 47 * kMiB);
  SetCpuCacheIdleAge(std::chrono::milliseconds(200));
  // The sweeper wakes at least every 5 s; nothing here frees a large buffer meanwhile.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (CpuCacheSnapshot().cached_bytes != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const int64_t left = CpuCacheSnapshot().cached_bytes;
  SetCpuCacheIdleAge(std::chrono::seconds(30));
  EXPECT_EQ(left, 0);
}

#if !defined(__SANITIZE_ADDRESS__)
// Run in a child process: an address-space limit above what is mapped now, below what is mapped
// now plus the cache plus the request. Without the cache handed back the request fails.
[[noreturn]] void MapUnderAnAddressSpaceLimit() {
  std::vector<at::Tensor> hold;
  for (int i = 0; i < 6; ++i) hold.push_back(Bytes(20 * kMiB + i * 3 * kMiB));
  hold.clear();  // ~165 MiB cached (the limit allows it: it was all live at once)
  if (CpuCacheSnapshot().cached_bytes < 150 * kMiB) std::exit(2);
  std::ifstream status("/proc/self/status");
  std::string line;
  int64_t vm_kib = 0;
  while (std::getline(status, line))
    if (line.rfind("VmSize:", 0) == 0) vm_kib = std::stoll(line.substr(7));
  const rlim_t cap = static_cast<rlim_t>(vm_kib * 1024 + 64 * kMiB);
  const rlimit limit{cap, cap};
  if (setrlimit(RLIMIT_AS, &limit) != 0) std::exit(3);
  at::Tensor big = Bytes(150 * kMiB);  // fits only once the cache is unmapped
  std::memset(big.data_ptr(), 1, 150 * kMiB);
  std::exit(CpuCacheSnapshot().cached_bytes == 0 ? 0 : 4);
}

TEST_F(CpuAllocatorTest, AMappingRefusedFirstHandsTheCacheBackThenRetries) {
  // A fresh process for the child, not a fork: libtorch's OpenMP threads do not survive a fork.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(MapUnderAnAddressSpaceLimit(), ::testing::ExitedWithCode(0), "");
}
#else
TEST_F(CpuAllocatorTest, APoisonedCachedBufferIsCaughtByAddressSanitizer) {
  // Mapped memory has no redzones: the allocator poisons what it caches, so a read after free
  // is reported as from malloc's memory.
  volatile unsigned char* freed = nullptr;
  {
    at::Tensor t = Bytes(3 * kMiB + 11);
    freed = static_cast<unsigned char*>(t.data_ptr());
  }
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH((void)freed[100], "use-after-poison");
  // And past the end of a live one.
  at::Tensor live = Bytes(3 * kMiB + 11);
  volatile unsigned char* data = static_cast<unsigned char*>(live.data_ptr());
  EXPECT_DEATH((void)data[3 * kMiB + 11 + 8], "use-after-poison");
}
#endif

TEST_F(CpuAllocatorTest, RawAllocationsGoBackThroughTheRawDeleter) {
  c10::Allocator* allocator = c10::GetCPUAllocator();
  const CpuCacheStats before = CpuCacheSnapshot();
  void* large = allocator->raw_allocate(3 * kMiB + 5);
  void* small = allocator->raw_allocate(100);
  EXPECT_GT(CpuCacheSnapshot().live_bytes, before.live_bytes);
  allocator->raw_deleter()(large);
  allocator->raw_deleter()(small);
  EXPECT_EQ(CpuCacheSnapshot().live_bytes, before.live_bytes);
}

TEST_F(CpuAllocatorTest, ConcurrentPassesKeepTheBooksStraight) {
  const CpuCacheStats before = CpuCacheSnapshot();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) {
        at::Tensor a = Bytes((1 + (i * 7 + t) % 13) * 300 * 1024);
        at::Tensor b = Bytes((1 + (i * 5 + t) % 11) * 200 * 1024);
        a.fill_(1);
        b.fill_(2);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const CpuCacheStats after = CpuCacheSnapshot();
  EXPECT_EQ(after.live_bytes, before.live_bytes);
  EXPECT_LE(after.cached_bytes, after.cache_limit_bytes);
  EXPECT_GT(after.reused, before.reused + 1000);
}

}  // namespace
}  // namespace bertgate
