#pragma once
// A JavaScript handle on one engine: its model, and the native thread that runs every
// load and inference for it. Each call returns a Promise that a thread-safe function settles
// on the JS thread; the handle keeps the event loop alive only while work is pending.
// On a GPU a second thread waits for the batches the first has queued, so that batch N+1 is
// queued on the device while batch N still runs there.

#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "../engine/engine_api.h"
#include "js_values.h"
#include "worker_thread.h"

namespace bertgate {

class EngineHandle : public Napi::ObjectWrap<EngineHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit EngineHandle(const Napi::CallbackInfo& info);
  ~EngineHandle() override;

  // What a job hands back from the worker: a value to build on the JS thread, or a failure.
  struct Settlement {
    std::function<Napi::Value(Napi::Env)> value;
    std::optional<Failure> failure;
  };
  struct Completion;

 private:
  // Each method as JavaScript calls it: through Guard (js_values.h).
  template <Napi::Value (EngineHandle::*Method)(const Napi::CallbackInfo&)>
  Napi::Value Guarded(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&] { return (this->*Method)(info); });
  }
  void Construct(Napi::Env env);

  Napi::Value Load(const Napi::CallbackInfo& info);
  // Loads nothing: runs a replica of another handle's engine (its weights, its gate) on this
  // handle's thread, with its own intra-op threads. The source may close first: the weights
  // live while either runs.
  Napi::Value LoadReplica(const Napi::CallbackInfo& info);
  Napi::Value Infer(const Napi::CallbackInfo& info);
  Napi::Value Runtime(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  // Runs `job` on the worker; the job settles its Completion with Send, then or later.
  Napi::Value Post(Napi::Env env, std::function<void(Completion*)> job);
  Napi::Value Submit(Napi::Env env, std::function<Settlement()> work);
  void Send(Completion* completion);
  // Waits on the completer for a batch the device still runs (made on first use: CPU engines
  // never need it), or completes it here when it is done already.
  void Finish(Completion* completion, std::unique_ptr<PendingBatch> pending);
  void DrainCompleter();
  static void Deliver(Napi::Env env, Napi::Function, EngineHandle* self, Completion* completion);
  void Settled(Napi::Env env);
  void Teardown();

  using Channel = Napi::TypedThreadSafeFunction<EngineHandle, Completion, &EngineHandle::Deliver>;

  EngineLibrary* library_;
  std::unique_ptr<WorkerThread> worker_;
  // Made and posted to on the worker thread only; stopped by the close job or at teardown.
  std::unique_ptr<WorkerThread> completer_;
  // Touched only on the worker thread, and destroyed after it has been joined.
  std::shared_ptr<Engine> engine_;
  // The same engine, for LoadReplica on another handle: set by the worker once loaded, read
  // on the JS thread, cleared by the close job.
  std::mutex published_mutex_;
  std::shared_ptr<Engine> published_;
  void Publish(std::shared_ptr<Engine> engine);
  Channel channel_;
  Napi::Env::CleanupHook<std::function<void()>> cleanup_hook_;
  int pending_ = 0;
  bool closing_ = false;
  bool channel_released_ = false;
  bool torn_down_ = false;
};

}  // namespace bertgate
