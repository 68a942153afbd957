// test_collectives.cpp: the MPI Comm under mpirun with rank-dependent inputs and closed-form answers (Megatron's
// habit), and the grid's sub-communicators. Run with any rank count; the grid test needs 4.
#include <gtest/gtest.h>

#include <numeric>

#include "backends/error.h"
#include "backends/registry.h"
#include "parallel/comm.h"

namespace kosmos::parallel {
namespace {

struct Fixture {
  std::unique_ptr<Device> device = BackendRegistry().create("cpu", 0);
  std::unique_ptr<Stream> stream = device->create_stream();
};

TEST(MpiComm, AllReduceSumsAndMaxes) {
  Fixture f;
  auto world = mpi_world();
  const int n = world->size(), r = world->rank();
  std::vector<float> values{static_cast<float>(r + 1), static_cast<float>(10 * r)};
  world->all_reduce(make_view(values.data(), DType::kF32, {2}), ReduceOp::kSum, *f.stream);
  EXPECT_EQ(values[0], n * (n + 1) / 2.0f);           // 1 + 2 + ... + n
  EXPECT_EQ(values[1], 10.0f * n * (n - 1) / 2.0f);   // 10 (0 + 1 + ... + n-1)
  std::vector<int32_t> largest{r * r};
  world->all_reduce(make_view(largest.data(), DType::kI32, {1}), ReduceOp::kMax, *f.stream);
  EXPECT_EQ(largest[0], (n - 1) * (n - 1));
}

TEST(MpiComm, AllGatherAndReduceScatterAreInverse) {
  Fixture f;
  auto world = mpi_world();
  const int n = world->size(), r = world->rank();
  std::vector<float> mine{static_cast<float>(r), static_cast<float>(r) + 0.5f}, all(2 * n);
  world->all_gather(make_view(all.data(), DType::kF32, {2 * n}), make_view(mine.data(), DType::kF32, {2}), *f.stream);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(all[2 * i], static_cast<float>(i));
    EXPECT_EQ(all[2 * i + 1], i + 0.5f);
  }
  // Every rank contributes rank + slice index to each slice; slice s then holds sum_r (r + s) = n(n-1)/2 + n s.
  std::vector<float> contribution(2 * n), slice(2);
  for (int s = 0; s < n; ++s) contribution[2 * s] = contribution[2 * s + 1] = static_cast<float>(r + s);
  world->reduce_scatter(make_view(slice.data(), DType::kF32, {2}), make_view(contribution.data(), DType::kF32, {2 * n}),
                        ReduceOp::kSum, *f.stream);
  EXPECT_EQ(slice[0], n * (n - 1) / 2.0f + n * r);
  EXPECT_EQ(slice[1], slice[0]);
}

TEST(MpiComm, ReductionsRunBehindLaterWorkUntilWaitedFor) {
  Fixture f;
  auto world = mpi_world();
  const int n = world->size(), r = world->rank();
  // Rank r contributes r + 1 to every element: the sum is n(n+1)/2 wherever a reduction delivers it; a reduce leaves
  // the other ranks' buffers as they were.
  const float sum = n * (n + 1) / 2.0f, mine = r + 1.0f;
  std::vector<float> everywhere(3, mine), to_last(2, mine), to_first(2, mine);
  world->all_reduce_async(make_view(everywhere.data(), DType::kF32, {3}), ReduceOp::kSum, *f.stream);
  world->reduce_async(make_view(to_last.data(), DType::kF32, {2}), n - 1, ReduceOp::kSum, *f.stream);
  world->progress();
  world->reduce(make_view(to_first.data(), DType::kF32, {2}), 0, ReduceOp::kSum, *f.stream);  // blocking, meanwhile
  EXPECT_EQ(to_first, std::vector<float>(2, r == 0 ? sum : mine));
  world->wait_reductions(*f.stream);
  EXPECT_EQ(everywhere, std::vector<float>(3, sum));
  EXPECT_EQ(to_last, std::vector<float>(2, r == n - 1 ? sum : mine));
  std::vector<int32_t> largest{r * r};
  world->reduce(make_view(largest.data(), DType::kI32, {1}), 0, ReduceOp::kMax, *f.stream);
  EXPECT_EQ(largest[0], r == 0 ? (n - 1) * (n - 1) : r * r);
  EXPECT_THROW(world->reduce(make_view(to_first.data(), DType::kF32, {2}), n, ReduceOp::kSum, *f.stream), Error);
}

TEST(MpiComm, BroadcastAndRingExchange) {
  Fixture f;
  auto world = mpi_world();
  const int n = world->size(), r = world->rank();
  std::vector<float> data{static_cast<float>(r), 0.0f};
  world->broadcast(make_view(data.data(), DType::kF32, {2}), n - 1, *f.stream);
  EXPECT_EQ(data[0], static_cast<float>(n - 1));
  if (n == 1) return;
  // Every rank sends to the next and receives from the previous at once: grouped, it cannot deadlock.
  std::vector<float> outgoing{static_cast<float>(100 + r)}, incoming{-1.0f};
  world->group_begin();
  world->send(make_view(outgoing.data(), DType::kF32, {1}), (r + 1) % n, *f.stream);
  world->recv(make_view(incoming.data(), DType::kF32, {1}), (r + n - 1) % n, *f.stream);
  world->group_end();
  EXPECT_EQ(incoming[0], static_cast<float>(100 + (r + n - 1) % n));
}

TEST(MpiComm, GridGroupsReduceOverTheirOwnRanks) {
  auto world = mpi_world();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks (mpirun -np 4)";
  Fixture f;
  ProcessGrid grid(GridShape{2, 1, 2}, mpi_world());  // dp 2 x tp 2: ranks 0,1 | 2,3 share dp, tp pairs {0,1} {2,3}
  const int r = grid.world().rank();
  std::vector<float> value{static_cast<float>(r)};
  grid.group(Axis::kTensor).all_reduce(make_view(value.data(), DType::kF32, {1}), ReduceOp::kSum, *f.stream);
  EXPECT_EQ(value[0], r < 2 ? 1.0f : 5.0f);  // 0 + 1 or 2 + 3
  value[0] = static_cast<float>(r);
  grid.group(Axis::kData).all_reduce(make_view(value.data(), DType::kF32, {1}), ReduceOp::kSum, *f.stream);
  EXPECT_EQ(value[0], r % 2 == 0 ? 2.0f : 4.0f);  // 0 + 2 or 1 + 3
  EXPECT_EQ(grid.group(Axis::kPipeline).size(), 1);
  EXPECT_EQ(grid.group(Axis::kTensor).rank(), r % 2);
}

TEST(MpiComm, MisuseIsAnError) {
  Fixture f;
  auto world = mpi_world();
  std::vector<float> data(3);
  EXPECT_THROW(world->send(make_view(data.data(), DType::kF32, {3}), world->rank(), *f.stream), Error);
  EXPECT_THROW(world->all_gather(make_view(data.data(), DType::kF32, {3}), make_view(data.data(), DType::kF32, {2}),
                                 *f.stream),
               Error);
  EXPECT_THROW(world->group_end(), Error);
}

}  // namespace
}  // namespace kosmos::parallel
