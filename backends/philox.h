// philox.h: the Philox4x32-10 counter-based generator (Salmon et al., SC'11), header-only so that CPU and GPU
// kernels draw identical numbers. Element n of a stream keyed by `seed` is lane n % 4 of the block at counter n / 4,
// so any thread, rank or layout that asks for element n gets the same value.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KOSMOS_HOST_DEVICE __host__ __device__
#else
#define KOSMOS_HOST_DEVICE
#endif

namespace kosmos {

struct PhiloxBlock {
  uint32_t lane[4];
};

constexpr uint32_t kPhiloxWeyl0 = 0x9E3779B9u, kPhiloxWeyl1 = 0xBB67AE85u;  // key schedule increments

// One round on the counter's four lanes, in place; the CPU also runs it lane-wise over many blocks at once
// (backends/cpu/dropout_mask.h).
KOSMOS_HOST_DEVICE inline void philox_round(uint32_t & c0, uint32_t & c1, uint32_t & c2, uint32_t & c3, uint32_t key0,
                                            uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;  // round multipliers
#if defined(__CUDA_ARCH__) && !defined(KOSMOS_GPU_EMULATION)
  // The high halves by __umulhi: nvcc makes each product one wide multiply, where from the 64-bit form below it
  // adds two more a round (sm_90 SASS of a kernel that makes one block: 88 instructions instead of 104).
  const uint32_t high0 = __umulhi(kMul0, c0), high1 = __umulhi(kMul1, c2);
#else
  const uint32_t high0 = static_cast<uint32_t>((static_cast<uint64_t>(kMul0) * c0) >> 32);
  const uint32_t high1 = static_cast<uint32_t>((static_cast<uint64_t>(kMul1) * c2) >> 32);
#endif
  const uint32_t next0 = high1 ^ c1 ^ key0;
  const uint32_t next2 = high0 ^ c3 ^ key1;
  c1 = kMul1 * c2;
  c3 = kMul0 * c0;
  c0 = next0;
  c2 = next2;
}

KOSMOS_HOST_DEVICE inline PhiloxBlock philox4x32_10(PhiloxBlock counter, uint32_t key0, uint32_t key1) {
  for (int round = 0; round < 10; ++round) {
    philox_round(counter.lane[0], counter.lane[1], counter.lane[2], counter.lane[3], key0, key1);
    key0 += kPhiloxWeyl0;
    key1 += kPhiloxWeyl1;
  }
  return counter;
}

// Block `block` (elements 4 block .. 4 block + 3) of the stream keyed by `seed`.
KOSMOS_HOST_DEVICE inline PhiloxBlock philox_block(uint64_t seed, uint64_t block) {
  return philox4x32_10(PhiloxBlock{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u}},
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Lane `lane` (0 to 3) of a block, chosen by selects rather than an index, so that a GPU keeps the block in
// registers.
KOSMOS_HOST_DEVICE inline uint32_t philox_lane(const PhiloxBlock & bits, uint32_t lane) {
  return lane == 0 ? bits.lane[0] : lane == 1 ? bits.lane[1] : lane == 2 ? bits.lane[2] : bits.lane[3];
}

// The 32 random bits of element `index` of the stream keyed by `seed`.
KOSMOS_HOST_DEVICE inline uint32_t philox_bits(uint64_t seed, uint64_t index) {
  return philox_lane(philox_block(seed, index >> 2), static_cast<uint32_t>(index & 3u));
}

// A uniform float in [0, 1) with 24 random bits, from element `index`.
KOSMOS_HOST_DEVICE inline float philox_uniform(uint64_t seed, uint64_t index) {
  return static_cast<float>(philox_bits(seed, index) >> 8) * (1.0f / 16777216.0f);
}

}  // namespace kosmos
