#pragma once
// The Engine behind the library boundary: token ids in, compact scores out.

#include <memory>
#include <string>

#include "engine_api.h"
#include "model.h"
#include "ood_gate.h"

namespace bertgate {

class TorchEngine : public Engine {
 public:
  explicit TorchEngine(std::unique_ptr<Model> model) : model_(std::move(model)) {}
  // With the out-of-distribution gate of `options` (gate_dim > 0); throws EngineError when the
  // model returns no features, or features of another width than the gate was fitted on.
  TorchEngine(std::unique_ptr<Model> model, const LoadOptions& options);
  const ModelInfo& info() const override { return model_->info(); }
  Outcome<std::unique_ptr<Engine>> Replica(int threads) noexcept override;
  Outcome<std::unique_ptr<PendingBatch>> Enqueue(const InferInput& input) noexcept override;
  Outcome<std::shared_ptr<InferOutput>> Complete(std::unique_ptr<PendingBatch> pending) noexcept override;

 private:
  std::unique_ptr<PendingBatch> Queue(const InferInput& input);
  // Runs `work`, turning whatever it throws into the Failure the caller reports.
  template <class Work>
  auto Guarded(int64_t rows, int64_t seq_len, Work&& work) noexcept -> decltype(work());

  TorchEngine(std::shared_ptr<Model> model, std::shared_ptr<const OodGate> gate, bool warnings_to_stderr)
      : model_(std::move(model)), gate_(std::move(gate)), warnings_to_stderr_(warnings_to_stderr) {}

  // Declared first, so destroyed last: once the model's weights are freed, the CPU allocator's
  // cache hands them (and the activations it kept) back to the kernel.
  struct TrimCpuCacheAtClose {
    ~TrimCpuCacheAtClose();
  } trim_at_close_;
  // Shared with the engine's replicas (Replica), which only read them.
  std::shared_ptr<Model> model_;
  std::shared_ptr<const OodGate> gate_;
  bool warnings_to_stderr_ = false;  // LoadOptions::torch_warnings_to_stderr, for this engine's calls
};

}  // namespace bertgate
