#include "logits.h"

#include <ATen/ATen.h>

#include <string>

#include "engine_error.h"

namespace bertgate {

at::Tensor CheckedLogits(const at::Tensor& logits, int64_t rows, int64_t num_labels) {
  if (logits.dim() != 2 || logits.size(0) != rows || logits.size(1) != num_labels) {
    throw EngineError(ErrorCode::kModelOutput, "the model returned logits of shape " + c10::str(logits.sizes()) +
                                                   " for a batch of " + std::to_string(rows) + "; it has " +
                                                   std::to_string(num_labels) + " labels (measured at load)");
  }
  switch (logits.scalar_type()) {
    case at::kFloat:
    case at::kHalf:
    case at::kBFloat16:
      return logits.contiguous();
    case at::kDouble:
      return logits.to(at::kFloat).contiguous();
    default:
      throw EngineError(ErrorCode::kModelOutput, std::string("the model returned logits of dtype ") +
                                                     DTypeName(logits.scalar_type()) +
                                                     "; expected float32, float16, bfloat16 or float64");
  }
}

at::Tensor CheckedFeatures(const at::Tensor& features, int64_t rows, int64_t width) {
  if (features.defined() && !at::isFloatingType(features.scalar_type())) {
    throw EngineError(ErrorCode::kModelOutput, "the model returned features of dtype " +
                                                   DTypeName(features.scalar_type()) +
                                                   "; the gate needs floating point");
  }
  if (!features.defined() || features.dim() != 2 || features.size(0) != rows || features.size(1) != width) {
    throw EngineError(ErrorCode::kModelOutput,
                      "the model returned features of shape " +
                          (features.defined() ? c10::str(features.sizes()) : std::string("(none)")) +
                          " for a batch of " + std::to_string(rows) + "; they were " + std::to_string(width) +
                          " wide at load");
  }
  return features.contiguous();
}

std::string DTypeName(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat:
      return "float32";
    case c10::kHalf:
      return "float16";
    case c10::kBFloat16:
      return "bfloat16";
    case c10::kDouble:
      return "float64";
    case c10::kLong:
      return "int64";
    case c10::kInt:
      return "int32";
    case c10::kBool:
      return "bool";
    default:
      return c10::toString(type);
  }
}

LogitsType LogitsTypeOf(const at::Tensor& logits) {
  if (logits.scalar_type() == at::kHalf) return LogitsType::kFloat16;
  if (logits.scalar_type() == at::kBFloat16) return LogitsType::kBFloat16;
  return LogitsType::kFloat32;
}

}  // namespace bertgate
