#include "torch_engine.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <string>

#include "cpu_scores.h"
#include "engine_error.h"
#include "logits.h"
#ifdef BERTGATE_WITH_CUDA
#include "cuda_scores.h"
#endif

namespace bertgate {
namespace {

// Allocation failures do not always arrive as c10::OutOfMemoryError: the CPU allocator
// raises a plain c10::Error, and the TorchScript interpreter may rethrow an op's error as a
// std::runtime_error carrying the message. The messages are libtorch's own and stable.
bool LooksLikeOutOfMemory(const std::string& message) {
  return message.find("can't allocate memory") != std::string::npos ||
         message.find("CUDA out of memory") != std::string::npos ||
         message.find("CUDA error: out of memory") != std::string::npos;
}

}  // namespace

std::shared_ptr<InferOutput> TorchEngine::Run(const InferInput& in) {
  c10::InferenceMode guard;
  const auto start = std::chrono::steady_clock::now();
  const c10::Device device = model_->device();
  const std::vector<int64_t> shape{in.rows, in.seq_len};
  // from_blob borrows the input vectors; every path below copies out of them, so nothing
  // refers to the caller's memory once the tensors exist. For a GPU the narrow ids go over
  // through pinned memory, asynchronously, and are widened to int64 on the device.
  auto widen = [&](const void* data, c10::ScalarType type) {
    const at::Tensor host = at::from_blob(const_cast<void*>(data), shape, at::TensorOptions().dtype(type));
    if (device.is_cuda()) return host.pin_memory().to(device, /*non_blocking=*/true).to(at::kLong);
    return host.to(at::kLong);
  };
  const at::Tensor ids = widen(in.ids.data(), at::kInt);
  const at::Tensor mask = widen(in.mask.data(), at::kByte);
  const at::Tensor type_ids = widen(in.type_ids.data(), at::kByte);

  const at::Tensor logits = CheckedLogits(model_->Forward(ids, mask, type_ids), in.rows, model_->info().num_labels);
  auto out = std::make_shared<InferOutput>();
  out->rows = in.rows;
  out->cols = logits.size(1);
  out->top_k = in.top_k;
#ifdef BERTGATE_WITH_CUDA
  if (logits.is_cuda()) {
    ScoresOnDevice(logits, in, *out);
  } else {
    ScoresOnHost(logits, in, *out);
  }
#else
  ScoresOnHost(logits, in, *out);
#endif
  out->forward_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

Outcome<std::shared_ptr<InferOutput>> TorchEngine::Infer(const InferInput& input) noexcept {
  try {
    return Run(input);
  } catch (const EngineError& e) {
    return Failure{e.code(), e.what()};
  } catch (const c10::OutOfMemoryError& e) {
    return OutOfMemory(input, Brief(e));
  } catch (const c10::Error& e) {
    if (LooksLikeOutOfMemory(e.what_without_backtrace())) return OutOfMemory(input, Brief(e));
    return Failure{ErrorCode::kInference, "inference failed: " + Brief(e)};
  } catch (const std::bad_alloc&) {
    return Failure{ErrorCode::kOutOfMemory, "out of host memory for a batch of " + std::to_string(input.rows) + " x " +
                                                std::to_string(input.seq_len) + " tokens"};
  } catch (const std::exception& e) {
    // The TorchScript interpreter rethrows the model's failures as plain runtime errors.
    if (LooksLikeOutOfMemory(e.what())) return OutOfMemory(input, Brief(e.what()));
    return Failure{ErrorCode::kInference, "inference failed: " + Brief(e.what())};
  }
}

Failure TorchEngine::OutOfMemory(const InferInput& input, const std::string& detail) const {
  return Failure{ErrorCode::kOutOfMemory, "out of memory on " + model_->device().str() + " for a batch of " +
                                              std::to_string(input.rows) + " x " + std::to_string(input.seq_len) +
                                              " tokens: " + detail};
}

}  // namespace bertgate
