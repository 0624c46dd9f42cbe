#pragma once
// The scores of a batch whose logits are on a CUDA device: the fused kernel runs there, and
// only the compact results cross to the host, in one copy through pinned memory. Built only
// with CUDA (BERTGATE_WITH_CUDA).

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <type_traits>
#include <vector>

#include "engine_api.h"

namespace bertgate {

// Two halves, so that a batch can be queued while the one before it is still running: the
// constructor queues the kernel and the copies on the current stream of `logits`' device
// (the caller's DeviceScope) and records an event; Finish waits for that event alone, on
// whatever thread, and unpacks into `out`.
class DeviceScores {
 public:
  // `logits` [rows, cols] on the device, as CheckedLogits returned them; `extras`: more device
  // tensors to bring back in the same wait (the gate's scores, the features), as fp32.
  DeviceScores(const at::Tensor& logits, const InferInput& in, const std::vector<at::Tensor>& extras = {});

  // Fills out's per-row arrays (and logits, log_probs when asked).
  void Finish(InferOutput& out);
  // After Finish: extras[i], on the host.
  const at::Tensor& Extra(size_t i) const { return host_extras_[i]; }

 private:
  int64_t rows_, cols_, k_;
  bool want_logits_, want_log_probs_;
  at::Tensor device_;                      // the kernel's compact results; kept until the copy is done
  at::Tensor host_;                        // pinned: the same bytes on the host
  at::Tensor host_logits_;                 // pinned fp32 logits, when asked
  std::vector<at::Tensor> device_extras_;  // kept until the copies are done
  std::vector<at::Tensor> host_extras_;    // pinned
  // A plain CUDA runtime event (ATen's CUDAEvent header pulls in cuBLAS, which the engine
  // neither links nor has headers for in the prebuild matrix).
  std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, cudaError_t (*)(cudaEvent_t)> done_{nullptr, cudaEventDestroy};
};

}  // namespace bertgate
