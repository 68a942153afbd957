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

// Element `index` of a host buffer of `dtype` as a float (i32 converts), and a float stored as one (the 16-bit
// formats round to nearest even): what the CPU's dtype-generic loops (cast, fill, the widened matmul) read and write.
inline float load_as_float(const void * data, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::kF32: return static_cast<const float *>(data)[index];
    case DType::kBF16: return bf16_to_float(static_cast<const uint16_t *>(data)[index]);
    case DType::kF16: return f16_to_float(static_cast<const uint16_t *>(data)[index]);
    case DType::kI32: return static_cast<float>(static_cast<const int32_t *>(data)[index]);
  }
  return 0.0f;  // not reached: the switch names every dtype
}
inline void store_from_float(void * data, DType dtype, int64_t index, float value) {
  switch (dtype) {
    case DType::kF32: static_cast<float *>(data)[index] = value; return;
    case DType::kBF16: static_cast<uint16_t *>(data)[index] = float_to_bf16(value); return;
    case DType::kF16: static_cast<uint16_t *>(data)[index] = float_to_f16(value); return;
    case DType::kI32: static_cast<int32_t *>(data)[index] = static_cast<int32_t>(value); return;
  }
}

}  // namespace kosmos
