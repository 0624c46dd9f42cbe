// The library's single entry point: loading engines and describing the runtime.

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/headeronly/version.h>

#include <string>

#include "engine_error.h"
#include "torch_engine.h"

namespace bertgate {
namespace {

class TorchLibrary : public EngineLibrary {
 public:
  Outcome<std::unique_ptr<Engine>> Load(const LoadOptions& options) noexcept override {
    try {
      // Intra-op threads are per calling thread under OpenMP; the addon loads and infers on
      // the same worker, so setting them here fixes the engine's count for its lifetime.
      at::set_num_threads(options.threads);
      return std::unique_ptr<Engine>(std::make_unique<TorchEngine>(LoadModel(options)));
    } catch (const EngineError& e) {
      return Failure{e.code(), e.what()};
    } catch (const c10::OutOfMemoryError& e) {
      return Failure{ErrorCode::kOutOfMemory, "out of memory while loading: " + Brief(e)};
    } catch (const c10::Error& e) {
      return Failure{ErrorCode::kModelLoad, Brief(e)};
    } catch (const std::exception& e) {
      return Failure{ErrorCode::kInternal, std::string("unexpected engine error: ") + e.what()};
    }
  }

  RuntimeInfo Runtime() noexcept override {
    RuntimeInfo info;
    info.torch_version = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                         std::to_string(TORCH_VERSION_PATCH);
    info.cxx11_abi = _GLIBCXX_USE_CXX11_ABI != 0;
    try {
      info.cuda_available = torch::cuda::is_available();
      info.cuda_device_count = info.cuda_available ? static_cast<int>(torch::cuda::device_count()) : 0;
      info.intra_op_threads = at::get_num_threads();
      info.interop_threads = at::get_num_interop_threads();
      info.parallel_info = at::get_parallel_info();
    } catch (const std::exception&) {
      // A runtime that cannot describe itself still reports what it has.
    }
    return info;
  }
};

}  // namespace
}  // namespace bertgate

extern "C" __attribute__((visibility("default"))) bertgate::EngineLibrary* bertgate_engine_library_v1() {
  static bertgate::TorchLibrary library;
  return &library;
}
