#include "int8_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/macros/Export.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "amx_int8_gemm.h"
#include "gelu_erf.h"

namespace at::native {
// ATen's oneDNN int8 GEMM (s8 x s8 -> s32 through dnnl_gemm_s8s8s32: packed on the fly, no
// per-shape kernel cache), exported by libtorch_cpu in every torch of the matrix (2.11-2.15;
// an engine is built per minor, so a minor without it fails to link, not to run) but declared
// in no installed header. at::_int_mm reaches it only while oneDNN is enabled for the process,
// which the engine turns off (engine_library.cpp); without it _int_mm runs a scalar loop, 40x
// slower on the default model.
TORCH_API void mkldnn_matmul_i8i8i32(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result);
}  // namespace at::native

namespace bertgate {
namespace {

// The loops below are plain C++ that GCC and Clang vectorise; the engine is built for any
// x86-64, so each is also compiled for AVX2 and AVX-512 (BW: byte lanes for the int8 stores)
// and the loader picks one per CPU. This file is compiled with -fno-trapping-math, without
// which GCC will not turn the clamps into vector min/max (bertgate installs no FP trap
// handler), and -ffp-contract=off, so that no multiply-add is fused and the results match the
// Python reference's, which rounds after every operation.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__SANITIZE_ADDRESS__)
#define BERTGATE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BERTGATE_CLONES
#endif

// One row of activations to int8, symmetric around 0 with the row's own scale: the row's
// largest magnitude maps to 127. A row's result then depends on that row alone, never on the
// other rows of its batch (torch.ao's dynamic Linear shares one scale across the batch). Rows of
// q are ldq >= k apart, zero past k (the AMX GEMM reads whole tiles of 64 columns). Each byte is
// written XOR `flip`: kFbgemmActivationFlip gives fbgemm's u8 (s8 + 128), 0 the s8 itself.
BERTGATE_CLONES void QuantizeRows(const float* x, int64_t rows, int64_t k, int8_t* q, int64_t ldq, float* scale,
                                  uint8_t flip) {
  const int8_t zero = static_cast<int8_t>(flip);
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = x + i * k;
    float amax = 0.0f;
    float nonfinite = 0.0f;  // x * 0 is 0 for every finite x, NaN for NaN and +-inf
#pragma omp simd reduction(max : amax) reduction(+ : nonfinite)
    for (int64_t j = 0; j < k; ++j) {
      const float a = std::fabs(row[j]);
      amax = a > amax ? a : amax;
      nonfinite += row[j] * 0.0f;
    }
    int8_t* out = q + i * ldq;
    std::fill(out + k, out + ldq, zero);
    if (nonfinite != 0.0f) {
      // A row holding NaN or +-inf: its output row is NaN (zeros times a NaN scale), as the
      // reference's, where a float-to-int8 cast of NaN would be undefined.
      std::fill(out, out + k, zero);
      scale[i] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    // A row whose scale would not be a normal float (amax under 1.5e-36, zeros included) is
    // quantized with scale 1, to zeros: 1 / s must stay finite for the product below.
    const float raw = amax / 127.0f;
    const float s = raw >= std::numeric_limits<float>::min() ? raw : 1.0f;
    const float inv = 1.0f / s;
    scale[i] = s;
#pragma omp simd
    for (int64_t j = 0; j < k; ++j) {
      float v = row[j] * inv;
      v = v > 127.0f ? 127.0f : v;
      v = v < -127.0f ? -127.0f : v;
      // Rounds half to even, as torch.round does, in arithmetic the vectoriser handles
      // (nearbyintf is a libm call below SSE4.1): adding and taking away 1.5 * 2^23 leaves
      // an fp32 with no fraction bits, exact for |v| <= 2^22. Only -ffast-math would fold it.
      out[j] = static_cast<int8_t>(static_cast<int32_t>((v + 12582912.0f) - 12582912.0f) ^ flip);
    }
  }
}

// int32 accumulators (rows lda >= n apart) back to fp32: row scale times column scale, plus the
// bias, then the activation, in one pass over the output.
BERTGATE_CLONES void Dequantize(const int32_t* acc, int64_t rows, int64_t n, int64_t lda, const float* row_scale,
                                const float* col_scale, const float* bias, bool gelu, float* out) {
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t* a = acc + i * lda;
    float* o = out + i * n;
    const float s = row_scale[i];
    if (gelu) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) o[j] = GeluErf(static_cast<float>(a[j]) * s * col_scale[j] + bias[j]);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) o[j] = static_cast<float>(a[j]) * s * col_scale[j] + bias[j];
    }
  }
}

// out = a @ b in int32, exactly: oneDNN's GEMM, or, where it fails (a libtorch built without
// oneDNN: it throws), ATen's own loop, remembered so the throw is paid once.
void IntMatmul(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  static std::atomic<bool> onednn{true};
  if (onednn.load(std::memory_order_relaxed)) {
    try {
      at::native::mkldnn_matmul_i8i8i32(a, b, out);
      return;
    } catch (const std::exception&) {
      onednn.store(false, std::memory_order_relaxed);
    }
  }
  at::_int_mm_out(out, a, b);
}

// Rows per integer matmul: a block's int32 accumulators (128 x 1536 x 4 B = 768 KiB at the
// default model's FFN) stay in L2 for the pass that turns them into floats. 1.40x / 1.60x the
// torch.ao graph at batch 1 / 32 with 128; 64 and 256 measured no better (docs/benchmarks.md).
constexpr int64_t kRowBlock = 128;

// The most features whose int32 sum cannot overflow: activations within +-127, weights within
// +-kInt8WeightLevels, so each product is at most 8128 in magnitude.
constexpr int64_t kMaxExactDepth = std::numeric_limits<int32_t>::max() / (127 * kInt8WeightLevels);

// The largest |value| of a contiguous int8 buffer (an int8 -128 counts as 128).
BERTGATE_CLONES int Int8Magnitude(const int8_t* w, int64_t count) {
  int largest = 0;
#pragma omp simd reduction(max : largest)
  for (int64_t i = 0; i < count; ++i) {
    const int v = w[i] < 0 ? -static_cast<int>(w[i]) : static_cast<int>(w[i]);
    largest = v > largest ? v : largest;
  }
  return largest;
}

}  // namespace

int Int8WeightMagnitude(const at::Tensor& weight) {
  const at::Tensor w = weight.contiguous();
  return Int8Magnitude(w.data_ptr<int8_t>(), w.numel());
}

at::Tensor LinearInt8(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& weight_scale,
                      const c10::optional<at::Tensor>& bias, int64_t activation) {
  // The exporter writes consistent calls; a hand-edited graph must fail as a model error (a
  // c10::Error the forward pass reports), not read past a buffer. Checks of sizes only: cheap.
  TORCH_CHECK(input.dim() >= 1 && input.is_floating_point(), "bertgate::linear_int8: input must be floating, got ",
              input.scalar_type(), " of ", input.dim(), " dimensions");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kChar, "bertgate::linear_int8: weight must be 2-D int8");
  const int64_t k = input.size(-1);
  const int64_t n = weight.size(0);
  TORCH_CHECK(k > 0, "bertgate::linear_int8: input has no features");
  TORCH_CHECK(k <= kMaxExactDepth, "bertgate::linear_int8: input has ", k, " features; its int32 sums are exact up to ",
              kMaxExactDepth, " (127 x 64 per product)");
  TORCH_CHECK(weight.size(1) == k, "bertgate::linear_int8: input has ", k, " features, weight takes ", weight.size(1));
  TORCH_CHECK(weight_scale.numel() == n && weight_scale.is_floating_point(),
              "bertgate::linear_int8: weight_scale must hold ", n, " floats");
  TORCH_CHECK(!bias.has_value() || !bias->defined() || (bias->numel() == n && bias->is_floating_point()),
              "bertgate::linear_int8: bias must hold ", n, " floats");
  TORCH_CHECK(activation == kActivationNone || activation == kActivationGelu,
              "bertgate::linear_int8: activation must be 0 (none) or 1 (GELU), got ", activation);
  const at::Tensor x = input.reshape({-1, k}).to(at::kFloat).contiguous();
  const int64_t m = x.size(0);
  // A weight the running model's load vetted (a frozen constant only its graph holds) is within
  // range for its life; any other (an attribute read live, which anything may have written since
  // the load, or a direct call's) is checked now: out of range, the GEMM below would be silently
  // wrong on CPUs without VNNI (int8_linear.h), so it is a model error instead. Checked and
  // multiplied as a private copy: a torch.jit.fork task on another thread may write the live
  // tensor between the check and the GEMM's reads (N x K bytes, against the GEMM's M x N x K).
  const Int8WeightTable* table = ActiveInt8WeightTable();
  const Int8WeightTable::Entry* vetted = table != nullptr ? table->Find(weight) : nullptr;
  const at::Tensor weight_c = vetted != nullptr ? weight.contiguous() : weight.clone(at::MemoryFormat::Contiguous);
  if (vetted == nullptr) {
    const int largest = Int8Magnitude(weight_c.data_ptr<int8_t>(), weight_c.numel());
    TORCH_CHECK(largest <= kInt8WeightLevels, "bertgate::linear_int8: the weight holds int8 values up to ", largest,
                " in magnitude at this call; the operator takes [-", kInt8WeightLevels, ", ", kInt8WeightLevels,
                "], the range its integer matmul sums exactly on every CPU (a weight read from an attribute is ",
                "checked at every call: something in the model wrote it since the load)");
  }
  // Where the CPU has AMX and the model packed this weight at load, the GEMM is the engine's own
  // (amx_int8_gemm.h): its operands padded to whole tiles, with zeros that add nothing to a sum.
  // Where the model packed it for fbgemm, fbgemm's (fbgemm_int8_gemm.h), on u8 activations.
  const AmxPackedWeight* packed = vetted != nullptr ? vetted->packed.get() : nullptr;
  const FbgemmPackedWeight* fbgemm = vetted != nullptr ? vetted->fbgemm.get() : nullptr;
  const uint8_t flip = fbgemm != nullptr ? kFbgemmActivationFlip : 0;
  const int64_t ldq = packed ? packed->k_padded : k;
  const int64_t ldacc = packed ? packed->n_padded : n;
  const int64_t m_stored = packed ? RoundUp(m, kAmxRowPad) : m;
  at::Tensor q = at::empty({m_stored, ldq}, x.options().dtype(at::kChar));
  at::Tensor row_scale = at::empty({m}, x.options());
  const float* xp = x.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  float* sp = row_scale.data_ptr<float>();
  at::parallel_for(0, m, 64, [&](int64_t begin, int64_t end) {
    QuantizeRows(xp + begin * k, end - begin, k, qp + begin * ldq, ldq, sp + begin, flip);
  });
  std::fill(qp + m * ldq, qp + m_stored * ldq, int8_t{0});

  at::Tensor out = at::empty({m, n}, x.options());
  const at::Tensor col_scale = weight_scale.to(at::kFloat).contiguous();
  // A missing bias adds zeros: one loop shape, and the same rounding as the reference's.
  const at::Tensor b =
      bias.has_value() && bias->defined() ? bias->to(at::kFloat).contiguous() : at::zeros({n}, x.options());
  const float* cp = col_scale.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // Contiguous: oneDNN's GEMM takes a leading dimension, not strides; a broadcast (stride 0)
  // weight from a hand-made graph would be read as other memory. A stored weight already is.
  // With one input feature, [N, 1] contiguous has strides (1, 1) and its transpose reads as a
  // [1, N] matrix of leading dimension 1, which oneDNN takes for a column-major one: it is
  // viewed as [1, N] row-major instead.
  const at::Tensor weight_t = packed || fbgemm ? at::Tensor() : (k == 1 ? weight_c.view({1, n}) : weight_c.t());
  const int64_t block = std::min(m, kRowBlock);
  at::Tensor acc = at::empty({packed ? RoundUp(block, kAmxRowPad) : block, ldacc}, x.options().dtype(at::kInt));
  int32_t* ap = acc.data_ptr<int32_t>();
  // The integer matmul a block of rows at a time: the block's int32
  // accumulators stay in cache for the pass that turns them into floats, where a whole batch's
  // (25 MB for 32 x 128 tokens into 1536) would go out to memory and back. Integer sums are
  // exact, so neither the blocking nor the library's own changes a row's result.
  for (int64_t r0 = 0; r0 < m; r0 += block) {
    const int64_t rows = std::min(block, m - r0);
    if (packed) {
      AmxInt8Gemm(qp + r0 * ldq, RoundUp(rows, kAmxRowPad), ldq, *packed, ap, ldacc);
    } else if (fbgemm) {
      FbgemmInt8Gemm(reinterpret_cast<const uint8_t*>(qp + r0 * ldq), rows, ldq, *fbgemm, ap, ldacc);
    } else {
      at::Tensor acc_rows = acc.narrow(0, 0, rows);
      IntMatmul(q.narrow(0, r0, rows), weight_t, acc_rows);
    }
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      Dequantize(ap + begin * ldacc, end - begin, n, ldacc, sp + r0 + begin, cp, bp, activation == kActivationGelu,
                 op + (r0 + begin) * n);
    });
  }

  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = n;
  // The layer's output in its input's dtype (a float16 graph on a CPU stays float16 after it).
  return input.scalar_type() == at::kFloat ? out.view(shape) : out.view(shape).to(input.scalar_type());
}

TORCH_LIBRARY(bertgate, m) {
  m.def("linear_int8(Tensor input, Tensor weight, Tensor weight_scale, Tensor? bias, int activation) -> Tensor");
}

TORCH_LIBRARY_IMPL(bertgate, CPU, m) {
  m.impl("linear_int8", &LinearInt8);
}

}  // namespace bertgate
