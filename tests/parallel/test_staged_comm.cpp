// test_staged_comm.cpp: the staged communicator (parallel/comm_staged.h) under mpirun, with rank-dependent inputs
// and closed-form answers. A pretend GPU (the CPU device whose buffers the host may "not touch") holds the data, so
// every collective and p2p must go through host copies, which the device counts; host buffers must pass untouched.
#include <gtest/gtest.h>

#include <set>

#include "backends/registry.h"
#include "parallel/comm_staged.h"
#include "parallel/mpi_handle.h"
#include "tests/cpu_stand_in.h"

namespace kosmos::parallel {
namespace {

// The CPU device, but its buffers count as device memory: the host must reach them through copy().
class PretendGpu final : public testing::CpuStandIn {
 public:
  std::string backend() const override { return "pretend-gpu"; }
  std::string name() const override { return "pretend-gpu:0"; }
  std::string description() const override { return "the CPU device posing as a GPU"; }
  bool host_accessible() const override { return false; }
  bool is_host_memory(const void * pointer) const override { return owned_.count(pointer) == 0; }
  Buffer allocate(size_t bytes, BufferUse use) override {
    Buffer buffer = cpu->allocate(bytes, use);
    owned_.insert(buffer.data());
    return buffer;
  }
  void copy(TensorView dst, TensorView src, Stream & stream) override {
    ++copies;
    cpu->copy(dst, src, stream);
  }

  int copies = 0;

 private:
  std::set<const void *> owned_;
};

struct Fixture {
  PretendGpu gpu;
  std::unique_ptr<Stream> stream = gpu.create_stream();
  std::unique_ptr<Comm> world = staged_comm(mpi_world(), gpu);
  std::vector<Buffer> buffers;
  // A "device" tensor holding `values`, written through copy() as a real GPU would need.
  TensorView device_tensor(const std::vector<float> & values) {
    buffers.push_back(gpu.allocate(values.size() * sizeof(float), BufferUse::kActivations));
    const TensorView view = buffers.back().view(DType::kF32, {static_cast<int64_t>(values.size())});
    std::vector<float> host = values;
    gpu.copy(view, make_view(host.data(), DType::kF32, {static_cast<int64_t>(host.size())}), *stream);
    return view;
  }
  std::vector<float> read(const TensorView & view) {
    std::vector<float> host(static_cast<size_t>(view.numel()));
    gpu.copy(make_view(host.data(), DType::kF32, {view.numel()}), view, *stream);
    return host;
  }
};

TEST(StagedComm, CollectivesOnDeviceBuffersGoThroughTheHost) {
  Fixture f;
  const int n = f.world->size(), r = f.world->rank();
  const TensorView sums = f.device_tensor({static_cast<float>(r + 1), static_cast<float>(10 * r)});
  const int copies_before = f.gpu.copies;
  f.world->all_reduce(sums, ReduceOp::kSum, *f.stream);
  EXPECT_EQ(f.gpu.copies - copies_before, 2) << "one copy out and one back";
  EXPECT_EQ(f.read(sums), (std::vector<float>{n * (n + 1) / 2.0f, 10.0f * n * (n - 1) / 2.0f}));

  const TensorView mine = f.device_tensor({static_cast<float>(r), r + 0.5f});
  const TensorView all = f.device_tensor(std::vector<float>(2 * n, -1.0f));
  f.world->all_gather(all, mine, *f.stream);
  const std::vector<float> gathered = f.read(all);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(gathered[2 * i], static_cast<float>(i));
    EXPECT_EQ(gathered[2 * i + 1], i + 0.5f);
  }
  std::vector<float> contribution(2 * n);
  for (int s = 0; s < n; ++s) contribution[2 * s] = contribution[2 * s + 1] = static_cast<float>(r + s);
  const TensorView slice = f.device_tensor({0.0f, 0.0f});
  f.world->reduce_scatter(slice, f.device_tensor(contribution), ReduceOp::kSum, *f.stream);
  EXPECT_EQ(f.read(slice), (std::vector<float>(2, n * (n - 1) / 2.0f + n * r)));

  const TensorView shared = f.device_tensor({static_cast<float>(r)});
  f.world->broadcast(shared, n - 1, *f.stream);
  EXPECT_EQ(f.read(shared)[0], static_cast<float>(n - 1));

  // A reduce: the sum on the root (copied back there alone), the others' buffers as they were.
  const TensorView to_last = f.device_tensor({static_cast<float>(r + 1), 1.0f});
  const int copies_before_reduce = f.gpu.copies;
  f.world->reduce_async(to_last, n - 1, ReduceOp::kSum, *f.stream);
  f.world->wait_reductions(*f.stream);
  EXPECT_EQ(f.gpu.copies - copies_before_reduce, r == n - 1 ? 2 : 1);
  const std::vector<float> expected = r == n - 1 ? std::vector<float>{n * (n + 1) / 2.0f, static_cast<float>(n)}
                                                 : std::vector<float>{r + 1.0f, 1.0f};
  EXPECT_EQ(f.read(to_last), expected);
}

TEST(StagedComm, HostBuffersPassStraightThrough) {
  Fixture f;
  const int n = f.world->size();
  std::vector<float> host{1.0f};
  const int copies_before = f.gpu.copies;
  f.world->all_reduce(make_view(host.data(), DType::kF32, {1}), ReduceOp::kSum, *f.stream);
  EXPECT_EQ(host[0], static_cast<float>(n));
  EXPECT_EQ(f.gpu.copies, copies_before);
}

TEST(StagedComm, PointToPointInGroupsAndAsynchronousSends) {
  Fixture f;
  const int n = f.world->size(), r = f.world->rank();
  if (n == 1) GTEST_SKIP() << "needs 2 or more ranks";
  const int next = (r + 1) % n, previous = (r + n - 1) % n;
  // A ring in one group: the receive lands on the device only when the group ends.
  const TensorView outgoing = f.device_tensor({static_cast<float>(100 + r)});
  const TensorView incoming = f.device_tensor({-1.0f});
  f.world->group_begin();
  f.world->send(outgoing, next, *f.stream, 3);
  f.world->recv(incoming, previous, *f.stream, 3);
  f.world->group_end();
  EXPECT_EQ(f.read(incoming)[0], static_cast<float>(100 + previous));
  // Two asynchronous sends with different tags, received in the other order (as pipeline stages do).
  const TensorView first = f.device_tensor({static_cast<float>(r)}), second = f.device_tensor({r + 0.25f});
  f.world->send_async(first, next, *f.stream, 1);
  f.world->send_async(second, next, *f.stream, 2);
  const TensorView got_second = f.device_tensor({0.0f}), got_first = f.device_tensor({0.0f});
  f.world->recv(got_second, previous, *f.stream, 2);
  f.world->recv(got_first, previous, *f.stream, 1);
  f.world->wait_sends();
  EXPECT_EQ(f.read(got_first)[0], static_cast<float>(previous));
  EXPECT_EQ(f.read(got_second)[0], previous + 0.25f);
}

TEST(StagedComm, SplitsStayStagedAndParallelHdf5FindsMpiUnderneath) {
  Fixture f;
  const int r = f.world->rank();
  std::unique_ptr<Comm> pairs = f.world->split(r / 2, r);
  const TensorView value = f.device_tensor({static_cast<float>(r)});
  pairs->all_reduce(value, ReduceOp::kSum, *f.stream);
  const int first = r / 2 * 2, last = std::min(first + 1, f.world->size() - 1);
  EXPECT_EQ(f.read(value)[0], static_cast<float>(first + (last > first ? last : 0)));
  EXPECT_NE(mpi_handle(*f.world), MPI_COMM_NULL);
}

}  // namespace
}  // namespace kosmos::parallel
