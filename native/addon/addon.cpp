// Module entry: the addon's whole surface. lib/binding.ts declares the same shape.

#include <dlfcn.h>
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "engine_handle.h"
#include "engine_loader.h"
#include "js_values.h"
#include "settle.h"
#include "worker_thread.h"

namespace bertgate {
namespace {

// dlopen of libtorch takes a fraction of a second and runs its static initialisers; done once
// per process, off the JS thread. Raw async work, settled with checked calls (settle.h): the
// environment may be torn down while the libraries load (a worker terminated mid-load).
struct OpenJob {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  std::vector<std::string> preload;
  std::string engine;
  std::string mkl_any_cpu;  // the MKL shim's path, or empty
  std::string code;         // empty on success
  std::string message;
};

void ExecuteOpen(napi_env, void* data) noexcept {
  auto* job = static_cast<OpenJob*>(data);
  try {
    OpenRuntime(job->preload, job->engine, job->mkl_any_cpu);
  } catch (const RuntimeOpenError& e) {
    job->code = e.code();
    job->message = e.what();
  } catch (const std::exception& e) {
    job->code = "ERR_INTERNAL";
    job->message = e.what();
  }
}

void CompleteOpen(napi_env env, napi_status status, void* data) noexcept {
  std::unique_ptr<OpenJob> job(static_cast<OpenJob*>(data));
  if (status == napi_ok) {
    SafeHandleScope scope(env);
    if (scope.ok()) {
      if (job->code.empty()) {
        ResolveUndefined(env, job->deferred);
      } else {
        Reject(env, job->deferred, job->code, job->message);
      }
    }
  }
  napi_delete_async_work(env, job->work);
}

Napi::Value OpenRuntimeJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<OpenJob>();
  const auto paths = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < paths.Length(); ++i) job->preload.push_back(paths.Get(i).As<Napi::String>().Utf8Value());
  job->engine = info[1].As<Napi::String>().Utf8Value();
  job->mkl_any_cpu = info[2].As<Napi::String>().Utf8Value();
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &job->deferred, &promise), Napi::Value());
  NAPI_THROW_IF_FAILED(env,
                       napi_create_async_work(env, nullptr, Napi::String::New(env, "bertgate.openRuntime"), ExecuteOpen,
                                              CompleteOpen, job.get(), &job->work),
                       Napi::Value());
  NAPI_THROW_IF_FAILED(env, napi_queue_async_work(env, job->work), Napi::Value());
  job.release();  // CompleteOpen owns it now
  return Napi::Value(env, promise);
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
  const std::string shim = LoadedMklAnyCpuPath();
  if (shim.empty()) {
    o.Set("mklAnyCpu", env.Null());
  } else {
    Napi::Object mkl = Napi::Object::New(env);
    mkl.Set("file", shim);
    mkl.Set("calls", Napi::Number::New(env, static_cast<double>(MklAnyCpuCalls())));
    o.Set("mklAnyCpu", mkl);
  }
  if (EngineLibrary* library = LoadedEngineLibrary()) {
    o.Set("engine", ToJs(env, library->Build()));
  } else {
    o.Set("engine", env.Null());
  }
  return o;
}

// A function as JavaScript calls it: through Guard (js_values.h).
template <Napi::Value (*Function)(const Napi::CallbackInfo&)>
Napi::Value Guarded(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&] { return Function(info); });
}

// Synchronous on purpose: the JS side calls it from process.on('exit'), where nothing
// asynchronous runs any more. Waits for forward passes under way; drops queued ones.
Napi::Value Quiesce(const Napi::CallbackInfo& info) {
  WorkerThread::AbandonAll();
  return info.Env().Undefined();
}

}  // namespace

// Node unloads an addon when the last thread that required it ends; libtorch and the engine
// stay mapped (they cannot be unloaded), so a fresh copy of the addon would forget which
// libtorch, engine and MKL shim the process holds, and its checks would pass what they must
// refuse. Marked never to be unloaded, the addon keeps that state for the life of the process.
namespace {
void PinAddon() {
  Dl_info self;
  if (dladdr(reinterpret_cast<void*>(&PinAddon), &self) != 0 && self.dli_fname != nullptr) {
    dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);  // a reference never closed
  }
}
}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  PinAddon();
  exports.Set("openRuntime", Napi::Function::New<Guarded<OpenRuntimeJs>>(env, "openRuntime"));
  exports.Set("buildInfo", Napi::Function::New<Guarded<BuildInfo>>(env, "buildInfo"));
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
