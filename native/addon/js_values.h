#pragma once
// Engine structs to JavaScript values and back. The shapes here are mirrored, in one place,
// by the NativeAddon interface of lib/binding.ts.

#include <napi.h>

#include <memory>
#include <string>

#include "../engine/engine_api.h"

namespace bertgate {

// An Error whose `code` names the failure; lib/errors.ts turns it into a typed error.
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message);

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
