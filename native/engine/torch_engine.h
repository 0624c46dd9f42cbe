#pragma once
// The Engine behind the library boundary: token ids in, compact scores out.

#include <memory>
#include <string>

#include "engine_api.h"
#include "model.h"

namespace bertgate {

class TorchEngine : public Engine {
 public:
  explicit TorchEngine(std::unique_ptr<Model> model) : model_(std::move(model)) {}
  const ModelInfo& info() const override { return model_->info(); }
  Outcome<std::shared_ptr<InferOutput>> Infer(const InferInput& input) noexcept override;

 private:
  std::shared_ptr<InferOutput> Run(const InferInput& input);
  Failure OutOfMemory(const InferInput& input, const std::string& detail) const;

  std::unique_ptr<Model> model_;
};

}  // namespace bertgate
