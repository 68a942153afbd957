// gpu_common.cuh: what every kernel file of the GPU backend shares, for nvcc and hipcc alike: the vendor header,
// the error check, launch sizes, 16-bit float conversions that round as the host does (backends/dtype.h), a
// dtype-generic element load/store, and warp and block sums. Everything lives in kosmos::cuda under nvcc,
// kosmos::rocm under hipcc and kosmos::emulated (kosmos::emulated_rocm for the ROCm build's sources) under g++
// (KOSMOS_GPU_NAMESPACE; backends/emulated), so the builds link into one binary.
#pragma once

#if defined(KOSMOS_GPU_EMULATION) && defined(KOSMOS_USE_ROCM)  // the ROCm build's sources, in waves of 64
#include "backends/cuda/vendor/emulated.h"
#define KOSMOS_GPU_NAMESPACE emulated_rocm
#elif defined(KOSMOS_GPU_EMULATION)
#include "backends/cuda/vendor/emulated.h"
#define KOSMOS_GPU_NAMESPACE emulated
#elif defined(KOSMOS_USE_ROCM)
#include "backends/cuda/vendor/hip.h"
#define KOSMOS_GPU_NAMESPACE rocm
#else
#include "backends/cuda/vendor/cuda.h"
#define KOSMOS_GPU_NAMESPACE cuda
#endif

// KOSMOS_BF16_CONVERT_INSTRUCTIONS: bf16 rounding by sm_80's cvt.rn.bf16(x2).f32 (NVIDIA, compute capability 8.0
// or newer). HIP defines no __CUDA_ARCH__; the emulated ROCm build, whose surface defines it, takes ROCm's path too.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(KOSMOS_USE_ROCM)
#define KOSMOS_BF16_CONVERT_INSTRUCTIONS 1
#else
#define KOSMOS_BF16_CONVERT_INSTRUCTIONS 0
#endif

#include <cmath>
#include <cstdint>

#include "backends/dtype.h"
#include "backends/philox.h"
#include "backends/tensor.h"
#include "backends/error.h"

// KOSMOS_GPU_CHECK(cudaMemcpyAsync(...)): a failing runtime call throws kosmos::Error with file, line, the call and
// the runtime's message.
#define KOSMOS_GPU_CHECK(call)                                                                              \
  do {                                                                                                      \
    const cudaError_t kosmos_status = (call);                                                               \
    if (kosmos_status != cudaSuccess)                                                                       \
      KOSMOS_FAIL(KOSMOS_GPU_VENDOR " call ", #call, " failed: ", cudaGetErrorString(kosmos_status),        \
                  " (a kernel fault earlier in the stream also shows here; rerun with compute-sanitizer)"); \
  } while (0)
// A runtime call on a cleanup or probing path, whose status nothing can act on (a destructor's free, clearing a
// sticky error): its status is dropped on purpose.
#define KOSMOS_GPU_IGNORE(call) static_cast<void>(call)
// After a kernel launch: a bad launch configuration surfaces here, with the kernel's name.
#define KOSMOS_GPU_LAUNCHED(kernel_name) KOSMOS_GPU_CHECK_LAUNCH(cudaGetLastError(), kernel_name)
#define KOSMOS_GPU_CHECK_LAUNCH(status_expr, kernel_name)                                                             \
  do {                                                                                                                \
    const cudaError_t kosmos_status = (status_expr);                                                                  \
    if (kosmos_status != cudaSuccess)                                                                                 \
      KOSMOS_FAIL(KOSMOS_GPU_VENDOR " kernel ", kernel_name, " did not launch: ", cudaGetErrorString(kosmos_status)); \
  } while (0)

namespace kosmos::KOSMOS_GPU_NAMESPACE {

constexpr int kWarp = KOSMOS_WARP_SIZE;
constexpr int kThreads = 256;  // threads per block of the elementwise and row kernels

constexpr int64_t kMaxBlocks = int64_t{1} << 21;  // grid-stride loops cover the rest

inline unsigned blocks_for(int64_t count, int threads = kThreads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

// Grid-stride loop over [0, count).
#define KOSMOS_GRID_LOOP(index, count)                                                               \
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < (count); \
       index += static_cast<int64_t>(blockDim.x) * gridDim.x)

__device__ inline float bf16_bits_to_float(uint16_t bits) { return __uint_as_float(static_cast<uint32_t>(bits) << 16); }
// Round to nearest even. sm_80 and later do it in one instruction (cvt.rn.bf16.f32, which also keeps subnormals;
// a NaN becomes the canonical NaN there, a quiet NaN of the same sign here), where the arithmetic below takes seven:
// every 16-bit pack a kernel stores went through it eight times.
__device__ inline uint16_t float_to_bf16_bits(float value) {
#if KOSMOS_BF16_CONVERT_INSTRUCTIONS
  return __bfloat16_as_ushort(__float2bfloat16_rn(value));
#else
  uint32_t bits = __float_as_uint(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
#endif
}

// Element `index` of a buffer of `dtype` as a float (i32 converts), and back.
__device__ inline float load_float(const void * data, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::kF32: return static_cast<const float *>(data)[index];
    case DType::kBF16: return bf16_bits_to_float(static_cast<const uint16_t *>(data)[index]);
    case DType::kF16: return __half2float(static_cast<const __half *>(data)[index]);
    case DType::kI32: return static_cast<float>(static_cast<const int32_t *>(data)[index]);
  }
  return 0.0f;
}
__device__ inline void store_float(void * data, DType dtype, int64_t index, float value) {
  switch (dtype) {
    case DType::kF32: static_cast<float *>(data)[index] = value; break;
    case DType::kBF16: static_cast<uint16_t *>(data)[index] = float_to_bf16_bits(value); break;
    case DType::kF16: static_cast<__half *>(data)[index] = __float2half_rn(value); break;
    case DType::kI32: static_cast<int32_t *>(data)[index] = static_cast<int32_t>(value); break;
  }
}

// A bf16 element by its bits: the storage type of kernels templated over f32 or bf16 tensors, read with
// to_float() and written with put(), rounding as store_float does.
struct Bf16Bits {
  uint16_t bits;
};
__device__ inline float to_float(float value) { return value; }
__device__ inline float to_float(Bf16Bits value) { return bf16_bits_to_float(value.bits); }
__device__ inline void put(float & slot, float value) { slot = value; }
__device__ inline void put(Bf16Bits & slot, float value) { slot.bits = float_to_bf16_bits(value); }

// Sum and maximum as the reductions below take them.
struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return max(a, b);
  }
};

// The reduction over a warp's lanes, returned to every lane (butterfly shuffles: the same order on every lane).
template <typename T, typename Op>
__device__ inline T warp_reduce(T value, Op op) {
  for (int mask = kWarp / 2; mask > 0; mask /= 2) value = op(value, KOSMOS_SHFL_XOR(value, mask));
  return value;
}
template <typename T>
__device__ inline T warp_sum(T value) {
  return warp_reduce(value, SumOp{});
}

// The reduction over a block's threads, returned to every thread, in a fixed order (deterministic). `shared`
// holds one T per warp; the block size is a multiple of the warp size. Successive calls in one kernel are
// separated by the __syncthreads() at its end.
template <typename T, typename Op>
__device__ inline T block_reduce(T value, T * shared, Op op) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  value = warp_reduce(value, op);
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  T total = shared[0];
  for (int w = 1; w < warps; ++w) total = op(total, shared[w]);
  __syncthreads();
  return total;
}
template <typename T>
__device__ inline T block_sum(T value, T * shared) {
  return block_reduce(value, shared, SumOp{});
}
template <typename T>
__device__ inline T block_max(T value, T * shared) {
  return block_reduce(value, shared, MaxOp{});
}

// Inverted dropout as the CPU draws it (backends/cpu/dropout_mask.h): element n is kept when the top 24 bits of
// Philox(seed, n) reach ceil(p * 2^24), and then scaled by 1/(1-p).
struct DropoutDraw {
  uint64_t seed;
  uint32_t threshold;
  float keep_scale;
};
inline DropoutDraw dropout_draw(uint64_t seed, float p) {
  return {seed, static_cast<uint32_t>(std::ceil(static_cast<double>(p) * 16777216.0)), 1.0f / (1.0f - p)};
}
__device__ inline float dropout_factor_of(const DropoutDraw & draw, uint32_t bits) {
  return (bits >> 8) >= draw.threshold ? draw.keep_scale : 0.0f;
}

// Dims and strides of a view of up to four dims, passed to kernels by value.
struct Layout {
  int64_t dims[4];
  int64_t strides[4];
  int ndim;
};
inline Layout layout_of(const TensorView & view) {
  Layout layout{};
  layout.ndim = view.ndim;
  for (int axis = 0; axis < view.ndim; ++axis) {
    layout.dims[axis] = view.dims[axis];
    layout.strides[axis] = view.strides[axis];
  }
  return layout;
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
