// runtime.cpp: the CUDA runtime calls of cuda_surface.h for the emulated GPU: one device whose memory is host memory
// from cudaMalloc (poisoned with 0xff bytes, NaN in every float format, so that a kernel reading what nobody wrote
// shows; each buffer ends at an inaccessible guard page, so that an access past its end faults the kernel), pointer
// attributes from the live allocations, one synchronous queue behind every stream and event, and a launch failure
// that stays pending (stream synchronisation answers it) until cudaGetLastError takes it.
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <string>

#include "backends/emulated/cuda_surface.h"

namespace kosmos_emulation {
namespace {

constexpr size_t kDeviceBytes = size_t{8} << 30;  // what the device claims to have; allocations are host memory
constexpr int kDefaultSharedLimit = 48 << 10;
constexpr int kSharedOptIn = 227 << 10;  // an H100's opt-in maximum per block

// A buffer: its 256-byte aligned start (the pointer handed out), its size, and the mapping that holds it, whose
// last page is the guard: the buffer ends at most 255 bytes before it.
struct Allocation {
  size_t bytes;
  void * mapping;
  size_t mapped;
};

struct State {
  std::mutex mutex;
  std::map<const unsigned char *, Allocation> allocations;  // by start
  size_t allocated = 0;
  int shared_limit = kDefaultSharedLimit;
  cudaError_t failure = cudaSuccess;  // pending until cudaGetLastError answers it
  cudaError_t described = cudaSuccess;  // the last failure's status and message, for cudaGetErrorString
  std::string description;
};

State & state() {
  static State instance;
  return instance;
}

}  // namespace

void raise_dynamic_shared_limit(int bytes) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  state().shared_limit = std::max(state().shared_limit, std::min(bytes, kSharedOptIn));
}

int dynamic_shared_limit() {
  const std::lock_guard<std::mutex> lock(state().mutex);
  return state().shared_limit;
}

std::string describe_address(const void * address) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  const auto * p = static_cast<const unsigned char *>(address);
  auto after = state().allocations.upper_bound(p);
  if (after == state().allocations.begin()) return "not device memory";
  const auto & [start, allocation] = *std::prev(after);
  const auto * mapping_end = static_cast<const unsigned char *>(allocation.mapping) + allocation.mapped;
  if (p >= mapping_end) return "not device memory";
  return std::to_string(p - start - static_cast<std::ptrdiff_t>(allocation.bytes)) +
         " bytes past the end of a device buffer of " + std::to_string(allocation.bytes) + " bytes";
}

bool is_device_range(const void * pointer, size_t bytes) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  const auto * p = static_cast<const unsigned char *>(pointer);
  auto after = state().allocations.upper_bound(p);
  if (after == state().allocations.begin()) return false;
  const auto & [start, allocation] = *std::prev(after);
  return p + bytes <= start + allocation.bytes;
}

void record_failure(cudaError_t status, const std::string & message) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  if (state().failure != cudaSuccess) return;  // the first one sticks
  state().failure = status;
  state().described = status;
  state().description = message;
}

}  // namespace kosmos_emulation

using kosmos_emulation::state;

cudaError_t cudaGetDeviceCount(int * count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDevice(int * device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp * properties, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  *properties = cudaDeviceProp{};
  std::strncpy(properties->name, "emulated GPU (the CUDA kernels on the host's cores)", sizeof properties->name - 1);
  properties->totalGlobalMem = kosmos_emulation::kDeviceBytes;
  properties->multiProcessorCount = 1;
  properties->major = 9;
  properties->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int * value, cudaDeviceAttr attribute, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attribute) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = kosmos_emulation::kSharedOptIn; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
cudaError_t cudaRuntimeGetVersion(int * version) {
  *version = 0;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int * version) {
  *version = 0;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void ** pointer, size_t bytes) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  if (state().allocated + bytes > kosmos_emulation::kDeviceBytes) return cudaErrorMemoryAllocation;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t rounded = bytes == 0 ? 256 : (bytes + 255) / 256 * 256;
  const size_t mapped = (rounded + page - 1) / page * page + page;
  void * mapping = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping == MAP_FAILED) return cudaErrorMemoryAllocation;
  unsigned char * const guard = static_cast<unsigned char *>(mapping) + mapped - page;
  if (mprotect(guard, page, PROT_NONE) != 0) {
    munmap(mapping, mapped);
    return cudaErrorMemoryAllocation;
  }
  unsigned char * const data = guard - rounded;
  std::memset(data, 0xff, rounded);
  state().allocations[data] = {bytes, mapping, mapped};
  state().allocated += bytes;
  *pointer = data;
  return cudaSuccess;
}
cudaError_t cudaFree(void * pointer) {
  if (pointer == nullptr) return cudaSuccess;
  const std::lock_guard<std::mutex> lock(state().mutex);
  const auto found = state().allocations.find(static_cast<unsigned char *>(pointer));
  if (found == state().allocations.end()) return cudaErrorInvalidValue;
  state().allocated -= found->second.bytes;
  munmap(found->second.mapping, found->second.mapped);
  state().allocations.erase(found);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t * free_bytes, size_t * total_bytes) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  *total_bytes = kosmos_emulation::kDeviceBytes;
  *free_bytes = kosmos_emulation::kDeviceBytes - state().allocated;
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes * attributes, const void * pointer) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  const auto * p = static_cast<const unsigned char *>(pointer);
  auto after = state().allocations.upper_bound(p);
  const bool device =
      after != state().allocations.begin() && p < std::prev(after)->first + std::prev(after)->second.bytes;
  *attributes = {device ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered, 0};
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void * dst, const void * src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  if (bytes != 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void * dst, int value, size_t bytes, cudaStream_t) {
  std::memset(dst, value, bytes);
  return cudaSuccess;
}

// Streams and events are distinct non-null handles that stand for the one synchronous queue.
cudaError_t cudaStreamCreateWithFlags(cudaStream_t * stream, unsigned) {
  *stream = reinterpret_cast<cudaStream_t>(new char);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete reinterpret_cast<char *>(stream);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t * event, unsigned) {
  *event = reinterpret_cast<cudaEvent_t>(new char);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<char *>(event);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }

// A kernel's fault is sticky on the hardware: synchronisation answers it too.
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  return state().failure;
}
cudaError_t cudaGetLastError() {
  const std::lock_guard<std::mutex> lock(state().mutex);
  const cudaError_t failure = state().failure;
  state().failure = cudaSuccess;
  return failure;
}
const char * cudaGetErrorString(cudaError_t status) {
  if (status == cudaSuccess) return "no error";
  const std::lock_guard<std::mutex> lock(state().mutex);
  if (status == state().described) return state().description.c_str();
  switch (status) {
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "emulated GPU failure";
  }
}
