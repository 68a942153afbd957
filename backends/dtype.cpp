// dtype.cpp: dtype names and sizes, and the IEEE half-precision conversions used by host code and tests.
#include "backends/dtype.h"

#include "backends/error.h"

namespace kosmos {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kI32: return 4;
  }
  KOSMOS_FAIL("dtype_size: unknown dtype value ", static_cast<int>(dtype), " (known: f32, bf16, f16, i32)");
}

const char * dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kI32: return "i32";
  }
  KOSMOS_FAIL("dtype_name: unknown dtype value ", static_cast<int>(dtype), " (known: f32, bf16, f16, i32)");
}

bool dtype_is_float(DType dtype) { return dtype != DType::kI32; }

uint16_t float_to_f16(float value) {
  const uint32_t bits = float_bits(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to infinity
  if (magnitude < 0x38800000u) {
    // Subnormal or zero in f16: scale into the integer range and round to nearest even.
    const float scaled = bits_float(magnitude) * 16777216.0f;  // 2^24: one f16 subnormal step becomes 1
    const uint32_t rounded = static_cast<uint32_t>(scaled);
    const float remainder = scaled - static_cast<float>(rounded);
    uint32_t result = rounded;
    if (remainder > 0.5f || (remainder == 0.5f && (rounded & 1u))) ++result;
    return static_cast<uint16_t>(sign | result);
  }
  uint32_t rebiased = magnitude - (112u << 23);  // exponent bias 127 -> 15
  rebiased += 0xfffu + ((rebiased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rebiased >> 13));
}

float f16_to_float(uint16_t value) {
  const uint32_t sign = static_cast<uint32_t>(value & 0x8000u) << 16;
  const uint32_t exponent = (value >> 10) & 0x1fu;
  const uint32_t mantissa = value & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) / 16777216.0f;  // mantissa * 2^-24
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

}  // namespace kosmos
