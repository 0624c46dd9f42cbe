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

void OpenRuntime(const std::vector<std::string>& preload, const std::string& engine) {
  std::lock_guard<std::mutex> lock(mutex);
  // Paths arrive with symbolic links resolved (lib/libtorch.ts), so equal strings are equal files.
  const std::string dir = Libc10Dir(preload);
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

}  // namespace bertgate
