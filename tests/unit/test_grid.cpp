// test_grid.cpp: the dp x pp x tp grid without MPI: rank <-> coordinates, the groups (tp innermost, then dp, then
// pp; Megatron's worked example), and layouts that do not fit the world.
#include <gtest/gtest.h>

#include "backends/error.h"
#include "parallel/grid.h"

namespace kosmos::parallel {
namespace {

TEST(Grid, RanksAndCoordinatesRoundTrip) {
  const GridShape shape{3, 2, 4};  // dp 3, pp 2, tp 4
  for (int rank = 0; rank < shape.world(); ++rank) EXPECT_EQ(rank_of(shape, coord_of(shape, rank)), rank);
  const GridCoord coord = coord_of(shape, 13);  // 13 = tp 1 + 4 * (dp 0 + 3 * pp 1)... = 1 + 4 * 3
  EXPECT_EQ(coord.tp, 1);
  EXPECT_EQ(coord.dp, 0);
  EXPECT_EQ(coord.pp, 1);
}

TEST(Grid, GroupsFollowTensorThenDataThenPipeline) {
  const GridShape shape{2, 2, 2};  // 8 ranks
  EXPECT_EQ(group_of(shape, 0, Axis::kTensor), (std::vector<int>{0, 1}));
  EXPECT_EQ(group_of(shape, 0, Axis::kData), (std::vector<int>{0, 2}));
  EXPECT_EQ(group_of(shape, 5, Axis::kData), (std::vector<int>{5, 7}));
  EXPECT_EQ(group_of(shape, 1, Axis::kPipeline), (std::vector<int>{1, 5}));
  EXPECT_EQ(group_of(shape, 6, Axis::kPipeline), (std::vector<int>{2, 6}));
}

TEST(Grid, LayoutsThatDoNotFitAreNamed) {
  EXPECT_EQ(grid_for(8, 0, 2, 2).dp, 2);
  auto error_of = [](int world, int dp, int pp, int tp) {
    try {
      grid_for(world, dp, pp, tp);
    } catch (const Error & error) {
      return std::string(error.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of(6, 0, 4, 1).find("--pp 4 x --tp 1 = 4 does not divide the 6 ranks"), std::string::npos);
  EXPECT_NE(error_of(8, 3, 2, 1).find("--dp 3 x --pp 2 x --tp 1 = 6 ranks but 8 were launched"), std::string::npos);
  EXPECT_NE(error_of(4, 1, 0, 1).find("pp and tp must be >= 1"), std::string::npos);
  EXPECT_THROW(coord_of(GridShape{2, 1, 1}, 2), Error);
}

}  // namespace
}  // namespace kosmos::parallel
