#include "engine_loader.h"

#include <dlfcn.h>

#include <atomic>
#include <mutex>

namespace bertgate {
namespace {

std::mutex mutex;
std::atomic<EngineLibrary*> library{nullptr};
std::string library_path;
// Where the first libc10.so preloaded came from: once any of libtorch is in the process, a
// libtorch from elsewhere is refused, even when that first attempt failed later on.
std::string libtorch_dir;
// The MKL shim, loaded before libtorch or never: libtorch binds MKL's vendor check as it loads.
std::string shim_path;
long (*shim_calls)() = nullptr;

std::string LastError() {
  const char* error = dlerror();
  return error ? error : "unknown dlopen error";
}

std::string DirOf(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string Libc10Dir(const std::vector<std::string>& preload) {
  for (const std::string& path : preload) {
    if (path.size() >= 10 && path.compare(path.size() - 10, 10, "/libc10.so") == 0) return DirOf(path);
  }
  return "";
}

}  // namespace

void OpenRuntime(const std::vector<std::string>& preload, const std::string& engine, const std::string& mkl_any_cpu) {
  std::lock_guard<std::mutex> lock(mutex);
  // Paths arrive with symbolic links resolved (lib/libtorch.ts), so equal strings are equal files.
  const std::string dir = Libc10Dir(preload);
  // The shim counts even when libtorch then failed to load: it stays in the global scope.
  if ((!libtorch_dir.empty() || !shim_path.empty()) && mkl_any_cpu != shim_path) {
    // libtorch bound MKL's vendor check when it loaded: the answer cannot change afterwards.
    throw RuntimeOpenError("ERR_LIBTORCH_CONFLICT",
                           std::string("this process loaded libtorch ") + (shim_path.empty() ? "without" : "with") +
                               " BERTGATE_MKL_ANY_CPU=1, and cannot change that: it is read once, before libtorch "
                               "loads");
  }
  if (library.load() != nullptr) {
    // Another thread (a worker_thread, with its own JS state) may ask with another libtorch:
    // the engine alone matching is not enough.
    if (engine == library_path && (dir.empty() || dir == libtorch_dir)) return;
    throw RuntimeOpenError("ERR_LIBTORCH_CONFLICT", "this process already runs the engine '" + library_path +
                                                        "' on the libtorch in '" + libtorch_dir +
                                                        "'; it cannot also open '" + engine + "' on the one in '" +
                                                        dir + "': one process holds one libtorch");
  }
  if (!libtorch_dir.empty() && !dir.empty() && dir != libtorch_dir) {
    throw RuntimeOpenError("ERR_LIBTORCH_CONFLICT",
                           "an earlier attempt in this process loaded the libtorch in '" + libtorch_dir +
                               "' (and failed after that); it cannot also load the one in '" + dir +
                               "': a loaded libtorch cannot be unloaded, so only a new process can use another");
  }
  if (libtorch_dir.empty() && !mkl_any_cpu.empty() && shim_calls == nullptr) {
    // RTLD_GLOBAL, and before libtorch: libtorch_cpu's reference to the check then binds to the
    // first definition in the global scope, this one, instead of its own.
    const std::string fix = "; rebuild (npx bertgate build) or unset BERTGATE_MKL_ANY_CPU";
    void* shim = dlopen(mkl_any_cpu.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (shim == nullptr) {
      throw RuntimeOpenError("ERR_ENGINE_LOAD",
                             "BERTGATE_MKL_ANY_CPU=1: the MKL shim did not load: " + LastError() + fix);
    }
    shim_calls = reinterpret_cast<long (*)()>(dlsym(shim, "bertgate_mkl_any_cpu_calls"));
    if (shim_calls == nullptr) {
      throw RuntimeOpenError("ERR_ENGINE_LOAD",
                             "BERTGATE_MKL_ANY_CPU=1: '" + mkl_any_cpu + "' is not bertgate's MKL shim" + fix);
    }
    shim_path = mkl_any_cpu;
  }
  for (const std::string& path : preload) {
    // RTLD_LOCAL keeps torch's C++ symbols from interposing on other libraries in the
    // process; the handles are never closed, as libtorch cannot be unloaded safely.
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) == nullptr) {
      throw RuntimeOpenError("ERR_LIBTORCH_LOAD", LastError());
    }
    if (libtorch_dir.empty() && DirOf(path) == dir) libtorch_dir = dir;
  }
  void* handle = dlopen(engine.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) throw RuntimeOpenError("ERR_ENGINE_LOAD", LastError());
  auto entry = reinterpret_cast<EngineLibrary* (*)()>(dlsym(handle, BERTGATE_ENGINE_ENTRY));
  if (entry == nullptr) {
    throw RuntimeOpenError("ERR_ENGINE_LOAD",
                           "'" + engine + "' has no " BERTGATE_ENGINE_ENTRY "; it belongs to another bertgate build");
  }
  library_path = engine;
  library.store(entry());
}

EngineLibrary* LoadedEngineLibrary() {
  return library.load();
}

std::string LoadedEngineLibraryPath() {
  std::lock_guard<std::mutex> lock(mutex);
  return library_path;
}

std::string LoadedMklAnyCpuPath() {
  std::lock_guard<std::mutex> lock(mutex);
  return shim_path;
}

long MklAnyCpuCalls() {
  std::lock_guard<std::mutex> lock(mutex);
  return shim_calls == nullptr ? -1 : shim_calls();
}

}  // namespace bertgate
