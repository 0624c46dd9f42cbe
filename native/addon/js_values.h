#pragma once
// Engine structs to JavaScript values and back. The shapes here are mirrored, in one place,
// by the NativeAddon interface of lib/binding.ts.

#include <napi.h>

#include <exception>
#include <memory>
#include <new>
#include <string>

#include "../engine/engine_api.h"

namespace bertgate {

// An Error whose `code` names the failure; lib/errors.ts turns it into a typed error.
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message);

// node-addon-api turns only a thrown Napi::Error into a JavaScript exception: anything else
// thrown on the JS thread (std::bad_alloc copying a large request under a memory limit,
// std::system_error starting a thread) would end the process. Every entry point runs its body
// through this, so the caller gets a typed error instead (an OutOfMemoryError, which the
// classifier answers by splitting the batch).
template <class Body>
Napi::Value Guard(Napi::Env env, Body&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw MakeError(env, "ERR_OUT_OF_MEMORY", "the addon could not allocate memory for this call");
  } catch (const std::exception& e) {
    throw MakeError(env, "ERR_INTERNAL", e.what());
  }
}

Napi::Object ToJs(Napi::Env env, const ModelInfo& info);
Napi::Object ToJs(Napi::Env env, const RuntimeInfo& info);
Napi::Object ToJs(Napi::Env env, const EngineBuild& build);
// Hands the result's arrays to JavaScript without copying; the last typed array collected
// frees the result.
Napi::Object ToJs(Napi::Env env, const std::shared_ptr<InferOutput>& output);

LoadOptions LoadOptionsFromJs(const Napi::Object& options);
// Copies the token arrays into native memory, so JavaScript may reuse its buffers at once.
std::shared_ptr<InferInput> InferInputFromJs(const Napi::Object& request);

}  // namespace bertgate
