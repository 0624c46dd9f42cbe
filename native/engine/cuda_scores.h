#pragma once
// The scores of a batch whose logits are on a CUDA device: the fused kernel runs there, and
// only the compact results cross to the host, in one copy through pinned memory. Built only
// with CUDA (BERTGATE_WITH_CUDA).

#include <ATen/core/Tensor.h>

#include "engine_api.h"

namespace bertgate {

// Fills out's per-row arrays (and log_probs when asked) from device `logits` [rows, cols], as
// CheckedLogits returned them.
// Synchronises the device's current stream once, at the end: the results are needed.
void ScoresOnDevice(const at::Tensor& logits, const InferInput& in, InferOutput& out);

}  // namespace bertgate
