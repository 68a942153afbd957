// device.h: the device interface every backend implements: owning buffers, streams, events, and the op runner.
// A Device is one (backend, ordinal); it is not copyable. Ops reach it only through op_run() (ops.h), which has
// validated the descriptor, so a backend checks nothing but what it alone cannot do (then supports() says why).
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/ops.h"
#include "backends/tensor.h"

namespace kosmos {

class Device;

enum class BufferUse : uint8_t { kWeights, kActivations, kScratch };

// Owns one allocation on a device; move-only; freed by its device when destroyed. A reserved buffer
// (Device::reserve) owns a range of addresses of which the first bytes() are backed by memory; Device::grow backs
// more of them, in place, up to capacity().
class Buffer {
 public:
  Buffer() = default;
  // Counts `bytes` as in use on `device` until released (Device::memory).
  Buffer(Device * device, void * data, size_t bytes);
  // `capacity` bytes of addresses from `base` with no memory behind them yet; counts nothing until grown.
  static Buffer reserved(Device * device, void * base, size_t capacity);
  ~Buffer() { release(); }
  Buffer(Buffer && other) noexcept { *this = std::move(other); }
  Buffer & operator=(Buffer && other) noexcept;
  Buffer(const Buffer &) = delete;
  Buffer & operator=(const Buffer &) = delete;

  void * data() const { return data_; }
  size_t bytes() const { return bytes_; }  // usable (backed by memory)
  size_t capacity() const { return reserved_ ? capacity_ : bytes_; }
  bool is_reserved() const { return reserved_; }
  // A dense view of the first elements of this buffer; fails when the buffer is too small.
  TensorView view(DType dtype, std::initializer_list<int64_t> dims) const;

 private:
  friend class Device;
  void release();
  Device * device_ = nullptr;
  void * data_ = nullptr;
  size_t bytes_ = 0;
  size_t capacity_ = 0;  // addresses of a reserved buffer
  bool reserved_ = false;
};

// An in-order queue of device work. The CPU stream runs each op before op_run returns.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual void synchronize() = 0;
};

// A marker recorded on one stream that another stream can wait for.
class Event {
 public:
  virtual ~Event() = default;
};

// Whether a device implements an op case; the reason says what is missing when it does not.
struct OpSupport {
  bool supported = true;
  std::string reason;
};

class Device {
 public:
  virtual ~Device() = default;
  Device() = default;
  Device(const Device &) = delete;
  Device & operator=(const Device &) = delete;

  virtual std::string backend() const = 0;      // "cpu", "cuda", "rocm"
  virtual std::string name() const = 0;         // "cpu", "cuda:0"
  virtual std::string description() const = 0;  // model, threads or SMs, ISA, memory
  virtual bool host_accessible() const = 0;     // may the host read and write its buffers directly?
  // Whether `pointer` is ordinary host memory rather than this device's (a communicator stages only the latter).
  virtual bool is_host_memory(const void * pointer) const {
    (void)pointer;
    return host_accessible();
  }

  virtual Buffer allocate(size_t bytes, BufferUse use) = 0;
  // A buffer that grows in place: addresses for as many bytes as the device has memory, none of them backed yet
  // (Buffer::reserved). Where the backend has no virtual memory management (ROCm), an empty Buffer: callers then
  // use separate buffers.
  virtual Buffer reserve(BufferUse use) {
    (void)use;
    return {};
  }
  // Backs at least the first `bytes` of a reserved buffer with memory, in the device's granules (counted in
  // memory()); a buffer already that large is left as it is. Fails, naming the sizes, beyond its capacity.
  void grow(Buffer & buffer, size_t bytes);
  // The bytes of the buffers this device has handed out: now, and the most at once since the last reset_peak()
  // (what the model allocates, and the GPU kernels' scratch with cuBLASLt's workspace; what a library allocates on
  // its own, such as oneDNN's scratchpads, the CUDA context or NCCL's buffers, is not counted).
  struct MemoryUse {
    size_t in_use = 0, peak = 0;
  };
  MemoryUse memory() const { return {bytes_in_use_.load(), peak_bytes_.load()}; }
  void reset_peak() { peak_bytes_.store(bytes_in_use_.load()); }
  // The byte multiple this device's GEMM library wants of every leading dimension (1: any): a caller that lays out a
  // product's operands or output itself pads their rows to it (rows of an odd width). cuBLASLt's Hopper kernels load
  // through the TMA unit, which needs 16 (the ROCm build asks the same, untested there); oneDNN runs such products
  // no faster on padded rows (`kosmos bench ops` times both), so the CPU asks for none.
  virtual size_t matmul_row_alignment() const { return 1; }
  // GEMM tuning (--gemm-tuning): a product whose shape, strides, dtypes and alignments are new to the device times up
  // to `candidates` of its GEMM library's algorithms for it, best first by the library's heuristic, on the product's
  // own operands, and keeps the fastest for the rest of the run (0 or 1: the heuristic's first, untimed; set it
  // before the first product). The clock decides, so two tuned runs may choose differently and their results differ
  // in the last bits. Devices with one kernel per product (the CPU's oneDNN, ROCm's own kernels) ignore it.
  virtual void set_gemm_tuning(int candidates) { static_cast<void>(candidates); }
  // What the tuning chose so far, in lines for a log; "" where nothing was tuned.
  virtual std::string gemm_tuning_report() const { return {}; }
  // The i32 words in which this device records the dropout masks of an attention forward for its backward
  // (AttentionForward::keep), or 0 where its backward draws them again (no dropout, or kernels that do not record).
  // The CUDA backend's mma.sync kernels record (kernels_attention_mma.cu); they spend fewer issue slots reading a
  // bit than drawing it, and the backward would draw each twice (dq, then dk and dv).
  virtual int64_t attention_keep_words(const AttentionForward & op) const {
    static_cast<void>(op);
    return 0;
  }
  // Copies between views of equal dtype and dims, each dense; either side may be host memory. On return the host
  // side may be reused (from the host) or read (to the host); the device side is ordered on `stream` like an op's.
  virtual void copy(TensorView dst, TensorView src, Stream & stream) = 0;

  virtual std::unique_ptr<Stream> create_stream() = 0;
  virtual std::unique_ptr<Event> create_event() = 0;
  virtual void record_event(Event & event, Stream & stream) = 0;
  virtual void wait_event(Stream & stream, Event & event) = 0;

  virtual OpSupport supports(const OpDesc & op) const = 0;
  // Runs a validated op; called by op_run() only.
  virtual void run(const OpDesc & op, Stream & stream) = 0;

  // Per-op timing (count and seconds per op name), for --profile. Off by default; may synchronise each op.
  struct OpTime {
    int64_t calls = 0;
    double seconds = 0.0;
  };
  virtual void set_profiling(bool enabled) = 0;
  virtual std::vector<std::pair<std::string, OpTime>> profile() const = 0;

 protected:
  friend class Buffer;
  virtual void free_memory(void * data, size_t bytes) = 0;
  // What reserve() hands out: back [backed, at least wanted) of the range at `base` (wanted <= capacity; returns
  // the new backed size, at most capacity), and give the whole range back. Only devices whose reserve() answers
  // with buffers are asked.
  virtual size_t back_memory(void * base, size_t backed, size_t wanted, size_t capacity);
  virtual void free_reserved(void * base, size_t capacity) noexcept;

 private:
  void count_allocated(size_t bytes);
  void count_freed(size_t bytes) { bytes_in_use_.fetch_sub(bytes); }
  std::atomic<size_t> bytes_in_use_{0}, peak_bytes_{0};
};

}  // namespace kosmos
