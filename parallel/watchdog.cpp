// watchdog.cpp: the Watchdog's ring of calls, its monitor thread (status file every second, the time limit), the
// report that names who waits for whom, and WatchedComm, the decorator that records every call of a Comm.
#include "parallel/watchdog.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>
#include <utility>

#include "backends/error.h"

namespace kosmos::parallel {
namespace {

constexpr size_t kRecent = 16;                     // calls kept per rank
constexpr std::chrono::seconds kPublishEvery{1};   // status file and time-limit check
constexpr std::chrono::seconds kReportGrace{3};    // after a report: time for the other ranks to print theirs

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

Watchdog::Watchdog(WatchdogOptions options) : options_(std::move(options)) {
  if (options_.timeout_seconds <= 0.0) return;
  std::error_code error;
  std::filesystem::create_directories(options_.status_dir, error);
  KOSMOS_CHECK(!error, "--watchdog-dir ", options_.status_dir, ": cannot create it (", error.message(),
               "); choose a writable folder");
  thread_ = std::thread([this] { monitor(); });
  prober_thread_ = std::thread([this] { prober(); });
}

Watchdog::~Watchdog() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    std::lock_guard<std::mutex> prober_lock(prober_mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  prober_wake_.notify_all();
  thread_.join();
  prober_thread_.join();
  std::error_code ignored;
  std::filesystem::remove(status_path(options_.world_rank), ignored);
}

int64_t Watchdog::begin(const char * op, const std::string & group, int peer, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  Record record;
  record.sequence = next_sequence_++;
  record.call_in_group = ++calls_per_group_[group];
  record.op = op;
  record.group = group;
  record.peer = peer;
  record.bytes = bytes;
  record.start = std::chrono::steady_clock::now();
  records_.push_back(record);
  if (records_.size() > kRecent) records_.pop_front();
  return record.sequence;
}

void Watchdog::end(int64_t sequence) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Record & record : records_)
    if (record.sequence == sequence) {
      record.done = true;
      record.end = std::chrono::steady_clock::now();
    }
}

int64_t Watchdog::add_queue(DeviceQueue & queue, const std::string & group) {
  if (!thread_.joinable()) return 0;  // no monitor (--watchdog-timeout 0): nobody would ever close the calls
  std::lock_guard<std::mutex> lock(queues_mutex_);
  queues_[next_queue_].source = &queue;
  queues_[next_queue_].group = group;
  return next_queue_++;
}

void Watchdog::end_queued(int64_t sequence, int64_t queue, int64_t queued_through) {
  Record queued;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto found =
        std::find_if(records_.begin(), records_.end(), [&](const Record & r) { return r.sequence == sequence; });
    if (found == records_.end()) return;
    found->queued = true;
    found->queued_through = queued_through;
    found->end = std::chrono::steady_clock::now();
    queued = *found;
  }
  std::lock_guard<std::mutex> lock(queues_mutex_);
  const auto found = queues_.find(queue);
  if (found != queues_.end()) found->second.open.push_back(queued);
}

void Watchdog::remove_queue(int64_t queue) {
  std::unique_lock<std::mutex> lock(queues_mutex_);
  const auto found = queues_.find(queue);
  if (found == queues_.end()) return;
  found->second.removing = true;  // asked no more; an asking under way still reads its queue
  queue_answered_.wait(lock, [&] { return !found->second.asking; });
  for (const Record & record : found->second.open) mark_done(record.sequence, std::chrono::steady_clock::now());
  queues_.erase(found);
}

void Watchdog::mark_done(int64_t sequence, std::chrono::steady_clock::time_point finished_by) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Record & record : records_)
    if (record.sequence == sequence) {
      record.done = true;
      record.finished_by = finished_by;
    }
}

// The prober thread: once a second, each queue with open calls asked in turn, with no lock held while it answers (a
// hung driver may keep it from answering: the monitor, which never asks, then sees the asking last and ends the job).
void Watchdog::prober() {
  while (true) {
    {
      std::unique_lock<std::mutex> wake(prober_mutex_);
      if (prober_wake_.wait_for(wake, kPublishEvery, [this] { return stopping_.load(); })) return;
    }
    for (int64_t last = 0;;) {
      DeviceQueue * source = nullptr;
      {
        std::lock_guard<std::mutex> lock(queues_mutex_);
        for (auto it = queues_.upper_bound(last); it != queues_.end() && source == nullptr; ++it) {
          last = it->first;
          Queue & queue = it->second;
          if (queue.open.empty() || queue.removing) continue;
          queue.asking = true;
          queue.asking_since = std::chrono::steady_clock::now();
          source = queue.source;
        }
      }
      if (source == nullptr) break;
      const auto asked = std::chrono::steady_clock::now();
      const QueueState answer = source->finished_so_far();
      {
        std::lock_guard<std::mutex> lock(queues_mutex_);
        Queue & queue = queues_.at(last);
        queue.asking = false;
        queue.answered = true;
        queue.answer = answer;
        queue.answer_asked = asked;
      }
      queue_answered_.notify_all();
    }
  }
}

// The monitor's look at the queues (it never asks one itself): calls the latest answers show finished are closed;
// the job ends for an asking that has not returned within the limit, an error the transport reports, or a call still
// open in an answer asked for more than the limit after the call began.
void Watchdog::check_queues() {
  std::lock_guard<std::mutex> lock(queues_mutex_);
  const auto now = std::chrono::steady_clock::now();
  for (auto & [id, queue] : queues_) {
    // First, open calls or not: an earlier answer may have closed them all since the asking began.
    if (queue.asking && seconds_between(queue.asking_since, now) > options_.timeout_seconds) {
      std::ostringstream cause;
      cause << std::fixed << std::setprecision(3) << "the device does not answer: asking it whether its collectives "
            << "have finished has not returned in " << seconds_between(queue.asking_since, now) << " s";
      Record asking;  // the call to name when none is open
      asking.op = "device_query";
      asking.group = queue.group;
      asking.start = queue.asking_since;
      report_and_exit(queue.open.empty() ? asking : queue.open.front(), cause.str());
    }
    if (queue.open.empty() || !queue.answered) continue;
    if (!queue.answer.error.empty()) report_and_exit(queue.open.front(), queue.answer.error);
    while (!queue.open.empty() && queue.open.front().queued_through <= queue.answer.finished) {
      mark_done(queue.open.front().sequence, queue.answer_asked);
      queue.open.pop_front();
    }
    if (!queue.open.empty() &&
        seconds_between(queue.open.front().start, queue.answer_asked) > options_.timeout_seconds)
      report_and_exit(queue.open.front());
  }
}

std::string Watchdog::describe(const Record & r, std::chrono::steady_clock::time_point now) const {
  std::ostringstream out;
  out << r.op << " #" << r.call_in_group << " on " << r.group;
  if (r.peer >= 0) out << " with peer " << r.peer;
  out << " (" << r.bytes << " bytes), " << std::fixed << std::setprecision(3);
  if (r.queued && r.done)
    out << "queued in " << seconds_between(r.start, r.end) << " s, finished on the device within "
        << seconds_between(r.start, r.finished_by) << " s";
  else if (r.done) out << "took " << seconds_between(r.start, r.end) << " s";
  else out << "in it for " << seconds_between(r.start, now) << " s";
  if (r.queued && !r.done) out << " (queued on the device, not finished)";
  return out.str();
}

std::string Watchdog::recent_calls() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  std::string text;
  for (const Record & record : records_) text += "  " + describe(record, now) + "\n";
  return text;
}

std::string Watchdog::status_path(int rank) const {
  return (std::filesystem::path(options_.status_dir) / ("rank_" + std::to_string(rank) + ".status")).string();
}

// One line: "in <op> #<n> on <group> ..." or "between calls; the last: ...". Written whole, then renamed.
void Watchdog::publish_status() const {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    const auto open = std::find_if(records_.rbegin(), records_.rend(), [](const Record & r) { return !r.done; });
    if (open != records_.rend())
      line = "inside " + describe(*open, now) + (stalling_.load() ? " [stalled by the test hook]" : "");
    else if (!records_.empty()) line = "between calls; the last: " + describe(records_.back(), now);
    else line = "before its first call";
  }
  const std::string path = status_path(options_.world_rank), temporary = path + ".partial";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << line << "\n";
  }
  std::error_code ignored;
  std::filesystem::rename(temporary, path, ignored);
}

void Watchdog::monitor() {
  std::unique_lock<std::mutex> lock(wake_mutex_);
  while (!stopping_.load()) {
    wake_.wait_for(lock, kPublishEvery, [this] { return stopping_.load(); });
    if (stopping_.load()) break;
    publish_status();
    check_queues();
    Record stuck;
    bool found = false;
    {
      std::lock_guard<std::mutex> records_lock(mutex_);
      const auto now = std::chrono::steady_clock::now();
      for (const Record & record : records_)
        if (!record.done && !record.queued && seconds_between(record.start, now) > options_.timeout_seconds) {
          stuck = record;
          found = true;
          break;
        }
    }
    if (found) report_and_exit(stuck);
  }
}

void Watchdog::report_and_exit(const Record & stuck, const std::string & cause) {
  const auto now = std::chrono::steady_clock::now();
  std::ostringstream out;
  const std::string prefix = "[rank " + std::to_string(options_.world_rank) + "] watchdog: ";
  if (cause.empty())
    out << prefix << describe(stuck, now) << ", over the limit of " << options_.timeout_seconds
        << " s (--watchdog-timeout); this rank's last calls:\n";
  else
    out << prefix << describe(stuck, now) << ", and it will never finish: " << cause << "; this rank's last calls:\n";
  out << recent_calls();
  // What every rank said last (their status files): which are inside a call, which are behind.
  out << prefix << "what every rank is doing (" << options_.status_dir << "):\n";
  std::vector<int> holding_up;  // ranks between calls (or stalled by the test hook) while others wait in one
  for (int rank = 0; rank < options_.world_size; ++rank) {
    std::ifstream in(status_path(rank));
    std::string line;
    if (!std::getline(in, line)) line = "no status (not started, or on another node)";
    out << "  rank " << rank << ": " << line << "\n";
    if (line.rfind("inside ", 0) != 0 || line.find("[stalled") != std::string::npos) holding_up.push_back(rank);
  }
  if (stalling_.load()) {
    out << prefix << "this rank is stalled inside the call by the test hook; ending the job\n";
  } else if (!holding_up.empty()) {
    out << prefix << "rank " << options_.world_rank << " waits for rank" << (holding_up.size() > 1 ? "s" : "");
    for (size_t i = 0; i < holding_up.size(); ++i) out << (i ? ", " : " ") << holding_up[i];
    out << " (not inside a call, or stalled); ending the job\n";
  } else {
    out << prefix << "every rank is inside a call: mismatched calls or a hung transport (compare the calls above); "
                     "ending the job\n";
  }
  const std::string text = out.str();
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
  std::this_thread::sleep_for(kReportGrace);
  std::_Exit(options_.exit_code);
}

namespace {

// Records each call of `inner` with the watchdog; the test hook's stall happens inside the call, after it is recorded.
// Where `inner` queues its collectives on a device (Comm::device_queue), each stays open until its work has finished.
class WatchedComm final : public Comm {
 public:
  WatchedComm(std::unique_ptr<Comm> inner, Watchdog & watchdog, std::string group)
      : inner_(std::move(inner)), watchdog_(watchdog), group_(std::move(group)), device_queue_(inner_->device_queue()) {
    if (device_queue_ != nullptr) queue_ = watchdog_.add_queue(*device_queue_, group_);
  }
  // Ending an NCCL communicator waits for its queued collectives, and removing its queue for an asking under way: a
  // hung device keeps this call open.
  ~WatchedComm() override {
    watched("destroy", -1, 0, [&] {
      if (queue_ != 0) watchdog_.remove_queue(queue_);
      inner_.reset();
    });
  }
  WatchedComm(const WatchedComm &) = delete;
  WatchedComm & operator=(const WatchedComm &) = delete;

  int size() const override { return inner_->size(); }
  int rank() const override { return inner_->rank(); }
  void all_reduce(TensorView data, ReduceOp op, Stream & stream) override {
    collective("all_reduce", -1, bytes(data), [&] { inner_->all_reduce(data, op, stream); });
  }
  void all_gather(TensorView out, TensorView in, Stream & stream) override {
    collective("all_gather", -1, bytes(out), [&] { inner_->all_gather(out, in, stream); });
  }
  void reduce_scatter(TensorView out, TensorView in, ReduceOp op, Stream & stream) override {
    collective("reduce_scatter", -1, bytes(in), [&] { inner_->reduce_scatter(out, in, op, stream); });
  }
  void reduce(TensorView data, int root, ReduceOp op, Stream & stream) override {
    collective("reduce", root, bytes(data), [&] { inner_->reduce(data, root, op, stream); });
  }
  void broadcast(TensorView data, int root, Stream & stream) override {
    collective("broadcast", root, bytes(data), [&] { inner_->broadcast(data, root, stream); });
  }
  void send(TensorView data, int peer, Stream & stream, int tag) override {
    watched("send", peer, bytes(data), [&] { inner_->send(data, peer, stream, tag); });
  }
  void recv(TensorView data, int peer, Stream & stream, int tag) override {
    watched("recv", peer, bytes(data), [&] { inner_->recv(data, peer, stream, tag); });
  }
  void group_begin() override { inner_->group_begin(); }
  void group_end() override { watched("group_end", -1, 0, [&] { inner_->group_end(); }); }
  void send_async(TensorView data, int peer, Stream & stream, int tag) override {
    watched("send_async", peer, bytes(data), [&] { inner_->send_async(data, peer, stream, tag); });
  }
  void wait_sends() override { watched("wait_sends", -1, 0, [&] { inner_->wait_sends(); }); }
  void all_reduce_async(TensorView data, ReduceOp op, Stream & stream) override {
    collective("all_reduce_async", -1, bytes(data), [&] { inner_->all_reduce_async(data, op, stream); });
  }
  void reduce_async(TensorView data, int root, ReduceOp op, Stream & stream) override {
    collective("reduce_async", root, bytes(data), [&] { inner_->reduce_async(data, root, op, stream); });
  }
  bool reduces_asynchronously() const override { return inner_->reduces_asynchronously(); }
  void progress() override { inner_->progress(); }
  void wait_reductions(Stream & stream) override {
    watched("wait_reductions", -1, 0, [&] { inner_->wait_reductions(stream); });
  }
  void barrier() override { watched("barrier", -1, 0, [&] { inner_->barrier(); }); }
  std::unique_ptr<Comm> split(int color, int key) override {
    std::unique_ptr<Comm> part = inner_->split(color, key);
    const std::string name = "group " + std::to_string(color) + " of " + std::to_string(part->size()) + " ranks";
    return std::make_unique<WatchedComm>(std::move(part), watchdog_, name);
  }
  Comm * wrapped() override { return inner_.get(); }

 private:
  static int64_t bytes(const TensorView & view) {
    return view.present() ? view.numel() * static_cast<int64_t>(dtype_size(view.dtype)) : 0;
  }
  // A call that is over when it returns (`queues`: false), or a collective whose work may still be queued then.
  template <typename Call>
  void watched(const char * op, int peer, int64_t size, Call && call, bool queues = false) {
    const int64_t sequence = watchdog_.begin(op, group_, peer, size);
    const double stall = watchdog_.take_stall();
    if (stall > 0.0) {
      watchdog_.mark_stalling(true);
      std::this_thread::sleep_for(std::chrono::duration<double>(stall));
      watchdog_.mark_stalling(false);
    }
    call();
    if (queues && queue_ != 0) watchdog_.end_queued(sequence, queue_, device_queue_->queued());
    else watchdog_.end(sequence);
  }
  template <typename Call>
  void collective(const char * op, int peer, int64_t size, Call && call) {
    watched(op, peer, size, std::forward<Call>(call), true);
  }

  std::unique_ptr<Comm> inner_;
  Watchdog & watchdog_;
  std::string group_;
  DeviceQueue * device_queue_;  // inner_'s (Comm::device_queue); null: its calls finish before they return
  int64_t queue_ = 0;           // the watchdog's id of it
};

}  // namespace

std::unique_ptr<Comm> watched_comm(std::unique_ptr<Comm> inner, Watchdog & watchdog, std::string group) {
  return std::make_unique<WatchedComm>(std::move(inner), watchdog, std::move(group));
}

}  // namespace kosmos::parallel
