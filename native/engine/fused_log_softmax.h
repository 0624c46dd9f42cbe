#pragma once
// Fused, temperature-scaled log-softmax over rows of logits, with the per-row summaries the
// decision layer needs. The CUDA kernel (fused_log_softmax_cuda.cu) implements the same contract.
//
// For each row z and temperature T > 0, with x = z / T:
//   logp_i  = x_i - max(x) - log sum_j exp(x_j - max(x))     (the true max, never |z|)
//   top-k   = the k largest (index, logp), best first; ties keep the lower index first
//   margin  = p_top1 - p_top2
//   entropy = -sum_i p_i log p_i                             (nats)
//   energy  = -T * logsumexp(x)
// Inputs may be fp32, fp16 or bf16; all arithmetic is fp32 with the running sums across
// blocks held in fp64. A row holding NaN or +-inf anywhere (after scaling) is invalid:
// valid = 0, top indices -1 and every float output NaN, so no label can come out of it.

#include <cstdint>

namespace bertgate {

enum class LogitsType { kFloat32, kFloat16, kBFloat16 };

struct SoftmaxOptions {
  float temperature = 1.0f;
  int top_k = 1;  // 1 <= top_k <= cols
};

// Caller-owned output arrays, row-major.
struct SoftmaxOutputs {
  int32_t* top_index;   // [rows * top_k]
  float* top_log_prob;  // [rows * top_k]
  float* margin;        // [rows]
  float* entropy;       // [rows]
  float* energy;        // [rows]
  uint8_t* valid;       // [rows]
  float* log_probs;     // [rows * cols], or nullptr when not wanted
};

// `logits` points at rows * cols contiguous values of `type`. Requires cols >= 2.
void FusedLogSoftmaxCpu(const void* logits, LogitsType type, int64_t rows, int64_t cols, const SoftmaxOptions& options,
                        const SoftmaxOutputs& out);

}  // namespace bertgate
