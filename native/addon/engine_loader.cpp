#include "engine_loader.h"

#include <dlfcn.h>

#include <atomic>
#include <mutex>
#include <stdexcept>

namespace bertgate {
namespace {

std::mutex mutex;
std::atomic<EngineLibrary*> library{nullptr};
std::string library_path;

std::string LastError() {
  const char* error = dlerror();
  return error ? error : "unknown dlopen error";
}

}  // namespace

void PreloadLibraries(const std::vector<std::string>& paths) {
  std::lock_guard<std::mutex> lock(mutex);
  for (const std::string& path : paths) {
    // RTLD_LOCAL keeps torch's C++ symbols from interposing on other libraries in the
    // process; the handles are never closed, as libtorch cannot be unloaded safely.
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) == nullptr) throw std::runtime_error(LastError());
  }
}

void OpenEngineLibrary(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  if (library.load() != nullptr) {
    if (path == library_path) return;
    throw std::runtime_error("the engine library is already open from '" + library_path + "'");
  }
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) throw std::runtime_error(LastError());
  auto entry = reinterpret_cast<EngineLibrary* (*)()>(dlsym(handle, BERTGATE_ENGINE_ENTRY));
  if (entry == nullptr) {
    throw std::runtime_error("'" + path +
                             "' has no " BERTGATE_ENGINE_ENTRY
                             "; it belongs to another bertgate build (rebuild with npm run build:native)");
  }
  library_path = path;
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
