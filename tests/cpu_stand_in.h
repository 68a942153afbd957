// cpu_stand_in.h: a test device that hands every call to a CPU device it owns, for tests that need a device the
// CPU is not: one that poses as a GPU (test_staged_comm.cpp) or that reserves no address ranges, as ROCm's
// (test_arena.cpp). It reserves none itself (Device::reserve's default); a test overrides what differs. Its buffers
// are the CPU device's, counted and freed there.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/device.h"
#include "backends/registry.h"

namespace kosmos::testing {

class CpuStandIn : public Device {
 public:
  std::string backend() const override { return "cpu-stand-in"; }
  std::string name() const override { return backend(); }
  std::string description() const override { return "the CPU device, standing in for another"; }
  bool host_accessible() const override { return true; }
  Buffer allocate(size_t bytes, BufferUse use) override { return cpu->allocate(bytes, use); }
  void copy(TensorView dst, TensorView src, Stream & stream) override { cpu->copy(dst, src, stream); }
  std::unique_ptr<Stream> create_stream() override { return cpu->create_stream(); }
  std::unique_ptr<Event> create_event() override { return cpu->create_event(); }
  void record_event(Event & event, Stream & stream) override { cpu->record_event(event, stream); }
  void wait_event(Stream & stream, Event & event) override { cpu->wait_event(stream, event); }
  OpSupport supports(const OpDesc & op) const override { return cpu->supports(op); }
  void run(const OpDesc & op, Stream & stream) override { op_run(*cpu, op, stream); }
  void set_profiling(bool) override {}
  std::vector<std::pair<std::string, OpTime>> profile() const override { return {}; }

  std::unique_ptr<Device> cpu = BackendRegistry().create("cpu", 0);

 protected:
  void free_memory(void *, size_t) override {}  // the CPU device's buffers: it frees them
};

}  // namespace kosmos::testing
