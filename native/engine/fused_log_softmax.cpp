#include "fused_log_softmax.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace bertgate {
namespace {

// Rows are consumed in blocks small enough to stay in L1: each block is read from memory
// once, converted to fp32 and scaled, then reduced twice from cache (max, then exp-sum).
constexpr int64_t kBlock = 256;
// Summaries need the two best entries even when the caller asks for one (margin).
constexpr int kMaxTopK = 64;

// exp(d) for d <= 0 as straight-line arithmetic (Cephes expf: range reduction by ln 2 and
// a degree-5 polynomial, ~1 ulp), so the reduction loop auto-vectorises. libm's expf is an
// opaque call that GCC vectorises only under -ffast-math, which would also let it assume
// that NaN cannot occur, and NaN detection is part of this kernel's contract.
// exp(-87) ~ 1.6e-38, the bottom of normal fp32: below it a term is nothing beside the max's 1.
constexpr float kMinExponent = -87.0f;

inline float ExpNonPositive(float d) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  d = std::max(d, kMinExponent);
  const float n = std::nearbyint(d * kLog2e);
  const float r = d - n * kLn2Hi - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float poly = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return poly * scale;
}

inline float ToFloat(float v) {
  return v;
}
inline float ToFloat(c10::Half v) {
  return static_cast<float>(v);
}
inline float ToFloat(c10::BFloat16 v) {
  return static_cast<float>(v);
}

// The k best (value, index) pairs seen so far, best first.
struct TopK {
  explicit TopK(int k_) : k(k_) {}
  const int k;
  int size = 0;
  float value[kMaxTopK] = {};
  int32_t index[kMaxTopK] = {};

  void Offer(float v, int32_t i) {
    if (size == k && !(v > value[k - 1])) return;  // ties keep the earlier index
    int pos = size < k ? size++ : k - 1;
    while (pos > 0 && v > value[pos - 1]) {
      value[pos] = value[pos - 1];
      index[pos] = index[pos - 1];
      --pos;
    }
    value[pos] = v;
    index[pos] = i;
  }
};

template <class T>
void Row(const T* z, int64_t cols, const SoftmaxOptions& options, int64_t row, const SoftmaxOutputs& out) {
  const float temperature = options.temperature;
  const int top_k = options.top_k;
  TopK top(std::min<int>(std::max(top_k, 2), static_cast<int>(std::min<int64_t>(cols, kMaxTopK))));

  // Running state across blocks: m is the max so far, s = sum exp(x - m), and
  // t = sum exp(x - m) * (x - m), which gives the entropy as log s - t / s without a
  // second pass and without cancellation between large x and large log-sum-exp.
  float m = -std::numeric_limits<float>::infinity();
  double s = 0;
  double t = 0;
  bool finite = true;
  float x[kBlock];

  for (int64_t start = 0; start < cols && finite; start += kBlock) {
    const int64_t n = std::min(kBlock, cols - start);
    float block_max = -std::numeric_limits<float>::infinity();
    float poison = 0;  // x - x is NaN exactly when x is NaN or +-inf
#pragma omp simd reduction(+ : poison) reduction(max : block_max)
    for (int64_t i = 0; i < n; ++i) {
      x[i] = ToFloat(z[start + i]) / temperature;
      poison += x[i] - x[i];
      block_max = std::max(block_max, x[i]);
    }
    if (std::isnan(poison)) {
      finite = false;
      break;
    }
    if (block_max > m) {
      if (s > 0) {
        const double shift = static_cast<double>(m) - block_max;  // < 0
        const double scale = std::exp(shift);
        t = scale * (t + shift * s);
        s *= scale;
      }
      m = block_max;
    }
    float block_s = 0;
    float block_t = 0;
#pragma omp simd reduction(+ : block_s, block_t)
    for (int64_t i = 0; i < n; ++i) {
      // x - m overflows to -inf for logits of opposite sign near the fp32 limit (3e38 and
      // -3e38); clamped like the exponent, its share of t stays ~0 instead of 0 * -inf.
      const float d = std::max(x[i] - m, kMinExponent);
      const float e = ExpNonPositive(d);
      block_s += e;
      block_t += e * d;
    }
    s += block_s;
    t += block_t;
    for (int64_t i = 0; i < n; ++i) {
      if (top.size < top.k || x[i] > top.value[top.k - 1]) top.Offer(x[i], static_cast<int32_t>(start + i));
    }
  }

  int32_t* top_index = out.top_index + row * top_k;
  float* top_log_prob = out.top_log_prob + row * top_k;
  if (!finite) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::fill(top_index, top_index + top_k, -1);
    std::fill(top_log_prob, top_log_prob + top_k, nan);
    out.margin[row] = out.entropy[row] = out.energy[row] = nan;
    out.valid[row] = 0;
    if (out.log_probs) std::fill(out.log_probs + row * cols, out.log_probs + (row + 1) * cols, nan);
    return;
  }

  // log p = (x - m) - log s, in this order: x - m is exact for nearby values, whereas
  // x - (m + log s) would first round the log-sum-exp to fp32 and lose up to half an ulp of
  // |m| (5e-4 when the logits sit near -1e4).
  const float log_s = static_cast<float>(std::log(s));
  for (int j = 0; j < top_k; ++j) {
    top_index[j] = top.index[j];
    top_log_prob[j] = (top.value[j] - m) - log_s;
  }
  out.margin[row] = std::exp((top.value[0] - m) - log_s) - std::exp((top.value[1] - m) - log_s);
  out.entropy[row] = static_cast<float>(std::max(0.0, std::log(s) - t / s));
  out.energy[row] = static_cast<float>(-static_cast<double>(temperature) * (m + std::log(s)));
  out.valid[row] = 1;
  if (out.log_probs) {
    float* lp = out.log_probs + row * cols;
    for (int64_t i = 0; i < cols; ++i) lp[i] = (ToFloat(z[i]) / temperature - m) - log_s;
  }
}

template <class T>
void Rows(const T* logits, int64_t rows, int64_t cols, const SoftmaxOptions& options, const SoftmaxOutputs& out) {
  for (int64_t r = 0; r < rows; ++r) Row(logits + r * cols, cols, options, r, out);
}

}  // namespace

void FusedLogSoftmaxCpu(const void* logits, LogitsType type, int64_t rows, int64_t cols, const SoftmaxOptions& options,
                        const SoftmaxOutputs& out) {
  switch (type) {
    case LogitsType::kFloat32:
      Rows(static_cast<const float*>(logits), rows, cols, options, out);
      break;
    case LogitsType::kFloat16:
      Rows(static_cast<const c10::Half*>(logits), rows, cols, options, out);
      break;
    case LogitsType::kBFloat16:
      Rows(static_cast<const c10::BFloat16*>(logits), rows, cols, options, out);
      break;
  }
}

}  // namespace bertgate
