// reserved_memory.h: address ranges that fill with device memory as they grow, behind GpuDevice::reserve(). On
// NVIDIA it is the driver's virtual memory management (cuMemAddressReserve, cuMemCreate, cuMemMap), reached through
// the runtime's driver entry points so that the binary links no libcuda. The ROCm build has none (HIP 5.2's is a
// preview): available() is false there, and arenas use separate buffers; so is it where the driver lacks the calls,
// or where they fail on one trial granule (a sandboxed or virtualised GPU may refuse them), and why_unavailable()
// says which.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/gpu_common.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {

class ReservedMemory {
 public:
  // Makes device `ordinal` current, looks the driver's calls up, asks whether the device supports them and tries
  // them once: reserves, backs, grants access to and gives back one granule.
  explicit ReservedMemory(int ordinal);
  ReservedMemory(const ReservedMemory &) = delete;
  ReservedMemory & operator=(const ReservedMemory &) = delete;
  ~ReservedMemory();

  bool available() const { return granule_ != 0; }
  const std::string & why_unavailable() const { return why_unavailable_; }  // "" where available
  size_t granule() const { return granule_; }  // the bytes a range is backed in (0 where none are available)
  // Addresses for at least `bytes`, rounded up to the granule (written to `capacity`), with no memory behind them;
  // nullptr where the driver gives none (the first refusal is reported on stderr).
  void * reserve(size_t bytes, size_t & capacity);
  // Maps device memory behind [base + backed, base + new backed) so that the new backed size is at least `wanted`
  // (whole granules, at most capacity); returns it. Fails with the device's free memory.
  size_t back(void * base, size_t backed, size_t wanted, size_t capacity);
  // Unmaps and frees every piece of memory behind the range, then its addresses.
  void release(void * base) noexcept;
  // Whether `pointer` lies in a range reserve() handed out: device memory, whatever the runtime's pointer attributes
  // answer for it (they speak of cudaMalloc's memory; the driver's mappings carry no context).
  bool holds(const void * pointer) const;

 private:
  struct Calls;
  struct Piece {
    size_t offset, bytes;  // one cuMemMap: unmapped as a whole
  };
  struct Range {
    size_t capacity = 0;
    std::vector<Piece> pieces;
  };
  void check(int status, const char * call) const;
  std::string describe(int status, const char * call) const;  // "<call> failed with status N (<driver's words>)"
  std::string try_one_granule(int driver_device, size_t granule) const;  // "" where every call succeeded
  int ordinal_;
#if !defined(KOSMOS_USE_ROCM)
  int driver_device_ = 0;  // the driver's handle of the device
#endif
  std::unique_ptr<Calls> calls_;
  size_t granule_ = 0;
  std::string why_unavailable_;
  bool refusal_reported_ = false;  // reserve() has warned of a range the driver refused
  std::map<void *, Range> ranges_;  // by base address
};

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
