// watchdog.h: no silent hangs. Every collective and point-to-point call through a watched communicator is recorded
// (sequence number, operation, the group's world ranks, peer, bytes, start and end) in a per-rank ring; a monitor
// thread publishes this rank's state to a status file in a shared folder every second and, when a call has not
// completed within the time limit, prints this rank's recent calls and what every rank is doing (from their status
// files: who is inside which call, who is behind), then ends the process so the launcher tears the job down.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "parallel/comm.h"

namespace kosmos::parallel {

struct WatchdogOptions {
  double timeout_seconds = 600.0;  // a call longer than this ends the job (0: no watchdog)
  std::string status_dir;          // a folder every rank can write (shared by the job's ranks on one node at least)
  int world_rank = 0;
  int world_size = 1;
  int exit_code = 3;               // the process's exit status after a report
};

class Watchdog {
 public:
  explicit Watchdog(WatchdogOptions options);
  ~Watchdog();
  Watchdog(const Watchdog &) = delete;
  Watchdog & operator=(const Watchdog &) = delete;

  // Bookkeeping of one call: begin() returns its sequence number, end() marks it complete.
  int64_t begin(const char * op, const std::string & group, int peer, int64_t bytes);
  void end(int64_t sequence);
  // Queued device work (Comm::device_queue). A communicator whose collectives return once queued adds its queue;
  // each such call ends with end_queued(), saying how many collectives the queue held after it, and stays open until
  // the queue says that many have finished. A prober thread asks each queue with open calls once a second; the
  // monitor ends the job when an answer asked more than the limit after a call began still has it open, when the
  // transport reports an error, or when the asking itself has not returned within the limit (a hung driver).
  // add_queue returns 0, watching nothing, when the watchdog is off; remove_queue waits for an asking under way.
  int64_t add_queue(DeviceQueue & queue, const std::string & group);
  void end_queued(int64_t sequence, int64_t queue, int64_t queued_through);
  void remove_queue(int64_t queue);  // the communicator is going: its open calls no longer count
  // A test hook: the next call begun sleeps this long inside it, as a stalled rank would.
  void stall_next_call(double seconds) { stall_seconds_.store(seconds); }
  double take_stall() { return stall_seconds_.exchange(0.0); }
  void mark_stalling(bool stalling) { stalling_.store(stalling); }

  // This rank's recent calls, newest last, one per line.
  std::string recent_calls() const;

 private:
  struct Record {
    int64_t sequence = 0;           // over all of this rank's calls
    int64_t call_in_group = 0;      // the n-th call on its group: equal on the ranks of a group in the same call
    std::string op, group;
    int peer = -1;
    int64_t bytes = 0;
    std::chrono::steady_clock::time_point start, end;
    bool done = false;
    bool queued = false;  // returned (at `end`), its work still queued on the device
    int64_t queued_through = 0;  // finished once the queue's first this many collectives have
    std::chrono::steady_clock::time_point finished_by;  // a queued one: when the queue was seen past it
  };
  struct Queue {
    DeviceQueue * source = nullptr;
    std::string group;        // its communicator's, as the calls name it
    std::deque<Record> open;  // its calls not known to have finished, oldest first
    bool asking = false, removing = false;
    std::chrono::steady_clock::time_point asking_since;
    bool answered = false;  // the latest answer, and when it was asked for
    QueueState answer;
    std::chrono::steady_clock::time_point answer_asked;
  };
  void monitor();
  void prober();
  void check_queues();
  void mark_done(int64_t sequence, std::chrono::steady_clock::time_point finished_by);
  void publish_status() const;
  std::string status_path(int rank) const;
  std::string describe(const Record & record, std::chrono::steady_clock::time_point now) const;
  // `cause`: why the call will never finish (a transport error, a device that does not answer), where that is known.
  [[noreturn]] void report_and_exit(const Record & stuck, const std::string & cause = {});

  WatchdogOptions options_;
  mutable std::mutex mutex_;
  std::deque<Record> records_;  // the last kRecent calls
  int64_t next_sequence_ = 1;
  std::map<std::string, int64_t> calls_per_group_;
  std::mutex queues_mutex_;  // taken before mutex_ where both are held
  std::condition_variable queue_answered_;  // an asking has returned
  std::map<int64_t, Queue> queues_;
  int64_t next_queue_ = 1;
  std::atomic<double> stall_seconds_{0.0};
  std::atomic<bool> stalling_{false};
  std::atomic<bool> stopping_{false};
  std::condition_variable wake_;
  std::mutex wake_mutex_;
  std::thread thread_;
  std::condition_variable prober_wake_;
  std::mutex prober_mutex_;
  std::thread prober_thread_;
};

// `inner` with every call recorded by `watchdog` (which must outlive it and its splits); `group` names its ranks
// in the reports ("world", or the world ranks of a split).
std::unique_ptr<Comm> watched_comm(std::unique_ptr<Comm> inner, Watchdog & watchdog, std::string group = "world");

}  // namespace kosmos::parallel
