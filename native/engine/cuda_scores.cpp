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

DeviceScores::DeviceScores(const at::Tensor& logits, const InferInput& in, const std::vector<at::Tensor>& extras)
    : rows_(logits.size(0)),
      cols_(logits.size(1)),
      k_(in.top_k),
      want_logits_(in.want_logits),
      want_log_probs_(in.want_log_probs) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(logits.device().index());
  const Layout layout(rows_, cols_, k_, want_log_probs_);

  device_ = at::empty({layout.bytes}, at::TensorOptions().dtype(at::kByte).device(logits.device()));
  uint8_t* d = device_.data_ptr<uint8_t>();
  const SoftmaxOutputs views{At<int32_t>(d, layout.top_index),
                             At<float>(d, layout.top_log_prob),
                             At<float>(d, layout.margin),
                             At<float>(d, layout.entropy),
                             At<float>(d, layout.energy),
                             At<uint8_t>(d, layout.valid),
                             want_log_probs_ ? At<float>(d, layout.log_probs) : nullptr};
  SoftmaxOptions options;
  options.temperature = in.temperature;
  options.top_k = in.top_k;
  const cudaError_t launched =
      FusedLogSoftmaxCuda(logits.const_data_ptr(), LogitsTypeOf(logits), rows_, cols_, options, views, stream);
  if (launched != cudaSuccess) {
    throw EngineError(ErrorCode::kInference,
                      std::string("the log-softmax kernel failed to launch: ") + cudaGetErrorString(launched));
  }
  // Compact results (and raw logits, when asked) cross in pinned memory, asynchronously; the
  // event marks the end of this batch's work on the stream.
  host_ = at::empty({layout.bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  host_.copy_(device_, /*non_blocking=*/true);
  if (want_logits_) {
    host_logits_ = at::empty({rows_, cols_}, at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
    host_logits_.copy_(logits.to(at::kFloat), /*non_blocking=*/true);
  }
  for (const at::Tensor& extra : extras) {
    device_extras_.push_back(extra.to(at::kFloat).contiguous());
    host_extras_.push_back(at::empty(extra.sizes(), at::TensorOptions().dtype(at::kFloat).pinned_memory(true)));
    host_extras_.back().copy_(device_extras_.back(), /*non_blocking=*/true);
  }
  cudaEvent_t event = nullptr;
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  done_.reset(event);
  C10_CUDA_CHECK(cudaEventRecord(done_.get(), stream));
}

void DeviceScores::Finish(InferOutput& out) {
  C10_CUDA_CHECK(cudaEventSynchronize(done_.get()));
  const Layout layout(rows_, cols_, k_, want_log_probs_);
  const uint8_t* h = host_.const_data_ptr<uint8_t>();
  auto take = [h](auto& vec, int64_t offset, int64_t count) {
    vec.resize(count);
    std::memcpy(vec.data(), h + offset, sizeof(vec[0]) * count);
  };
  take(out.top_index, layout.top_index, rows_ * k_);
  take(out.top_log_prob, layout.top_log_prob, rows_ * k_);
  take(out.margin, layout.margin, rows_);
  take(out.entropy, layout.entropy, rows_);
  take(out.energy, layout.energy, rows_);
  take(out.valid, layout.valid, rows_);
  if (want_log_probs_) take(out.log_probs, layout.log_probs, rows_ * cols_);
  if (want_logits_) {
    out.logits.resize(rows_ * cols_);
    std::memcpy(out.logits.data(), host_logits_.const_data_ptr<float>(), sizeof(float) * rows_ * cols_);
  }
}

}  // namespace bertgate
