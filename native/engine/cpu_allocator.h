#pragma once
// libtorch's CPU allocator for the process, replaced by one that keeps large activation
// buffers for reuse up to a bound.
//
// Why: libtorch's default CPU allocator is glibc's malloc. A forward pass frees buffers of
// megabytes; glibc then raises its mmap threshold, so later buffers of every batch shape come
// from the inference thread's arena, and a server whose batches change size on every call
// fragments that arena without limit (an int8 bundle under 1-250 texts a call: 252 MiB to
// 2 GiB in 20,000 texts, 3.5 GiB in an attack's run). Handing memory back to the kernel
// instead (a low fixed mmap threshold, jemalloc's decay, periodic malloc_trim) bounds it but
// costs 17-100% of the speed in page faults. Here buffers of kLargeBytes and more are mapped
// directly, kept on free in a cache keyed by size class, reused by later passes without a
// fault, and unmapped oldest first once the cache holds more than twice the most ever live at
// once (and at least 128 MiB), or once idle in the cache for 30 s (a sweeper thread sees to that
// when no pass runs, so one huge call does not pin its memory in a quiet process). "Live" counts every large buffer,
// the weights of the models loaded since included, so the cache may hold twice (weights + the largest pass); an
// engine's close hands the whole cache back (TrimCpuCache) and restarts the peak. Measured in docs/benchmarks.md.

#include <chrono>

#include "engine_api.h"

namespace bertgate {

// The first call chooses for the process: the caching allocator becomes libtorch's CPU allocator
// (`cache`), or libtorch's own stays. Tensors allocated before keep their own deleters. Returns
// false when a later call asks for the other one than the first chose.
bool ChooseCpuAllocator(bool cache);

// What the cache holds now; `installed` false where libtorch's own allocator was chosen.
CpuCacheStats CpuCacheSnapshot();

// Unmaps every cached buffer and restarts the peak from what is live now (an engine's close, so
// a process that unloads a model gets its memory back; a failed mapping, before giving up).
void TrimCpuCache();

// Unmaps the buffers cached longer than the idle age (30 s) before `now`; the sweeper thread calls
// it every few seconds, tests with a time of their choosing.
void SweepCpuCache(std::chrono::steady_clock::time_point now);

// The idle age: 30 s unless a test shortens it to see the sweeper work.
void SetCpuCacheIdleAge(std::chrono::milliseconds age);

}  // namespace bertgate
