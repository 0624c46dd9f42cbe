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
#include <unordered_map>

#include "fbgemm_int8_gemm.h"

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

// A weight [N, K] int8 in AMX's B layout, zero-padded to N' = RoundUp(N, kAmxColPad) and
// K' = RoundUp(K, kAmxDepthPad).
struct AmxPackedWeight {
  int64_t n = 0, k = 0, n_padded = 0, k_padded = 0;
  std::unique_ptr<int8_t[]> data;
};

// `weight` (int8 [N, K], any strides) in AMX's layout: a pass over the weight.
std::unique_ptr<AmxPackedWeight> PackForAmx(const at::Tensor& weight);

// The int8 weights of one model that its load vetted: the weight constants of its frozen graph,
// each a copy that graph alone holds (IsolateInt8Weights, torchscript_model.h) and within
// [-64, 64] (CheckInt8Weights), so that nothing can write them; each packed for AMX where the
// model runs that GEMM, or for fbgemm where it runs that one. Owned by the model and freed with it. Entries are found
// by the weight's data pointer: the table keeps each source tensor alive, so no other tensor can be given that memory
// while it lives; a lookup also compares the geometry, and the source's version as a second look. A tensor the table
// does not hold (an attribute read live, a direct call, another model's weight) finds nothing: linear_int8 checks its
// range on that call and runs it on oneDNN's GEMM. There is no process-wide cache to go stale or grow. Filled before
// the model's first run; read-only after, so threads may share it.
class Int8WeightTable {
 public:
  // Which GEMM a model's vetted weights are packed for, once, at its load.
  enum class Packing { kNone, kAmx, kFbgemm };
  struct Entry {
    at::Tensor source;
    int64_t version;
    std::unique_ptr<AmxPackedWeight> packed;  // null unless added for AMX
    FbgemmPacked fbgemm;                      // null unless added for fbgemm (and FbgemmCanPack)
  };
  // Holds `weight` unless the table holds that tensor already; packs it as `packing` says.
  void Add(const at::Tensor& weight, Packing packing);
  // This table's entry for `weight` if it holds that tensor, unchanged, else null.
  const Entry* Find(const at::Tensor& weight) const;
  size_t size() const { return entries_.size(); }

 private:
  std::unordered_map<const void*, Entry> entries_;
};

// The table of the model whose forward pass runs on this thread: the innermost
// Int8GemmScope's, or null outside any scope. The engine opens a scope around each forward pass
// of a model, so two models in one process can differ and the operator reads no environment. A
// torch.jit.fork task runs on another thread, outside the scope: its weights are checked per
// call and run on oneDNN, the same bits.
const Int8WeightTable* ActiveInt8WeightTable();

class Int8GemmScope {
 public:
  explicit Int8GemmScope(const Int8WeightTable* table);
  ~Int8GemmScope();
  Int8GemmScope(const Int8GemmScope&) = delete;
  Int8GemmScope& operator=(const Int8GemmScope&) = delete;

 private:
  const Int8WeightTable* previous_;
};

// c[i, j] = sum over k of a[i, k] * w[j, k], exactly, for i < rows_padded and j < n_padded.
// `a` holds rows_padded (a multiple of kAmxRowPad) rows of w.k_padded int8 at stride lda, zero
// beyond column k; `c` is int32 at stride ldc >= w.n_padded. Call only where AmxInt8Available().
void AmxInt8Gemm(const int8_t* a, int64_t rows_padded, int64_t lda, const AmxPackedWeight& w, int32_t* c, int64_t ldc);

}  // namespace bertgate
