#pragma once
// Opens libtorch and the engine library at run time. The TypeScript side decides which
// libtorch (lib/libtorch.ts) and which engine (lib/engines.ts) and passes absolute paths:
// libtorch's dependencies first, then libc10 and libtorch_cpu, then the engine. Loaded that
// way, the engine's DT_NEEDED entries (libc10.so, libtorch_cpu.so) resolve by soname to the
// copies already in the process.
//
// The state is process-wide, shared by every Node environment (worker threads included):
// libtorch cannot be unloaded, and two copies of it in one process would share nothing but
// their symbol names, so a second, different libtorch or engine is refused before anything
// of it is loaded.

#include <stdexcept>
#include <string>
#include <vector>

#include "../engine/engine_api.h"

namespace bertgate {

// A failure to open, with the code lib/errors.ts maps to a typed error.
class RuntimeOpenError : public std::runtime_error {
 public:
  RuntimeOpenError(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

// Loads `mkl_any_cpu` (when not empty) into the global symbol scope, so that libtorch's MKL
// asks it whether the CPU is Intel's (native/shim/mkl_any_cpu.cpp); preloads `preload` in
// order, then opens the engine library. A second call with the same engine and shim is a
// no-op. Throws RuntimeOpenError: ERR_LIBTORCH_CONFLICT (another libtorch or engine is already
// in the process, or the shim asked for differs from the first call's), ERR_LIBTORCH_LOAD (a
// library did not load: dlerror()'s text, which names the file), ERR_ENGINE_LOAD (the engine
// or the shim did not load, or is not one).
void OpenRuntime(const std::vector<std::string>& preload, const std::string& engine, const std::string& mkl_any_cpu);
// nullptr until OpenRuntime succeeded.
EngineLibrary* LoadedEngineLibrary();
std::string LoadedEngineLibraryPath();
// The shim OpenRuntime loaded ("" when none) and how many times MKL asked it (-1: none loaded).
std::string LoadedMklAnyCpuPath();
long MklAnyCpuCalls();

}  // namespace bertgate
