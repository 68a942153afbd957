// attention_block_order.h: the order in which the GPU's tiled attention kernels take their blocks (header-only, so
// that a CPU test checks it). Each block owns one tile of rows (64, or the mma.sync forward's 128) of one (batch,
// head); under a causal mask the tiles' work differs, by up to the number of tiles (a query tile sees the keys up
// to its last query, a key tile the queries from its first key). The GPU starts the blocks of a 1-D grid in order
// as SMs free up, so the order is:
//  - heads in groups of kAttentionHeadsPerGroup: the blocks of a group run together, so the two operands they all
//    stream (k and v, or q and dout) stay in L2 while they do (kosmos1: 16 heads x 2 x 2048 rows x 64 x 2 bytes =
//    8 MiB, against an H100's or H200's 50 MB);
//  - within a group, heaviest tiles first, heads fastest: the last blocks to start are the lightest, so the tail in
//    which a few SMs still work while the others idle is one light block long, not one heavy block.
// The order changes no result: every block computes what it would in any other order.
#pragma once

#include <cstdint>

#include "backends/philox.h"  // KOSMOS_HOST_DEVICE

namespace kosmos {

constexpr int32_t kAttentionHeadsPerGroup = 16;

struct AttentionBlockPlace {
  int32_t head_index;  // b * heads + h
  int32_t tile;        // the block's rows: [R tile, R tile + R), R the rows a block owns (64, or 128 forward)
};

// Where block `block` of a grid of head_count x tiles blocks (at most 2^31 - 1: a grid's limit) works;
// later_tiles_heavier: the later tiles do more (query tiles under a causal mask), else the earlier ones do, or all
// alike. In 32 bits, as the kernels have registers to spare for no more.
KOSMOS_HOST_DEVICE inline AttentionBlockPlace attention_block_place(int32_t block, int32_t head_count, int32_t tiles,
                                                                    bool later_tiles_heavier) {
  const int32_t group_blocks = kAttentionHeadsPerGroup * tiles;
  const int32_t first_head = block / group_blocks * kAttentionHeadsPerGroup;
  const int32_t left = head_count - first_head;
  const int32_t group_heads = left < kAttentionHeadsPerGroup ? left : kAttentionHeadsPerGroup;
  const int32_t within = block - first_head * tiles;
  const int32_t rank = within / group_heads;  // 0: the group's heaviest tiles
  return {first_head + within % group_heads, later_tiles_heavier ? tiles - 1 - rank : rank};
}

}  // namespace kosmos
