#pragma once
// Opens libtorch and the engine library at run time. The TypeScript side decides which
// libtorch (lib/libtorch.ts) and passes absolute paths: their dependencies first, then
// libc10 and libtorch_cpu. Loaded that way, the engine's DT_NEEDED entries (libc10.so,
// libtorch_cpu.so) resolve by soname to the copies already in the process.

#include <string>
#include <vector>

#include "../engine/engine_api.h"

namespace bertgate {

// Throws std::runtime_error with dlerror()'s text, naming the file.
void PreloadLibraries(const std::vector<std::string>& paths);
// Throws std::runtime_error; a second call with the same path is a no-op.
void OpenEngineLibrary(const std::string& path);
// nullptr until OpenEngineLibrary succeeded.
EngineLibrary* LoadedEngineLibrary();
std::string LoadedEngineLibraryPath();

}  // namespace bertgate
