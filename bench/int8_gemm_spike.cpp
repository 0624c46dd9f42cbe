// Spike for the int8 issue's lever 3 on CPUs without AMX (docs/benchmarks.md, "An AVX2 GEMM
// for the int8 Linear: dropped"): the GEMM bertgate::linear_int8 calls there (oneDNN's
// gemm_s8s8s32, which packs the weights and sums their columns on every call) against a GEMM on
// weights packed once, in AVX2 (vpmaddubsw, u8 x s8 with pairs summed in int16: exact for
// weights within [-64, 64] once the activations are shifted to u8 and the shift taken off), on
// the default model's shapes (hidden 384, FFN 1536) at batch 1 (30 rows) and a 128-row block.
// One thread, 7 interleaved rounds, median microseconds a call; each result compared with
// oneDNN's (exact sums: the same bits). ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN at AVX2 on a CPU
// with VNNI, which is what an AVX2-only CPU runs.
//
//   T=.venv/lib/python3.11/site-packages/torch
//   g++ -std=c++17 -O3 -I$T/include -I$T/include/torch/csrc/api/include -o /tmp/gemm_spike
//     bench/int8_gemm_spike.cpp -L$T/lib -ltorch_cpu -lc10 -Wl,-rpath,$PWD/$T/lib   (one line)
//   /tmp/gemm_spike;  ONEDNN_MAX_CPU_ISA=AVX2 /tmp/gemm_spike

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <tuple>
#include <vector>

namespace at::native {
TORCH_API void mkldnn_matmul_i8i8i32(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result);
}

namespace spike {

inline int64_t RoundUp(int64_t v, int64_t to) {
  return (v + to - 1) / to * to;
}

// Rows of the output per kernel step, and columns per packed block; depth in groups of four.
constexpr int64_t kAvx2RowPad = 4;
constexpr int64_t kAvx2ColPad = 16;
constexpr int64_t kAvx2DepthPad = 4;

// True where the CPU runs AVX2 (the kernel is compiled for it whatever the engine's target).
bool Avx2Int8Available();

// A weight [N, K] int8 within [-64, 64] in the kernel's layout, zero-padded to
// N' = RoundUp(N, 16) and K' = RoundUp(K, 4), with 128 * sum over k of w[j, k] per column.
struct Avx2PackedWeight {
  int64_t n = 0, k = 0, n_padded = 0, k_padded = 0;
  std::unique_ptr<int8_t[]> data;
  std::unique_ptr<int32_t[]> shift;  // n_padded entries
};

// `weight` (int8 [N, K], any strides) in the kernel's layout: a pass over the weight.
std::unique_ptr<Avx2PackedWeight> PackForAvx2(const at::Tensor& weight);

// c[i, j] = sum over k of a[i, k] * w[j, k], exactly, for i < rows_padded and j < n_padded.
// `a` holds rows_padded (a multiple of kAvx2RowPad) rows of w.k_padded uint8 at stride lda: the
// int8 activations plus 128 (Avx2ShiftActivations), 128 beyond column k; `c` is int32 at stride
// ldc >= w.n_padded. Call only where Avx2Int8Available().
void Avx2Int8Gemm(const uint8_t* a, int64_t rows_padded, int64_t lda, const Avx2PackedWeight& w, int32_t* c,
                  int64_t ldc);

// int8 activations to the kernel's uint8 in place (each plus 128; a byte's bits with the top one
// flipped): `count` bytes.
void Avx2ShiftActivations(int8_t* a, int64_t count);

// One column block of the packed weight: for each group of four depths, 16 columns x 4 bytes
// (64 bytes, two AVX2 registers of 8 columns each).
constexpr int64_t kGroupBytes = kAvx2ColPad * kAvx2DepthPad;

// Output columns [n_begin, n_end) (multiples of 16), every row, in steps of 4 rows x 16 columns:
// eight int32 accumulators of 8 columns. Per group of four depths, each row's four activations
// are broadcast and multiplied with the two weight registers (u8 x s8, pairs summed in int16),
// then pairs summed again into int32 against ones.
__attribute__((target("avx2"))) void Kernel(const uint8_t* a, int64_t rows_padded, int64_t lda,
                                            const Avx2PackedWeight& w, int64_t n_begin, int64_t n_end, int32_t* c,
                                            int64_t ldc) {
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t groups = w.k_padded / kAvx2DepthPad;
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kAvx2ColPad) {
    const int8_t* block = w.data.get() + (n0 / kAvx2ColPad) * groups * kGroupBytes;
    const __m256i shift0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.shift.get() + n0));
    const __m256i shift1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.shift.get() + n0 + 8));
    for (int64_t m0 = 0; m0 < rows_padded; m0 += kAvx2RowPad) {
      const uint8_t* a0 = a + m0 * lda;
      const uint8_t* a1 = a0 + lda;
      const uint8_t* a2 = a1 + lda;
      const uint8_t* a3 = a2 + lda;
      __m256i c00 = _mm256_setzero_si256(), c01 = _mm256_setzero_si256();
      __m256i c10 = _mm256_setzero_si256(), c11 = _mm256_setzero_si256();
      __m256i c20 = _mm256_setzero_si256(), c21 = _mm256_setzero_si256();
      __m256i c30 = _mm256_setzero_si256(), c31 = _mm256_setzero_si256();
      const int8_t* b = block;
      for (int64_t g = 0; g < groups; ++g, b += kGroupBytes) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32));
        const int64_t d = g * kAvx2DepthPad;
        int32_t x0, x1, x2, x3;
        __builtin_memcpy(&x0, a0 + d, 4);
        __builtin_memcpy(&x1, a1 + d, 4);
        __builtin_memcpy(&x2, a2 + d, 4);
        __builtin_memcpy(&x3, a3 + d, 4);
        __m256i v = _mm256_set1_epi32(x0);
        c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(_mm256_maddubs_epi16(v, w0), ones));
        c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(_mm256_maddubs_epi16(v, w1), ones));
        v = _mm256_set1_epi32(x1);
        c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(_mm256_maddubs_epi16(v, w0), ones));
        c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(_mm256_maddubs_epi16(v, w1), ones));
        v = _mm256_set1_epi32(x2);
        c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(_mm256_maddubs_epi16(v, w0), ones));
        c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(_mm256_maddubs_epi16(v, w1), ones));
        v = _mm256_set1_epi32(x3);
        c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(_mm256_maddubs_epi16(v, w0), ones));
        c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(_mm256_maddubs_epi16(v, w1), ones));
      }
      int32_t* out = c + m0 * ldc + n0;
      // (A lambda would not inherit the target attribute, so the stores are spelled out.)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_sub_epi32(c00, shift0));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_sub_epi32(c01, shift1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + ldc), _mm256_sub_epi32(c10, shift0));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + ldc + 8), _mm256_sub_epi32(c11, shift1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * ldc), _mm256_sub_epi32(c20, shift0));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * ldc + 8), _mm256_sub_epi32(c21, shift1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 3 * ldc), _mm256_sub_epi32(c30, shift0));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 3 * ldc + 8), _mm256_sub_epi32(c31, shift1));
    }
  }
}

bool Avx2Int8Available() {
  static const bool available = __builtin_cpu_supports("avx2");
  return available;
}

std::unique_ptr<Avx2PackedWeight> PackForAvx2(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kChar, "the AVX2 GEMM packs 2-D int8 weights");
  const at::Tensor w = weight.contiguous();
  auto packed = std::make_unique<Avx2PackedWeight>();
  packed->n = w.size(0);
  packed->k = w.size(1);
  packed->n_padded = RoundUp(packed->n, kAvx2ColPad);
  packed->k_padded = RoundUp(packed->k, kAvx2DepthPad);
  const int64_t groups = packed->k_padded / kAvx2DepthPad;
  packed->data.reset(new int8_t[packed->n_padded * packed->k_padded]());
  packed->shift.reset(new int32_t[packed->n_padded]());
  const int8_t* src = w.data_ptr<int8_t>();
  // Block nb, group g, column c, lane t holds w[nb*16 + c, 4g + t].
  for (int64_t j = 0; j < packed->n; ++j) {
    const int8_t* row = src + j * packed->k;
    int8_t* col = packed->data.get() + (j / kAvx2ColPad) * groups * kGroupBytes + (j % kAvx2ColPad) * kAvx2DepthPad;
    int64_t sum = 0;
    for (int64_t kk = 0; kk < packed->k; ++kk) {
      col[(kk / kAvx2DepthPad) * kGroupBytes + kk % kAvx2DepthPad] = row[kk];
      sum += row[kk];
    }
    // What the shift of the activations by 128 adds to column j, taken off after. In int32 with
    // wrap-around, as the kernel's sums: |sum| <= 64 * K, exact for the depths the operator takes.
    packed->shift[j] = static_cast<int32_t>(static_cast<uint32_t>(sum * 128));
  }
  return packed;
}

void Avx2Int8Gemm(const uint8_t* a, int64_t rows_padded, int64_t lda, const Avx2PackedWeight& w, int32_t* c,
                  int64_t ldc) {
  TORCH_CHECK(Avx2Int8Available(), "this CPU has no AVX2");
  // Column blocks across the intra-op threads: each writes its own columns of c.
  at::parallel_for(0, w.n_padded / kAvx2ColPad, 4, [&](int64_t begin, int64_t end) {
    Kernel(a, rows_padded, lda, w, begin * kAvx2ColPad, end * kAvx2ColPad, c, ldc);
  });
}

void Avx2ShiftActivations(int8_t* a, int64_t count) {
  uint8_t* bytes = reinterpret_cast<uint8_t*>(a);
  for (int64_t i = 0; i < count; ++i) bytes[i] ^= 0x80u;
}

}  // namespace spike

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double MicrosPerCall(F&& f, int calls) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) f();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / calls;
}

}  // namespace

int main() {
  at::set_num_threads(1);
  at::manual_seed(1);
  std::printf("%6s %6s %6s %12s %12s %8s %s\n", "rows", "K", "N", "oneDNN us", "AVX2 us", "ratio", "same");
  for (const auto& [m, k, n] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {30, 384, 384}, {30, 384, 1536}, {30, 1536, 384}, {128, 384, 384}, {128, 384, 1536}, {128, 1536, 384}}) {
    const at::Tensor a = at::randint(-127, 128, {m, k}, at::kChar);
    const at::Tensor w = at::randint(-64, 65, {n, k}, at::kChar);
    const at::Tensor wt = w.t();
    at::Tensor c1 = at::empty({m, n}, at::kInt);
    const auto packed = spike::PackForAvx2(w);
    const int64_t rows = spike::RoundUp(m, spike::kAvx2RowPad);
    at::Tensor c2 = at::empty({rows, packed->n_padded}, at::kInt);
    at::Tensor shifted = at::zeros({rows, packed->k_padded}, at::kChar);
    const auto onednn = [&] { at::native::mkldnn_matmul_i8i8i32(a, wt, c1); };
    // The operator's share of the AVX2 path: the copy into the padded buffer stands for the
    // quantize step writing it, which it does today; the shift is the AVX2 path's own pass.
    const auto avx2 = [&] {
      shifted.narrow(0, 0, m).narrow(1, 0, k).copy_(a);
      spike::Avx2ShiftActivations(shifted.data_ptr<int8_t>(), shifted.numel());
      spike::Avx2Int8Gemm(reinterpret_cast<const uint8_t*>(shifted.data_ptr<int8_t>()), rows, packed->k_padded, *packed,
                          c2.data_ptr<int32_t>(), packed->n_padded);
    };
    onednn();
    avx2();
    const bool same = at::equal(c1, c2.narrow(0, 0, m).narrow(1, 0, n));
    const int calls = static_cast<int>(std::max<int64_t>(20, 2000000000LL / (m * k * n * 40)));
    std::vector<double> t1, t2;
    for (int round = 0; round < 7; ++round) {
      t1.push_back(MicrosPerCall(onednn, calls));
      t2.push_back(MicrosPerCall(avx2, calls));
    }
    const double a1 = Median(t1), a2 = Median(t2);
    std::printf("%6ld %6ld %6ld %12.1f %12.1f %7.2fx %s\n", static_cast<long>(m), static_cast<long>(k),
                static_cast<long>(n), a1, a2, a1 / a2, same ? "yes" : "NO");
  }
  return 0;
}
