// test_philox.cpp: Philox4x32-10 against Random123's published known-answer vectors, and the stream properties
// dropout relies on: element n depends only on (seed, n), and the draws look uniform.
#include <gtest/gtest.h>

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
