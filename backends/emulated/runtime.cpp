// runtime.cpp: the CUDA runtime calls of cuda_surface.h for the emulated GPU: one device whose memory is host memory
// from cudaMalloc (poisoned with 0xff bytes, NaN in every float format, so that a kernel reading what nobody wrote
// shows; each buffer ends at an inaccessible guard page, so that an access past its end faults the kernel), pointer
// attributes from the live allocations, one synchronous queue behind every stream and event (in which only copies from
// pinned host memory wait, until a call needs them: cudaMemcpyAsync), and a launch failure that stays pending (stream
// synchronisation answers it) until cudaGetLastError takes it. Also the driver's virtual memory calls, with the rules
// the driver enforces (granule multiples, whole mappings unmapped, access granted before use, addresses freed only once
// unmapped); a reserved range past its mapped prefix faults as a guard does.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

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

constexpr size_t kGranule = size_t{2} << 20;  // the driver's allocation granularity

// A range of cuMemAddressReserve: its pieces mapped (by offset) to handles of cuMemCreate, and whether access was
// granted to each.
struct Mapping {
  size_t bytes;
  CUmemGenericAllocationHandle handle;
  bool accessible;
};
struct Reservation {
  size_t capacity;
  std::map<size_t, Mapping> mappings;
};
struct Handle {
  size_t bytes;
  int mappings;
  bool released;
};

struct State {
  std::mutex mutex;
  std::map<const unsigned char *, Allocation> allocations;  // by start; a reservation's is its mapped prefix
  std::map<unsigned char *, Reservation> reservations;       // by base
  std::map<CUmemGenericAllocationHandle, Handle> handles;
  CUmemGenericAllocationHandle next_handle = 1;
  size_t allocated = 0;
  int shared_limit = kDefaultSharedLimit;
  cudaError_t failure = cudaSuccess;  // pending until cudaGetLastError answers it
  cudaError_t described = cudaSuccess;  // the last failure's status and message, for cudaGetErrorString
  std::string description;
  std::string refused_call;  // refuse_call's
  std::map<const unsigned char *, size_t> pinned;  // cudaHostAlloc's blocks by start, and their sizes
  struct QueuedCopy {
    void * dst;
    const void * src;
    size_t bytes;
  };
  std::vector<QueuedCopy> queued_copies;  // from pinned memory, not yet run (cudaMemcpyAsync)
};

State & state() {
  static State instance;
  return instance;
}

// Whether [pointer, pointer + bytes) lies inside one of `blocks` (a map by start address), each `length(entry)`
// bytes long: device buffers, pinned host blocks. With the state's lock held.
template <typename Blocks, typename Length>
bool inside_one_of(const Blocks & blocks, const void * pointer, size_t bytes, Length length) {
  const auto * p = static_cast<const unsigned char *>(pointer);
  const auto after = blocks.upper_bound(p);
  return after != blocks.begin() && p + bytes <= std::prev(after)->first + length(std::prev(after)->second);
}
size_t allocation_bytes(const Allocation & allocation) { return allocation.bytes; }
size_t pinned_bytes(size_t bytes) { return bytes; }

}  // namespace

void refuse_call(const std::string & symbol) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  state().refused_call = symbol;
}

bool call_refused(const char * symbol) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  return state().refused_call == symbol;
}

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
  return inside_one_of(state().allocations, pointer, bytes, allocation_bytes);
}

// Under the lock for the whole run, so that a call on another thread (the watchdog's prober polls events) returns
// only once the copies queued before it have landed. A copy whose target is no longer device memory (an arena
// unmapped while an error unwinds, which waits for nothing) fails as the hardware's would, instead of writing there.
void run_queued_copies() {
  const std::lock_guard<std::mutex> lock(state().mutex);
  for (const State::QueuedCopy & copy : state().queued_copies) {
    if (!inside_one_of(state().allocations, copy.dst, copy.bytes, allocation_bytes)) {
      if (state().failure == cudaSuccess) {
        state().failure = state().described = cudaErrorIllegalAddress;
        state().description = "a copy from pinned host memory into " + std::to_string(copy.bytes) +
                              " bytes that are no longer device memory";
      }
      continue;
    }
    std::memmove(copy.dst, copy.src, copy.bytes);
  }
  state().queued_copies.clear();
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
  std::strncpy(properties->gcnArchName, "gfx90a", sizeof properties->gcnArchName - 1);  // as the ROCm build reads
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
  kosmos_emulation::run_queued_copies();  // as the hardware's, it waits for the device
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

// A copy from pinned memory joins the queue behind the ones before it (so that a staging area the host writes again
// while an earlier copy from it waits shows); any other runs the queue first, then itself.
cudaError_t cudaMemcpyAsync(void * dst, const void * src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  if (bytes == 0) return cudaSuccess;
  {
    const std::lock_guard<std::mutex> lock(state().mutex);
    if (kosmos_emulation::inside_one_of(state().pinned, src, bytes, kosmos_emulation::pinned_bytes)) {
      state().queued_copies.push_back({dst, src, bytes});
      return cudaSuccess;
    }
  }
  kosmos_emulation::run_queued_copies();
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void * dst, int value, size_t bytes, cudaStream_t) {
  kosmos_emulation::run_queued_copies();
  std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void ** pointer, size_t bytes, unsigned) {
  if (kosmos_emulation::call_refused("cudaHostAlloc")) return cudaErrorMemoryAllocation;
  *pointer = std::malloc(bytes == 0 ? 1 : bytes);
  if (*pointer == nullptr) return cudaErrorMemoryAllocation;
  const std::lock_guard<std::mutex> lock(state().mutex);
  state().pinned[static_cast<const unsigned char *>(*pointer)] = bytes;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void * pointer) {
  kosmos_emulation::run_queued_copies();  // as the hardware's, it waits for the device
  {
    const std::lock_guard<std::mutex> lock(state().mutex);
    if (state().pinned.erase(static_cast<const unsigned char *>(pointer)) == 0) return cudaErrorInvalidValue;
  }
  std::free(pointer);
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
  *event = new EmulatedEvent;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
// The work queued before the event has run by the time it is recorded: its time is the host's clock then.
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  event->recorded = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaStreamSynchronize(nullptr); }
cudaError_t cudaEventElapsedTime(float * milliseconds, cudaEvent_t start, cudaEvent_t end) {
  *milliseconds = std::chrono::duration<float, std::milli>(end->recorded - start->recorded).count();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }

// A kernel's fault is sticky on the hardware: synchronisation answers it too.
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  kosmos_emulation::run_queued_copies();
  const std::lock_guard<std::mutex> lock(state().mutex);
  return state().failure;
}
cudaError_t cudaDeviceSynchronize() { return cudaStreamSynchronize(nullptr); }  // the one queue
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  return kosmos_emulation::call_refused("cudaStreamQuery") ? cudaErrorNotReady : cudaStreamSynchronize(stream);
}
cudaError_t cudaEventQuery(cudaEvent_t) {
  return kosmos_emulation::call_refused("cudaEventQuery") ? cudaErrorNotReady : cudaStreamSynchronize(nullptr);
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

// The driver's virtual memory calls.
namespace {

using kosmos_emulation::Handle;
using kosmos_emulation::kGranule;
using kosmos_emulation::Reservation;

// The reservation holding [at, at + bytes), or null; `offset` is `at`'s place in it.
Reservation * reservation_of(CUdeviceptr at, size_t bytes, size_t & offset, unsigned char *& base) {
  auto * p = reinterpret_cast<unsigned char *>(static_cast<uintptr_t>(at));
  auto after = state().reservations.upper_bound(p);
  if (after == state().reservations.begin()) return nullptr;
  auto & [start, reservation] = *std::prev(after);
  if (p + bytes > start + reservation.capacity) return nullptr;
  offset = static_cast<size_t>(p - start);
  base = start;
  return &reservation;
}

// The reservation's allocation entry covers its mapped prefix (what pointer attributes call device memory).
void update_prefix(unsigned char * base, const Reservation & reservation) {
  size_t prefix = 0;
  for (const auto & [offset, mapping] : reservation.mappings) {
    if (offset != prefix) break;
    prefix += mapping.bytes;
  }
  state().allocations[base] = {prefix, base, reservation.capacity};
}

// A handle with neither mappings nor an owner gives its memory back.
void forget_if_unused(CUmemGenericAllocationHandle id) {
  const auto found = state().handles.find(id);
  if (found == state().handles.end() || !found->second.released || found->second.mappings != 0) return;
  state().allocated -= found->second.bytes;
  state().handles.erase(found);
}

CUresult cuMemAddressReserve(CUdeviceptr * pointer, size_t bytes, size_t, CUdeviceptr, unsigned long long) {
  if (kosmos_emulation::call_refused("cuMemAddressReserve")) return CUDA_ERROR_NOT_SUPPORTED;
  if (bytes == 0 || bytes % kGranule != 0) return CUDA_ERROR_INVALID_VALUE;
  void * base = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  const std::lock_guard<std::mutex> lock(state().mutex);
  auto * start = static_cast<unsigned char *>(base);
  state().reservations[start] = Reservation{bytes, {}};
  update_prefix(start, state().reservations[start]);
  *pointer = static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(base));
  return CUDA_SUCCESS;
}

CUresult cuMemAddressFree(CUdeviceptr at, size_t bytes) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  auto * base = reinterpret_cast<unsigned char *>(static_cast<uintptr_t>(at));
  const auto found = state().reservations.find(base);
  if (found == state().reservations.end() || found->second.capacity != bytes || !found->second.mappings.empty())
    return CUDA_ERROR_INVALID_VALUE;  // not a reservation, not all of it, or still mapped
  munmap(base, bytes);
  state().reservations.erase(found);
  state().allocations.erase(base);
  return CUDA_SUCCESS;
}

CUresult cuMemCreate(CUmemGenericAllocationHandle * handle, size_t bytes, const CUmemAllocationProp * prop,
                     unsigned long long) {
  if (kosmos_emulation::call_refused("cuMemCreate")) return CUDA_ERROR_NOT_SUPPORTED;
  if (bytes == 0 || bytes % kGranule != 0 || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
      prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->location.id != 0)
    return CUDA_ERROR_INVALID_VALUE;
  const std::lock_guard<std::mutex> lock(state().mutex);
  if (state().allocated + bytes > kosmos_emulation::kDeviceBytes) return CUDA_ERROR_OUT_OF_MEMORY;
  state().allocated += bytes;
  *handle = state().next_handle++;
  state().handles[*handle] = Handle{bytes, 0, false};
  return CUDA_SUCCESS;
}

CUresult cuMemRelease(CUmemGenericAllocationHandle id) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  const auto found = state().handles.find(id);
  if (found == state().handles.end() || found->second.released) return CUDA_ERROR_INVALID_VALUE;
  found->second.released = true;
  forget_if_unused(id);
  return CUDA_SUCCESS;
}

CUresult cuMemMap(CUdeviceptr at, size_t bytes, size_t handle_offset, CUmemGenericAllocationHandle id,
                  unsigned long long) {
  if (kosmos_emulation::call_refused("cuMemMap")) return CUDA_ERROR_NOT_SUPPORTED;
  const std::lock_guard<std::mutex> lock(state().mutex);
  const auto handle = state().handles.find(id);
  size_t offset = 0;
  unsigned char * base = nullptr;
  Reservation * reservation = reservation_of(at, bytes, offset, base);
  if (handle == state().handles.end() || handle->second.released || handle_offset != 0 ||
      bytes != handle->second.bytes || reservation == nullptr)
    return CUDA_ERROR_INVALID_VALUE;
  for (const auto & [mapped_at, mapping] : reservation->mappings)
    if (mapped_at < offset + bytes && offset < mapped_at + mapping.bytes) return CUDA_ERROR_INVALID_VALUE;  // overlap
  reservation->mappings[offset] = {bytes, id, false};
  ++handle->second.mappings;
  update_prefix(base, *reservation);
  return CUDA_SUCCESS;
}

CUresult cuMemSetAccess(CUdeviceptr at, size_t bytes, const CUmemAccessDesc * access, size_t count) {
  if (kosmos_emulation::call_refused("cuMemSetAccess")) return CUDA_ERROR_NOT_SUPPORTED;
  if (count != 1 || access->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE ||
      access->location.type != CU_MEM_LOCATION_TYPE_DEVICE || access->location.id != 0)
    return CUDA_ERROR_INVALID_VALUE;
  const std::lock_guard<std::mutex> lock(state().mutex);
  size_t offset = 0;
  unsigned char * base = nullptr;
  Reservation * reservation = reservation_of(at, bytes, offset, base);
  if (reservation == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (size_t covered = offset; covered < offset + bytes;) {  // every byte must be mapped
    const auto mapping = reservation->mappings.find(covered);
    if (mapping == reservation->mappings.end()) return CUDA_ERROR_INVALID_VALUE;
    covered += mapping->second.bytes;
  }
  for (auto mapping = reservation->mappings.find(offset);
       mapping != reservation->mappings.end() && mapping->first < offset + bytes; ++mapping) {
    if (mapping->second.accessible) continue;
    unsigned char * piece = base + mapping->first;
    if (mprotect(piece, mapping->second.bytes, PROT_READ | PROT_WRITE) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    std::memset(piece, 0xff, mapping->second.bytes);
    mapping->second.accessible = true;
  }
  return CUDA_SUCCESS;
}

CUresult cuMemUnmap(CUdeviceptr at, size_t bytes) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  size_t offset = 0;
  unsigned char * base = nullptr;
  Reservation * reservation = reservation_of(at, bytes, offset, base);
  if (reservation == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto mapping = reservation->mappings.find(offset);
  if (mapping == reservation->mappings.end() || mapping->second.bytes != bytes)
    return CUDA_ERROR_INVALID_VALUE;  // one whole mapping, as the driver requires
  unsigned char * piece = base + offset;
  mprotect(piece, bytes, PROT_NONE);
  madvise(piece, bytes, MADV_DONTNEED);
  const CUmemGenericAllocationHandle id = mapping->second.handle;
  reservation->mappings.erase(mapping);
  --state().handles[id].mappings;
  forget_if_unused(id);
  update_prefix(base, *reservation);
  return CUDA_SUCCESS;
}

CUresult cuMemGetAllocationGranularity(size_t * granularity, const CUmemAllocationProp *,
                                       CUmemAllocationGranularity_flags) {
  *granularity = kGranule;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice * device, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int * value, CUdevice_attribute attribute, CUdevice device) {
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (attribute != CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED) return CUDA_ERROR_INVALID_VALUE;
  *value = 1;
  return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult status, const char ** message) {
  switch (status) {
    case CUDA_SUCCESS: *message = "no error"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_VALUE: *message = "invalid argument"; return CUDA_SUCCESS;
    case CUDA_ERROR_OUT_OF_MEMORY: *message = "out of memory"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_DEVICE: *message = "invalid device ordinal"; return CUDA_SUCCESS;
    case CUDA_ERROR_NOT_SUPPORTED: *message = "operation not supported"; return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
}

}  // namespace

cudaError_t cudaGetDriverEntryPointByVersion(const char * symbol, void ** function, unsigned, unsigned long long,
                                             cudaDriverEntryPointQueryResult * result) {
  static const std::map<std::string, void *> calls = {
      {"cuMemAddressReserve", reinterpret_cast<void *>(&cuMemAddressReserve)},
      {"cuMemAddressFree", reinterpret_cast<void *>(&cuMemAddressFree)},
      {"cuMemCreate", reinterpret_cast<void *>(&cuMemCreate)},
      {"cuMemRelease", reinterpret_cast<void *>(&cuMemRelease)},
      {"cuMemMap", reinterpret_cast<void *>(&cuMemMap)},
      {"cuMemUnmap", reinterpret_cast<void *>(&cuMemUnmap)},
      {"cuMemSetAccess", reinterpret_cast<void *>(&cuMemSetAccess)},
      {"cuMemGetAllocationGranularity", reinterpret_cast<void *>(&cuMemGetAllocationGranularity)},
      {"cuDeviceGet", reinterpret_cast<void *>(&cuDeviceGet)},
      {"cuDeviceGetAttribute", reinterpret_cast<void *>(&cuDeviceGetAttribute)},
      {"cuGetErrorString", reinterpret_cast<void *>(&cuGetErrorString)},
  };
  const auto found = calls.find(symbol);
  *function = found == calls.end() ? nullptr : found->second;
  *result = found == calls.end() ? cudaDriverEntryPointSymbolNotFound : cudaDriverEntryPointSuccess;
  return cudaSuccess;
}
