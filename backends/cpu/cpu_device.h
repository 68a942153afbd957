// cpu_device.h: the CPU backend: oneDNN for matmul, layernorm and eltwise (primitives created once per shape and
// kept), own OpenMP kernels for the rest. Its stream is in-order and synchronous: an op has finished when op_run
// returns, so events are trivially complete.
#pragma once

#include <map>
#include <memory>

#include "backends/device.h"
#include "backends/registry.h"

namespace kosmos::cpu {

class CpuContext;

class CpuDevice final : public Device {
 public:
  CpuDevice();
  ~CpuDevice() override;

  std::string backend() const override { return "cpu"; }
  std::string name() const override { return "cpu"; }
  std::string description() const override;
  bool host_accessible() const override { return true; }

  Buffer allocate(size_t bytes, BufferUse use) override;
  // Addresses for as much as the machine's memory (mmap, no access); grow() opens granules of 2 MiB for reading
  // and writing, which the kernel backs with pages as they are first touched.
  Buffer reserve(BufferUse use) override;
  void copy(TensorView dst, TensorView src, Stream & stream) override;

  std::unique_ptr<Stream> create_stream() override;
  std::unique_ptr<Event> create_event() override;
  void record_event(Event & event, Stream & stream) override;
  void wait_event(Stream & stream, Event & event) override;

  OpSupport supports(const OpDesc & op) const override;
  void run(const OpDesc & op, Stream & stream) override;
  void set_profiling(bool enabled) override { profiling_ = enabled; }
  std::vector<std::pair<std::string, OpTime>> profile() const override;

 protected:
  void free_memory(void * data, size_t bytes) override;
  size_t back_memory(void * base, size_t backed, size_t wanted, size_t capacity) override;
  void free_reserved(void * base, size_t capacity) noexcept override;

 private:
  std::unique_ptr<CpuContext> context_;
  bool profiling_ = false;
  std::map<std::string, OpTime> op_times_;
};

BackendEntry cpu_backend_entry();

// What `kosmos info` and the benchmarks print about this machine: CPU model, threads, oneDNN version and ISA.
std::string cpu_machine_summary();

}  // namespace kosmos::cpu
