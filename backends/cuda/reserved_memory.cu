// reserved_memory.cu: ReservedMemory on NVIDIA (the driver's virtual memory calls through the runtime's entry
// points: reserve addresses once; each growth creates one physical allocation, maps it after the last, grants the
// device access, and drops its handle so that unmapping frees it), and its stand-in for the ROCm build.
#include "backends/cuda/reserved_memory.h"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <string>

namespace kosmos::KOSMOS_GPU_NAMESPACE {

bool ReservedMemory::holds(const void * pointer) const {
  auto after = ranges_.upper_bound(const_cast<void *>(pointer));
  if (after == ranges_.begin()) return false;
  const auto & [base, range] = *std::prev(after);
  return static_cast<const char *>(pointer) < static_cast<const char *>(base) + range.capacity;
}

#if defined(KOSMOS_USE_ROCM)

struct ReservedMemory::Calls {};
ReservedMemory::ReservedMemory(int ordinal)
    : ordinal_(ordinal), why_unavailable_("HIP 5.2's virtual memory management is a preview") {}
ReservedMemory::~ReservedMemory() = default;
void * ReservedMemory::reserve(size_t, size_t &) { return nullptr; }
size_t ReservedMemory::back(void *, size_t, size_t, size_t) {
  KOSMOS_FAIL(KOSMOS_GPU_VENDOR " device ", ordinal_, ": reserves no address ranges, so it has none to back");
}
void ReservedMemory::release(void *) noexcept {}

#else

struct ReservedMemory::Calls {
  CUresult (*address_reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long) = nullptr;
  CUresult (*address_free)(CUdeviceptr, size_t) = nullptr;
  CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long) =
      nullptr;
  CUresult (*release)(CUmemGenericAllocationHandle) = nullptr;
  CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long) = nullptr;
  CUresult (*unmap)(CUdeviceptr, size_t) = nullptr;
  CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t) = nullptr;
  CUresult (*granularity)(size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags) = nullptr;
  CUresult (*device_get)(CUdevice *, int) = nullptr;
  CUresult (*device_attribute)(int *, CUdevice_attribute, CUdevice) = nullptr;
  CUresult (*error_string)(CUresult, const char **) = nullptr;
};

namespace {

// The driver's function `symbol` as of the CUDA 12.0 ABI, or null where the driver lacks it.
template <typename Function>
void find(Function & function, const char * symbol) {
  void * found = nullptr;
  cudaDriverEntryPointQueryResult result{};
  if (cudaGetDriverEntryPointByVersion(symbol, &found, 12000, cudaEnableDefault, &result) == cudaSuccess &&
      result == cudaDriverEntryPointSuccess)
    function = reinterpret_cast<Function>(found);
}

// Device memory on `ordinal`, of the usual (pinned, not shareable) kind.
CUmemAllocationProp device_memory(CUdevice device) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  return prop;
}

}  // namespace

ReservedMemory::ReservedMemory(int ordinal) : ordinal_(ordinal), calls_(std::make_unique<Calls>()) {
  KOSMOS_GPU_CHECK(cudaSetDevice(ordinal));  // the trial's calls act in the device's context
  Calls & c = *calls_;
  find(c.address_reserve, "cuMemAddressReserve");
  find(c.address_free, "cuMemAddressFree");
  find(c.create, "cuMemCreate");
  find(c.release, "cuMemRelease");
  find(c.map, "cuMemMap");
  find(c.unmap, "cuMemUnmap");
  find(c.set_access, "cuMemSetAccess");
  find(c.granularity, "cuMemGetAllocationGranularity");
  find(c.device_get, "cuDeviceGet");
  find(c.device_attribute, "cuDeviceGetAttribute");
  find(c.error_string, "cuGetErrorString");
  KOSMOS_GPU_IGNORE(cudaGetLastError());  // a symbol the driver lacks may leave an error behind
  if (!c.address_reserve || !c.address_free || !c.create || !c.release || !c.map || !c.unmap || !c.set_access ||
      !c.granularity || !c.device_get || !c.device_attribute) {
    why_unavailable_ = "the driver lacks its virtual memory calls";
    return;
  }
  CUdevice device = 0;
  int supported = 0;
  if (c.device_get(&device, ordinal) != CUDA_SUCCESS ||
      c.device_attribute(&supported, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, device) !=
          CUDA_SUCCESS ||
      supported == 0) {
    why_unavailable_ = "the device does not support virtual memory management";
    return;
  }
  const CUmemAllocationProp prop = device_memory(device);
  size_t granule = 0;
  if (c.granularity(&granule, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED) != CUDA_SUCCESS || granule == 0) {
    why_unavailable_ = "the driver gives no allocation granularity";
    return;
  }
  const std::string failure = try_one_granule(device, granule);
  if (!failure.empty()) {
    why_unavailable_ = "a trial of the driver's virtual memory calls failed: " + failure;
    return;
  }
  granule_ = granule;
  driver_device_ = device;
}

// One granule reserved, backed, made accessible, unmapped and freed; the first failing call's description.
std::string ReservedMemory::try_one_granule(int driver_device, size_t granule) const {
  const Calls & c = *calls_;
  CUdeviceptr base = 0;
  CUresult status = c.address_reserve(&base, granule, granule, 0, 0);
  if (status != CUDA_SUCCESS) return describe(status, "cuMemAddressReserve");
  const CUmemAllocationProp prop = device_memory(driver_device);
  CUmemGenericAllocationHandle handle = 0;
  std::string failure;
  if ((status = c.create(&handle, granule, &prop, 0)) != CUDA_SUCCESS) {
    failure = describe(status, "cuMemCreate");
  } else {
    status = c.map(base, granule, 0, handle, 0);
    static_cast<void>(c.release(handle));  // the mapping, if made, keeps the memory until it is unmapped
    if (status != CUDA_SUCCESS) {
      failure = describe(status, "cuMemMap");
    } else {
      CUmemAccessDesc access{};
      access.location = prop.location;
      access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
      if ((status = c.set_access(base, granule, &access, 1)) != CUDA_SUCCESS)
        failure = describe(status, "cuMemSetAccess");
      if ((status = c.unmap(base, granule)) != CUDA_SUCCESS && failure.empty())
        failure = describe(status, "cuMemUnmap");
    }
  }
  if ((status = c.address_free(base, granule)) != CUDA_SUCCESS && failure.empty())
    failure = describe(status, "cuMemAddressFree");
  return failure;
}

ReservedMemory::~ReservedMemory() {
  while (!ranges_.empty()) release(ranges_.begin()->first);  // none, when every buffer went before its device
}

std::string ReservedMemory::describe(int status, const char * call) const {
  const char * message = nullptr;
  if (calls_->error_string == nullptr || calls_->error_string(static_cast<CUresult>(status), &message) != CUDA_SUCCESS)
    message = "no description";
  return std::string(call) + " failed with status " + std::to_string(status) + " (" + message + ")";
}

// A failing driver call throws with the call and the driver's name for the status.
void ReservedMemory::check(int status, const char * call) const {
  if (status == CUDA_SUCCESS) return;
  KOSMOS_FAIL(KOSMOS_GPU_VENDOR " device ", ordinal_, ": driver call ", describe(status, call));
}

void * ReservedMemory::reserve(size_t bytes, size_t & capacity) {
  if (!available()) return nullptr;
  capacity = (bytes + granule_ - 1) / granule_ * granule_;
  CUdeviceptr base = 0;
  const CUresult status = calls_->address_reserve(&base, capacity, granule_, 0, 0);
  if (status != CUDA_SUCCESS) {
    // The trial granule passed, so this is a limit on address space (a sandbox's, say): said once, not fatal.
    if (!refusal_reported_)
      std::fprintf(stderr, "kosmos: warning: " KOSMOS_GPU_VENDOR " device %d: %s for %zu bytes of addresses; this "
                   "buffer and any other refused likewise are separate allocations instead (activations in chunks, "
                   "scratch reallocated as it grows)\n", ordinal_, describe(status, "cuMemAddressReserve").c_str(),
                   capacity);
    refusal_reported_ = true;
    return nullptr;
  }
  void * pointer = reinterpret_cast<void *>(static_cast<uintptr_t>(base));
  ranges_[pointer].capacity = capacity;
  return pointer;
}

size_t ReservedMemory::back(void * base, size_t backed, size_t wanted, size_t capacity) {
  const size_t target = std::min(capacity, (wanted + granule_ - 1) / granule_ * granule_);
  const size_t bytes = target - backed;
  const CUmemAllocationProp prop = device_memory(driver_device_);
  CUmemGenericAllocationHandle handle = 0;
  const CUresult created = calls_->create(&handle, bytes, &prop, 0);
  if (created != CUDA_SUCCESS) {
    size_t free_bytes = 0, total_bytes = 0;
    KOSMOS_GPU_IGNORE(cudaMemGetInfo(&free_bytes, &total_bytes));
    KOSMOS_FAIL(KOSMOS_GPU_VENDOR " device ", ordinal_, ": could not back ", bytes, " more bytes of a growing buffer (",
                target, " in all, activations or kernel scratch; driver status ", static_cast<int>(created), "; ",
                free_bytes >> 20, " MiB free of ", total_bytes >> 20,
                " MiB); use smaller micro-batches, more pipeline or tensor-parallel ranks, or recomputation");
  }
  const CUdeviceptr at = static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(base)) + backed;
  const CUresult mapped = calls_->map(at, bytes, 0, handle, 0);
  static_cast<void>(calls_->release(handle));  // the mapping keeps the memory until it is unmapped
  check(mapped, "cuMemMap");
  ranges_[base].pieces.push_back({backed, bytes});
  CUmemAccessDesc access{};
  access.location = prop.location;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  check(calls_->set_access(at, bytes, &access, 1), "cuMemSetAccess");
  return target;
}

void ReservedMemory::release(void * base) noexcept {
  const auto found = ranges_.find(base);
  if (found == ranges_.end()) return;
  const CUdeviceptr start = static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(base));
  // A destructor's path: a failure is reported, not thrown (the memory it holds is lost to this process).
  CUresult status = CUDA_SUCCESS;
  for (const Piece & piece : found->second.pieces) {
    const CUresult unmapped = calls_->unmap(start + piece.offset, piece.bytes);
    if (status == CUDA_SUCCESS) status = unmapped;
  }
  const CUresult freed = calls_->address_free(start, found->second.capacity);
  if (status == CUDA_SUCCESS) status = freed;
  if (status != CUDA_SUCCESS)
    std::fprintf(stderr, "kosmos: warning: " KOSMOS_GPU_VENDOR " device %d: giving back a reserved range of %zu bytes "
                 "failed with driver status %d\n", ordinal_, found->second.capacity, static_cast<int>(status));
  ranges_.erase(found);
}

#endif

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
