// dropout_mask.h: the keep factors of a run of consecutive dropout elements, drawn from Philox so that element n
// of a stream depends only on (seed, n): each Philox block gives four elements, and a run that starts mid-block
// gets exactly the lanes a whole-tensor draw would give it.
#pragma once

#include <cmath>
#include <cstdint>

#include "backends/philox.h"

namespace kosmos::cpu {

// factors[i] = (uniform(seed, first + i) >= p) ? 1/(1-p) : 0, for i in [0, count).
inline void dropout_factors(uint64_t seed, uint64_t first, int64_t count, float p, float * factors) {
  const float keep_scale = 1.0f / (1.0f - p);
  // uniform = bits24 / 2^24 >= p  <=>  bits24 >= ceil(p * 2^24): the same decision in integers.
  const uint32_t threshold = static_cast<uint32_t>(std::ceil(static_cast<double>(p) * 16777216.0));
  int64_t i = 0;
  while (i < count) {
    const uint64_t index = first + static_cast<uint64_t>(i);
    const PhiloxBlock bits = philox_block(seed, index >> 2);
    for (uint32_t lane = static_cast<uint32_t>(index & 3u); lane < 4 && i < count; ++lane, ++i)
      factors[i] = (bits.lane[lane] >> 8) >= threshold ? keep_scale : 0.0f;
  }
}

}  // namespace kosmos::cpu
