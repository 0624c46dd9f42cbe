#include "worker_thread.h"

#include <pthread.h>

#include <cstdlib>
#include <unordered_set>
#include <utility>
#include <vector>

namespace bertgate {
namespace {

// process.exit() goes straight to C exit(): Node's environment cleanup hooks do not run,
// static destructors do, libtorch's and oneDNN's among them. A worker still inside a forward
// pass would then run on destroyed state and crash the exiting process. So every live worker
// is registered, and AbandonAll() drops their queues and waits for the running tasks. The
// JS side calls it from process.on('exit'), which runs before exit(); the atexit handler is
// the fallback for other ways out (it runs before libtorch's eager statics, but after lazy
// ones created since, which is why it is not enough alone).
// Both objects are leaked on purpose: they must outlive every other static.
std::mutex& RegistryMutex() {
  static auto* mutex = new std::mutex;
  return *mutex;
}

std::unordered_set<WorkerThread*>& Registry() {
  static auto* live = new std::unordered_set<WorkerThread*>;
  return *live;
}

void AbandonAllAtExit() {
  WorkerThread::AbandonAll();
}

void Register(WorkerThread* worker) {
  static const bool hooked = std::atexit(AbandonAllAtExit) == 0;
  (void)hooked;
  std::lock_guard<std::mutex> lock(RegistryMutex());
  Registry().insert(worker);
}

void Unregister(WorkerThread* worker) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  Registry().erase(worker);
}

}  // namespace

void WorkerThread::AbandonAll() {
  std::vector<WorkerThread*> live;
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    live.assign(Registry().begin(), Registry().end());
  }
  for (WorkerThread* worker : live) worker->Abandon();
  for (WorkerThread* worker : live) worker->Join();
}

WorkerThread::WorkerThread(std::string name) : name_(std::move(name)), thread_([this] { Loop(); }) {
  Register(this);
}

WorkerThread::~WorkerThread() {
  Unregister(this);
  Stop();
  Join();
}

bool WorkerThread::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return false;
    queue_.push_back(std::move(task));
  }
  wake_.notify_one();
  return true;
}

void WorkerThread::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
}

void WorkerThread::Abandon() {
  std::deque<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  wake_.notify_one();
}

void WorkerThread::Join() {
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void WorkerThread::Loop() {
  // Shows in /proc/<pid>/task/*/comm, top and gdb (at most 15 characters).
  pthread_setname_np(pthread_self(), name_.substr(0, 15).c_str());
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace bertgate
