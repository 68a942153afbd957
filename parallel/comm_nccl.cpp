// comm_nccl.cpp: NcclComm (comm_nccl.h): NCCL collectives on a stream of their own, ordered by events; host memory,
// point-to-point, barriers and splits through the host communicator. Compiled twice: for CUDA devices (nccl_comm)
// and, with KOSMOS_GPU_EMULATION, against the emulated GPU's runtime and NCCL (emulated_nccl_comm).
#include "parallel/comm_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <deque>
#include <exception>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/gpu_device.h"
#include "backends/error.h"

// A failing NCCL or CUDA runtime call: the call, where, the library's reason and `...` (what was being done).
#define KOSMOS_NCCL_CHECK(call, ...)                                                                              \
  do {                                                                                                            \
    const ncclResult_t nccl_result = (call);                                                                      \
    if (nccl_result != ncclSuccess)                                                                               \
      KOSMOS_FAIL(#call, " failed (", __FILE__, ":", __LINE__, "): ", ncclGetErrorString(nccl_result), " (",   \
                  ncclGetLastError(nullptr), "); ", __VA_ARGS__);                                                 \
  } while (0)
#define KOSMOS_CUDA_RUNTIME_CHECK(call)                                                                           \
  do {                                                                                                            \
    const cudaError_t cuda_result = (call);                                                                       \
    if (cuda_result != cudaSuccess)                                                                               \
      KOSMOS_FAIL(#call, " failed (", __FILE__, ":", __LINE__, "): ", cudaGetErrorString(cuda_result));         \
  } while (0)

namespace kosmos::parallel {
namespace {

#if defined(KOSMOS_GPU_EMULATION)
namespace gpu = ::kosmos::emulated;  // the emulated GPU's streams
#else
namespace gpu = ::kosmos::cuda;
#endif

ncclDataType_t nccl_type(DType dtype, const char * what) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kBF16: return ncclBfloat16;
    case DType::kF16: return ncclFloat16;
    case DType::kI32: return ncclInt32;
  }
  KOSMOS_FAIL(what, ": dtype ", static_cast<int>(dtype), " has no NCCL type; NCCL reduces f32, bf16, f16 and i32");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
  }
  KOSMOS_FAIL("NCCL: reduction ", static_cast<int>(op), " is not one of sum, max");
}

class NcclComm final : public Comm, public DeviceQueue {
 public:
  NcclComm(std::unique_ptr<Comm> host, Device & device)
      : host_(std::move(host)), device_(device), stream_(device.create_stream()) {
    comm_stream_ = static_cast<cudaStream_t>(gpu::native_stream(*stream_));
    KOSMOS_CUDA_RUNTIME_CHECK(cudaGetDevice(&ordinal_));  // the device made current the stream's, for the probe
    KOSMOS_CUDA_RUNTIME_CHECK(cudaEventCreateWithFlags(&caller_ready_, cudaEventDisableTiming));
    KOSMOS_CUDA_RUNTIME_CHECK(cudaEventCreateWithFlags(&collective_done_, cudaEventDisableTiming));
    if (host_->size() == 1) return;  // a group of one calls no collective: no NCCL communicator, no NCCL buffers
    ncclUniqueId id{};
    if (host_->rank() == 0) KOSMOS_NCCL_CHECK(ncclGetUniqueId(&id), "making the communicator's id on rank 0");
    static_assert(sizeof id % sizeof(int32_t) == 0, "ncclUniqueId is sent as i32 words");
    host_->broadcast(make_view(&id, DType::kI32, {static_cast<int64_t>(sizeof id / sizeof(int32_t))}), 0, *stream_);
    KOSMOS_NCCL_CHECK(ncclCommInitRank(&comm_, host_->size(), id, host_->rank()), "joining the communicator of ",
                      host_->size(), " ranks as rank ", host_->rank(),
                      " (each rank needs a GPU of its own: check that ranks per node <= GPUs per node)");
  }
  // While an error unwinds, this rank's queued collectives may wait for peers that will never join them (they wait
  // in turn for this rank): abort them, as ncclCommDestroy would first flush them (ncclCommFinalize) and hang the
  // exit, and with it the launcher's ending of the other ranks.
  ~NcclComm() override {
    if (comm_ != nullptr) std::uncaught_exceptions() > 0 ? ncclCommAbort(comm_) : ncclCommDestroy(comm_);
    cudaEventDestroy(caller_ready_);
    cudaEventDestroy(collective_done_);
    for (cudaEvent_t event : unfinished_) cudaEventDestroy(event);
    for (cudaEvent_t event : spare_events_) cudaEventDestroy(event);
  }
  NcclComm(const NcclComm &) = delete;
  NcclComm & operator=(const NcclComm &) = delete;

  int size() const override { return host_->size(); }
  int rank() const override { return host_->rank(); }

  void all_reduce(TensorView data, ReduceOp op, Stream & stream) override { all_reduce_on(data, op, stream, true); }
  // Queued on the communicator's stream behind the caller's work so far; the caller's stream does not wait for it
  // until wait_reductions (the stream is in order, so its last collective's event covers all before it).
  void all_reduce_async(TensorView data, ReduceOp op, Stream & stream) override {
    all_reduce_on(data, op, stream, false);
  }
  void reduce(TensorView data, int root, ReduceOp op, Stream & stream) override {
    reduce_on(data, root, op, stream, true);
  }
  void reduce_async(TensorView data, int root, ReduceOp op, Stream & stream) override {
    reduce_on(data, root, op, stream, false);
  }
  bool reduces_asynchronously() const override { return true; }  // device buffers; host ones block through MPI
  void wait_reductions(Stream & stream) override {
    if (size() == 1) return;
    KOSMOS_CUDA_RUNTIME_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(gpu::native_stream(stream)),
                                                  collective_done_, 0));
  }
  void all_gather(TensorView out, TensorView in, Stream & stream) override {
    if (in_host_memory({out, in}, "all_gather")) return host_->all_gather(out, in, stream);
    KOSMOS_CHECK(out.numel() == in.numel() * size(), "all_gather: out ", describe(out), " is not ", size(),
                 " times in ", describe(in));
    if (size() == 1) return in.data == out.data ? void() : device_.copy(as_dims_of(out, in), in, stream);
    enqueue(stream, "all_gather", [&](cudaStream_t s) {
      return ncclAllGather(in.data, out.data, count(in), nccl_type(in.dtype, "all_gather"), comm_, s);
    });
  }
  void reduce_scatter(TensorView out, TensorView in, ReduceOp op, Stream & stream) override {
    if (in_host_memory({out, in}, "reduce_scatter")) return host_->reduce_scatter(out, in, op, stream);
    KOSMOS_CHECK(in.numel() == out.numel() * size(), "reduce_scatter: in ", describe(in), " is not ", size(),
                 " times out ", describe(out));
    if (size() == 1) return device_.copy(out, as_dims_of(in, out), stream);
    enqueue(stream, "reduce_scatter", [&](cudaStream_t s) {
      return ncclReduceScatter(in.data, out.data, count(out), nccl_type(in.dtype, "reduce_scatter"), nccl_op(op),
                               comm_, s);
    });
  }
  void broadcast(TensorView data, int root, Stream & stream) override {
    if (size() == 1) return;
    if (in_host_memory({data}, "broadcast")) return host_->broadcast(data, root, stream);
    enqueue(stream, "broadcast", [&](cudaStream_t s) {
      return ncclBroadcast(data.data, data.data, count(data), nccl_type(data.dtype, "broadcast"), root, comm_, s);
    });
  }
  // Point to point: tagged, possibly out of order, so through the host communicator.
  void send(TensorView data, int peer, Stream & stream, int tag) override { host_->send(data, peer, stream, tag); }
  void recv(TensorView data, int peer, Stream & stream, int tag) override { host_->recv(data, peer, stream, tag); }
  void group_begin() override { host_->group_begin(); }
  void group_end() override { host_->group_end(); }
  void send_async(TensorView data, int peer, Stream & stream, int tag) override {
    host_->send_async(data, peer, stream, tag);
  }
  void wait_sends() override { host_->wait_sends(); }
  void barrier() override {
    KOSMOS_CUDA_RUNTIME_CHECK(cudaStreamSynchronize(comm_stream_));  // this rank's collectives have finished
    host_->barrier();
  }
  std::unique_ptr<Comm> split(int color, int key) override {
    return std::make_unique<NcclComm>(host_->split(color, key), device_);
  }
  Comm * wrapped() override { return host_.get(); }
  DeviceQueue * device_queue() override { return comm_ != nullptr ? this : nullptr; }  // a group of one queues none
  int64_t queued() const override {
    const std::lock_guard<std::mutex> lock(finishing_mutex_);
    return finished_ + static_cast<int64_t>(unfinished_.size());
  }
  // From the watchdog's thread: its current device is set first, or its first CUDA call would make a context on
  // device 0 (every rank's, on a multi-GPU node). A device fault stops the count without an error here: the next
  // checked call of the main thread reports it with its place. NCCL reports a lost peer or network as an async error.
  QueueState finished_so_far() override {
    QueueState state;
    {
      const std::lock_guard<std::mutex> lock(finishing_mutex_);
      if (cudaSetDevice(ordinal_) == cudaSuccess) count_finished();
      state.finished = finished_;
    }
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess)
      state.error = std::string("NCCL: ") + ncclGetErrorString(async) + " (" + ncclGetLastError(comm_) + ")";
    return state;
  }

 private:
  static size_t count(const TensorView & view) { return static_cast<size_t>(view.numel()); }
  // A dense view with another's dims (the one-rank gather and scatter: equal counts, maybe other shapes).
  static TensorView as_dims_of(const TensorView & view, const TensorView & shape) {
    return make_view(view.data, view.dtype, shape.ndim, shape.dims.data());
  }

  // NCCL's all-reduce in place, waited for by the caller's stream now or at wait_reductions.
  void all_reduce_on(TensorView data, ReduceOp op, Stream & stream, bool caller_waits) {
    const char * what = caller_waits ? "all_reduce" : "all_reduce_async";
    if (size() == 1) return;
    if (in_host_memory({data}, what)) return host_->all_reduce(data, op, stream);
    enqueue(stream, what, [&](cudaStream_t s) {
      return ncclAllReduce(data.data, data.data, count(data), nccl_type(data.dtype, what), nccl_op(op), comm_, s);
    }, caller_waits);
  }
  // NCCL's reduce in place (the root's buffer receives; the others' are only read), waited for by the caller's
  // stream now or at wait_reductions.
  void reduce_on(TensorView data, int root, ReduceOp op, Stream & stream, bool caller_waits) {
    const char * what = caller_waits ? "reduce" : "reduce_async";
    KOSMOS_CHECK(root >= 0 && root < size(), what, ": root ", root, " is not one of the ", size(), " ranks");
    if (size() == 1) return;
    if (in_host_memory({data}, what)) return host_->reduce(data, root, op, stream);
    enqueue(stream, what, [&](cudaStream_t s) {
      return ncclReduce(data.data, data.data, count(data), nccl_type(data.dtype, what), nccl_op(op), root, comm_, s);
    }, caller_waits);
  }

  // Whether the call's buffers are host memory (then the host communicator takes it); device buffers must be dense,
  // and a call may not mix the two.
  bool in_host_memory(std::initializer_list<TensorView> views, const char * what) const {
    int host = 0;
    for (const TensorView & view : views) {
      host += device_.is_host_memory(view.data) ? 1 : 0;
      KOSMOS_CHECK(view.is_contiguous(), what, ": ", describe(view), " must be dense for NCCL");
    }
    KOSMOS_CHECK(host == 0 || host == static_cast<int>(views.size()), what,
                 ": some buffers are in host memory and some on ", device_.name(), "; give both in the same memory");
    return host > 0;
  }

  // Runs `call` on the communicator's stream after the caller's queued work; the caller's later work waits for it
  // unless `caller_waits` is false (an async reduction, waited for by wait_reductions).
  void enqueue(Stream & stream, const char * what, const std::function<ncclResult_t(cudaStream_t)> & call,
               bool caller_waits = true) {
    const cudaStream_t caller = static_cast<cudaStream_t>(gpu::native_stream(stream));
    KOSMOS_CUDA_RUNTIME_CHECK(cudaEventRecord(caller_ready_, caller));
    KOSMOS_CUDA_RUNTIME_CHECK(cudaStreamWaitEvent(comm_stream_, caller_ready_, 0));
    const ncclResult_t result = call(comm_stream_);
    KOSMOS_CHECK(result == ncclSuccess, "NCCL ", what, " over ", size(), " ranks on ", device_.name(), " failed: ",
                 ncclGetErrorString(result), " (", ncclGetLastError(comm_), ")");
    track_finishing();
    KOSMOS_CUDA_RUNTIME_CHECK(cudaEventRecord(collective_done_, comm_stream_));
    if (caller_waits) KOSMOS_CUDA_RUNTIME_CHECK(cudaStreamWaitEvent(caller, collective_done_, 0));
  }

  // The collective just queued gets an event of its own (DeviceQueue), recorded before collective_done_, so that a
  // wait on that one covers it too; events of finished ones are recycled first, so that the events in flight stay
  // few whether or not a watchdog asks.
  void track_finishing() {
    const std::lock_guard<std::mutex> lock(finishing_mutex_);
    count_finished();
    cudaEvent_t finishing = nullptr;
    if (spare_events_.empty()) {
      KOSMOS_CUDA_RUNTIME_CHECK(cudaEventCreateWithFlags(&finishing, cudaEventDisableTiming));
    } else {
      finishing = spare_events_.back();
      spare_events_.pop_back();
    }
    KOSMOS_CUDA_RUNTIME_CHECK(cudaEventRecord(finishing, comm_stream_));
    unfinished_.push_back(finishing);
  }

  // With finishing_mutex_ held: counts the collectives that have finished, their events asked in queue order up to
  // the first that has not (or that answers an error: a device fault, for the main thread to report).
  void count_finished() {
    while (!unfinished_.empty() && cudaEventQuery(unfinished_.front()) == cudaSuccess) {
      spare_events_.push_back(unfinished_.front());
      unfinished_.pop_front();
      ++finished_;
    }
  }

  std::unique_ptr<Comm> host_;
  Device & device_;
  std::unique_ptr<Stream> stream_;   // the communicator's own stream (a Stream of `device_`)
  cudaStream_t comm_stream_ = nullptr;  // its native handle
  int ordinal_ = 0;                  // the CUDA device of `device_`
  ncclComm_t comm_ = nullptr;        // null in a group of one
  cudaEvent_t caller_ready_ = nullptr, collective_done_ = nullptr;  // reused: a wait takes the latest record
  // Each queued collective's event until it has finished, oldest first, and how many have finished before them:
  // together the DeviceQueue's counts.
  mutable std::mutex finishing_mutex_;
  std::deque<cudaEvent_t> unfinished_;
  std::vector<cudaEvent_t> spare_events_;
  int64_t finished_ = 0;
};

}  // namespace

#if defined(KOSMOS_GPU_EMULATION)
std::unique_ptr<Comm> emulated_nccl_comm(std::unique_ptr<Comm> host, Device & device) {
  KOSMOS_CHECK(takes_emulated_nccl(device.backend()), "the emulated NCCL communicator needs a device of the emulated ",
               "GPU's CUDA build (emulated, emulated-wmma), not ", device.name());
  return std::make_unique<NcclComm>(std::move(host), device);
}
#else
std::unique_ptr<Comm> nccl_comm(std::unique_ptr<Comm> host, Device & device) {
  KOSMOS_CHECK(takes_nccl(device.backend()), "an NCCL communicator needs a CUDA device, not ", device.name(),
               "; use MPI (the CPU) or the staged communicator (ROCm)");
  return std::make_unique<NcclComm>(std::move(host), device);
}
#endif

}  // namespace kosmos::parallel
