// attention_dropout.h: which attention probabilities dropout keeps, drawn alike by every backend (header-only, for
// CPU and GPU kernels). The probabilities form rows, one per (sample, head, query), numbered over the whole
// [B, heads_total, Tq] tensor from the op's first_row (so a mask does not depend on how samples, micro-batches or
// heads are split). Each row's keys come in groups of 16, and group g of row R is one Philox block, the one at
// counter R * ceil(Tk / 16) + g: key j takes byte j % 16 of it (lane (j % 16) / 4, low byte first). Eight random
// bits per probability, as FlashAttention draws them, so one Philox evaluation serves 16 probabilities (a thread
// that holds 16 keys of a row, or one key of 16 rows, makes its blocks once). A byte below round(256 p) drops the
// probability and the rest are scaled by 256 / (256 - round(256 p)): p acts as the nearest multiple of 1/256
// (0.1 as 26/256 = 0.1016; above 255.5/256, as 255/256), and the expectation is kept exactly.
#pragma once

#include <cmath>
#include <cstdint>

#include "backends/philox.h"

namespace kosmos {

struct AttentionDropout {
  static constexpr int64_t kGroup = 16;  // keys per Philox block

  uint64_t seed = 0;
  uint64_t groups_per_row = 0;  // ceil(Tk / 16)
  uint32_t threshold = 0;       // a byte below it drops; 0: nothing is dropped
  float keep_scale = 1.0f;

  KOSMOS_HOST_DEVICE bool active() const { return threshold > 0; }
  // The block of row `row` that holds `key` (and the 15 keys of its group).
  KOSMOS_HOST_DEVICE PhiloxBlock group(uint64_t row, int64_t key) const { return group_from(row_start(row), key); }
  // The same from the counter of the row's first block, which a kernel that stays on one row works out once.
  KOSMOS_HOST_DEVICE uint64_t row_start(uint64_t row) const { return row * groups_per_row; }
  KOSMOS_HOST_DEVICE PhiloxBlock group_from(uint64_t row_start, int64_t key) const {
    return philox_block(seed, row_start + static_cast<uint64_t>(key / kGroup));
  }
  // The keep factor of a probability whose random byte is `byte`.
  KOSMOS_HOST_DEVICE float factor_of_byte(uint32_t byte) const { return byte >= threshold ? keep_scale : 0.0f; }
  // The keep factor of the key at place `within` (0 to 15) of its group, from the group's block.
  KOSMOS_HOST_DEVICE float factor_at(const PhiloxBlock & bits, uint32_t within) const {
    return factor_of_byte((philox_lane(bits, within / 4) >> (8 * (within % 4))) & 0xFFu);
  }
  KOSMOS_HOST_DEVICE float factor(const PhiloxBlock & bits, int64_t key) const {
    return factor_at(bits, static_cast<uint32_t>(key % kGroup));
  }
  // The keep factor of one probability, its block made for it alone.
  KOSMOS_HOST_DEVICE float factor(uint64_t row, int64_t key) const { return factor(group(row, key), key); }
};

// The draw of probability p (in [0, 1)) over rows of `keys` keys, keyed by `seed`.
inline AttentionDropout attention_dropout(uint64_t seed, float p, int64_t keys) {
  const long rounded = std::lround(static_cast<double>(p) * 256.0);
  const uint32_t threshold = static_cast<uint32_t>(rounded < 0 ? 0 : rounded > 255 ? 255 : rounded);
  AttentionDropout draw;
  draw.seed = seed;
  draw.groups_per_row = static_cast<uint64_t>((keys + AttentionDropout::kGroup - 1) / AttentionDropout::kGroup);
  draw.threshold = threshold;
  draw.keep_scale = 256.0f / static_cast<float>(256u - threshold);
  return draw;
}

// The keep factors of one row's keys taken in order, each group's block made once.
class AttentionDropoutRow {
 public:
  KOSMOS_HOST_DEVICE AttentionDropoutRow(const AttentionDropout & draw, uint64_t row) : draw_(draw), row_(row) {}
  KOSMOS_HOST_DEVICE float factor(int64_t key) {
    const int64_t group = key / AttentionDropout::kGroup;
    if (group != group_) {
      bits_ = draw_.group(row_, key);
      group_ = group;
    }
    return draw_.factor(bits_, key);
  }

 private:
  AttentionDropout draw_;
  uint64_t row_;
  int64_t group_ = -1;
  PhiloxBlock bits_{};
};

}  // namespace kosmos
