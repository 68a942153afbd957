// dtype.h: the element types a tensor may hold, their sizes and names, and exact host conversions
// between float and the 16-bit formats (round to nearest even, NaN kept quiet).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kosmos {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32 };

constexpr DType kAllDTypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI32};

size_t dtype_size(DType dtype);
const char * dtype_name(DType dtype);  // "f32", "bf16", "f16", "i32"
bool dtype_is_float(DType dtype);

inline uint32_t float_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}
inline float bits_float(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline uint16_t float_to_bf16(float value) {
  uint32_t bits = float_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
inline float bf16_to_float(uint16_t value) { return bits_float(static_cast<uint32_t>(value) << 16); }

uint16_t float_to_f16(float value);
float f16_to_float(uint16_t value);

}  // namespace kosmos
