#include "../addon/worker_thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <vector>

namespace bertgate {
namespace {

TEST(WorkerThread, RunsTasksInOrderOnItsOwnThread) {
  WorkerThread worker("bg-test");
  std::vector<int> order;
  std::promise<std::thread::id> ran_on;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(worker.Post([&order, i] { order.push_back(i); }));
  }
  worker.Post([&ran_on] { ran_on.set_value(std::this_thread::get_id()); });
  const std::thread::id id = ran_on.get_future().get();
  EXPECT_NE(id, std::this_thread::get_id());
  EXPECT_EQ(id, worker.id());
  worker.Stop();
  worker.Join();
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(WorkerThread, StopRunsWhatIsQueuedAndRefusesMore) {
  WorkerThread worker("bg-test");
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> ran{0};
  worker.Post([gate] { gate.wait(); });
  for (int i = 0; i < 10; ++i) worker.Post([&ran] { ++ran; });
  worker.Stop();
  EXPECT_FALSE(worker.Post([&ran] { ran += 1000; }));
  release.set_value();
  worker.Join();
  EXPECT_EQ(ran.load(), 10);
}

TEST(WorkerThread, AbandonDropsTasksThatHaveNotStarted) {
  WorkerThread worker("bg-test");
  std::promise<void> started, release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> ran{0};
  worker.Post([&started, gate] {
    started.set_value();
    gate.wait();
  });
  for (int i = 0; i < 10; ++i) worker.Post([&ran] { ++ran; });
  started.get_future().wait();
  worker.Abandon();
  release.set_value();
  worker.Join();
  EXPECT_EQ(ran.load(), 0);
}

}  // namespace
}  // namespace bertgate
