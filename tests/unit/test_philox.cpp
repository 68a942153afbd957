// test_philox.cpp: Philox4x32-10 against Random123's published known-answer vectors, and the stream properties
// dropout relies on: element n depends only on (seed, n), the draws look uniform; and attention dropout's draw
// (backends/attention_dropout.h): which byte of which block each probability takes, its threshold and scale, and
// a row read in order giving the same factors; and the CPU's batched draws (backends/cpu/dropout_mask.h) against
// the one-block functions the GPU kernels use.
#include <gtest/gtest.h>

#include <vector>

#include "backends/attention_dropout.h"
#include "backends/cpu/dropout_mask.h"
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

// Key j of probability row R is byte j % 16 (lane (j % 16) / 4, low byte first) of the Philox block at counter
// R * ceil(Tk / 16) + j / 16, kept when that byte reaches round(256 p), then scaled by 256 / (256 - round(256 p)).
TEST(AttentionDropout, EachProbabilityTakesItsByteOfItsRowsGroupBlock) {
  const uint64_t seed = 0x0123456789abcdefull;
  const float p = 0.1f;
  for (int64_t keys : {1, 16, 17, 100, 2048}) {
    const AttentionDropout draw = attention_dropout(seed, p, keys);
    ASSERT_EQ(draw.threshold, 26u);  // 25.6 rounded
    ASSERT_FLOAT_EQ(draw.keep_scale, 256.0f / 230.0f);
    const uint64_t groups = static_cast<uint64_t>((keys + 15) / 16);
    for (uint64_t row : {0ull, 1ull, 77ull, 0x100000003ull}) {
      AttentionDropoutRow in_order(draw, row);
      for (int64_t key = 0; key < keys; ++key) {
        const uint64_t counter = row * groups + static_cast<uint64_t>(key) / 16;
        const PhiloxBlock block = philox4x32_10(
            PhiloxBlock{{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0, 0}},
            static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
        const uint32_t byte = (block.lane[(key % 16) / 4] >> (8 * (key % 4))) & 0xFFu;
        const float expected = byte >= 26u ? 256.0f / 230.0f : 0.0f;
        ASSERT_EQ(draw.factor(row, key), expected) << "row " << row << " key " << key << " of " << keys;
        ASSERT_EQ(in_order.factor(key), expected) << "row " << row << " key " << key << " of " << keys;
      }
    }
  }
}

TEST(AttentionDropout, ThresholdsRoundPToTheNearest256thAndKeepTheExpectation) {
  EXPECT_FALSE(attention_dropout(1, 0.0f, 8).active());
  EXPECT_FALSE(attention_dropout(1, 0.001f, 8).active());  // 0.256 rounds to 0: nothing dropped
  EXPECT_EQ(attention_dropout(1, 0.5f, 8).threshold, 128u);
  EXPECT_EQ(attention_dropout(1, 0.999f, 8).threshold, 255u);
  const AttentionDropout draw = attention_dropout(9, 0.25f, 4096);
  double kept = 0.0, mean_factor = 0.0;
  const int rows = 64, keys = 4096;
  for (int row = 0; row < rows; ++row) {
    AttentionDropoutRow factors(draw, static_cast<uint64_t>(row));
    for (int key = 0; key < keys; ++key) {
      const float f = factors.factor(key);
      kept += f > 0.0f ? 1.0 : 0.0;
      mean_factor += f;
    }
  }
  const double count = static_cast<double>(rows) * keys;
  EXPECT_NEAR(kept / count, 0.75, 0.005);
  EXPECT_NEAR(mean_factor / count, 1.0, 0.01);
}

// The CPU computes blocks 16 at a time across vector lanes; every count, start (across the 32-bit carry of the
// counter) and lane must still be philox_block's.
TEST(CpuDropoutMask, BatchedBlocksAreTheBlocksOneByOne) {
  const uint64_t seed = 0xfedcba9876543210ull;
  for (uint64_t first : {0ull, 3ull, 0xfffffff5ull, 0x123456789ull}) {
    for (int64_t blocks : {1, 3, 4, 5, 15, 16, 17, 40}) {
      std::vector<uint32_t> bits(4 * static_cast<size_t>(blocks) + 1, 0xdeadbeefu);
      cpu::philox_blocks(seed, first, blocks, bits.data());
      for (int64_t b = 0; b < blocks; ++b) {
        const PhiloxBlock expected = philox_block(seed, first + static_cast<uint64_t>(b));
        for (int lane = 0; lane < 4; ++lane)
          ASSERT_EQ(bits[4 * b + lane], expected.lane[lane]) << "block " << first << " + " << b << " lane " << lane;
      }
      EXPECT_EQ(bits.back(), 0xdeadbeefu) << "wrote past " << blocks << " blocks";
    }
  }
}

// Element n of the Dropout op keeps iff the top 24 bits of philox_bits(seed, n) reach ceil(p 2^24), for runs that
// start inside a block and span several of the CPU's pieces.
TEST(CpuDropoutMask, DropoutFactorsAreEachElementsOwnDraw) {
  const uint64_t seed = 77;
  const float p = 0.3f;
  const uint32_t threshold = static_cast<uint32_t>(std::ceil(static_cast<double>(p) * 16777216.0));
  for (uint64_t first : {0ull, 1ull, 6ull, 4000000001ull}) {
    for (int64_t count : {1, 3, 5, 255, 257, 1000}) {
      std::vector<float> factors(static_cast<size_t>(count));
      cpu::dropout_factors(seed, first, count, p, factors.data());
      for (int64_t i = 0; i < count; ++i) {
        const bool kept = (philox_bits(seed, first + static_cast<uint64_t>(i)) >> 8) >= threshold;
        ASSERT_EQ(factors[i], kept ? 1.0f / (1.0f - p) : 0.0f) << "element " << first << " + " << i;
      }
    }
  }
}

// The CPU's run of one attention row's keys equals the row read key by key, from any first key.
TEST(CpuDropoutMask, AttentionKeepFactorsAreTheRowReadInOrder) {
  const AttentionDropout draw = attention_dropout(0x0123456789abcdefull, 0.1f, 2100);
  for (uint64_t row : {0ull, 5ull, 0x100000003ull}) {
    for (int64_t first_key : {0, 1, 15, 16, 33, 1030}) {
      for (int64_t count : {1, 16, 47, 64, 1070}) {
        if (first_key + count > 2100) continue;
        std::vector<float> keep(static_cast<size_t>(count));
        cpu::attention_keep_factors(draw, row, first_key, count, keep.data());
        AttentionDropoutRow in_order(draw, row);
        for (int64_t j = 0; j < count; ++j)
          ASSERT_EQ(keep[j], in_order.factor(first_key + j)) << "row " << row << " key " << first_key + j;
      }
    }
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
