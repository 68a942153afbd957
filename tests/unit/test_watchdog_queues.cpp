// test_watchdog_queues.cpp: the watchdog over a communicator whose collectives return once queued on a device and
// finish later (Comm::queue_probe, NCCL's way), through a stand-in transport whose probe answers what the test says:
// such a call stays open after it returns until the probe says its own collective has finished (not the ones queued
// after it); work that never finishes ends the process past the limit, naming the call; a transport error ends it at
// once. (The NcclComm tests check NCCL's
// own probe on the emulated GPU; tests/check_watchdog.sh the stalled host call over MPI.)
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/watchdog.h"

namespace kosmos::parallel {
namespace {

// The stand-in's queue: its collectives count as queued; the test says how many have finished, or that it failed.
// Read by the watchdog's thread.
struct StandInQueue {
  std::mutex mutex;
  QueueState state;
  void queue_one() {
    std::lock_guard<std::mutex> lock(mutex);
    ++state.queued;
  }
  void finish(int64_t count, const std::string & error = "") {
    std::lock_guard<std::mutex> lock(mutex);
    state.finished = count;
    state.error = error;
  }
};

// A group of one whose collectives return at once, leaving their work queued (as far as its probe says).
class QueuedComm final : public Comm {
 public:
  explicit QueuedComm(StandInQueue & queue) : queue_(queue) {}
  int size() const override { return 1; }
  int rank() const override { return 0; }
  void all_reduce(TensorView, ReduceOp, Stream &) override { queue_.queue_one(); }
  void all_gather(TensorView, TensorView, Stream &) override { queue_.queue_one(); }
  void reduce_scatter(TensorView, TensorView, ReduceOp, Stream &) override { queue_.queue_one(); }
  void reduce(TensorView, int, ReduceOp, Stream &) override { queue_.queue_one(); }
  void broadcast(TensorView, int, Stream &) override { queue_.queue_one(); }
  void send(TensorView, int, Stream &, int) override {}
  void recv(TensorView, int, Stream &, int) override {}
  void group_begin() override {}
  void group_end() override {}
  void send_async(TensorView, int, Stream &, int) override {}
  void wait_sends() override {}
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { return std::make_unique<QueuedComm>(queue_); }
  QueueProbe queue_probe() override {
    return [this] {
      std::lock_guard<std::mutex> lock(queue_.mutex);
      return queue_.state;
    };
  }

 private:
  StandInQueue & queue_;
};

class NoStream final : public Stream {
 public:
  void synchronize() override {}
};

WatchdogOptions options_with_limit(double seconds, const std::string & name) {
  WatchdogOptions options;
  options.timeout_seconds = seconds;
  options.status_dir = ::testing::TempDir() + "/kosmos_watchdog_" + name;
  return options;
}

// Polls `watchdog.recent_calls()` for up to 5 s (the monitor asks the probe once a second) until it holds `text`.
bool recent_calls_come_to_hold(const Watchdog & watchdog, const std::string & text) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    if (watchdog.recent_calls().find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(WatchdogQueues, CallStaysOpenUntilItsCollectiveHasFinished) {
  StandInQueue queue;
  Watchdog watchdog(options_with_limit(60.0, "open"));
  {
    const std::unique_ptr<Comm> world = watched_comm(std::make_unique<QueuedComm>(queue), watchdog);
    NoStream stream;
    float value = 1.0f;
    world->all_reduce(make_view(&value, DType::kF32, {1}), ReduceOp::kSum, stream);
    world->broadcast(make_view(&value, DType::kF32, {1}), 0, stream);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the monitor has asked at least once
    const std::string both_open = watchdog.recent_calls();
    EXPECT_NE(both_open.find("all_reduce #1 on world (4 bytes), in it for"), std::string::npos) << both_open;
    EXPECT_NE(both_open.find("broadcast #2 on world with peer 0 (4 bytes), in it for"), std::string::npos) << both_open;
    EXPECT_NE(both_open.find("(queued on the device, not finished)"), std::string::npos) << both_open;
    queue.finish(1);  // the all-reduce's collective, not the broadcast's
    EXPECT_TRUE(recent_calls_come_to_hold(watchdog, "all_reduce #1 on world (4 bytes), took "))
        << watchdog.recent_calls();
    EXPECT_NE(watchdog.recent_calls().find("broadcast #2 on world with peer 0 (4 bytes), in it for"),
              std::string::npos) << watchdog.recent_calls();
    queue.finish(2);
    EXPECT_TRUE(recent_calls_come_to_hold(watchdog, "broadcast #2 on world with peer 0 (4 bytes), took "))
        << watchdog.recent_calls();
    // A barrier (the group's third call) finishes before it returns: never queued.
    world->barrier();
    EXPECT_NE(watchdog.recent_calls().find("barrier #3 on world (0 bytes), took "), std::string::npos);
  }
}

TEST(WatchdogQueues, AGoingCommunicatorsOpenCallsNoLongerCount) {
  StandInQueue queue;
  Watchdog watchdog(options_with_limit(2.0, "removed"));
  {
    const std::unique_ptr<Comm> world = watched_comm(std::make_unique<QueuedComm>(queue), watchdog);
    NoStream stream;
    float value = 1.0f;
    world->all_reduce(make_view(&value, DType::kF32, {1}), ReduceOp::kSum, stream);
  }
  // Past the 2 s limit with the communicator gone: the call is closed, and the process lives on.
  std::this_thread::sleep_for(std::chrono::seconds(4));
  EXPECT_EQ(watchdog.recent_calls().find("not finished"), std::string::npos) << watchdog.recent_calls();
}

// In a child process: a watched all_reduce whose work never finishes (or fails), then `wait_seconds` of sleep and a
// clean exit, which the watchdog must pre-empt.
void queue_that_never_finishes(double limit, const std::string & error, int wait_seconds) {
  StandInQueue queue;
  queue.finish(0, error);
  Watchdog watchdog(options_with_limit(limit, error.empty() ? "hung" : "failed"));
  const std::unique_ptr<Comm> world = watched_comm(std::make_unique<QueuedComm>(queue), watchdog);
  NoStream stream;
  float value = 1.0f;
  world->all_reduce(make_view(&value, DType::kF32, {1}), ReduceOp::kSum, stream);
  std::this_thread::sleep_for(std::chrono::seconds(wait_seconds));
  std::exit(0);
}

TEST(WatchdogQueuesDeathTest, WorkNeverFinishedEndsTheJobPastTheLimit) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(queue_that_never_finishes(1.0, "", 30), ::testing::ExitedWithCode(3),
              "watchdog: all_reduce #1 on world \\(4 bytes\\), in it for [0-9.]+ s \\(queued on the device, not "
              "finished\\), over the limit of 1 s");
}

TEST(WatchdogQueuesDeathTest, TransportErrorEndsTheJobAtOnce) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // A limit of 600 s, so only the error can end the child before its 30 s of sleep.
  EXPECT_EXIT(queue_that_never_finishes(600.0, "NCCL: remote process exited or there was a network error", 30),
              ::testing::ExitedWithCode(3),
              "watchdog: all_reduce #1 on world .*: the transport reports an error, so it will never finish: NCCL: "
              "remote process exited");
}

}  // namespace
}  // namespace kosmos::parallel
