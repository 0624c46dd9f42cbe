#pragma once
// The scores of a batch whose logits are (or are brought) on the host: the vectorised CPU
// kernel (fused_log_softmax.h) over them. The CUDA twin is cuda_scores.h.

#include <ATen/core/Tensor.h>

#include "engine_api.h"

namespace bertgate {

// Fills out's per-row arrays (and logits, log_probs when asked) from `logits` [rows, cols],
// as CheckedLogits returned them.
void ScoresOnHost(const at::Tensor& logits, const InferInput& in, InferOutput& out);

}  // namespace bertgate
