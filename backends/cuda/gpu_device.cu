// gpu_device.cu: GpuDevice, one GPU (CUDA, or ROCm through hipcc): device memory, streams and events, copies to
// and from the host (to the device through pinned staging, queued), exhaustive op dispatch to gpu_op(), optional
// per-op timing; its GpuContext; and the backend's registry entry. Device memory is taken only when a Buffer is made
// or grown (the model's arenas and the kernels' scratch), never given back inside a run: steps of the shapes seen
// before allocate nothing.
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <type_traits>
#include <vector>

#include "backends/cuda/gpu_device.h"
#include "backends/cuda/gpu_kernels.h"
#include "backends/cuda/gpu_profile.h"
#include "backends/cuda/reserved_memory.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {

GpuContext::GpuContext(Device & device, int ordinal, GemmPath gemm_path, AttentionKernels attention_kernels)
    : gemm_path_(gemm_path),
      attention_kernels_(attention_kernels),
      gemm_plans_(make_gemm_plans(ordinal)),
      device_(device) {}

void * GpuContext::scratch(int slot, size_t bytes, cudaStream_t stream) {
  Buffer & buffer = scratch_[slot];
  if (buffer.bytes() >= bytes) return buffer.data();
  if (ranges_reserved_ && !buffer.is_reserved()) {
    buffer = device_.reserve(BufferUse::kScratch);
    ranges_reserved_ = buffer.is_reserved();
  }
  if (buffer.is_reserved()) {
    device_.grow(buffer, bytes);  // the memory already mapped stays where it is
    return buffer.data();
  }
  KOSMOS_GPU_CHECK(cudaStreamSynchronize(stream));  // kernels may still read the old block
  scratch_tags_[slot] = ScratchTag{};                // the new block holds nothing yet
  buffer = Buffer();
  buffer = device_.allocate((bytes + 255) / 256 * 256 * 2, BufferUse::kScratch);  // room to grow
  return buffer.data();
}

namespace {

// The native handles of the streams a device has made and not yet destroyed (each GpuStream adds and removes its
// own; shared, so that a stream outliving its device by mistake touches no freed set). Unlocked: a device's streams
// are made and destroyed on the thread that drives it, as its ops are run.
using LiveStreams = std::set<cudaStream_t>;

class GpuStream final : public Stream {
 public:
  GpuStream(int ordinal, std::shared_ptr<LiveStreams> live) : ordinal_(ordinal), live_(std::move(live)) {
    KOSMOS_GPU_CHECK(cudaSetDevice(ordinal_));
    KOSMOS_GPU_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    live_->insert(stream_);
  }
  ~GpuStream() override {
    live_->erase(stream_);
    KOSMOS_GPU_IGNORE(cudaSetDevice(ordinal_));
    KOSMOS_GPU_IGNORE(cudaStreamDestroy(stream_));
  }
  void synchronize() override { KOSMOS_GPU_CHECK(cudaStreamSynchronize(stream_)); }
  cudaStream_t native() const { return stream_; }

 private:
  int ordinal_;
  std::shared_ptr<LiveStreams> live_;
  cudaStream_t stream_ = nullptr;
};

class GpuEvent final : public Event {
 public:
  explicit GpuEvent(int ordinal) : ordinal_(ordinal) {
    KOSMOS_GPU_CHECK(cudaSetDevice(ordinal_));
    KOSMOS_GPU_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
  }
  ~GpuEvent() override {
    KOSMOS_GPU_IGNORE(cudaSetDevice(ordinal_));
    KOSMOS_GPU_IGNORE(cudaEventDestroy(event_));
  }
  cudaEvent_t native() const { return event_; }

 private:
  int ordinal_;
  cudaEvent_t event_ = nullptr;
};

// Pinned host memory through which a copy from the host reaches the device without waiting for the stream: the
// source is copied here at once (the caller may reuse it on return) and the transfer queued behind the stream's work,
// where a copy from pageable memory waited for all of it (the step's uploads of token ids and images stopped the
// GPU until the host caught up). Taken in two halves in turn; before a half is written again, the transfers queued
// from it last time have run (an event recorded after each, on whichever stream it went). A copy larger than a half,
// or one made where pinned memory cannot be had, is not taken (the caller copies and waits, as before).
class HostStaging {
 public:
  static constexpr size_t kHalfBytes = size_t{16} << 20;

  HostStaging() = default;
  HostStaging(const HostStaging &) = delete;
  HostStaging & operator=(const HostStaging &) = delete;
  ~HostStaging() {  // after ~GpuDevice's wait: nothing reads the halves any more
    for (std::vector<cudaEvent_t> & events : queued_) spare_.insert(spare_.end(), events.begin(), events.end());
    for (cudaEvent_t event : spare_) KOSMOS_GPU_IGNORE(cudaEventDestroy(event));
    if (base_ != nullptr) KOSMOS_GPU_IGNORE(cudaFreeHost(base_));
  }

  // Queues `bytes` of host memory at `source` to device memory at `target` on `stream`; false where it did not.
  bool copy_to_device(void * target, const void * source, size_t bytes, cudaStream_t stream) {
    if (bytes > kHalfBytes || unavailable_) return false;
    if (base_ == nullptr) {
      void * base = nullptr;
      const cudaError_t status = cudaHostAlloc(&base, 2 * kHalfBytes, cudaHostAllocDefault);
      if (status != cudaSuccess) {  // no pinned memory: every copy waits, as before, and the run says so once
        KOSMOS_GPU_IGNORE(cudaGetLastError());
        std::fprintf(stderr, "kosmos: warning: " KOSMOS_GPU_VENDOR " device: cudaHostAlloc of %zu bytes of pinned "
                     "host memory failed (%s); copies from the host wait for the stream instead (check the memory "
                     "lock limit, ulimit -l)\n", 2 * kHalfBytes, cudaGetErrorString(status));
        unavailable_ = true;
        return false;
      }
      base_ = static_cast<unsigned char *>(base);
    }
    const size_t rounded = (bytes + 255) / 256 * 256;
    if (used_ + rounded > kHalfBytes) {  // the other half, once the transfers queued from it have run
      std::vector<cudaEvent_t> & other = queued_[half_ ^ 1];
      for (cudaEvent_t event : other) KOSMOS_GPU_CHECK(cudaEventSynchronize(event));
      spare_.insert(spare_.end(), other.begin(), other.end());
      other.clear();
      half_ ^= 1;
      used_ = 0;
    }
    unsigned char * staged = base_ + static_cast<size_t>(half_) * kHalfBytes + used_;
    used_ += rounded;
    std::memcpy(staged, source, bytes);
    KOSMOS_GPU_CHECK(cudaMemcpyAsync(target, staged, bytes, cudaMemcpyDefault, stream));
    cudaEvent_t event = nullptr;
    if (spare_.empty()) {
      KOSMOS_GPU_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    } else {
      event = spare_.back();
      spare_.pop_back();
    }
    queued_[half_].push_back(event);
    KOSMOS_GPU_CHECK(cudaEventRecord(event, stream));
    return true;
  }

 private:
  unsigned char * base_ = nullptr;  // two halves of kHalfBytes
  bool unavailable_ = false;
  int half_ = 0;
  size_t used_ = 0;                        // bytes of the current half taken
  std::vector<cudaEvent_t> queued_[2];     // recorded after each transfer from each half since it was last taken
  std::vector<cudaEvent_t> spare_;         // made before, free to record again
};

cudaStream_t native_of(Stream & stream) {
  auto * gpu = dynamic_cast<GpuStream *>(&stream);
  KOSMOS_CHECK(gpu != nullptr, KOSMOS_GPU_VENDOR " device: the stream was not made by a " KOSMOS_GPU_VENDOR
                                                 " device; create streams with the device that runs the op");
  return gpu->native();
}

std::string device_summary(int ordinal) {
  cudaDeviceProp properties{};
  KOSMOS_GPU_CHECK(cudaGetDeviceProperties(&properties, ordinal));
  std::ostringstream out;
  out << properties.name << ", " << properties.multiProcessorCount << " SMs, "
      << properties.totalGlobalMem / (1024.0 * 1024.0 * 1024.0) << " GiB, "
#if defined(KOSMOS_USE_ROCM)
      << properties.gcnArchName
#else
      << "sm_" << properties.major << properties.minor
#endif
      << ", GEMM " << gemm_library_name();
  return out.str();
}

// "[16384, 2048]"
std::string dims_text(const TensorView & view) {
  std::string text = "[";
  for (int i = 0; i < view.ndim; ++i) text += (i ? ", " : "") + std::to_string(view.dims[i]);
  return text + "]";
}

// The name --profile gives an op, saying which slower kernel ran it where it left its fast path
// (GpuContext::slow_paths: matmul and attention only); for those two, after a tab, the shape it ran at
// ("[16384, 2048] x [6144, 2048]^T bf16 -> bf16"), by which the profile lists them too.
std::string profile_name(const OpDesc & op, bool slow_path) {
  std::string name = op_name(op);
  if (slow_path) name += std::holds_alternative<Matmul>(op) ? " (own GEMM)" : " (f32 kernels)";
  const auto attention_shape = [](const TensorView & q, const TensorView & k, const AttentionParams & params) {
    return dims_text(q) + " x " + dims_text(k) + (params.causal ? " causal " : " ") + dtype_name(q.dtype);
  };
  if (const auto * matmul = std::get_if<Matmul>(&op))
    name += "\t" + dims_text(matmul->a) + (matmul->trans_a ? "^T" : "") + " x " + dims_text(matmul->b) +
            (matmul->trans_b ? "^T " : " ") + dtype_name(matmul->a.dtype) + " -> " + dtype_name(matmul->c.dtype);
  else if (const auto * forward = std::get_if<AttentionForward>(&op))
    name += "\t" + attention_shape(forward->q, forward->k, forward->params);
  else if (const auto * backward = std::get_if<AttentionBackward>(&op))
    name += "\t" + attention_shape(backward->q, backward->k, backward->params);
  return name;
}

class GpuDevice final : public Device {
 public:
  GpuDevice(int ordinal, GemmPath gemm_path, AttentionKernels attention_kernels, std::string backend_name)
      : ordinal_(ordinal),
        backend_name_(std::move(backend_name)),
        reserved_(ordinal),
        context_(*this, ordinal, gemm_path, attention_kernels) {}
  // Kernels may still run (a run unwinding after an error): unmapping a reserved range does not wait for them, as
  // cudaFree does, so wait here before the members give their memory back.
  ~GpuDevice() override {
    KOSMOS_GPU_IGNORE(cudaSetDevice(ordinal_));
    KOSMOS_GPU_IGNORE(cudaDeviceSynchronize());
  }

  std::string backend() const override { return backend_name_; }
  std::string name() const override { return backend_name_ + ":" + std::to_string(ordinal_); }
  // The model, SMs, memory, architecture and GEMM library; and how arenas and scratch grow.
  std::string description() const override {
    if (!reserved_.available())
      return device_summary(ordinal_) + ", arenas in separate buffers (" + reserved_.why_unavailable() + ")";
    return device_summary(ordinal_) + ", arenas grow in place (" + std::to_string(reserved_.granule() >> 20) +
           " MiB granules)";
  }
  bool host_accessible() const override { return false; }
  size_t matmul_row_alignment() const override { return 16; }  // cuBLASLt's TMA kernels (see Device)
  void set_gemm_tuning(int candidates) override {
    kosmos::KOSMOS_GPU_NAMESPACE::set_gemm_tuning(context_.gemm_plans(), candidates);
  }
  std::string gemm_tuning_report() const override {
    return kosmos::KOSMOS_GPU_NAMESPACE::gemm_tuning_report(context_.gemm_plans());
  }
  int64_t attention_keep_words(const AttentionForward & op) const override {
    return kosmos::KOSMOS_GPU_NAMESPACE::attention_keep_words(context_, op);
  }
  bool is_host_memory(const void * pointer) const override { return !is_device_memory(pointer); }

  Buffer allocate(size_t bytes, BufferUse) override {
    select(ordinal_);
    void * data = nullptr;
    const cudaError_t status = cudaMalloc(&data, bytes == 0 ? 256 : bytes);
    if (status != cudaSuccess) {
      size_t free_bytes = 0, total_bytes = 0;
      KOSMOS_GPU_IGNORE(cudaMemGetInfo(&free_bytes, &total_bytes));
      KOSMOS_FAIL(name(), ": could not allocate ", bytes, " bytes (", cudaGetErrorString(status), "; ",
                  free_bytes >> 20, " MiB free of ", total_bytes >> 20,
                  " MiB); use smaller micro-batches, more pipeline or tensor-parallel ranks, or recomputation");
    }
    return Buffer(this, data, bytes);
  }

  // Addresses for as much as the device has; ReservedMemory backs them as the buffer grows (CUDA only).
  Buffer reserve(BufferUse) override {
    select(ordinal_);
    size_t free_bytes = 0, total_bytes = 0, capacity = 0;
    KOSMOS_GPU_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    void * base = reserved_.reserve(total_bytes, capacity);
    return base == nullptr ? Buffer() : Buffer::reserved(this, base, capacity);
  }

  void copy(TensorView dst, TensorView src, Stream & stream) override {
    KOSMOS_CHECK(dst.dtype == src.dtype && same_dims(dst, src), name(), " copy: dst ", describe(dst), " and src ",
                 describe(src), " must have the same dtype and shape");
    KOSMOS_CHECK(dst.is_contiguous() && src.is_contiguous(), name(), " copy: dst ", describe(dst), " and src ",
                 describe(src), " must both be dense");
    select(ordinal_);
    const cudaStream_t native = native_of(stream);
    const size_t bytes = static_cast<size_t>(src.numel()) * dtype_size(src.dtype);
    if (bytes == 0) return;
    const bool from_host = !is_device_memory(src.data), to_host = !is_device_memory(dst.data);
    // From the host to the device through pinned memory, queued; else the host side may be pageable memory the
    // caller reuses or reads at once: host copies are finished here.
    if (from_host && !to_host && staging_.copy_to_device(dst.data, src.data, bytes, native)) return;
    KOSMOS_GPU_CHECK(cudaMemcpyAsync(dst.data, src.data, bytes, cudaMemcpyDefault, native));
    if (from_host || to_host) KOSMOS_GPU_CHECK(cudaStreamSynchronize(native));
  }

  std::unique_ptr<Stream> create_stream() override { return std::make_unique<GpuStream>(ordinal_, live_streams_); }
  std::unique_ptr<Event> create_event() override { return std::make_unique<GpuEvent>(ordinal_); }
  void record_event(Event & event, Stream & stream) override {
    select(ordinal_);
    KOSMOS_GPU_CHECK(cudaEventRecord(event_of(event), native_of(stream)));
  }
  void wait_event(Stream & stream, Event & event) override {
    select(ordinal_);
    KOSMOS_GPU_CHECK(cudaStreamWaitEvent(native_of(stream), event_of(event), 0));
  }

  OpSupport supports(const OpDesc & op) const override {
    const int64_t head_dim = std::visit(
        [](const auto & concrete) -> int64_t {
          using Op = std::decay_t<decltype(concrete)>;
          if constexpr (std::is_same_v<Op, AttentionForward> || std::is_same_v<Op, AttentionBackward>)
            return concrete.q.dim(3);
          else
            return 0;
        },
        op);
    if (head_dim > kMaxHeadDim)
      return {false, std::string(op_name(op)) + " with head_dim " + std::to_string(head_dim) + " (the " +
                         KOSMOS_GPU_VENDOR + " kernels hold at most " + std::to_string(kMaxHeadDim) + ")"};
    return {};
  }

  void run(const OpDesc & op, Stream & stream) override {
    select(ordinal_);
    const cudaStream_t native = native_of(stream);
    if (!profiling_) {
      std::visit([&](const auto & concrete) { gpu_op(context_, concrete, native); }, op);
      return;
    }
    const int64_t slow_paths = context_.slow_paths();
    profile_.begin(native);
    std::visit([&](const auto & concrete) { gpu_op(context_, concrete, native); }, op);
    profile_.end(native, profile_name(op, context_.slow_paths() != slow_paths));
  }

  void set_profiling(bool enabled) override { profiling_ = enabled; }
  std::vector<std::pair<std::string, OpTime>> profile() const override {
    const std::map<std::string, OpTime> totals = profile_.totals();
    return {totals.begin(), totals.end()};
  }

 protected:
  void free_memory(void * data, size_t) override {
    KOSMOS_GPU_IGNORE(cudaSetDevice(ordinal_));  // a destructor's path: no throwing
    // cudaFree waits for all of the device's work. While an error unwinds, that may include a collective whose peers
    // never come (they wait for this rank): then the memory is left to the process's end, which the error brings,
    // rather than the exit hung before the communicators (destroyed after the buffers) abort their collectives.
    // Device::memory has already counted it free: a caller that catches the error and goes on has lost it.
    if (std::uncaught_exceptions() > 0 && work_queued()) return;
    KOSMOS_GPU_IGNORE(cudaFree(data));
  }
  size_t back_memory(void * base, size_t backed, size_t wanted, size_t capacity) override {
    select(ordinal_);
    return reserved_.back(base, backed, wanted, capacity);
  }
  void free_reserved(void * base, size_t) noexcept override {
    KOSMOS_GPU_IGNORE(cudaSetDevice(ordinal_));
    // Unmapping does not wait for kernels (cudaFree does), and none waits here: a range goes when its arena does,
    // after a run's last synchronisation or while an error unwinds, when a collective on this device may wait for
    // peers that never join it and a wait would hang the exit. A kernel still reading the range faults instead,
    // behind the error that ends the run. ~GpuDevice waits, after the communicators have aborted theirs.
    reserved_.release(base);
  }

 private:
  static void select(int ordinal) { KOSMOS_GPU_CHECK(cudaSetDevice(ordinal)); }
  // Whether a stream this device made has work it has not finished (an error reading one counts as none left).
  bool work_queued() const {
    for (cudaStream_t stream : *live_streams_) {
      const cudaError_t status = cudaStreamQuery(stream);
      if (status == cudaErrorNotReady) return true;
      if (status != cudaSuccess) KOSMOS_GPU_IGNORE(cudaGetLastError());
    }
    return false;
  }
  // This device's reserved ranges, or device (or managed) memory of the runtime; pageable host memory is not (HIP
  // 5.2 answers it with an error).
  bool is_device_memory(const void * pointer) const {
    if (reserved_.holds(pointer)) return true;
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) {
      KOSMOS_GPU_IGNORE(cudaGetLastError());  // clear it: the pointer is simply not the runtime's
      return false;
    }
    return KOSMOS_ATTRIBUTES_NAME_DEVICE(attributes);
  }
  static cudaEvent_t event_of(Event & event) {
    auto * gpu = dynamic_cast<GpuEvent *>(&event);
    KOSMOS_CHECK(gpu != nullptr, KOSMOS_GPU_VENDOR " device: the event was not made by a " KOSMOS_GPU_VENDOR " device");
    return gpu->native();
  }

  int ordinal_;
  std::string backend_name_;
  std::shared_ptr<LiveStreams> live_streams_ = std::make_shared<LiveStreams>();  // before context_, as reserved_
  ReservedMemory reserved_;  // before context_: its scratch buffers go back through it
  GpuContext context_;
  HostStaging staging_;  // copies from the host
  bool profiling_ = false;
  mutable GpuOpProfile profile_;  // read by profile(), which waits for the ops it has not read yet
};

int visible_devices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    KOSMOS_GPU_IGNORE(cudaGetLastError());  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

}  // namespace

BackendEntry backend_entry(GpuVariant variant) {
#if defined(KOSMOS_GPU_EMULATION) && defined(KOSMOS_USE_ROCM)
  const std::string base = "emulated-rocm";
  const bool own_gemm = true;  // as on AMD
#elif defined(KOSMOS_GPU_EMULATION)
  const std::string base = "emulated";
  const bool own_gemm = variant == GpuVariant::kOwnGemm;  // else the emulated cuBLASLt
#elif defined(KOSMOS_USE_ROCM)
  const std::string base = "rocm";
  const bool own_gemm = true;  // no hipBLASLt in Debian 12
#else
  const std::string base = "cuda";
  const bool own_gemm = variant == GpuVariant::kOwnGemm;
#endif
  BackendEntry entry;
  entry.name = gpu_backend_name(base, variant);
  entry.available = true;
  entry.device_count = visible_devices;
  const GemmPath gemm = own_gemm ? GemmPath::kOwnKernels : GemmPath::kLibrary;
  const AttentionKernels attention = variant == GpuVariant::kWmmaAttention    ? AttentionKernels::kWmma
                                     : variant == GpuVariant::kCudnnAttention ? AttentionKernels::kCudnn
                                                                              : AttentionKernels::kMma;
  entry.create = [gemm, attention, name = entry.name](int ordinal) -> std::unique_ptr<Device> {
    const int count = visible_devices();
    KOSMOS_CHECK(ordinal >= 0 && ordinal < count, "--backend ", name, " --device ", ordinal, ": ", count,
                 " device(s) visible; choose an ordinal below ", count);
    return std::make_unique<GpuDevice>(ordinal, gemm, attention, name);
  };
  return entry;
}

void * native_stream(Stream & stream) { return native_of(stream); }

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
