#pragma once

// The int8 GEMM of bertgate::linear_int8 on CPUs with AMX (Intel Sapphire Rapids and later):
// int8 x int8 -> int32 in tile instructions, against weights packed once into AMX's layout and
// kept while their tensor lives. oneDNN's BLAS-style GEMM, which the operator calls elsewhere,
// has no AMX kernel and packs the weights again on every call; onnxruntime's int8 GEMM uses AMX
// where it exists, which is most of what it led by at batch 1 on such a CPU (docs/benchmarks.md).
// Integer sums are exact, so both paths give the same bits; only the speed differs.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

namespace bertgate {

// Multiples the packed operands are padded to: a tile holds 16 rows of 64 int8 (K) and the
// kernel works on 32 x 32 blocks of the output.
constexpr int64_t kAmxRowPad = 32;
constexpr int64_t kAmxColPad = 32;
constexpr int64_t kAmxDepthPad = 64;

inline int64_t RoundUp(int64_t v, int64_t to) {
  return (v + to - 1) / to * to;
}

// True once this process may run AMX tile instructions: the CPU has AMX-TILE and AMX-INT8 and
// the kernel granted the tile state (Linux 5.16+, arch_prctl).
bool AmxInt8Available();

// Whether linear_int8 on this thread takes the AMX kernel: where AMX is available, unless the
// innermost Int8GemmScope says no. The engine opens one around each model's forward passes, from
// LoadOptions::int8_amx (BERTGATE_INT8_GEMM=onednn, read per load in TypeScript), so two models
// in one process can differ, and the operator itself reads no environment.
bool AmxInt8Allowed();

class Int8GemmScope {
 public:
  explicit Int8GemmScope(bool amx);
  ~Int8GemmScope();
  Int8GemmScope(const Int8GemmScope&) = delete;
  Int8GemmScope& operator=(const Int8GemmScope&) = delete;

 private:
  bool previous_;
};

// A weight [N, K] int8 in AMX's B layout, zero-padded to N' = RoundUp(N, kAmxColPad) and
// K' = RoundUp(K, kAmxDepthPad).
struct AmxPackedWeight {
  int64_t n = 0, k = 0, n_padded = 0, k_padded = 0;
  std::unique_ptr<int8_t[]> data;
};

// The packed form of `weight`, from a cache that holds it while the weight's storage lives and
// its version is unchanged (a model's weights are read on every call: packing them each time
// would cost a pass over every weight per forward). Entries of freed storages are dropped on the
// next miss. Thread-safe.
std::shared_ptr<const AmxPackedWeight> AmxPackedWeightFor(const at::Tensor& weight);

// c[i, j] = sum over k of a[i, k] * w[j, k], exactly, for i < rows_padded and j < n_padded.
// `a` holds rows_padded (a multiple of kAmxRowPad) rows of w.k_padded int8 at stride lda, zero
// beyond column k; `c` is int32 at stride ldc >= w.n_padded. Call only where AmxInt8Available().
void AmxInt8Gemm(const int8_t* a, int64_t rows_padded, int64_t lda, const AmxPackedWeight& w, int32_t* c, int64_t ldc);

}  // namespace bertgate
