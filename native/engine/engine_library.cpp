// The library's single entry point: loading engines and describing the runtime.

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/cuda.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "cpu_allocator.h"
#include "engine_error.h"
#include "torch_engine.h"
#include "torch_warnings.h"

#ifdef BERTGATE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace bertgate {
namespace {

// oneDNN (which ATen uses on the CPU for GELU, among others) compiles and caches a kernel per
// input shape, up to 1,024 of them: a server's ever-changing batch shapes grew RSS by 190 MiB
// in 100,000 classifications (bench/soak.ts), and by 430 MiB over 6,000 shapes in plain
// Python. ATen's own kernels are as fast here (within 5% at 32 x 128 tokens, equal at
// batch 1), so bertgate turns oneDNN off for the process; BERTGATE_ONEDNN=1 keeps it.
//
// TorchScript's fuser (NNC; on CUDA in the pip builds, which have no CPU fuser) compiles its
// first two specialisations for fixed shapes and falls back after a few more: with batch
// shapes that change on every request, that is recompilation and then unfused kernels. A
// dynamic-shape strategy compiles kernels that take any shape, so the warm-up's are reused.
void ConfigureOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* keep = std::getenv("BERTGATE_ONEDNN");
    if (keep == nullptr || std::strcmp(keep, "1") != 0) at::globalContext().setUserEnabledMkldnn(false);
    torch::jit::FusionStrategy dynamic{{torch::jit::FusionBehavior::DYNAMIC, 20}};
    torch::jit::setFusionStrategy(dynamic);
    // int8 bundles are exported on the x86 quantized engine (fbgemm) and their packed weights
    // are unpacked for the engine current at load, so it is set before any load, explicitly:
    // libtorch's default differs by build and platform.
    const auto& supported = at::globalContext().supportedQEngines();
    for (const at::QEngine engine : {at::QEngine::X86, at::QEngine::FBGEMM}) {
      if (std::find(supported.begin(), supported.end(), engine) != supported.end()) {
        at::globalContext().setQEngine(engine);
        break;
      }
    }
  });
}

// Caps the caching allocator: a request past the cap raises the same OutOfMemoryError a full
// device would, so a GPU shared with other processes fails (and splits batches) in bounds.
void LimitCudaMemory(const LoadOptions& options) {
#ifdef BERTGATE_WITH_CUDA
  // The allocator's per-device state exists once CUDA is initialised on the device.
  (void)at::empty({1}, at::TensorOptions().device(at::kCUDA, static_cast<c10::DeviceIndex>(options.device_index)));
  c10::cuda::CUDACachingAllocator::setMemoryFraction(options.cuda_memory_fraction,
                                                     static_cast<c10::DeviceIndex>(options.device_index));
  // The cap is checked only when the allocator asks the device for more: blocks it already
  // caches (another model's, an earlier batch's) would be reused past the cap. Handing them
  // back makes the cap hold from here on.
  c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)options;
  throw EngineError(ErrorCode::kInternal, "cudaMemoryFraction needs an engine built with the CUDA kernels");
#endif
}

class TorchLibrary : public EngineLibrary {
 public:
  Outcome<std::unique_ptr<Engine>> Load(const LoadOptions& options) noexcept override {
    try {
      const CaptureTorchWarnings capture(options.torch_warnings_to_stderr);
      const WarnAlwaysWhileLoading every_load_warns;  // so each load's info lists what applies to it
      // Intra-op threads are per calling thread under OpenMP; the addon loads and infers on
      // the same worker, so setting them here fixes the engine's count for its lifetime.
      at::set_num_threads(options.threads);
      ConfigureOnce();
      // Large activation buffers from a cache with a bound, not from glibc's arenas, which a
      // server's changing batch shapes fragment without limit (cpu_allocator.h).
      if (!ChooseCpuAllocator(options.cpu_cache)) {
        throw EngineError(
            ErrorCode::kRuntimeConflict,
            std::string("BERTGATE_CPU_ALLOCATOR") + (options.cpu_cache ? " is unset" : "=system") +
                " for this load, but the process's first load chose " +
                (options.cpu_cache ? "libtorch's own CPU allocator (=system)" : "the caching one (unset)") +
                ": the CPU allocator is process-wide; set it before the first load");
      }
      if (options.device == DeviceKind::kCuda && options.cuda_memory_fraction > 0) LimitCudaMemory(options);
      return std::unique_ptr<Engine>(std::make_unique<TorchEngine>(LoadModel(options), options));
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
    info.torch_version = CompiledTorchVersion();
    info.cxx11_abi = _GLIBCXX_USE_CXX11_ABI != 0;
    try {
      info.cuda_available = torch::cuda::is_available();
      info.cuda_device_count = info.cuda_available ? static_cast<int>(torch::cuda::device_count()) : 0;
      info.intra_op_threads = at::get_num_threads();
      info.interop_threads = at::get_num_interop_threads();
      info.parallel_info = at::get_parallel_info();
      info.torch_warnings = TorchWarningsSeen();
      info.cpu_cache = CpuCacheSnapshot();
    } catch (const std::exception&) {
      // A runtime that cannot describe itself still reports what it has.
    }
    return info;
  }

  EngineBuild Build() const noexcept override {
    EngineBuild build;
    build.torch_version = CompiledTorchVersion();
#ifdef BERTGATE_WITH_CUDA
    build.cuda_kernels = true;
#endif
    return build;
  }

 private:
  static std::string CompiledTorchVersion() {
    return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
           std::to_string(TORCH_VERSION_PATCH);
  }
};

}  // namespace
}  // namespace bertgate

extern "C" __attribute__((visibility("default"))) bertgate::EngineLibrary* bertgate_engine_library_v10() {
  static bertgate::TorchLibrary library;
  return &library;
}
