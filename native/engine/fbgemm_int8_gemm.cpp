#include "fbgemm_int8_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

// Every x86-64 torch wheel of the matrix (2.11-2.15) ships fbgemm inside libtorch_cpu, its
// headers beside ATen's, and exports the instantiations used here (PackBMatrix<int8_t>,
// PackAMatrix<uint8_t>, fbgemmPacked with a plain int32 output). A libtorch without them (an ARM
// build) compiles this file without fbgemm: FbgemmInt8Available() is false and the operator
// keeps oneDNN's GEMM.
#if defined(__x86_64__) && __has_include(<fbgemm/Fbgemm.h>)
#define BERTGATE_FBGEMM 1
#include <fbgemm/Fbgemm.h>
#else
#define BERTGATE_FBGEMM 0
#endif

namespace bertgate {

struct FbgemmPackedWeight {
  int64_t n = 0, k = 0;
  std::vector<uint32_t> shift;  // 128 x each weight column's sum (mod 2^32): what the u8 activations add
#if BERTGATE_FBGEMM
  std::unique_ptr<fbgemm::PackBMatrix<int8_t, int32_t>> packed;
#endif
};

void FbgemmPackedWeightDeleter::operator()(FbgemmPackedWeight* w) const {
  delete w;
}

bool FbgemmInt8Available() {
#if BERTGATE_FBGEMM
  static const bool available = fbgemm::fbgemmSupportedCPU();
  return available;
#else
  return false;
#endif
}

bool FbgemmCanPack(const at::Tensor& weight) {
  if (weight.dim() != 2 || weight.scalar_type() != at::kChar) return false;
  // Rounded up further than any of fbgemm's blockings, with a factor of 2 to spare.
  const auto padded = [](int64_t v) { return (v + 1023) / 1024 * 1024; };
  return padded(weight.size(0)) * padded(weight.size(1)) <= (int64_t{1} << 30);
}

FbgemmPacked PackForFbgemm(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kChar, "bertgate: fbgemm packs 2-D int8 weights");
#if BERTGATE_FBGEMM
  TORCH_CHECK(FbgemmInt8Available(), "bertgate: fbgemm does not run on this CPU");
  TORCH_CHECK(FbgemmCanPack(weight), "bertgate: a weight of ", weight.size(0), " x ", weight.size(1),
              " is past what fbgemm packs");
  const at::Tensor w = weight.contiguous();
  FbgemmPacked packed(new FbgemmPackedWeight);
  packed->n = w.size(0);
  packed->k = w.size(1);
  const int8_t* src = w.data_ptr<int8_t>();
  packed->shift.resize(packed->n);
  for (int64_t j = 0; j < packed->n; ++j) {
    uint32_t sum = 0;
    for (int64_t kk = 0; kk < packed->k; ++kk)
      sum += static_cast<uint32_t>(static_cast<int32_t>(src[j * packed->k + kk]));
    packed->shift[j] = 128u * sum;
  }
  // B is K x N; the weight [N, K] row-major is its transpose. fbgemm copies it into its own
  // buffer, so the source may go.
  packed->packed = std::make_unique<fbgemm::PackBMatrix<int8_t, int32_t>>(
      fbgemm::matrix_op_t::Transpose, static_cast<int32_t>(packed->k), static_cast<int32_t>(packed->n), src,
      static_cast<int32_t>(packed->k), nullptr, 1);
  return packed;
#else
  TORCH_CHECK(false, "bertgate: this engine was built without fbgemm");
#endif
}

void FbgemmInt8Gemm(const uint8_t* a, int64_t rows, int64_t lda, const FbgemmPackedWeight& w, int32_t* c, int64_t ldc) {
#if BERTGATE_FBGEMM
  if (rows == 0) return;
  // As torch.ao's int8 Linear calls it: one task per intra-op thread, fbgemm dividing the rows
  // and columns among them; each task packs the blocks of `a` it reads.
  const int tasks = at::get_num_threads();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      fbgemm::PackAMatrix<uint8_t, int32_t> pack_a(fbgemm::matrix_op_t::NoTranspose, static_cast<int32_t>(rows),
                                                   static_cast<int32_t>(w.k), a, static_cast<int32_t>(lda), nullptr, 1);
      fbgemm::DoNothing<int32_t, int32_t> nothing;
      fbgemm::memCopy<> copy(nothing);
      fbgemm::fbgemmPacked(pack_a, *w.packed, c, c, static_cast<int32_t>(ldc), copy, static_cast<int>(task), tasks);
    }
  });
  // The shift's products off each sum, modulo 2^32 as fbgemm's int32 sums wrap: the u8 sum may
  // pass 2^31 where the true one (|sum| <= 127 x 64 x K, the operator's bound) does not, so the
  // difference is the exact sum. Unsigned: a signed overflow would be undefined.
  const uint32_t* shift = w.shift.data();
  const int64_t n = w.n;
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      uint32_t* row = reinterpret_cast<uint32_t*>(c + i * ldc);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] -= shift[j];
    }
  });
#else
  (void)a, (void)rows, (void)lda, (void)w, (void)c, (void)ldc;
  TORCH_CHECK(false, "bertgate: this engine was built without fbgemm");
#endif
}

}  // namespace bertgate
