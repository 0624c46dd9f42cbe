#include "engine_handle.h"

#include <exception>
#include <future>
#include <string>
#include <utility>

#include "engine_loader.h"
#include "js_values.h"
#include "settle.h"

namespace bertgate {

// A raw napi_deferred, settled with checked calls (settle.h), so a completion that arrives
// while the environment is torn down cannot throw through N-API.
struct EngineHandle::Completion {
  napi_deferred deferred;
  Settlement settlement;
};

Napi::Function EngineHandle::Define(Napi::Env env) {
  return DefineClass(env, "EngineHandle",
                     {InstanceMethod<&EngineHandle::Guarded<&EngineHandle::Load>>("load"),
                      InstanceMethod<&EngineHandle::Guarded<&EngineHandle::LoadReplica>>("loadReplica"),
                      InstanceMethod<&EngineHandle::Guarded<&EngineHandle::Infer>>("infer"),
                      InstanceMethod<&EngineHandle::Guarded<&EngineHandle::Runtime>>("runtime"),
                      InstanceMethod<&EngineHandle::Guarded<&EngineHandle::Close>>("close")});
}

EngineHandle::EngineHandle(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<EngineHandle>(info), library_(LoadedEngineLibrary()) {
  Napi::Env env = info.Env();
  if (library_ == nullptr) {
    throw MakeError(env, "ERR_ENGINE_NOT_OPEN", "the engine library is not open: call openRuntime() first");
  }
  Guard(env, [&] {
    Construct(env);
    return env.Undefined();
  });
}

void EngineHandle::Construct(Napi::Env env) {
  worker_ = std::make_unique<WorkerThread>("bertgate-infer");
  channel_ = Channel::New(env, "bertgate", 0, 1, this);
  channel_.Unref(env);
  // Runs before the environment frees its thread-safe functions (hooks run in reverse order
  // of registration), so a worker still inside a forward pass is waited for, not orphaned.
  cleanup_hook_ = env.AddCleanupHook(std::function<void()>([this] { Teardown(); }));
}

EngineHandle::~EngineHandle() {
  if (torn_down_) return;
  cleanup_hook_.Remove(Env());
  Teardown();
}

void EngineHandle::Teardown() {
  torn_down_ = true;
  worker_->Abandon();
  worker_->Join();
  // Nothing posts to the completer now; batches it has not waited for are dropped with it.
  if (completer_) {
    completer_->Abandon();
    completer_->Join();
  }
  Publish(nullptr);
  engine_.reset();
  if (!channel_released_) {
    channel_released_ = true;
    channel_.Release();
  }
}

Napi::Value EngineHandle::Post(Napi::Env env, std::function<void(Completion*)> job) {
  if (closing_) {
    auto refused = Napi::Promise::Deferred::New(env);
    refused.Reject(MakeError(env, "ERR_CLOSED", "the engine is closed").Value());
    return refused.Promise();
  }
  napi_deferred deferred;
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &deferred, &promise), Napi::Value());
  if (pending_++ == 0) {
    channel_.Ref(env);  // pending work keeps the process alive, as any I/O would
    Ref();              // and keeps this handle from being collected under it
  }
  bool queued = false;
  try {
    queued = worker_->Post([this, deferred, job = std::move(job)] {
      auto* completion = new Completion{deferred, {}};
      try {
        job(completion);
      } catch (const std::exception& e) {
        completion->settlement = {nullptr, Failure{ErrorCode::kInternal, e.what()}};
        Send(completion);
      }
    });
  } catch (const std::bad_alloc&) {
    // Not queued (no memory for the task): the promise fails now, and the handle lets go of
    // the loop as if the job had run.
    Reject(env, deferred, "ERR_OUT_OF_MEMORY", "the addon could not allocate memory to queue this call");
    Settled(env);
    return Napi::Value(env, promise);
  }
  if (!queued) {
    // The worker was stopped under the handle (the process quiescing at exit): likewise settled.
    Reject(env, deferred, "ERR_CLOSED", "the engine's thread has stopped");
    Settled(env);
  }
  return Napi::Value(env, promise);
}

Napi::Value EngineHandle::Submit(Napi::Env env, std::function<Settlement()> work) {
  return Post(env, [this, work = std::move(work)](Completion* completion) {
    completion->settlement = work();
    Send(completion);
  });
}

void EngineHandle::Send(Completion* completion) {
  if (channel_.NonBlockingCall(completion) != napi_ok) delete completion;
}

namespace {

// A batch on its way to the completer: whoever drops it unsent (a completer abandoned at
// exit) frees the completion with it.
struct Handoff {
  Handoff(EngineHandle::Completion* c, std::unique_ptr<PendingBatch> p) : completion(c), pending(std::move(p)) {}
  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;
  ~Handoff() { delete completion; }
  EngineHandle::Completion* completion;
  std::unique_ptr<PendingBatch> pending;
};

EngineHandle::Settlement Settle(Outcome<std::shared_ptr<InferOutput>> outcome) {
  if (!outcome.ok()) return {nullptr, outcome.failure()};
  std::shared_ptr<InferOutput> output = std::move(outcome.value());
  return {[output](Napi::Env env) -> Napi::Value { return ToJs(env, output); }, std::nullopt};
}

}  // namespace

void EngineHandle::Finish(Completion* completion, std::unique_ptr<PendingBatch> pending) {
  if (pending->done()) {
    completion->settlement = Settle(engine_->Complete(std::move(pending)));
    Send(completion);
    return;
  }
  if (!completer_) completer_ = std::make_unique<WorkerThread>("bertgate-wait");
  auto handoff = std::make_shared<Handoff>(completion, std::move(pending));
  Engine* engine = engine_.get();
  bool posted = false;
  try {
    posted = completer_->Post([this, engine, handoff] {
      Completion* c = std::exchange(handoff->completion, nullptr);
      try {
        c->settlement = Settle(engine->Complete(std::move(handoff->pending)));
      } catch (const std::exception& e) {
        c->settlement = {nullptr, Failure{ErrorCode::kInternal, e.what()}};
      }
      Send(c);
    });
  } catch (...) {
    handoff->completion = nullptr;  // still the caller's, which reports the failure
    throw;
  }
  if (!posted) {
    // The completer was stopped (teardown): the promise is settled, not left pending.
    handoff->completion = nullptr;
    completion->settlement = {nullptr,
                              Failure{ErrorCode::kInternal, "the engine was shut down before the batch finished"}};
    Send(completion);
  }
}

// Returns once the completer has handed over every batch posted to it. Waits on a task rather
// than joining the thread, which the process-exit path may be joining at the same moment: an
// abandoned completer drops the task, and the broken promise ends the wait.
void EngineHandle::DrainCompleter() {
  if (!completer_) return;
  auto drained = std::make_shared<std::promise<void>>();
  std::future<void> done = drained->get_future();
  if (completer_->Post([drained] { drained->set_value(); })) done.wait();
}

void EngineHandle::Deliver(Napi::Env env, Napi::Function, EngineHandle* self, Completion* raw) {
  std::unique_ptr<Completion> completion(raw);
  if (env == nullptr) return;  // the environment is going away; nobody is left to tell
  SafeHandleScope scope(env);
  if (!scope.ok()) return;  // likewise: it can no longer make values
  const Settlement& s = completion->settlement;
  if (s.failure) {
    Reject(env, completion->deferred, ErrorCodeName(s.failure->code), s.failure->message);
  } else {
    // Building the value calls node-addon-api, which throws when a call fails (an
    // environment being torn down, or no memory for the result): caught here, never let
    // through the thread-safe function's C callback.
    try {
      napi_resolve_deferred(env, completion->deferred, s.value(env));
    } catch (const std::exception& e) {
      Reject(env, completion->deferred, "ERR_INTERNAL",
             std::string("the result could not be handed over: ") + e.what());
    }
  }
  try {
    self->Settled(env);
  } catch (const std::exception&) {
    // Ref/Unref of the channel failed: the environment is going away.
  }
}

void EngineHandle::Settled(Napi::Env env) {
  if (--pending_ > 0) return;
  if (closing_ && !channel_released_) {
    // The close job was the last one: the worker has finished its queue, and the completer
    // (drained by the close job) has nothing left to hand over.
    worker_->Join();
    if (completer_) {
      completer_->Stop();
      completer_->Join();
    }
    channel_released_ = true;
    channel_.Release();
  } else if (!channel_released_) {
    channel_.Unref(env);
  }
  Unref();
}

Napi::Value EngineHandle::Load(const Napi::CallbackInfo& info) {
  const LoadOptions options = LoadOptionsFromJs(info[0].As<Napi::Object>());
  return Submit(info.Env(), [this, options]() -> Settlement {
    auto outcome = library_->Load(options);
    if (!outcome.ok()) return {nullptr, outcome.failure()};
    engine_ = std::move(outcome.value());
    Publish(engine_);
    const ModelInfo model = engine_->info();
    return {[model](Napi::Env env) -> Napi::Value { return ToJs(env, model); }, std::nullopt};
  });
}

void EngineHandle::Publish(std::shared_ptr<Engine> engine) {
  const std::lock_guard<std::mutex> lock(published_mutex_);
  published_ = std::move(engine);
}

Napi::Value EngineHandle::LoadReplica(const Napi::CallbackInfo& info) {
  EngineHandle* source = Napi::ObjectWrap<EngineHandle>::Unwrap(info[0].As<Napi::Object>());
  const int threads = info[1].As<Napi::Number>().Int32Value();
  std::shared_ptr<Engine> from;
  {
    const std::lock_guard<std::mutex> lock(source->published_mutex_);
    from = source->published_;
  }
  return Submit(info.Env(), [this, from, threads]() -> Settlement {
    if (!from) return {nullptr, Failure{ErrorCode::kInternal, "loadReplica() of a handle with no model loaded"}};
    auto outcome = from->Replica(threads);
    if (!outcome.ok()) return {nullptr, outcome.failure()};
    engine_ = std::move(outcome.value());
    Publish(engine_);
    const ModelInfo model = engine_->info();
    return {[model](Napi::Env env) -> Napi::Value { return ToJs(env, model); }, std::nullopt};
  });
}

Napi::Value EngineHandle::Infer(const Napi::CallbackInfo& info) {
  std::shared_ptr<InferInput> input = InferInputFromJs(info[0].As<Napi::Object>());
  return Post(info.Env(), [this, input](Completion* completion) {
    if (!engine_) {
      completion->settlement = {nullptr, Failure{ErrorCode::kInternal, "infer() before a model was loaded"}};
      return Send(completion);
    }
    auto queued = engine_->Enqueue(*input);
    if (!queued.ok()) {
      completion->settlement = {nullptr, queued.failure()};
      return Send(completion);
    }
    Finish(completion, std::move(queued.value()));
  });
}

Napi::Value EngineHandle::Runtime(const Napi::CallbackInfo& info) {
  return Submit(info.Env(), [this]() -> Settlement {
    const RuntimeInfo runtime = library_->Runtime();
    return {[runtime](Napi::Env env) -> Napi::Value { return ToJs(env, runtime); }, std::nullopt};
  });
}

Napi::Value EngineHandle::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closing_) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  // Queued behind any work already submitted, so close() lets it finish first.
  Napi::Value promise = Submit(env, [this]() -> Settlement {
    DrainCompleter();
    Publish(nullptr);
    engine_.reset();
    return {[](Napi::Env env) -> Napi::Value { return env.Undefined(); }, std::nullopt};
  });
  closing_ = true;
  worker_->Stop();
  return promise;
}

}  // namespace bertgate
