// splitmix.h: splitmix64 (Steele, Lea and Flood, OOPSLA 2014; the constants of Vigna's version), the project's seed
// mixer: its finaliser spreads any 64-bit value over all 64 bits, and its sequence adds the golden-ratio step first.
// Dropout keys (model/kosmos.cpp), cuDNN's attention seeds and the op benchmarks' values come from it.
#pragma once

#include <cstdint>

namespace kosmos {

constexpr uint64_t kSplitmixStep = 0x9E3779B97F4A7C15ull;  // 2^64 over the golden ratio

inline uint64_t splitmix64_mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The sequence's next value; advances `state`.
inline uint64_t splitmix64_next(uint64_t & state) {
  state += kSplitmixStep;
  return splitmix64_mix(state);
}

}  // namespace kosmos
