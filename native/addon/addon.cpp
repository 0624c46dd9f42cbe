// Module entry: the addon's whole surface. lib/binding.ts declares the same shape.

#include <napi.h>

#include <string>
#include <vector>

#include "engine_handle.h"
#include "engine_loader.h"
#include "js_values.h"
#include "worker_thread.h"

namespace bertgate {
namespace {

// dlopen of libtorch takes a fraction of a second and runs its static initialisers; done once
// per process, off the JS thread.
class OpenRuntimeWorker : public Napi::AsyncWorker {
 public:
  OpenRuntimeWorker(Napi::Env env, std::vector<std::string> preload, std::string engine)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        preload_(std::move(preload)),
        engine_(std::move(engine)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      OpenRuntime(preload_, engine_);
    } catch (const RuntimeOpenError& e) {
      code_ = e.code();
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& error) override {
    deferred_.Reject(MakeError(Env(), code_, error.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<std::string> preload_;
  std::string engine_;
  std::string code_;
};

Napi::Value OpenRuntimeJs(const Napi::CallbackInfo& info) {
  std::vector<std::string> preload;
  const auto paths = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < paths.Length(); ++i) preload.push_back(paths.Get(i).As<Napi::String>().Utf8Value());
  auto* worker = new OpenRuntimeWorker(info.Env(), std::move(preload), info[1].As<Napi::String>().Utf8Value());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// The addon's own build; it is the same for every libtorch. The engine's half (which torch,
// which flavour) is there once an engine is open.
Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cxx11Abi", Napi::Boolean::New(env, _GLIBCXX_USE_CXX11_ABI != 0));
  o.Set("buildSystem", BERTGATE_BUILD_SYSTEM);
  o.Set("compiler", "g++ " __VERSION__);
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  o.Set("engineLibrary", LoadedEngineLibraryPath());
  if (EngineLibrary* library = LoadedEngineLibrary()) {
    o.Set("engine", ToJs(env, library->Build()));
  } else {
    o.Set("engine", env.Null());
  }
  return o;
}

// Synchronous on purpose: the JS side calls it from process.on('exit'), where nothing
// asynchronous runs any more. Waits for forward passes under way; drops queued ones.
Napi::Value Quiesce(const Napi::CallbackInfo& info) {
  WorkerThread::AbandonAll();
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("openRuntime", Napi::Function::New<OpenRuntimeJs>(env, "openRuntime"));
  exports.Set("buildInfo", Napi::Function::New<BuildInfo>(env, "buildInfo"));
  exports.Set("EngineHandle", EngineHandle::Define(env));
  exports.Set("quiesce", Napi::Function::New<Quiesce>(env, "quiesce"));
  return exports;
}

}  // namespace bertgate

// NODE_API_MODULE pastes the function's name into an identifier, so it must be unqualified.
static Napi::Object InitBertgate(Napi::Env env, Napi::Object exports) {
  return bertgate::Init(env, exports);
}
NODE_API_MODULE(bertgate, InitBertgate)
