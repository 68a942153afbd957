// dropout_mask.h: the keep factors of dropout on the CPU, for runs of consecutive elements (the Dropout op) and for
// runs of keys of one attention row (backends/attention_dropout.h), drawn from Philox so that an element's factor
// depends only on the seed and its place: the same numbers as philox_block gives the GPU kernels, made here
// several blocks at a time across vector lanes (the 32 x 32 -> 64-bit products map to vpmuludq).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backends/attention_dropout.h"
#include "backends/philox.h"

namespace kosmos::cpu {

// bits[4 b + l] = lane l of Philox block first_block + b, for b in [0, blocks), keyed by seed, Batch blocks at a time.
template <int64_t Batch>
inline void philox_blocks_by(uint64_t seed, uint64_t first_block, int64_t blocks, uint32_t * bits) {
  for (int64_t start = 0; start < blocks; start += Batch) {
    uint32_t c0[Batch], c1[Batch], c2[Batch], c3[Batch];
#pragma omp simd
    for (int64_t j = 0; j < Batch; ++j) {
      const uint64_t block = first_block + static_cast<uint64_t>(start + j);
      c0[j] = static_cast<uint32_t>(block);
      c1[j] = static_cast<uint32_t>(block >> 32);
      c2[j] = c3[j] = 0u;
    }
    uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
#pragma omp simd
      for (int64_t j = 0; j < Batch; ++j) philox_round(c0[j], c1[j], c2[j], c3[j], key0, key1);
      key0 += kPhiloxWeyl0;
      key1 += kPhiloxWeyl1;
    }
    const int64_t made = std::min(Batch, blocks - start);
    for (int64_t j = 0; j < made; ++j) {
      uint32_t * block_bits = bits + 4 * (start + j);
      block_bits[0] = c0[j];
      block_bits[1] = c1[j];
      block_bits[2] = c2[j];
      block_bits[3] = c3[j];
    }
  }
}

constexpr int64_t kPhiloxBatch = 16;  // blocks computed side by side in long runs

// The same for any count: short runs (an attention tile's 64 keys are 4 blocks) in batches of 4, so that lanes are
// not spent on blocks nobody reads.
inline void philox_blocks(uint64_t seed, uint64_t first_block, int64_t blocks, uint32_t * bits) {
  if (blocks <= 4) philox_blocks_by<4>(seed, first_block, blocks, bits);
  else philox_blocks_by<kPhiloxBatch>(seed, first_block, blocks, bits);
}

// factors[i] = (uniform(seed, first + i) >= p) ? 1/(1-p) : 0, for i in [0, count): element n is lane n % 4 of
// block n / 4, its top 24 bits the uniform.
inline void dropout_factors(uint64_t seed, uint64_t first, int64_t count, float p, float * factors) {
  const float keep_scale = 1.0f / (1.0f - p);
  // uniform = bits24 / 2^24 >= p  <=>  bits24 >= ceil(p * 2^24): the same decision in integers.
  const uint32_t threshold = static_cast<uint32_t>(std::ceil(static_cast<double>(p) * 16777216.0));
  constexpr int64_t kPieceBlocks = 4 * kPhiloxBatch;
  uint32_t bits[4 * kPieceBlocks];
  for (int64_t i = 0; i < count;) {
    const uint64_t index = first + static_cast<uint64_t>(i);
    const int64_t skip = static_cast<int64_t>(index & 3u);  // lanes of the first block before element `index`
    const int64_t length = std::min(4 * kPieceBlocks - skip, count - i);
    philox_blocks(seed, index >> 2, (skip + length + 3) / 4, bits);
    const uint32_t * lanes = bits + skip;
#pragma omp simd
    for (int64_t j = 0; j < length; ++j) factors[i + j] = (lanes[j] >> 8) >= threshold ? keep_scale : 0.0f;
    i += length;
  }
}

// keep[j] = the factor of key first_key + j of attention probability row `row`, for j in [0, count): key k is byte
// k % 16 of the row's block k / 16 (lane (k % 16) / 4, low byte first), so a block's bytes in memory order are its
// 16 keys in order.
inline void attention_keep_factors(const AttentionDropout & draw, uint64_t row, int64_t first_key, int64_t count,
                                   float * keep) {
  constexpr int64_t kGroup = AttentionDropout::kGroup;
  constexpr int64_t kPieceBlocks = 4 * kPhiloxBatch;
  uint32_t bits[4 * kPieceBlocks];
  uint8_t bytes[4 * sizeof(uint32_t) * kPieceBlocks];
  for (int64_t j = 0; j < count;) {
    const int64_t key = first_key + j, skip = key % kGroup;
    const int64_t length = std::min(kGroup * kPieceBlocks - skip, count - j);
    philox_blocks(draw.seed, row * draw.groups_per_row + static_cast<uint64_t>(key / kGroup),
                  (skip + length + kGroup - 1) / kGroup, bits);
    for (int64_t word = 0; word < (skip + length + 3) / 4; ++word)  // little-endian bytes, whatever the host
      for (int byte = 0; byte < 4; ++byte) bytes[4 * word + byte] = static_cast<uint8_t>(bits[word] >> (8 * byte));
    const uint8_t * key_bytes = bytes + skip;
#pragma omp simd
    for (int64_t i = 0; i < length; ++i) keep[j + i] = draw.factor_of_byte(key_bytes[i]);
    j += length;
  }
}

}  // namespace kosmos::cpu
