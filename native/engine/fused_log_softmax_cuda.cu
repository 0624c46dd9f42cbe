// One block per row. Each thread folds a strided slice of the row into a running
// (max m, s = sum exp(x - m), t = sum exp(x - m) * (x - m)) in fp32 and keeps its own top-k;
// the block then merges the states with warp shuffles and picks the top-k by k rounds of
// arg-max. Same maths as the CPU kernel (fused_log_softmax.cpp), so the two agree.

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cfloat>
#include <cmath>

#include "fused_log_softmax_cuda.h"

namespace bertgate {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

struct State {
  float m, s, t;  // s == 0 means empty
};

// Differences to the max are clamped where exp() reaches the bottom of normal fp32, as on the
// CPU: for logits of opposite sign near the fp32 limit (3e38, -3e38) x - m overflows to -inf,
// and exp(-inf) * -inf would make the entropy NaN in a valid row.
__device__ __forceinline__ float Below(float d) { return fmaxf(d, -87.0f); }

__device__ __forceinline__ State Push(State a, float x) {
  if (a.s == 0.0f) return {x, 1.0f, 0.0f};
  if (x <= a.m) {
    const float d = Below(x - a.m);
    const float e = __expf(d);
    return {a.m, a.s + e, a.t + e * d};
  }
  const float shift = Below(a.m - x);  // < 0
  const float scale = __expf(shift);
  return {x, a.s * scale + 1.0f, scale * (a.t + shift * a.s)};
}

__device__ __forceinline__ State Merge(State a, State b) {
  if (a.s == 0.0f) return b;
  if (b.s == 0.0f) return a;
  const float m = fmaxf(a.m, b.m);
  const float da = Below(a.m - m), db = Below(b.m - m);
  const float ea = __expf(da), eb = __expf(db);
  return {m, a.s * ea + b.s * eb, ea * (a.t + da * a.s) + eb * (b.t + db * b.s)};
}

__device__ __forceinline__ State ShuffleDown(State a, int offset) {
  return {__shfl_down_sync(0xffffffffu, a.m, offset), __shfl_down_sync(0xffffffffu, a.s, offset),
          __shfl_down_sync(0xffffffffu, a.t, offset)};
}

// Better = larger value, then lower index; an empty slot has index -1.
__device__ __forceinline__ bool Better(float v, int i, float w, int j) {
  if (j < 0) return i >= 0;
  if (i < 0) return false;
  return v > w || (v == w && i < j);
}

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(c10::Half v) { return static_cast<float>(v); }
__device__ __forceinline__ float ToFloat(c10::BFloat16 v) { return static_cast<float>(v); }

template <class T, int MaxK>
__global__ void __launch_bounds__(kThreads)
    FusedLogSoftmaxKernel(const T* __restrict__ logits, int64_t cols, float temperature, int top_k,
                          SoftmaxOutputs out) {
  const int64_t row = blockIdx.x;
  const T* z = logits + row * cols;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int k = min(max(top_k, 2), cols < MaxK ? static_cast<int>(cols) : MaxK);

  // 1. Each thread: running state, non-finite flag, and its own top-k (sorted, best first).
  State state{0.0f, 0.0f, 0.0f};
  bool bad = false;
  float best[MaxK];
  int best_at[MaxK];
  for (int j = 0; j < MaxK; ++j) {
    best[j] = -FLT_MAX;
    best_at[j] = -1;
  }
  for (int64_t i = tid; i < cols; i += kThreads) {
    const float x = ToFloat(z[i]) / temperature;
    if (isnan(x - x)) {  // NaN or +-inf
      bad = true;
      continue;
    }
    state = Push(state, x);
    if (Better(x, static_cast<int>(i), best[k - 1], best_at[k - 1])) {
      int p = k - 1;
      while (p > 0 && Better(x, static_cast<int>(i), best[p - 1], best_at[p - 1])) {
        best[p] = best[p - 1];
        best_at[p] = best_at[p - 1];
        --p;
      }
      best[p] = x;
      best_at[p] = static_cast<int>(i);
    }
  }

  // 2. Block-wide merge of the states and of the flag.
  __shared__ State warp_state[kWarps];
  __shared__ int any_bad;
  __shared__ State row_state;
  if (tid == 0) any_bad = 0;
  __syncthreads();
  if (bad) atomicOr(&any_bad, 1);
  for (int offset = 16; offset > 0; offset /= 2) state = Merge(state, ShuffleDown(state, offset));
  if (lane == 0) warp_state[warp] = state;
  __syncthreads();
  if (warp == 0) {
    State w = lane < kWarps ? warp_state[lane] : State{0.0f, 0.0f, 0.0f};
    for (int offset = kWarps / 2; offset > 0; offset /= 2) w = Merge(w, ShuffleDown(w, offset));
    if (lane == 0) row_state = w;
  }
  __syncthreads();

  int32_t* top_index = out.top_index + row * top_k;
  float* top_log_prob = out.top_log_prob + row * top_k;
  if (any_bad) {
    if (tid < top_k) {
      top_index[tid] = -1;
      top_log_prob[tid] = NAN;
    }
    if (tid == 0) {
      out.margin[row] = out.entropy[row] = out.energy[row] = NAN;
      out.valid[row] = 0;
    }
    if (out.log_probs) {
      for (int64_t i = tid; i < cols; i += kThreads) out.log_probs[row * cols + i] = NAN;
    }
    return;
  }
  const float m = row_state.m;
  const float log_s = logf(row_state.s);

  // 3. Top-k: k rounds, each taking the best head among the threads' lists.
  __shared__ float round_value[kWarps];
  __shared__ int round_index[kWarps];
  __shared__ float picked[MaxK];
  int head = 0;
  for (int j = 0; j < k; ++j) {
    float v = head < k ? best[head] : -FLT_MAX;
    int at = head < k ? best_at[head] : -1;
    for (int offset = 16; offset > 0; offset /= 2) {
      const float ov = __shfl_down_sync(0xffffffffu, v, offset);
      const int oa = __shfl_down_sync(0xffffffffu, at, offset);
      if (Better(ov, oa, v, at)) {
        v = ov;
        at = oa;
      }
    }
    if (lane == 0) {
      round_value[warp] = v;
      round_index[warp] = at;
    }
    __syncthreads();
    if (tid == 0) {
      float bv = round_value[0];
      int ba = round_index[0];
      for (int w = 1; w < kWarps; ++w) {
        if (Better(round_value[w], round_index[w], bv, ba)) {
          bv = round_value[w];
          ba = round_index[w];
        }
      }
      round_index[0] = ba;
      picked[j] = bv;
      if (j < top_k) {
        top_index[j] = ba;
        top_log_prob[j] = (bv - m) - log_s;
      }
    }
    __syncthreads();
    if (head < k && best_at[head] == round_index[0]) ++head;  // the winner's owner moves on
    __syncthreads();
  }

  if (tid == 0) {
    out.margin[row] = __expf((picked[0] - m) - log_s) - __expf((picked[1] - m) - log_s);
    out.entropy[row] = fmaxf(0.0f, log_s - row_state.t / row_state.s);
    out.energy[row] = -temperature * (m + log_s);
    out.valid[row] = 1;
  }
  if (out.log_probs) {
    for (int64_t i = tid; i < cols; i += kThreads) {
      out.log_probs[row * cols + i] = (ToFloat(z[i]) / temperature - m) - log_s;
    }
  }
}

template <class T, int MaxK>
cudaError_t Launch(const void* logits, int64_t rows, int64_t cols, const SoftmaxOptions& options,
                   const SoftmaxOutputs& out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  FusedLogSoftmaxKernel<T, MaxK><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      static_cast<const T*>(logits), cols, options.temperature, options.top_k, out);
  return cudaGetLastError();
}

template <class T>
cudaError_t ByTopK(const void* logits, int64_t rows, int64_t cols, const SoftmaxOptions& options,
                   const SoftmaxOutputs& out, cudaStream_t stream) {
  // Per-thread lists live in registers for small k; the rare large k spills to local memory.
  if (options.top_k <= 8) return Launch<T, 8>(logits, rows, cols, options, out, stream);
  return Launch<T, 64>(logits, rows, cols, options, out, stream);
}

}  // namespace

cudaError_t FusedLogSoftmaxCuda(const void* logits, LogitsType type, int64_t rows, int64_t cols,
                                const SoftmaxOptions& options, const SoftmaxOutputs& device_out, cudaStream_t stream) {
  switch (type) {
    case LogitsType::kFloat16: return ByTopK<c10::Half>(logits, rows, cols, options, device_out, stream);
    case LogitsType::kBFloat16: return ByTopK<c10::BFloat16>(logits, rows, cols, options, device_out, stream);
    case LogitsType::kFloat32: break;
  }
  return ByTopK<float>(logits, rows, cols, options, device_out, stream);
}

}  // namespace bertgate
