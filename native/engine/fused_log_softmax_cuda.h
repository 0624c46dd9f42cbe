#pragma once
// The CUDA twin of fused_log_softmax.h: the same contract, computed on the device in one
// kernel launch per batch (one block per row). The SoftmaxOutputs pointers are device
// pointers; nothing is synchronised here.

#include <cuda_runtime_api.h>

#include "fused_log_softmax.h"

namespace bertgate {

// Queues the kernel on `stream`; returns the launch error, if any.
cudaError_t FusedLogSoftmaxCuda(const void* logits, LogitsType type, int64_t rows, int64_t cols,
                                const SoftmaxOptions& options, const SoftmaxOutputs& device_out, cudaStream_t stream);

}  // namespace bertgate
