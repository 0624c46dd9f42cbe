#pragma once

// The int8 GEMM of bertgate::linear_int8 on x86 CPUs without AMX: fbgemm's (the library torch.ao's
// int8 layers run on, shipped inside libtorch_cpu with its headers), against weights packed once
// at load. oneDNN's BLAS-style GEMM, which the operator calls otherwise, packs the weights and
// sums their columns again on every call: on the default model's shapes fbgemm's ran 1.32-1.35x
// oneDNN's at 30 rows and 1.02-1.10x at 80-128 (AMD EPYC with VNNI, docs/benchmarks.md).
//
// fbgemm multiplies u8 activations by s8 weights. The operator's activations are s8 within
// [-127, 127]; written as u8 = s8 + 128 (the sign bit flipped), each sum gains 128 x the weight
// column's sum, which is taken off again: exact, the same bits as oneDNN's and the reference's.
// Without VNNI fbgemm adds pairs of u8 x s8 products in saturating int16: 255 x 64 x 2 = 32640
// fits, which is why only weights within [-64, 64] (the ones a model's load vetted) come here.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

namespace bertgate {

// True where this engine was built with fbgemm's headers and fbgemm runs on this CPU (AVX2 or
// later).
bool FbgemmInt8Available();

// A weight [N, K] int8 (within [-64, 64]) in fbgemm's packed layout, with the shift to take off.
struct FbgemmPackedWeight;
struct FbgemmPackedWeightDeleter {
  void operator()(FbgemmPackedWeight* w) const;
};
using FbgemmPacked = std::unique_ptr<FbgemmPackedWeight, FbgemmPackedWeightDeleter>;

// Whether fbgemm can pack `weight` (int8 [N, K]): fbgemm sizes its packed buffer in a 32-bit int
// from K and N rounded up to its blocks, so a layer near 2 GiB would overflow inside it. Such a
// weight stays on oneDNN's GEMM (vetted, not packed); a BERT layer is a few MB.
bool FbgemmCanPack(const at::Tensor& weight);

// `weight` (int8 [N, K], any strides) packed for fbgemm: a pass over the weight. Call only where
// FbgemmInt8Available() and FbgemmCanPack(weight).
FbgemmPacked PackForFbgemm(const at::Tensor& weight);

// The bit that turns an s8 activation into fbgemm's u8 one (s8 + 128): the operator writes its
// quantized rows with it flipped for this GEMM.
constexpr uint8_t kFbgemmActivationFlip = 0x80;

// c[i, j] = sum over k of (a[i, k] - 128) * w[j, k], exactly, for i < rows and j < w's N: `a`
// holds rows of K u8 at stride lda (s8 activations with kFbgemmActivationFlip applied), `c` is
// int32 at stride ldc >= N. Runs on the calling thread's intra-op threads.
void FbgemmInt8Gemm(const uint8_t* a, int64_t rows, int64_t lda, const FbgemmPackedWeight& w, int32_t* c, int64_t ldc);

}  // namespace bertgate
