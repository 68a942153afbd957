// test_dtype.cpp: the host conversions between float and bf16/f16 on values whose encodings are known exactly,
// including rounding to nearest even, subnormals, infinities and NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backends/dtype.h"
#include "backends/tensor.h"

namespace kosmos {
namespace {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808000u)), 0x3f80);  // exactly halfway, even stays
  EXPECT_EQ(float_to_bf16(bits_float(0x3f818000u)), 0x3f82);  // exactly halfway, odd rounds up
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808001u)), 0x3f81);  // above halfway
  EXPECT_EQ(bf16_to_float(0x4049), 3.140625f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity())),
            std::numeric_limits<float>::infinity());
}

TEST(DType, F16KnownEncodings) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);               // largest finite
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);               // rounds to infinity
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // halfway to zero: even
  EXPECT_EQ(float_to_f16(std::ldexp(3.0f, -26)), 0x0001);  // above halfway
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // halfway between 1 and next: even
  EXPECT_EQ(f16_to_float(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t bits = 0; bits < 0x7c00; bits += 7)  // every 7th finite positive half survives a round trip
    EXPECT_EQ(float_to_f16(f16_to_float(static_cast<uint16_t>(bits))), bits);
}

TEST(TensorView, DescribeSliceAndReshape) {
  float data[24] = {};
  const TensorView view = make_view(data, DType::kF32, {2, 3, 4});
  EXPECT_EQ(describe(view), "f32[2, 3, 4]");
  EXPECT_TRUE(view.is_contiguous());
  const TensorView part = slice(view, 2, 1, 2);
  EXPECT_EQ(describe(part), "f32[2, 3, 2] strides [12, 4, 1]");
  EXPECT_EQ(part.as<float>(), data + 1);
  EXPECT_EQ(describe(reshape(view, {6, 4})), "f32[6, 4]");
  EXPECT_THROW(reshape(view, {5, 5}), std::runtime_error);
  EXPECT_THROW(reshape(part, {12}), std::runtime_error);
  EXPECT_EQ(describe(TensorView{}), "absent");
}

}  // namespace
}  // namespace kosmos
