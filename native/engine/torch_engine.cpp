#include "torch_engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <string>

#include "cpu_allocator.h"
#include "cpu_scores.h"
#include "device_scope.h"
#include "engine_error.h"
#include "logits.h"
#include "torch_warnings.h"
#ifdef BERTGATE_WITH_CUDA
#include "cuda_scores.h"
#endif

namespace bertgate {
namespace {

using Clock = std::chrono::steady_clock;

std::string Shape(int64_t rows, int64_t seq_len) {
  return std::to_string(rows) + " x " + std::to_string(seq_len) + " tokens";
}

// An fp32 host copy of a [rows] or [rows, width] tensor into `into`.
void CopyOut(const at::Tensor& t, std::vector<float>& into) {
  const at::Tensor host = t.to(at::kCPU).to(at::kFloat).contiguous();
  into.assign(host.const_data_ptr<float>(), host.const_data_ptr<float>() + host.numel());
}

struct TorchPending : PendingBatch {
  std::shared_ptr<InferOutput> out = std::make_shared<InferOutput>();
  Clock::time_point start;
  int64_t seq_len = 0;
  // Which extras the device copies back, in order: the gate's scores, then the features.
  bool ood_score = false;
  bool features = false;
#ifdef BERTGATE_WITH_CUDA
  std::unique_ptr<DeviceScores> on_device;  // set while the device still has work queued
  bool done() const noexcept override {
    return on_device == nullptr;
  }
#else
  bool done() const noexcept override {
    return true;
  }
#endif
};

}  // namespace

TorchEngine::TrimCpuCacheAtClose::~TrimCpuCacheAtClose() {
  TrimCpuCache();
}

TorchEngine::TorchEngine(std::unique_ptr<Model> model, const LoadOptions& options)
    : model_(std::move(model)), warnings_to_stderr_(options.torch_warnings_to_stderr) {
  if (options.gate_dim <= 0) return;
  const int64_t width = static_cast<int64_t>(options.gate_projection.size()) / options.gate_dim;
  if (model_->info().feature_width != width) {
    throw EngineError(
        ErrorCode::kModelOutput,
        "the out-of-distribution gate was fitted on features " + std::to_string(width) + " wide, but '" +
            options.model_path + "' returns " +
            (model_->info().feature_width == 0 ? std::string("no features")
                                               : std::to_string(model_->info().feature_width) + "-wide features"));
  }
  const DeviceScope scope(model_->device(), model_->stream());
  gate_ = std::make_shared<const OodGate>(options.gate_projection, options.gate_centres, options.gate_dim,
                                          model_->device());
}

std::unique_ptr<PendingBatch> TorchEngine::Queue(const InferInput& in) {
  auto pending = std::make_unique<TorchPending>();
  pending->start = Clock::now();
  pending->seq_len = in.seq_len;
  const DeviceScope scope(model_->device(), model_->stream());
  c10::InferenceMode guard;
  const c10::Device device = model_->device();
  // from_blob borrows the input buffer; the first step copies out of it, so nothing refers to
  // the caller's memory once the tensors exist. One [3, B, T] int32 buffer: on a GPU one
  // pinned staging copy, one asynchronous transfer and one widening cast on the device.
  const at::Tensor host = at::from_blob(const_cast<int32_t*>(in.tokens.data()), {3, in.rows, in.seq_len},
                                        at::TensorOptions().dtype(at::kInt));
  const at::Tensor tokens =
      device.is_cuda() ? host.pin_memory().to(device, /*non_blocking=*/true).to(at::kLong) : host.to(at::kLong);

  const ModelOutput output = model_->Forward(tokens[0], tokens[1], tokens[2]);
  const at::Tensor logits = CheckedLogits(output.logits, in.rows, model_->info().num_labels);
  InferOutput& out = *pending->out;
  out.rows = in.rows;
  out.cols = logits.size(1);
  out.top_k = in.top_k;
  // The gate's score and the features come from the same forward pass as the logits.
  std::vector<at::Tensor> extras;
  if (gate_ || in.want_features) {
    const at::Tensor features = CheckedFeatures(output.features, in.rows, model_->info().feature_width);
    if (gate_) {
      extras.push_back(gate_->Scores(features));
      pending->ood_score = true;
    }
    if (in.want_features) {
      extras.push_back(features);
      pending->features = true;
    }
  }
#ifdef BERTGATE_WITH_CUDA
  if (logits.is_cuda()) {
    pending->on_device = std::make_unique<DeviceScores>(logits, in, extras);
    return pending;
  }
#endif
  ScoresOnHost(logits, in, out);
  if (pending->ood_score) CopyOut(extras.front(), out.ood_score);
  if (pending->features) CopyOut(extras.back(), out.features);
  out.forward_ms = std::chrono::duration<double, std::milli>(Clock::now() - pending->start).count();
  return pending;
}

Outcome<std::unique_ptr<Engine>> TorchEngine::Replica(int threads) noexcept {
  try {
    const CaptureTorchWarnings capture(warnings_to_stderr_);
    // Intra-op threads are per calling thread (OpenMP): this one's, for the replica's passes.
    at::set_num_threads(threads);
    return std::unique_ptr<Engine>(new TorchEngine(model_, gate_, warnings_to_stderr_));
  } catch (const std::exception& e) {
    return Failure{ErrorCode::kInternal, std::string("could not make a replica: ") + e.what()};
  }
}

template <class Work>
auto TorchEngine::Guarded(int64_t rows, int64_t seq_len, Work&& work) noexcept -> decltype(work()) {
  const auto out_of_memory = [&](const std::string& detail) {
    return Failure{ErrorCode::kOutOfMemory, "out of memory on " + model_->device().str() + " for a batch of " +
                                                Shape(rows, seq_len) + ": " + detail};
  };
  try {
    const CaptureTorchWarnings capture(warnings_to_stderr_);
    return work();
  } catch (const EngineError& e) {
    return Failure{e.code(), e.what()};
  } catch (const c10::OutOfMemoryError& e) {
    return out_of_memory(Brief(e));
  } catch (const c10::Error& e) {
    if (LooksLikeOutOfMemory(e.what_without_backtrace())) return out_of_memory(Brief(e));
    return Failure{ErrorCode::kInference, "inference failed: " + Brief(e)};
  } catch (const std::bad_alloc&) {
    return Failure{ErrorCode::kOutOfMemory, "out of host memory for a batch of " + Shape(rows, seq_len)};
  } catch (const std::exception& e) {
    // The TorchScript interpreter rethrows the model's failures as plain runtime errors.
    if (LooksLikeOutOfMemory(e.what())) return out_of_memory(Brief(e.what()));
    return Failure{ErrorCode::kInference, "inference failed: " + Brief(e.what())};
  }
}

Outcome<std::unique_ptr<PendingBatch>> TorchEngine::Enqueue(const InferInput& input) noexcept {
  return Guarded(input.rows, input.seq_len, [&]() -> Outcome<std::unique_ptr<PendingBatch>> { return Queue(input); });
}

Outcome<std::shared_ptr<InferOutput>> TorchEngine::Complete(std::unique_ptr<PendingBatch> batch) noexcept {
  // Only this engine's Enqueue makes the batches it is given back.
  auto* pending = static_cast<TorchPending*>(batch.get());
  return Guarded(pending->out->rows, pending->seq_len, [&]() -> Outcome<std::shared_ptr<InferOutput>> {
#ifdef BERTGATE_WITH_CUDA
    if (pending->on_device) {
      pending->on_device->Finish(*pending->out);
      if (pending->ood_score) CopyOut(pending->on_device->Extra(0), pending->out->ood_score);
      if (pending->features) CopyOut(pending->on_device->Extra(pending->ood_score ? 1 : 0), pending->out->features);
      pending->on_device.reset();
      pending->out->forward_ms = std::chrono::duration<double, std::milli>(Clock::now() - pending->start).count();
    }
#endif
    // Read once the batch's tensors are freed: what the cache keeps between batches.
    pending->out->cpu_cache = CpuCacheSnapshot();
    return pending->out;
  });
}

}  // namespace bertgate
