// test_attention_block_order.cpp: the order in which the GPU attention kernels take their blocks
// (backends/attention_block_order.h): every (head, tile) exactly once, for group sizes that divide the heads and
// ones that leave a partial group; the blocks of a group within its heads; and the heaviest tiles first.
#include <gtest/gtest.h>

#include <set>
#include <utility>

#include "backends/attention_block_order.h"

namespace kosmos {
namespace {

// The work of a tile (the number of 64-row steps it streams) when the later or the earlier tiles are heavier.
int64_t tile_work(int64_t tile, int64_t tiles, bool later_tiles_heavier) {
  return later_tiles_heavier ? tile + 1 : tiles - tile;
}

TEST(AttentionBlockOrder, TakesEveryHeadAndTileOnceHeaviestFirstWithinEachGroup) {
  for (const int64_t heads : {1, 5, 16, 17, 40, 256})
    for (const int64_t tiles : {1, 3, 32})
      for (const bool later_heavier : {false, true}) {
        const std::string what = std::to_string(heads) + " heads x " + std::to_string(tiles) + " tiles, " +
                                  (later_heavier ? "later" : "earlier") + " tiles heavier";
        std::set<std::pair<int64_t, int64_t>> seen;
        int64_t previous_group = -1, previous_work = 0;
        for (int64_t block = 0; block < heads * tiles; ++block) {
          const AttentionBlockPlace place = attention_block_place(block, heads, tiles, later_heavier);
          ASSERT_GE(place.head_index, 0) << what << ", block " << block;
          ASSERT_LT(place.head_index, heads) << what << ", block " << block;
          ASSERT_GE(place.tile, 0) << what << ", block " << block;
          ASSERT_LT(place.tile, tiles) << what << ", block " << block;
          EXPECT_TRUE(seen.insert({place.head_index, place.tile}).second) << what << ": block " << block << " repeats";
          // A group's blocks are the kAttentionHeadsPerGroup heads that start at a multiple of it, all their tiles.
          const int64_t group = place.head_index / kAttentionHeadsPerGroup;
          EXPECT_EQ(group, block / (kAttentionHeadsPerGroup * tiles)) << what << ", block " << block;
          const int64_t work = tile_work(place.tile, tiles, later_heavier);
          if (group == previous_group) {
            EXPECT_LE(work, previous_work) << what << ": block " << block << " is heavier than the one before";
          } else {
            EXPECT_EQ(work, tiles) << what << ": group " << group << " does not start with its heaviest tiles";
          }
          previous_group = group;
          previous_work = work;
        }
        EXPECT_EQ(static_cast<int64_t>(seen.size()), heads * tiles) << what;
      }
}

}  // namespace
}  // namespace kosmos
