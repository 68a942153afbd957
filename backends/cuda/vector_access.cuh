// vector_access.cuh: packs of 8 consecutive elements of an f32, bf16 or f16 buffer as floats, moved in 16-byte loads
// and stores (two for f32), for the memory-bound kernels: one scalar 2-byte load per thread keeps too few bytes in
// flight to fill HBM. A kernel reads whole packs over the 16-byte-aligned body of its tensors and element by element
// over the tail; host code picks the storage type once per launch with with_storage(). Also the dropout factors of a
// pack and the one rounding of a dropout onto a residual, which every kernel that drops shares.
#pragma once

#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "backends/cuda/gpu_common.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {

constexpr int kPack = 8;  // elements per pack

__device__ inline float to_float(__half value) { return __half2float(value); }
__device__ inline void put(__half & slot, float value) { slot = __float2half_rn(value); }

// The two 16-bit halves of a 32-bit word: element 2i in the low half (little-endian), 2i+1 in the high half; the
// element type (Bf16Bits or __half) picks the format.
__device__ inline void unpack_pair(Bf16Bits, uint32_t word, float & low, float & high) {
  low = __uint_as_float(word << 16);
  high = __uint_as_float(word & 0xffff0000u);
}
__device__ inline uint32_t pack_pair(Bf16Bits, float low, float high) {
#if KOSMOS_BF16_CONVERT_INSTRUCTIONS
  const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);  // one cvt.rn.bf16x2.f32 for both
  uint32_t word;
  memcpy(&word, &pair, sizeof word);
  return word;
#else
  return static_cast<uint32_t>(float_to_bf16_bits(low)) | (static_cast<uint32_t>(float_to_bf16_bits(high)) << 16);
#endif
}
__device__ inline void unpack_pair(__half, uint32_t word, float & low, float & high) {
  low = __half2float(__ushort_as_half(static_cast<unsigned short>(word & 0xffffu)));
  high = __half2float(__ushort_as_half(static_cast<unsigned short>(word >> 16)));
}
__device__ inline uint32_t pack_pair(__half, float low, float high) {
  return static_cast<uint32_t>(__half_as_ushort(__float2half_rn(low))) |
         (static_cast<uint32_t>(__half_as_ushort(__float2half_rn(high))) << 16);
}

// value as a T holds it: itself in f32, rounded to nearest even in bf16.
template <typename T>
__device__ inline float as_stored(float value) {
  T slot;
  put(slot, value);
  return to_float(slot);
}

// A pack as loaded, before it is widened to floats: two 16-byte words for f32, one for the 16-bit formats. A kernel
// that loads the next row's packs while it works on this row's holds them so, in half the registers of floats.
template <typename T>
struct RawPack {
  static_assert(std::is_same_v<T, Bf16Bits> || std::is_same_v<T, __half>, "a 16-bit float: Bf16Bits or __half");
  uint4 words;
};
template <>
struct RawPack<float> {
  float4 first, second;
};

// Pack `pack` of `base` (elements [8 pack, 8 pack + 8)), base 16-byte aligned, as loaded; then as floats.
__device__ inline RawPack<float> load_raw_pack(const float * base, int64_t pack) {
  const float4 * source = reinterpret_cast<const float4 *>(base + pack * kPack);
  return {source[0], source[1]};
}
template <typename Half>
__device__ inline RawPack<Half> load_raw_pack(const Half * base, int64_t pack) {
  return {*reinterpret_cast<const uint4 *>(base + pack * kPack)};
}
__device__ inline void widen_pack(const RawPack<float> & raw, float (&values)[kPack]) {
  values[0] = raw.first.x, values[1] = raw.first.y, values[2] = raw.first.z, values[3] = raw.first.w;
  values[4] = raw.second.x, values[5] = raw.second.y, values[6] = raw.second.z, values[7] = raw.second.w;
}
template <typename Half>
__device__ inline void widen_pack(const RawPack<Half> & raw, float (&values)[kPack]) {
  unpack_pair(Half{}, raw.words.x, values[0], values[1]);
  unpack_pair(Half{}, raw.words.y, values[2], values[3]);
  unpack_pair(Half{}, raw.words.z, values[4], values[5]);
  unpack_pair(Half{}, raw.words.w, values[6], values[7]);
}
template <typename T>
__device__ inline void load_pack(const T * base, int64_t pack, float (&values)[kPack]) {
  widen_pack(load_raw_pack(base, pack), values);
}

__device__ inline void store_pack(float * base, int64_t pack, const float (&values)[kPack]) {
  float4 * target = reinterpret_cast<float4 *>(base + pack * kPack);
  target[0] = make_float4(values[0], values[1], values[2], values[3]);
  target[1] = make_float4(values[4], values[5], values[6], values[7]);
}
template <typename Half>
__device__ inline void store_pack(Half * base, int64_t pack, const float (&values)[kPack]) {
  static_assert(std::is_same_v<Half, Bf16Bits> || std::is_same_v<Half, __half>, "a 16-bit float: Bf16Bits or __half");
  *reinterpret_cast<uint4 *>(base + pack * kPack) =
      make_uint4(pack_pair(Half{}, values[0], values[1]), pack_pair(Half{}, values[2], values[3]),
                 pack_pair(Half{}, values[4], values[5]), pack_pair(Half{}, values[6], values[7]));
}

// The dropout factors of stream elements [first, first + 8): two Philox blocks when first is a multiple of 4 (every
// tensor the model drops starts so), else each element's block on its own.
__device__ inline void dropout_pack_factors(const DropoutDraw & draw, uint64_t first, float (&factors)[kPack]) {
  if ((first & 3u) == 0) {
    const PhiloxBlock low = philox_block(draw.seed, first >> 2), high = philox_block(draw.seed, (first >> 2) + 1);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      factors[e] = dropout_factor_of(draw, low.lane[e]);
      factors[e + 4] = dropout_factor_of(draw, high.lane[e]);
    }
    return;
  }
#pragma unroll
  for (int e = 0; e < kPack; ++e) factors[e] = dropout_factor_of(draw, philox_bits(draw.seed, first + e));
}

// residual + value * factor rounded once (one FMA), as every dropout that adds a residual computes it: the join of
// a LayerNorm forward gives the same bits as DropoutForward.
__device__ inline float dropped_onto(float residual, float value, float factor) {
  return fmaf(value, factor, residual);
}

inline bool aligned_to_pack(const void * data) { return reinterpret_cast<uintptr_t>(data) % 16 == 0; }
inline bool aligned_to_pack(std::initializer_list<const void *> pointers) {
  for (const void * pointer : pointers)
    if (!aligned_to_pack(pointer)) return false;
  return true;
}

// How a dense tensor of `count` elements splits into packs and a tail: `packs` whole packs when every pointer a
// kernel touches is 16-byte aligned, else none (all elements go through the tail).
inline int64_t packs_of(int64_t count, std::initializer_list<const void *> pointers) {
  return aligned_to_pack(pointers) ? count / kPack : 0;
}

// Threads for `packs` packs plus the tail after them: one thread per pack, or per tail element where that is more.
inline unsigned pack_blocks(int64_t count, int64_t packs) {
  const int64_t tail = count - packs * kPack;
  return blocks_for(packs > tail ? packs : tail);
}

// f(Element{}) with Element the storage type of `dtype`: float, Bf16Bits or __half (i32 has no float arithmetic here).
template <typename F>
void with_storage(DType dtype, F && f) {
  switch (dtype) {
    case DType::kF32: f(float{}); return;
    case DType::kBF16: f(Bf16Bits{}); return;
    case DType::kF16: f(__half{}); return;
    case DType::kI32: break;
  }
  KOSMOS_FAIL("a float kernel was given an ", dtype_name(dtype), " tensor (internal error: validate() lets only f32, "
              "bf16 and f16 through)");
}

// with_storage for a tensor that `op` takes in f32 or bf16 only: f(float{}) or f(Bf16Bits{}), no f16 instance.
template <typename F>
void with_f32_or_bf16_storage(DType dtype, const char * op, F && f) {
  switch (dtype) {
    case DType::kF32: f(float{}); return;
    case DType::kBF16: f(Bf16Bits{}); return;
    case DType::kF16:
    case DType::kI32: break;
  }
  KOSMOS_FAIL(op, " on the GPU was given an ", dtype_name(dtype), " tensor (internal error: validate() lets only "
              "f32 and bf16 through)");
}

// The grid's threads over the tail elements [8 packs, count), after KOSMOS_GRID_LOOP over the packs [0, packs).
#define KOSMOS_TAIL_LOOP(index, packs, count)                                                                   \
  for (int64_t index = (packs) * kPack + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < (count); \
       index += static_cast<int64_t>(blockDim.x) * gridDim.x)

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
