// test_watchdog_queues.cpp: the watchdog over a communicator whose collectives return once queued on a device and
// finish later (Comm::device_queue, NCCL's way), through a stand-in transport whose queue answers what the test
// says: such a call stays open after it returns until the queue says its own collective has finished (not only the
// ones before it); work that never finishes ends the process past the limit, naming the call; so does a device that
// does not answer the asking; a transport error ends it at once. (The NcclComm tests check NCCL's own queue on the
// emulated GPU; tests/check_watchdog.sh a stalled host call over MPI.)
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/watchdog.h"

namespace kosmos::parallel {
namespace {

// The stand-in's device queue: its collectives count as queued; the test says how many have finished, that the
// transport failed, or that asking hangs (a hung driver). Asked from the watchdog's prober thread.
class StandInQueue final : public DeviceQueue {
 public:
  void queue_one() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++queued_;
  }
  void finish(int64_t count, const std::string & error = "") {
    std::lock_guard<std::mutex> lock(mutex_);
    state_ = {count, error};
  }
  void hang() {
    std::lock_guard<std::mutex> lock(mutex_);
    hung_ = true;
  }
  int64_t queued() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return queued_;
  }
  QueueState finished_so_far() override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (hung_) never_.wait(lock, [] { return false; });
    return state_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable never_;
  int64_t queued_ = 0;
  QueueState state_;
  bool hung_ = false;
};

// A group of one whose collectives return at once, leaving their work in `queue` (as far as it says).
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
  DeviceQueue * device_queue() override { return &queue_; }

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

// Polls `watchdog.recent_calls()` for up to 5 s (the prober asks the queue once a second) until it holds `text`.
bool recent_calls_come_to_hold(const Watchdog & watchdog, const std::string & text) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    if (watchdog.recent_calls().find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// One all-reduce of a float through `world` (the stand-in queues it).
void all_reduce_one(Comm & world) {
  NoStream stream;
  float value = 1.0f;
  world.all_reduce(make_view(&value, DType::kF32, {1}), ReduceOp::kSum, stream);
}

TEST(WatchdogQueues, CallStaysOpenUntilItsCollectiveHasFinished) {
  StandInQueue queue;
  Watchdog watchdog(options_with_limit(60.0, "open"));
  {
    const std::unique_ptr<Comm> world = watched_comm(std::make_unique<QueuedComm>(queue), watchdog);
    all_reduce_one(*world);
    NoStream stream;
    float value = 1.0f;
    world->broadcast(make_view(&value, DType::kF32, {1}), 0, stream);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the prober has asked at least once
    const std::string both_open = watchdog.recent_calls();
    EXPECT_NE(both_open.find("all_reduce #1 on world (4 bytes), in it for"), std::string::npos) << both_open;
    EXPECT_NE(both_open.find("broadcast #2 on world with peer 0 (4 bytes), in it for"), std::string::npos) << both_open;
    EXPECT_NE(both_open.find("(queued on the device, not finished)"), std::string::npos) << both_open;
    queue.finish(1);  // the all-reduce's collective, not the broadcast's
    EXPECT_TRUE(recent_calls_come_to_hold(watchdog, "all_reduce #1 on world (4 bytes), queued in "))
        << watchdog.recent_calls();
    EXPECT_NE(watchdog.recent_calls().find("broadcast #2 on world with peer 0 (4 bytes), in it for"),
              std::string::npos) << watchdog.recent_calls();
    queue.finish(2);
    EXPECT_TRUE(recent_calls_come_to_hold(watchdog, "broadcast #2 on world with peer 0 (4 bytes), queued in "))
        << watchdog.recent_calls();
    EXPECT_NE(watchdog.recent_calls().find(" s, finished on the device within "), std::string::npos);
    // A barrier (the group's third call) finishes before it returns: never queued.
    world->barrier();
    EXPECT_NE(watchdog.recent_calls().find("barrier #3 on world (0 bytes), took "), std::string::npos);
  }
}

TEST(WatchdogQueues, AGoingCommunicatorsOpenCallsNoLongerCount) {
  StandInQueue queue;
  Watchdog watchdog(options_with_limit(2.0, "removed"));
  all_reduce_one(*watched_comm(std::make_unique<QueuedComm>(queue), watchdog));  // the communicator goes after it
  // Past the 2 s limit with the communicator gone: the call is closed, and the process lives on.
  std::this_thread::sleep_for(std::chrono::seconds(4));
  EXPECT_EQ(watchdog.recent_calls().find("not finished"), std::string::npos) << watchdog.recent_calls();
}

// In a child process: a watched all_reduce whose work never finishes (with the transport's `error`, or with the
// asking hung), then 30 s of sleep and a clean exit, which the watchdog must pre-empt.
void queue_that_never_finishes(double limit, const std::string & error, bool asking_hangs) {
  StandInQueue queue;
  queue.finish(0, error);
  if (asking_hangs) queue.hang();
  Watchdog watchdog(options_with_limit(limit, "never"));
  const std::unique_ptr<Comm> world = watched_comm(std::make_unique<QueuedComm>(queue), watchdog);
  all_reduce_one(*world);
  std::this_thread::sleep_for(std::chrono::seconds(30));
  std::exit(0);
}

TEST(WatchdogQueuesDeathTest, WorkNeverFinishedEndsTheJobPastTheLimit) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(queue_that_never_finishes(1.0, "", false), ::testing::ExitedWithCode(3),
              "watchdog: all_reduce #1 on world \\(4 bytes\\), in it for [0-9.]+ s \\(queued on the device, not "
              "finished\\), over the limit of 1 s");
}

TEST(WatchdogQueuesDeathTest, TransportErrorEndsTheJobAtOnce) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  // A limit of 600 s, so only the error can end the child before its 30 s of sleep.
  EXPECT_EXIT(queue_that_never_finishes(600.0, "NCCL: remote process exited or there was a network error", false),
              ::testing::ExitedWithCode(3),
              "watchdog: all_reduce #1 on world .*, and it will never finish: NCCL: remote process exited");
}

TEST(WatchdogQueuesDeathTest, DeviceThatDoesNotAnswerEndsTheJobPastTheLimit) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(queue_that_never_finishes(2.0, "", true), ::testing::ExitedWithCode(3),
              "watchdog: all_reduce #1 on world .*, and it will never finish: the device does not answer: asking "
              "it whether its collectives have finished has not returned in [0-9.]+ s");
}

}  // namespace
}  // namespace kosmos::parallel
