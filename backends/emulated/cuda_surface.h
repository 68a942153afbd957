// cuda_surface.h: the part of CUDA that the kernel sources of backends/cuda use, for g++ on the host (the emulated
// GPU backend): the qualifiers, threadIdx and friends, the vector and 16-bit float types, the intrinsics, the
// runtime calls (runtime.cpp: host memory, one synchronous stream) and the kernel launch (Launch, below, as
// rewrite_launches.cmake writes the sources' `<<<...>>>`). Nothing here needs the CUDA toolkit.
#pragma once

#include <math.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "backends/dtype.h"
#include "backends/emulated/block_runner.h"

// The warp width: NVIDIA's 32, or CDNA's 64 for the ROCm build's sources (backends/emulated/CMakeLists.txt).
#ifndef KOSMOS_EMULATED_WARP_SIZE
#define KOSMOS_EMULATED_WARP_SIZE 32
#endif

// Qualifiers. A kernel's __shared__ array is static storage: blocks run one at a time (block_runner.h).
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)
// The kernels' "compute capability 8.0 or newer" bodies (the tensor-core attention) are compiled in.
#define __CUDA_ARCH__ 900

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

#define threadIdx (::kosmos_emulation::thread_index())
#define blockIdx (::kosmos_emulation::block_index())
#define blockDim (::kosmos_emulation::block_dims())
#define gridDim (::kosmos_emulation::grid_dims())

// 16-bit floats by their bits, converting as backends/dtype.h does (round to nearest even).
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
  __nv_bfloat16() = default;
  __nv_bfloat16(float value) : bits(kosmos::float_to_bf16(value)) {}  // NOLINT: CUDA's converts implicitly too
  operator float() const { return kosmos::bf16_to_float(bits); }      // NOLINT
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
inline float __half2float(__half value) { return kosmos::f16_to_float(value.bits); }
inline __half __float2half_rn(float value) { return {kosmos::float_to_f16(value)}; }
inline unsigned short __half_as_ushort(__half value) { return value.bits; }
inline __half __ushort_as_half(unsigned short bits) { return {bits}; }
inline __nv_bfloat16 __float2bfloat16(float value) { return __nv_bfloat16(value); }
inline __nv_bfloat16 __float2bfloat16_rn(float value) { return __nv_bfloat16(value); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 value) { return value.bits; }
inline float __bfloat162float(__nv_bfloat16 value) { return static_cast<float>(value); }
inline __nv_bfloat162 __floats2bfloat162_rn(float low, float high) { return {__nv_bfloat16(low), __nv_bfloat16(high)}; }

inline float __uint_as_float(uint32_t bits) { return kosmos::bits_float(bits); }
inline uint32_t __float_as_uint(float value) { return kosmos::float_bits(value); }
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// max and min as CUDA overloads them; mixed argument types are ambiguous here as they may convert silently there.
inline float max(float a, float b) { return std::fmax(a, b); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline int max(int a, int b) { return std::max(a, b); }
inline int min(int a, int b) { return std::min(a, b); }
inline unsigned max(unsigned a, unsigned b) { return std::max(a, b); }
inline unsigned min(unsigned a, unsigned b) { return std::min(a, b); }
inline long max(long a, long b) { return std::max(a, b); }
inline long min(long a, long b) { return std::min(a, b); }
inline long long max(long long a, long long b) { return std::max(a, b); }
inline long long min(long long a, long long b) { return std::min(a, b); }

inline void __syncthreads() { kosmos_emulation::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { kosmos_emulation::warp_barrier(); }

// value of lane (own lane ^ lane_mask); every lane of the warp takes part.
template <typename T>
T __shfl_xor_sync(unsigned, T value, int lane_mask, int = KOSMOS_EMULATED_WARP_SIZE) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t) * kosmos_emulation::kSlotWords,
                "a shuffled value fits the warp's exchange slots");
  const int own = kosmos_emulation::lane();
  std::memcpy(kosmos_emulation::exchange_slots(own), &value, sizeof(T));
  kosmos_emulation::begin_exchange();
  T other;
  std::memcpy(&other, kosmos_emulation::exchange_slots(own ^ lane_mask), sizeof(T));
  kosmos_emulation::finish_exchange();
  return other;
}

// Atomic adds: a thread runs on until it reaches a barrier and blocks run one at a time, so a plain add is atomic
// here. The pair's (compute capability 9.0) adds both halves.
inline float atomicAdd(float * address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}
inline int atomicAdd(int * address, int value) {
  const int old = *address;
  *address = old + value;
  return old;
}
inline float2 atomicAdd(float2 * address, float2 value) {
  const float2 old = *address;
  *address = make_float2(old.x + value.x, old.y + value.y);
  return old;
}

// Runtime: host memory stands for device memory; streams and events are handles of one synchronous queue (a
// kernel has finished when its launch returns).
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidDevice = 101,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
using cudaStream_t = struct EmulatedStream *;
struct EmulatedEvent {  // when it was recorded, for cudaEventElapsedTime
  std::chrono::steady_clock::time_point recorded;
};
using cudaEvent_t = EmulatedEvent *;
enum cudaMemcpyKind : int { cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4 };
enum cudaMemoryType : int {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
};
struct cudaDeviceProp {
  char name[256];
  char gcnArchName[256];  // HIP's field, which the ROCm build's sources print
  size_t totalGlobalMem;
  int multiProcessorCount, major, minor;
};
enum cudaDeviceAttr : int { cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
constexpr unsigned cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2;

cudaError_t cudaGetDeviceCount(int * count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int * device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp * properties, int device);
cudaError_t cudaDeviceGetAttribute(int * value, cudaDeviceAttr attribute, int device);
cudaError_t cudaRuntimeGetVersion(int * version);
cudaError_t cudaDriverGetVersion(int * version);
cudaError_t cudaMalloc(void ** pointer, size_t bytes);
cudaError_t cudaFree(void * pointer);
cudaError_t cudaMemGetInfo(size_t * free_bytes, size_t * total_bytes);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes * attributes, const void * pointer);
// A copy whose source is pinned host memory (cudaHostAlloc's) reads it when the queue reaches it, as the hardware's
// DMA does: at the next call that waits for the queue or queues work other than such copies (run_queued_copies),
// not at the call; so that a source the host writes again before then shows. Every other copy runs at the call.
cudaError_t cudaMemcpyAsync(void * dst, const void * src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
constexpr unsigned cudaHostAllocDefault = 0;
cudaError_t cudaHostAlloc(void ** pointer, size_t bytes, unsigned flags);  // host memory, counted as pinned
cudaError_t cudaFreeHost(void * pointer);
cudaError_t cudaMemsetAsync(void * dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t * stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);  // cudaSuccess: the queue has run it all (unless refuse_call'd)
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t * event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaEventQuery(cudaEvent_t event);  // as cudaStreamQuery: all work runs as it is queued
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float * milliseconds, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaGetLastError();
const char * cudaGetErrorString(cudaError_t status);

// Driver, reached through cudaGetDriverEntryPointByVersion as on NVIDIA: virtual memory management only. A reserved
// range is inaccessible host address space; cuMemCreate counts device memory; cuMemMap places it in the range and
// cuMemSetAccess opens it (poisoned, as cudaMalloc's); cuMemUnmap must name one whole mapping, as the driver's does.
enum CUresult : int {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_NOT_SUPPORTED = 801
};
using CUdeviceptr = unsigned long long;
using CUdevice = int;
using CUmemGenericAllocationHandle = unsigned long long;
enum CUmemAllocationType : int { CU_MEM_ALLOCATION_TYPE_PINNED = 1 };
enum CUmemLocationType : int { CU_MEM_LOCATION_TYPE_DEVICE = 1 };
enum CUmemAccess_flags : int { CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3 };
enum CUmemAllocationGranularity_flags : int { CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1 };
enum CUdevice_attribute : int { CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102 };
struct CUmemLocation {
  CUmemLocationType type;
  int id;
};
struct CUmemAllocationProp {
  CUmemAllocationType type;
  CUmemLocation location;
};
struct CUmemAccessDesc {
  CUmemLocation location;
  CUmemAccess_flags flags;
};
enum cudaDriverEntryPointQueryResult : int { cudaDriverEntryPointSuccess = 0, cudaDriverEntryPointSymbolNotFound = 1 };
constexpr unsigned long long cudaEnableDefault = 0;
cudaError_t cudaGetDriverEntryPointByVersion(const char * symbol, void ** function, unsigned cuda_version,
                                             unsigned long long flags, cudaDriverEntryPointQueryResult * result);

namespace kosmos_emulation {

// The opt-in above 48 KiB of dynamic shared memory, as cudaFuncSetAttribute records it (the largest asked for any
// kernel: a launch names its kernel through a lambda here, which hides which one).
void raise_dynamic_shared_limit(int bytes);
int dynamic_shared_limit();
// Whether [pointer, pointer + bytes) lies inside one live device buffer (the emulated cuBLASLt's operand check).
bool is_device_range(const void * pointer, size_t bytes);
// A failed launch or kernel: the next cudaGetLastError (and stream synchronisation) answers it, with `message`.
void record_failure(cudaError_t status, const std::string & message);
// For tests: the call `symbol` answers "not supported" from now on: one of the driver's virtual memory calls
// ("cuMemMap", ...; CUDA_ERROR_NOT_SUPPORTED), as a sandboxed GPU's may, or "cublasLtMatmul"
// (CUBLAS_STATUS_NOT_SUPPORTED), as a library declining its own heuristic's algorithm would; or "cudaStreamQuery" or
// "cudaEventQuery" answers cudaErrorNotReady, as for work that waits (a collective whose peers have not come); or
// "ncclCommGetAsyncError" reports ncclSystemError, as NCCL does for a peer or network lost mid-collective. An empty
// symbol lifts the refusal. call_refused: whether `symbol` is the refused call.
void refuse_call(const std::string & symbol);
bool call_refused(const char * symbol);

// Runs the copies from pinned host memory that cudaMemcpyAsync queued (see there): every call that queues work or
// waits for it calls this first (the runtime's, Launch, the emulated cuBLASLt and NCCL).
void run_queued_copies();

// `kernel<<<grid, block, shared, stream>>>(args)` as rewrite_launches.cmake writes it:
// `Launch(grid, block, shared, stream).run([&](const auto &... a) { kernel(a...); })(args)`, so that a kernel
// template's arguments are deduced from the call as nvcc deduces them. Runs the grid at once (one synchronous queue);
// every thread calls the kernel with its own copies of the arguments.
struct Launch {
  dim3 grid, block;
  size_t shared;
  Launch(dim3 grid_, dim3 block_, size_t shared_ = 0, cudaStream_t = nullptr)
      : grid(grid_), block(block_), shared(shared_) {}

  template <typename Body>
  auto run(Body body) const {
    return [launch = *this, body](auto... args) {
      run_queued_copies();
      if (launch.shared > static_cast<size_t>(dynamic_shared_limit())) {
        record_failure(cudaErrorInvalidValue, "the launch asks for " + std::to_string(launch.shared) +
                                                  " bytes of dynamic shared memory, above the limit of " +
                                                  std::to_string(dynamic_shared_limit()) +
                                                  " (cudaFuncSetAttribute raises it up to 227 KiB)");
        return;
      }
      const std::string failure = run_grid({launch.grid.x, launch.grid.y, launch.grid.z},
                                           {launch.block.x, launch.block.y, launch.block.z}, launch.shared,
                                           KOSMOS_EMULATED_WARP_SIZE, [&] { body(args...); });
      if (!failure.empty()) record_failure(cudaErrorLaunchFailure, failure);
    };
  }
};

}  // namespace kosmos_emulation

template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel *, cudaFuncAttribute, int value) {
  kosmos_emulation::raise_dynamic_shared_limit(value);
  return cudaSuccess;
}

#include "backends/emulated/warp_matrices.h"
