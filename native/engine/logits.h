#pragma once
// What the engine accepts as a batch's logits, decided in one place for the CPU and the CUDA
// path: [rows, num_labels] (the width the load probe measured), floating. fp32, fp16 and
// bf16 are read as they are; fp64 is narrowed to fp32 first (the kernels read 2- and 4-byte
// floats, and probabilities are fp32 whatever the logits' dtype).

#include <ATen/core/Tensor.h>

#include <string>

#include "fused_log_softmax.h"

namespace bertgate {

// Throws EngineError(kModelOutput) naming the shape or dtype; returns contiguous logits in
// one of the kernels' types, on the logits' device.
at::Tensor CheckedLogits(const at::Tensor& logits, int64_t rows, int64_t num_labels);

// A dtype as the API names it: "float32", "float16", "bfloat16", "float64", "int64", ...
std::string DTypeName(c10::ScalarType type);

// The pooled features of a batch: [rows, width] floating, else EngineError(kModelOutput) naming
// the shape; returns them contiguous, on their device.
at::Tensor CheckedFeatures(const at::Tensor& features, int64_t rows, int64_t width);

// The kernels' name for a tensor CheckedLogits returned.
LogitsType LogitsTypeOf(const at::Tensor& logits);

}  // namespace bertgate
