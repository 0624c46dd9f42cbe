#pragma once
// One small interface for "a thing that turns token tensors into logits", so that an
// AOTInductor (.pt2) loader can later sit beside the TorchScript one; LoadModel picks the
// loader from the file name.

#include <ATen/core/Tensor.h>
#include <c10/core/Stream.h>

#include <memory>
#include <optional>

#include "engine_api.h"

namespace bertgate {

// What one forward pass gives: the logits [B, C], and the pooled features [B, H] where the
// bundle returns them (format 2), else an undefined tensor.
struct ModelOutput {
  at::Tensor logits;
  at::Tensor features;
};

class Model {
 public:
  virtual ~Model() = default;
  // int64 [B, T] inputs already on the model's device; returns the outputs on that device.
  // The caller holds a DeviceScope for device() and stream(). Several threads may call it at
  // once (CPU replicas share one model): it must only read the model.
  virtual ModelOutput Forward(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& type_ids) = 0;
  virtual const ModelInfo& info() const = 0;
  virtual const c10::Device& device() const = 0;
  // The stream the model's work is queued on: its own on a GPU, none on a CPU.
  virtual std::optional<c10::Stream> stream() const { return std::nullopt; }
};

// Throws EngineError.
std::unique_ptr<Model> LoadModel(const LoadOptions& options);

}  // namespace bertgate
