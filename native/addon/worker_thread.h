#pragma once
// One native thread that runs posted tasks in order. The addon owns one per engine, so
// inference occupies neither the JS thread nor the libuv pool (which fs and dns share), and
// every torch call of an engine happens on the same thread (its intra-op thread count is
// per thread). Plain C++: no N-API here.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace bertgate {

class WorkerThread {
 public:
  explicit WorkerThread(std::string name);
  ~WorkerThread();
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  // Queues a task; false (and the task is dropped) once Stop or Abandon was called.
  bool Post(std::function<void()> task);
  // Runs what is queued, then ends the thread. Returns at once; Join waits.
  void Stop();
  // Drops queued tasks that have not started, lets the running one finish, ends the thread.
  // For environment teardown, when nobody is left to receive results.
  void Abandon();
  void Join();
  std::thread::id id() const { return thread_.get_id(); }
  // Abandon() then Join() for every live worker in the process: called as the process exits
  // (see worker_thread.cpp), after which no worker touches libtorch again.
  static void AbandonAll();

 private:
  void Loop();

  std::string name_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace bertgate
