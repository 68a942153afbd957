// test_nccl_comm.cpp: the NCCL communicator (parallel/comm_nccl.h) under mpirun, with rank-dependent inputs and
// closed-form answers: collectives on device buffers (gathered and scattered through views of other shapes than
// their counterparts), host buffers through MPI, point-to-point through host memory, a split. On CUDA devices, one
// GPU per rank, skipped where a node has fewer GPUs than ranks (NCCL refuses two ranks on one GPU), so one GPU checks
// the one-rank paths (no NCCL communicator), two or more the collectives themselves (bench/device_check.sh runs
// it); and on the emulated GPU (one per process), whose NCCL runs the same code's collectives over MPI on 2 and 4
// ranks in every test run.
#include <gtest/gtest.h>
#include <mpi.h>

#include <thread>

#include "backends/dtype.h"
#include "backends/error.h"
#include "backends/registry.h"
#include "parallel/comm_nccl.h"
#include "parallel/comm_staged.h"
#ifdef KOSMOS_USE_EMULATED_NCCL
#include "backends/emulated/cuda_surface.h"  // refuse_call
#endif

namespace kosmos::parallel {
namespace {

// The NCCL communicators of this build, by the backend whose devices they take.
std::vector<std::string> nccl_backends() {
  std::vector<std::string> names;
#ifdef KOSMOS_USE_NCCL
  names.push_back("cuda");
#endif
#ifdef KOSMOS_USE_EMULATED_NCCL
  names.push_back("emulated");
#endif
  return names;
}

std::unique_ptr<Comm> nccl_comm_for(const std::string & backend, std::unique_ptr<Comm> host, Device & device) {
#ifdef KOSMOS_USE_NCCL
  if (backend == "cuda") return nccl_comm(std::move(host), device);
#endif
#ifdef KOSMOS_USE_EMULATED_NCCL
  if (backend == "emulated") return emulated_nccl_comm(std::move(host), device);
#endif
  ADD_FAILURE() << "no NCCL communicator for backend " << backend;
  return nullptr;
}

// This rank's device of `backend`, or null (with the reason) when the node has fewer CUDA GPUs than ranks (each
// process has an emulated GPU of its own).
std::unique_ptr<Device> device_of_this_rank(const std::string & backend, std::string & why) {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  const BackendRegistry registry;
  for (const BackendEntry & entry : registry.entries()) {
    if (entry.name != backend) continue;
    if (backend != "cuda") return entry.create(0);
    const int gpus = entry.available ? entry.device_count() : 0;
    if (gpus < local_size) {
      why = std::to_string(local_size) + " ranks on this node but " + std::to_string(gpus) + " CUDA devices";
      return nullptr;
    }
    return entry.create(local_rank);
  }
  why = "no " + backend + " backend in this build";
  return nullptr;
}

struct Fixture {
  explicit Fixture(const std::string & backend) : gpu(device_of_this_rank(backend, why)) {
    if (!gpu) return;
    stream = gpu->create_stream();
    world = nccl_comm_for(backend, staged_comm(mpi_world(), *gpu), *gpu);
  }
  std::string why;
  std::unique_ptr<Device> gpu;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<Comm> world;
  std::vector<Buffer> buffers;
  TensorView device_tensor(const std::vector<float> & values) {
    buffers.push_back(gpu->allocate(values.size() * sizeof(float), BufferUse::kActivations));
    const TensorView view = buffers.back().view(DType::kF32, {static_cast<int64_t>(values.size())});
    std::vector<float> host = values;
    gpu->copy(view, make_view(host.data(), DType::kF32, {static_cast<int64_t>(host.size())}), *stream);
    return view;
  }
  std::vector<float> read(const TensorView & view) {
    std::vector<float> host(static_cast<size_t>(view.numel()));
    gpu->copy(make_view(host.data(), DType::kF32, {view.numel()}), make_view(view.data, view.dtype, {view.numel()}),
              *stream);
    stream->synchronize();
    return host;
  }
};

class NcclComm : public ::testing::TestWithParam<std::string> {};

TEST_P(NcclComm, CollectivesOnDeviceBuffers) {
  Fixture f(GetParam());
  if (!f.gpu) GTEST_SKIP() << f.why;
  const int n = f.world->size(), r = f.world->rank();
  const TensorView sums = f.device_tensor({static_cast<float>(r + 1), static_cast<float>(10 * r)});
  f.world->all_reduce(sums, ReduceOp::kSum, *f.stream);
  EXPECT_EQ(f.read(sums), (std::vector<float>{n * (n + 1) / 2.0f, 10.0f * n * (n - 1) / 2.0f}));
  {  // bf16, as tensor parallelism reduces bf16 activation gradients: small integers, exact
    std::vector<uint16_t> host = {float_to_bf16(static_cast<float>(r + 1)), float_to_bf16(-2.0f * r)};
    f.buffers.push_back(f.gpu->allocate(host.size() * 2, BufferUse::kActivations));
    const TensorView halves = f.buffers.back().view(DType::kBF16, {2});
    f.gpu->copy(halves, make_view(host.data(), DType::kBF16, {2}), *f.stream);
    f.world->all_reduce(halves, ReduceOp::kSum, *f.stream);
    f.gpu->copy(make_view(host.data(), DType::kBF16, {2}), halves, *f.stream);
    f.stream->synchronize();
    EXPECT_EQ(bf16_to_float(host[0]), n * (n + 1) / 2.0f);
    EXPECT_EQ(bf16_to_float(host[1]), -1.0f * n * (n - 1));
  }
  const TensorView largest = f.device_tensor({static_cast<float>(r), -static_cast<float>(r)});
  f.world->all_reduce(largest, ReduceOp::kMax, *f.stream);
  EXPECT_EQ(f.read(largest), (std::vector<float>{n - 1.0f, 0.0f}));

  const TensorView mine = f.device_tensor({static_cast<float>(r), r + 0.5f});
  const TensorView everyone = f.device_tensor(std::vector<float>(static_cast<size_t>(2 * n), -1.0f));
  f.world->all_gather(make_view(everyone.data, DType::kF32, {n, 2}), mine, *f.stream);  // [n, 2] from [2]
  std::vector<float> gathered;
  for (int k = 0; k < n; ++k) gathered.insert(gathered.end(), {static_cast<float>(k), k + 0.5f});
  EXPECT_EQ(f.read(everyone), gathered);

  std::vector<float> slices;  // slice k holds k + r on rank r: the sum over ranks is n*k + n(n-1)/2
  for (int k = 0; k < n; ++k) slices.push_back(static_cast<float>(k + r));
  const TensorView whole = f.device_tensor(slices);
  const TensorView part = f.device_tensor({-1.0f});
  f.world->reduce_scatter(part, make_view(whole.data, DType::kF32, {n, 1}), ReduceOp::kSum, *f.stream);  // [1]
  EXPECT_EQ(f.read(part), (std::vector<float>{static_cast<float>(n * r + n * (n - 1) / 2)}));

  const TensorView broadcast = f.device_tensor({static_cast<float>(r == n - 1 ? 42 : r)});
  f.world->broadcast(broadcast, n - 1, *f.stream);
  EXPECT_EQ(f.read(broadcast), (std::vector<float>{42.0f}));
}

TEST_P(NcclComm, ReductionsRunBehindLaterWorkUntilWaitedFor) {
  Fixture f(GetParam());
  if (!f.gpu) GTEST_SKIP() << f.why;
  const int n = f.world->size(), r = f.world->rank();
  // Rank r contributes r + 1: the sum n(n+1)/2 lands everywhere (all-reduce) or on the root (reduce), whose
  // neighbours keep their own contribution.
  const float sum = n * (n + 1) / 2.0f, mine = r + 1.0f;
  const TensorView everywhere = f.device_tensor({mine, mine}), to_last = f.device_tensor({mine});
  const TensorView to_first = f.device_tensor({mine, mine, mine});
  f.world->all_reduce_async(everywhere, ReduceOp::kSum, *f.stream);
  f.world->reduce_async(to_last, n - 1, ReduceOp::kSum, *f.stream);
  f.world->progress();
  f.world->wait_reductions(*f.stream);
  f.world->reduce(to_first, 0, ReduceOp::kSum, *f.stream);
  EXPECT_EQ(f.read(everywhere), std::vector<float>(2, sum));
  EXPECT_EQ(f.read(to_last), std::vector<float>(1, r == n - 1 ? sum : mine));
  EXPECT_EQ(f.read(to_first), std::vector<float>(3, r == 0 ? sum : mine));
  float scalar = mine;  // host memory goes through MPI
  f.world->reduce(make_view(&scalar, DType::kF32, {1}), n - 1, ReduceOp::kMax, *f.stream);
  EXPECT_EQ(scalar, r == n - 1 ? static_cast<float>(n) : mine);
  EXPECT_THROW(f.world->reduce(to_first, -1, ReduceOp::kSum, *f.stream), Error);
}

TEST_P(NcclComm, HostBuffersPointToPointAndSplits) {
  Fixture f(GetParam());
  if (!f.gpu) GTEST_SKIP() << f.why;
  const int n = f.world->size(), r = f.world->rank();
  float scalar = static_cast<float>(r + 1);  // the trainer's scalars live in host memory
  f.world->all_reduce(make_view(&scalar, DType::kF32, {1}), ReduceOp::kSum, *f.stream);
  EXPECT_EQ(scalar, n * (n + 1) / 2.0f);

  if (n > 1) {  // a ring (a rank does not message itself)
    const TensorView outgoing = f.device_tensor({static_cast<float>(100 + r)});
    const TensorView incoming = f.device_tensor({-1.0f});
    f.world->group_begin();
    f.world->send(outgoing, (r + 1) % n, *f.stream, 3);
    f.world->recv(incoming, (r + n - 1) % n, *f.stream, 3);
    f.world->group_end();
    EXPECT_EQ(f.read(incoming), (std::vector<float>{static_cast<float>(100 + (r + n - 1) % n)}));
  }

  const std::unique_ptr<Comm> half = f.world->split(r % 2, r);  // even and odd ranks
  const TensorView ones = f.device_tensor({1.0f});
  half->all_reduce(ones, ReduceOp::kSum, *f.stream);
  EXPECT_EQ(f.read(ones), (std::vector<float>{static_cast<float>(r % 2 == 0 ? (n + 1) / 2 : n / 2)}));
  f.world->barrier();
}

// The watchdog's question (Comm::device_queue), asked from another thread as its prober does: how many of the
// collectives queued so far have finished; on the emulated GPU also the answers for work that waits and for a failed
// transport.
TEST_P(NcclComm, DeviceQueueSaysHowManyCollectivesFinished) {
  Fixture f(GetParam());
  if (!f.gpu) GTEST_SKIP() << f.why;
  DeviceQueue * queue = f.world->device_queue();
  if (f.world->size() == 1) {  // a group of one queues nothing
    EXPECT_EQ(queue, nullptr);
    return;
  }
  ASSERT_NE(queue, nullptr);
  const auto ask = [queue] {
    QueueState state;
    std::thread([&] { state = queue->finished_so_far(); }).join();
    return state;
  };
  const TensorView sums = f.device_tensor({1.0f});
  f.world->all_reduce(sums, ReduceOp::kSum, *f.stream);
  EXPECT_EQ(f.read(sums), std::vector<float>{static_cast<float>(f.world->size())});  // waits for it
  float scalar = 1.0f;  // host memory goes through MPI: no collective queued
  f.world->all_reduce(make_view(&scalar, DType::kF32, {1}), ReduceOp::kSum, *f.stream);
  EXPECT_EQ(queue->queued(), 1);
  QueueState state = ask();
  EXPECT_EQ(state.finished, 1);
  EXPECT_EQ(state.error, "");
#ifdef KOSMOS_USE_EMULATED_NCCL
  if (GetParam() == "emulated") {
    kosmos_emulation::refuse_call("cudaEventQuery");  // the next collective waits for its peers
    f.world->all_reduce(sums, ReduceOp::kSum, *f.stream);
    EXPECT_EQ(queue->queued(), 2);
    state = ask();
    EXPECT_EQ(state.finished, 1);
    EXPECT_EQ(state.error, "");
    kosmos_emulation::refuse_call("ncclCommGetAsyncError");  // NCCL has lost a peer or the network
    state = ask();
    EXPECT_EQ(state.finished, 2);
    EXPECT_NE(state.error.find("NCCL: "), std::string::npos) << state.error;
    EXPECT_NE(state.error.find("told to fail"), std::string::npos) << state.error;
    kosmos_emulation::refuse_call("");
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(Backends, NcclComm, ::testing::ValuesIn(nccl_backends()),
                         [](const ::testing::TestParamInfo<std::string> & info) { return info.param; });

}  // namespace
}  // namespace kosmos::parallel
