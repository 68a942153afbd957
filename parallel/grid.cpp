// grid.cpp: rank <-> coordinates of the dp x pp x tp grid, and checking a requested layout against the world.
#include "parallel/grid.h"

#include "backends/error.h"

namespace kosmos::parallel {

int GridShape::size(Axis axis) const {
  switch (axis) {
    case Axis::kTensor: return tp;
    case Axis::kData: return dp;
    case Axis::kPipeline: return pp;
  }
  KOSMOS_FAIL("GridShape::size: unknown axis ", static_cast<int>(axis));
}

int & GridCoord::along(Axis axis) {
  switch (axis) {
    case Axis::kTensor: return tp;
    case Axis::kData: return dp;
    case Axis::kPipeline: return pp;
  }
  KOSMOS_FAIL("GridCoord::along: unknown axis ", static_cast<int>(axis));
}

int rank_of(const GridShape & shape, const GridCoord & coord) {
  KOSMOS_CHECK(coord.tp >= 0 && coord.tp < shape.tp && coord.dp >= 0 && coord.dp < shape.dp && coord.pp >= 0 &&
                   coord.pp < shape.pp,
               "grid: coordinates (dp ", coord.dp, ", pp ", coord.pp, ", tp ", coord.tp, ") lie outside ",
               describe(shape));
  return coord.tp + shape.tp * (coord.dp + shape.dp * coord.pp);
}

GridCoord coord_of(const GridShape & shape, int rank) {
  KOSMOS_CHECK(rank >= 0 && rank < shape.world(), "grid: rank ", rank, " lies outside ", describe(shape), " (",
               shape.world(), " ranks)");
  return GridCoord{(rank / shape.tp) % shape.dp, rank / (shape.tp * shape.dp), rank % shape.tp};
}

std::vector<int> group_of(const GridShape & shape, int rank, Axis axis) {
  const GridCoord home = coord_of(shape, rank);
  std::vector<int> ranks;
  for (int i = 0; i < shape.size(axis); ++i) {
    GridCoord coord = home;
    coord.along(axis) = i;
    ranks.push_back(rank_of(shape, coord));
  }
  return ranks;
}

GridShape grid_for(int world, int dp, int pp, int tp) {
  KOSMOS_CHECK(world >= 1, "grid: a world of ", world, " ranks");
  KOSMOS_CHECK(pp >= 1 && tp >= 1 && dp >= 0, "--dp ", dp, " --pp ", pp, " --tp ", tp,
               ": pp and tp must be >= 1, dp >= 1 (or 0 for whatever pp and tp leave)");
  KOSMOS_CHECK(world % (pp * tp) == 0, "--pp ", pp, " x --tp ", tp, " = ", pp * tp, " does not divide the ", world,
               " ranks; launch a multiple of ", pp * tp, " ranks or change --pp/--tp");
  const int data = dp == 0 ? world / (pp * tp) : dp;
  KOSMOS_CHECK(data * pp * tp == world, "--dp ", data, " x --pp ", pp, " x --tp ", tp, " = ", data * pp * tp,
               " ranks but ", world, " were launched; make the product equal the rank count (--dp 0 infers it)");
  return GridShape{data, pp, tp};
}

std::string describe(const GridShape & shape) {
  return "dp " + std::to_string(shape.dp) + " x pp " + std::to_string(shape.pp) + " x tp " + std::to_string(shape.tp);
}

}  // namespace kosmos::parallel
