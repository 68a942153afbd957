// gpu_profile.h: --profile on a GPU. Each op runs between two events recorded on its stream, and the events are read
// back in batches, so an op's time is the GPU's own and the host never waits per op. (Waiting for the stream before
// and after every op, as the host clock needs, adds the launch and the wait to each op: about 0.5 s over two of the
// paper's steps on an H200, whose ops took 0.8 s.) Where the host launches slower than the GPU runs, the GPU's idle
// time between two events counts to the op between them; ops that overlap on two streams each count the time they
// share, so the ops' sum may exceed the run's time.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "backends/cuda/gpu_kernels.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {

class GpuOpProfile {
 public:
  GpuOpProfile() = default;
  GpuOpProfile(const GpuOpProfile &) = delete;
  GpuOpProfile & operator=(const GpuOpProfile &) = delete;
  ~GpuOpProfile() {  // a destructor's path: no throwing
    for (const Recorded & op : recorded_) spare_.insert(spare_.end(), {op.start, op.end});
    if (open_ != nullptr) spare_.push_back(open_);  // an op that threw between begin and end
    for (cudaEvent_t event : spare_) KOSMOS_GPU_IGNORE(cudaEventDestroy(event));
  }

  // An op begins on `stream`: its start event.
  void begin(cudaStream_t stream) {
    if (open_ != nullptr) spare_.push_back(open_);  // the op begun before threw before its end
    open_ = take_event();
    KOSMOS_GPU_CHECK(cudaEventRecord(open_, stream));
  }
  // The op begun last on `stream` has been queued: its end event, and the name its time adds to.
  void end(cudaStream_t stream, std::string name) {
    const cudaEvent_t finish = take_event();
    KOSMOS_GPU_CHECK(cudaEventRecord(finish, stream));
    recorded_.push_back({open_, finish, std::move(name)});
    open_ = nullptr;
    if (recorded_.size() >= kBatch) settle();
  }
  // Every name's calls and seconds so far (waits for the ops queued and not yet read).
  std::map<std::string, Device::OpTime> totals() {
    settle();
    return totals_;
  }

 private:
  static constexpr size_t kBatch = 4096;  // ops between readings: 8192 events held at most
  struct Recorded {
    cudaEvent_t start, end;
    std::string name;
  };

  cudaEvent_t take_event() {
    if (spare_.empty()) {
      cudaEvent_t event = nullptr;
      KOSMOS_GPU_CHECK(cudaEventCreateWithFlags(&event, 0));  // timed
      return event;
    }
    const cudaEvent_t event = spare_.back();
    spare_.pop_back();
    return event;
  }
  // Reads the recorded ops in order; one whose reading fails (a fault the GPU reports) stays recorded with those
  // after it, so that no event is both recorded and spare, and none is counted twice.
  void settle() {
    size_t read = 0;
    try {
      for (; read < recorded_.size(); ++read) {
        const Recorded & op = recorded_[read];
        KOSMOS_GPU_CHECK(cudaEventSynchronize(op.end));
        float milliseconds = 0.0f;
        KOSMOS_GPU_CHECK(cudaEventElapsedTime(&milliseconds, op.start, op.end));
        Device::OpTime & time = totals_[op.name];
        ++time.calls;
        time.seconds += 1e-3 * milliseconds;
        spare_.insert(spare_.end(), {op.start, op.end});
      }
    } catch (...) {
      recorded_.erase(recorded_.begin(), recorded_.begin() + static_cast<std::ptrdiff_t>(read));
      throw;
    }
    recorded_.clear();
  }

  cudaEvent_t open_ = nullptr;      // the start of the op begun and not yet ended
  std::vector<Recorded> recorded_;  // queued, not yet read
  std::vector<cudaEvent_t> spare_;  // read, to record again
  std::map<std::string, Device::OpTime> totals_;
};

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
