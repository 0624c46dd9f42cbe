#include "cuda_scores.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>

#include "engine_error.h"
#include "fused_log_softmax_cuda.h"
#include "logits.h"

namespace bertgate {
namespace {

// Offsets of the compact arrays in one allocation, 4-byte fields first, bytes last.
struct Layout {
  int64_t top_index, top_log_prob, margin, entropy, energy, log_probs, valid, bytes;
  Layout(int64_t rows, int64_t cols, int64_t k, bool log_probs_wanted) {
    top_index = 0;
    top_log_prob = top_index + 4 * rows * k;
    margin = top_log_prob + 4 * rows * k;
    entropy = margin + 4 * rows;
    energy = entropy + 4 * rows;
    log_probs = energy + 4 * rows;
    valid = log_probs + (log_probs_wanted ? 4 * rows * cols : 0);
    bytes = valid + rows;
  }
};

template <class T>
T* At(uint8_t* base, int64_t offset) {
  return reinterpret_cast<T*>(base + offset);
}

}  // namespace

void ScoresOnDevice(const at::Tensor& logits, const InferInput& in, InferOutput& out) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logits.device().index());
  const int64_t rows = logits.size(0), cols = logits.size(1), k = in.top_k;
  const Layout layout(rows, cols, k, in.want_log_probs);

  at::Tensor device = at::empty({layout.bytes}, at::TensorOptions().dtype(at::kByte).device(logits.device()));
  uint8_t* d = device.data_ptr<uint8_t>();
  const SoftmaxOutputs views{At<int32_t>(d, layout.top_index),
                             At<float>(d, layout.top_log_prob),
                             At<float>(d, layout.margin),
                             At<float>(d, layout.entropy),
                             At<float>(d, layout.energy),
                             At<uint8_t>(d, layout.valid),
                             in.want_log_probs ? At<float>(d, layout.log_probs) : nullptr};
  const LogitsType type = LogitsTypeOf(logits);
  SoftmaxOptions options;
  options.temperature = in.temperature;
  options.top_k = in.top_k;
  const cudaError_t launched = FusedLogSoftmaxCuda(logits.const_data_ptr(), type, rows, cols, options, views, stream);
  if (launched != cudaSuccess) {
    throw EngineError(ErrorCode::kInference,
                      std::string("the log-softmax kernel failed to launch: ") + cudaGetErrorString(launched));
  }

  // Compact results (and raw logits, when asked) cross in pinned memory, asynchronously,
  // then the stream is waited for once.
  at::Tensor host = at::empty({layout.bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  host.copy_(device, /*non_blocking=*/true);
  at::Tensor host_logits;
  if (in.want_logits) {
    host_logits = at::empty({rows, cols}, at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
    host_logits.copy_(logits.to(at::kFloat), /*non_blocking=*/true);
  }
  C10_CUDA_CHECK(cudaStreamSynchronize(stream));

  const uint8_t* h = host.const_data_ptr<uint8_t>();
  auto take = [h](auto& vec, int64_t offset, int64_t count) {
    vec.resize(count);
    std::memcpy(vec.data(), h + offset, sizeof(vec[0]) * count);
  };
  take(out.top_index, layout.top_index, rows * k);
  take(out.top_log_prob, layout.top_log_prob, rows * k);
  take(out.margin, layout.margin, rows);
  take(out.entropy, layout.entropy, rows);
  take(out.energy, layout.energy, rows);
  take(out.valid, layout.valid, rows);
  if (in.want_log_probs) take(out.log_probs, layout.log_probs, rows * cols);
  if (in.want_logits) {
    out.logits.resize(rows * cols);
    std::memcpy(out.logits.data(), host_logits.const_data_ptr<float>(), sizeof(float) * rows * cols);
  }
}

}  // namespace bertgate
