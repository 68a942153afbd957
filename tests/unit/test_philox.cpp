// test_philox.cpp: Philox4x32-10 against Random123's published known-answer vectors, and the stream properties
// dropout relies on: element n depends only on (seed, n), the draws look uniform, and the per-thread cache of
// blocks gives the same bits.
#include <gtest/gtest.h>

#include <random>

#include "backends/philox.h"

namespace kosmos {
namespace {

TEST(Philox, KnownAnswerVectors) {
  struct Vector {
    PhiloxBlock counter;
    uint32_t key0, key1;
    PhiloxBlock expected;
  };
  const Vector vectors[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Vector & v : vectors) {
    const PhiloxBlock out = philox4x32_10(v.counter, v.key0, v.key1);
    for (int lane = 0; lane < 4; ++lane) EXPECT_EQ(out.lane[lane], v.expected.lane[lane]) << "lane " << lane;
  }
}

TEST(Philox, ElementsAreLanesOfTheirBlock) {
  const uint64_t seed = 0x0123456789abcdefull;
  for (uint64_t index : {0ull, 1ull, 5ull, 4000000001ull, 0x100000003ull}) {
    const uint64_t block = index / 4;
    const PhiloxBlock out = philox4x32_10(
        PhiloxBlock{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0, 0}},
        static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    EXPECT_EQ(philox_bits(seed, index), out.lane[index % 4]) << "index " << index;
  }
  EXPECT_NE(philox_bits(1, 10), philox_bits(2, 10));
}

// The orders the GPU attention kernels ask in: a thread's two consecutive columns of each row (rows tk apart),
// and one column's consecutive rows interleaved with another column's (the key-major backward), at aligned and
// unaligned starts; every answer is philox_bits', and each block is made once (or twice where a pair straddles).
TEST(Philox, TheCacheGivesTheStreamsBitsAndMakesEachBlockAboutOnce) {
  const uint64_t seed = 0xfeedfacecafebeefull;
  for (uint64_t start : {0ull, 2ull, 7ull, 4096ull + 1ull, 0x100000002ull}) {
    PhiloxCache pairs(seed);
    for (uint64_t row = 0; row < 16; ++row)
      for (uint64_t column = 0; column < 2; ++column) {
        const uint64_t index = start + row * 2048 + column;
        ASSERT_EQ(pairs.bits(index), philox_bits(seed, index)) << "index " << index;
      }
    EXPECT_EQ(pairs.blocks_made(), start % 4 == 3 ? 32u : 16u) << "start " << start;

    PhiloxCache interleaved(seed);
    for (uint64_t row = 0; row < 16; ++row)
      for (uint64_t column = 0; column < 2; ++column) {
        const uint64_t index = start + column * 2050 + row;  // columns far apart, rows consecutive
        ASSERT_EQ(interleaved.bits(index), philox_bits(seed, index)) << "index " << index;
      }
    EXPECT_LE(interleaved.blocks_made(), 10u) << "start " << start;  // 4 or 5 blocks per column
  }
  PhiloxCache scattered(seed);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t index = rng() % 64;
    ASSERT_EQ(scattered.bits(index), philox_bits(seed, index)) << "index " << index;
  }
}

TEST(Philox, UniformsHaveTheRightMeanAndRange) {
  double sum = 0.0;
  const int count = 200000;
  for (int i = 0; i < count; ++i) {
    const float u = philox_uniform(42, static_cast<uint64_t>(i));
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  EXPECT_NEAR(sum / count, 0.5, 0.005);  // 0.5 +- about 8 standard errors
}

}  // namespace
}  // namespace kosmos
