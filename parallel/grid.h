// grid.h: the process grid of dp x pp x tp ranks. Tensor parallelism is innermost (neighbouring ranks, one node),
// then data, then pipeline: rank = tp + tp_size * (dp + dp_size * pp). Pure functions, testable without MPI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kosmos::parallel {

enum class Axis : uint8_t { kTensor, kData, kPipeline };

struct GridShape {
  int dp = 1, pp = 1, tp = 1;
  int world() const { return dp * pp * tp; }
  int size(Axis axis) const;
};

struct GridCoord {
  int dp = 0, pp = 0, tp = 0;
  int & along(Axis axis);  // the coordinate on `axis`
};

int rank_of(const GridShape & shape, const GridCoord & coord);
GridCoord coord_of(const GridShape & shape, int rank);
// The ranks that differ from `rank` only along `axis`, in axis order: its tp, dp or pp group.
std::vector<int> group_of(const GridShape & shape, int rank, Axis axis);
// The grid for `world` ranks given --dp --pp --tp (dp 0: whatever the other two leave). A product that does not
// equal the world size is an error that names the numbers and a fix.
GridShape grid_for(int world, int dp, int pp, int tp);
std::string describe(const GridShape & shape);  // "dp 2 x pp 2 x tp 1"

}  // namespace kosmos::parallel
