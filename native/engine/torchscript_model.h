#pragma once
// A traced Hugging Face BertForSequenceClassification in TorchScript.

#include <torch/script.h>

#include <string>

#include "model.h"

namespace bertgate {

class TorchScriptModel : public Model {
 public:
  explicit TorchScriptModel(const LoadOptions& options);
  at::Tensor Forward(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& type_ids) override;
  const ModelInfo& info() const override { return info_; }
  const c10::Device& device() const override { return device_; }

 private:
  // Finds the logits in the module's output; names where they were found in *kind.
  static at::Tensor Logits(const c10::IValue& output, std::string* kind);

  c10::Device device_;
  torch::jit::Module module_;
  ModelInfo info_;
};

}  // namespace bertgate
