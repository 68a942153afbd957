// test_gpu_emulator.cpp: the emulated GPU (backends/emulated) runs kernels as the hardware would and faults where the
// hardware's rules are broken: shuffles exchange lanes, __syncthreads orders shared memory (and its absence shows),
// cp.async's copies land at the latest or at once (so that a race on their targets shows), mma.sync and ldmatrix
// follow the PTX ISA's fragment layouts (against a plain product), the attention's ldmatrix loads meet no bank
// conflicts, and a misaligned ldmatrix,
// a lane leaving its warp mid-collective, a deadlock and a read past a buffer's end fail the launch with a message,
// after which the next launch runs; reserved address ranges keep the driver's rules (access only once granted,
// unmapping whole mappings, freeing addresses only once unmapped) and give their memory back, and a device whose
// driver refuses one of those calls grows its arenas in separate buffers and says why; a product cuBLASLt declines
// at the call runs on the own GEMM kernel, GEMM tuning keeps the fastest of the library's algorithms and leaves C as
// it was, a buffer freed while an error unwinds waits for no queued work, and copies from the host may reuse their
// source at once and arrive whole.
// Kernels here are written against cuda_surface.h and launched as rewrite_launches.cmake writes a `<<<...>>>`
// launch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/emulated/cuda_surface.h"
#include "backends/registry.h"

namespace {

using kosmos_emulation::Launch;

// refuse_call(symbol) for a scope, lifted however the scope ends (a failed assertion, a throw), so that the tests
// after it in this process find the emulator as it was.
class RefusedCall {
 public:
  explicit RefusedCall(const std::string & symbol) { kosmos_emulation::refuse_call(symbol); }
  ~RefusedCall() { kosmos_emulation::refuse_call(""); }
  RefusedCall(const RefusedCall &) = delete;
  RefusedCall & operator=(const RefusedCall &) = delete;
};

// What `work` writes to stderr; the capture ends even if it throws (gtest allows one capture at a time).
template <typename Work>
std::string stderr_of(Work && work) {
  testing::internal::CaptureStderr();
  try {
    work();
  } catch (...) {
    const std::string said = testing::internal::GetCapturedStderr();
    ADD_FAILURE() << "it threw; stderr said: " << said;
    throw;
  }
  return testing::internal::GetCapturedStderr();
}

// Runs `kernel` on `grid` blocks of `block` threads with `shared` bytes of dynamic shared memory, and returns the
// launch's failure message ("" when it ran).
template <typename Kernel, typename... Args>
std::string launch(Kernel kernel, dim3 grid, dim3 block, size_t shared, Args... args) {
  Launch(grid, block, shared).run([&](const auto &... a) { kernel(a...); })(args...);
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? std::string() : std::string(cudaGetErrorString(status));
}

void shuffle_kernel(int * out, int mask) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, lane * 10, mask);
}

void reverse_kernel(float * out, bool synchronise) {
  float * const shared = reinterpret_cast<float *>(kosmos_emulation::dynamic_shared());
  shared[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (synchronise) __syncthreads();
  out[threadIdx.x] = shared[blockDim.x - 1 - threadIdx.x];
}

// c[16 x 8] = a[16 x 16] b[16 x 8] through the fragments, with each lane packing what the PTX ISA says it holds.
void mma_kernel(float * c, const float * a, const float * b) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  const auto pack = [](float low, float high) {
    return static_cast<uint32_t>(kosmos::float_to_bf16(low)) | (static_cast<uint32_t>(kosmos::float_to_bf16(high)) << 16);
  };
  const auto at = [&](int row, int k) { return a[row * 16 + k]; };
  const uint32_t fragment_a[4] = {pack(at(g, 2 * t), at(g, 2 * t + 1)), pack(at(g + 8, 2 * t), at(g + 8, 2 * t + 1)),
                                  pack(at(g, 2 * t + 8), at(g, 2 * t + 9)),
                                  pack(at(g + 8, 2 * t + 8), at(g + 8, 2 * t + 9))};
  const uint32_t b0 = pack(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]);
  const uint32_t b1 = pack(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
  float accumulator[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  kosmos_emulation::mma_m16n8k16_bf16(accumulator, fragment_a, b0, b1);
  c[g * 8 + 2 * t] = accumulator[0];
  c[g * 8 + 2 * t + 1] = accumulator[1];
  c[(g + 8) * 8 + 2 * t] = accumulator[2];
  c[(g + 8) * 8 + 2 * t + 1] = accumulator[3];
}

// Four 8 x 8 bf16 matrices, row r of matrix m at shared + (8 m + r) * 8 + offset elements; every lane's 4 registers.
void ldmatrix_kernel(uint32_t * out, bool transposed, int offset) {
  auto * const shared = reinterpret_cast<uint16_t *>(kosmos_emulation::dynamic_shared());
  const int lane = static_cast<int>(threadIdx.x);
  for (int e = lane; e < 4 * 64; e += 32) shared[e + offset] = static_cast<uint16_t>(e);  // element value = index
  __syncwarp();
  uint32_t registers[4];
  kosmos_emulation::ldmatrix_x4(registers, shared + lane * 8 + offset, transposed);
  for (int m = 0; m < 4; ++m) out[lane * 4 + m] = registers[m];
}

void early_exit_shuffle_kernel(int * out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

// Half of each warp waits at __syncwarp for the other half, which waits at __syncthreads for the first: a deadlock.
void crossed_barriers_kernel(int * out) {
  if (threadIdx.x % 32 < 16) {
    __syncwarp();
    __syncthreads();
  } else {
    __syncthreads();
    __syncwarp();
  }
  out[threadIdx.x] = 1;
}

// A buffer refilled by cp.async: each thread's 16-byte slot holds its index, then each thread reads its neighbour's
// slot and refills its own with `fresh` (fresh[4 t] = 1000 + t), waiting for the refill after a barrier (as a
// pipeline does, computing on the other buffer meanwhile); with `read_first` it reads and waits at a barrier before
// the refill, as a double buffer must, else it starts the refill first. out[block * threads + t] is what thread t
// read in that block: t + 1 (mod threads) when the read came before the neighbour's refill.
void refill_kernel(float * out, const float * fresh, bool read_first) {
  auto * const slots = reinterpret_cast<float *>(kosmos_emulation::dynamic_shared());
  const int thread = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);
  for (int i = 0; i < 4; ++i) slots[4 * thread + i] = static_cast<float>(thread);
  __syncthreads();
  float seen = -1.0f;
  if (read_first) {
    seen = slots[4 * ((thread + 1) % threads)];
    __syncthreads();
  }
  kosmos_emulation::copy_async_16(slots + 4 * thread, fresh + 4 * thread);
  if (!read_first) seen = slots[4 * ((thread + 1) % threads)];
  __syncthreads();
  kosmos_emulation::wait_async_copies();
  out[blockIdx.x * blockDim.x + threadIdx.x] = seen;
}

TEST(GpuEmulator, ShufflesExchangeLanes) {
  std::vector<int> out(64, -1);
  ASSERT_EQ(launch(shuffle_kernel, 1, 64, 0, out.data(), 5), "");
  for (int thread = 0; thread < 64; ++thread) EXPECT_EQ(out[thread], ((thread % 32) ^ 5) * 10) << thread;
}

TEST(GpuEmulator, SyncthreadsOrdersSharedMemoryAndItsAbsenceShows) {
  std::vector<float> out(128, -1.0f);
  ASSERT_EQ(launch(reverse_kernel, 2, 128, 128 * sizeof(float), out.data(), true), "");
  for (int thread = 0; thread < 128; ++thread) EXPECT_EQ(out[thread], 127 - thread);
  // Without the barrier thread 0 reads its partner's slot before the partner wrote it: poison (NaN), not 127.
  ASSERT_EQ(launch(reverse_kernel, 1, 128, 128 * sizeof(float), out.data(), false), "");
  EXPECT_TRUE(std::isnan(out[0])) << out[0];
}

// cp.async's copies land at the thread's wait in blocks 0 and 1 and at once in blocks 2 and 3: a refill started
// before the other threads' reads goes unseen in the first two (every read finds the old bytes) and shows in each of
// the other two (some thread finds its neighbour's new value), whose threads run in opposite orders.
TEST(GpuEmulator, CpAsyncLandsAtTheWaitOrAtOnceSoRacesOnItsTargetShow) {
  constexpr int kThreads = 64, kBlocks = 4;
  std::vector<float> fresh(4 * kThreads), out(kBlocks * kThreads, -1.0f);
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < 4; ++i) fresh[4 * t + i] = static_cast<float>(1000 + t);
  const size_t shared = 4 * kThreads * sizeof(float);
  ASSERT_EQ(launch(refill_kernel, kBlocks, kThreads, shared, out.data(), fresh.data(), true), "");
  for (int i = 0; i < kBlocks * kThreads; ++i) EXPECT_EQ(out[i], (i % kThreads + 1) % kThreads) << i;
  ASSERT_EQ(launch(refill_kernel, kBlocks, kThreads, shared, out.data(), fresh.data(), false), "");
  int refilled_too_soon[kBlocks] = {};
  for (int i = 0; i < kBlocks * kThreads; ++i) {
    const float neighbour = static_cast<float>((i % kThreads + 1) % kThreads);
    EXPECT_TRUE(out[i] == neighbour || out[i] == 1000.0f + neighbour) << i << ": " << out[i];
    refilled_too_soon[i / kThreads] += out[i] == 1000.0f + neighbour;
  }
  EXPECT_EQ(refilled_too_soon[0], 0);
  EXPECT_EQ(refilled_too_soon[1], 0);
  EXPECT_GT(refilled_too_soon[2], 0) << "in block 2, a refill started before the other threads' reads went unseen";
  EXPECT_GT(refilled_too_soon[3], 0) << "in block 3, a refill started before the other threads' reads went unseen";
}

TEST(GpuEmulator, MmaFollowsThePtxFragmentLayout) {
  std::vector<float> a(16 * 16), b(16 * 8), c(16 * 8, 0.0f);
  for (int i = 0; i < 16 * 16; ++i) a[i] = static_cast<float>((i * 7) % 13 - 6);  // small integers: exact in bf16
  for (int i = 0; i < 16 * 8; ++i) b[i] = static_cast<float>((i * 5) % 11 - 5);
  ASSERT_EQ(launch(mma_kernel, 1, 32, 0, c.data(), a.data(), b.data()), "");
  for (int row = 0; row < 16; ++row)
    for (int column = 0; column < 8; ++column) {
      float expected = 0.0f;
      for (int k = 0; k < 16; ++k) expected += a[row * 16 + k] * b[k * 8 + column];
      EXPECT_EQ(c[row * 8 + column], expected) << row << ", " << column;
    }
}

TEST(GpuEmulator, LdmatrixFollowsThePtxLayoutAndFaultsWhenMisaligned) {
  std::vector<uint32_t> out(32 * 4);
  for (const bool transposed : {false, true}) {
    ASSERT_EQ(launch(ldmatrix_kernel, 1, 32, 4 * 64 * 2 + 64, out.data(), transposed, 0), "");
    for (int lane = 0; lane < 32; ++lane)
      for (int m = 0; m < 4; ++m) {
        const int row = transposed ? 2 * (lane % 4) : lane / 4, column = transposed ? lane / 4 : 2 * (lane % 4);
        const int step = transposed ? 8 : 1;  // the high half: the next row (transposed) or the next column
        const uint32_t low = static_cast<uint32_t>(m * 64 + row * 8 + column);
        EXPECT_EQ(out[lane * 4 + m], low | ((low + step) << 16)) << "lane " << lane << ", matrix " << m;
      }
  }
  const std::string failure = launch(ldmatrix_kernel, 1, 32, 4 * 64 * 2 + 64, out.data(), false, 4);
  EXPECT_NE(failure.find("ldmatrix: a row address not 16-byte aligned"), std::string::npos) << failure;
}

TEST(GpuEmulator, BrokenWarpAndBlockRulesFailTheLaunchAndTheNextLaunchRuns) {
  std::vector<int> out(64, 0);
  std::string failure = launch(early_exit_shuffle_kernel, 1, 32, 0, out.data());
  EXPECT_NE(failure.find("returned while other lanes of its warp wait"), std::string::npos) << failure;
  failure = launch(crossed_barriers_kernel, 1, 64, 0, out.data());
  EXPECT_NE(failure.find("deadlock"), std::string::npos) << failure;
  ASSERT_EQ(launch(shuffle_kernel, 1, 64, 0, out.data(), 1), "");
  for (int thread = 0; thread < 64; ++thread) EXPECT_EQ(out[thread], ((thread % 32) ^ 1) * 10) << thread;
}

void gather_kernel(float * out, const float * in, int64_t offset) { out[threadIdx.x] = in[threadIdx.x + offset]; }

TEST(GpuEmulator, AnAccessPastABuffersEndFaultsTheLaunch) {
  void * in = nullptr;
  void * out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, 64 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, 64 * sizeof(float)), cudaSuccess);
  EXPECT_EQ(launch(gather_kernel, 1, 64, 0, static_cast<float *>(out), static_cast<const float *>(in), int64_t{0}), "");
  const std::string failure =
      launch(gather_kernel, 1, 64, 0, static_cast<float *>(out), static_cast<const float *>(in), int64_t{1});
  EXPECT_NE(failure.find("illegal memory access"), std::string::npos) << failure;
  EXPECT_NE(failure.find("0 bytes past the end of a device buffer of 256 bytes"), std::string::npos) << failure;
  EXPECT_EQ(cudaFree(in), cudaSuccess);
  EXPECT_EQ(cudaFree(out), cudaSuccess);
}

// The emulated driver's function `symbol`, as the CUDA backend finds it.
template <typename Function>
Function driver(const char * symbol) {
  void * found = nullptr;
  cudaDriverEntryPointQueryResult result{};
  EXPECT_EQ(cudaGetDriverEntryPointByVersion(symbol, &found, 12000, cudaEnableDefault, &result), cudaSuccess);
  EXPECT_EQ(result, cudaDriverEntryPointSuccess) << symbol;
  return reinterpret_cast<Function>(found);
}

TEST(GpuEmulator, ReservedRangesKeepTheDriversRules) {
  const auto reserve = driver<CUresult (*)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long)>(
      "cuMemAddressReserve");
  const auto address_free = driver<CUresult (*)(CUdeviceptr, size_t)>("cuMemAddressFree");
  const auto create = driver<CUresult (*)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                                          unsigned long long)>("cuMemCreate");
  const auto release = driver<CUresult (*)(CUmemGenericAllocationHandle)>("cuMemRelease");
  const auto map = driver<CUresult (*)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long)>(
      "cuMemMap");
  const auto unmap = driver<CUresult (*)(CUdeviceptr, size_t)>("cuMemUnmap");
  const auto set_access = driver<CUresult (*)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t)>("cuMemSetAccess");
  constexpr size_t kPiece = size_t{4} << 20;
  void * out = nullptr;
  ASSERT_EQ(cudaMalloc(&out, 64 * sizeof(float)), cudaSuccess);
  size_t free_before = 0, total = 0, free_now = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
  CUdeviceptr base = 0;
  ASSERT_EQ(reserve(&base, 2 * kPiece, 0, 0, 0), CUDA_SUCCESS);
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0};
  const CUmemAccessDesc access{{CU_MEM_LOCATION_TYPE_DEVICE, 0}, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
  CUmemGenericAllocationHandle first = 0, second = 0;
  ASSERT_EQ(create(&first, kPiece, &prop, 0), CUDA_SUCCESS);
  ASSERT_EQ(create(&second, kPiece, &prop, 0), CUDA_SUCCESS);
  ASSERT_EQ(cudaMemGetInfo(&free_now, &total), cudaSuccess);
  EXPECT_EQ(free_now, free_before - 2 * kPiece);
  ASSERT_EQ(map(base, kPiece, 0, first, 0), CUDA_SUCCESS);
  EXPECT_EQ(map(base, kPiece, 0, second, 0), CUDA_ERROR_INVALID_VALUE);  // taken

  auto * in = reinterpret_cast<float *>(static_cast<uintptr_t>(base));
  const auto gather = [&](int64_t offset) {
    return launch(gather_kernel, 1, 64, 0, static_cast<float *>(out), static_cast<const float *>(in), offset);
  };
  EXPECT_NE(gather(0).find("illegal memory access"), std::string::npos);  // mapped, but no access granted yet
  ASSERT_EQ(set_access(base, kPiece, &access, 1), CUDA_SUCCESS);
  EXPECT_EQ(gather(0), "");
  const int64_t last = static_cast<int64_t>(kPiece / sizeof(float)) - 64;
  EXPECT_EQ(gather(last), "");
  EXPECT_NE(gather(last + 1).find("illegal memory access"), std::string::npos);  // past the mapped prefix
  EXPECT_EQ(set_access(base, 2 * kPiece, &access, 1), CUDA_ERROR_INVALID_VALUE);  // the second half is not mapped
  ASSERT_EQ(map(base + kPiece, kPiece, 0, second, 0), CUDA_SUCCESS);
  ASSERT_EQ(set_access(base, 2 * kPiece, &access, 1), CUDA_SUCCESS);
  EXPECT_EQ(gather(last + 1), "");

  EXPECT_EQ(release(first), CUDA_SUCCESS);  // the mappings keep the memory
  EXPECT_EQ(release(second), CUDA_SUCCESS);
  ASSERT_EQ(cudaMemGetInfo(&free_now, &total), cudaSuccess);
  EXPECT_EQ(free_now, free_before - 2 * kPiece);
  EXPECT_EQ(unmap(base, 2 * kPiece), CUDA_ERROR_INVALID_VALUE);  // two mappings: each is unmapped whole
  EXPECT_EQ(address_free(base, 2 * kPiece), CUDA_ERROR_INVALID_VALUE);  // still mapped
  EXPECT_EQ(unmap(base, kPiece), CUDA_SUCCESS);
  EXPECT_EQ(unmap(base + kPiece, kPiece), CUDA_SUCCESS);
  ASSERT_EQ(cudaMemGetInfo(&free_now, &total), cudaSuccess);
  EXPECT_EQ(free_now, free_before);
  EXPECT_EQ(address_free(base, 2 * kPiece), CUDA_SUCCESS);
  EXPECT_EQ(cudaFree(out), cudaSuccess);
}

// A sandboxed or virtualised GPU may have the driver's virtual memory calls and refuse them: the device tries them
// once on one granule, and where one fails it keeps its arenas in separate buffers, names the call in its
// description, reserves no range and keeps no memory of the trial.
TEST(GpuEmulator, ADeviceWhoseDriverRefusesVirtualMemoryUsesSeparateBuffers) {
  const kosmos::BackendRegistry registry;
  size_t free_before = 0, total = 0, free_after = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
  EXPECT_NE(registry.create("emulated", 0)->description().find("arenas grow in place"), std::string::npos);
  for (const std::string call : {"cuMemAddressReserve", "cuMemCreate", "cuMemMap", "cuMemSetAccess"}) {
    std::unique_ptr<kosmos::Device> device;
    {
      const RefusedCall refused(call);
      device = registry.create("emulated", 0);
    }
    EXPECT_NE(device->description().find("arenas in separate buffers (a trial of the driver's virtual memory calls "
                                         "failed: " + call + " failed with status 801 (operation not supported))"),
              std::string::npos)
        << device->description();
    EXPECT_EQ(device->reserve(kosmos::BufferUse::kActivations).data(), nullptr) << call;
    device.reset();
    ASSERT_EQ(cudaMemGetInfo(&free_after, &total), cudaSuccess);
    EXPECT_EQ(free_after, free_before) << "the trial with " << call << " refused kept memory";
  }
}

// Address space the driver refuses after the trial passed (a sandbox's limit, say): that buffer is a separate
// allocation instead, and the first refusal is said on stderr with the driver's words.
TEST(GpuEmulator, AReservationRefusedAfterTheTrialIsReportedOnceAndFallsBack) {
  const kosmos::BackendRegistry registry;
  std::unique_ptr<kosmos::Device> device = registry.create("emulated", 0);
  EXPECT_TRUE(device->reserve(kosmos::BufferUse::kActivations).is_reserved());
  kosmos::Buffer first, second;
  std::string said;
  {
    const RefusedCall refused("cuMemAddressReserve");
    said = stderr_of([&] {
      first = device->reserve(kosmos::BufferUse::kActivations);
      second = device->reserve(kosmos::BufferUse::kScratch);
    });
  }
  EXPECT_EQ(first.data(), nullptr);
  EXPECT_EQ(second.data(), nullptr);
  const std::string warning = "cuMemAddressReserve failed with status 801 (operation not supported)";
  ASSERT_NE(said.find(warning), std::string::npos) << said;
  EXPECT_EQ(said.find(warning, said.find(warning) + 1), std::string::npos) << "said twice: " << said;
  EXPECT_TRUE(device->reserve(kosmos::BufferUse::kActivations).is_reserved());
}

// A 3 x 5 by 5 x 4 f32 product on a device, checked against its values worked out here.
class SmallProduct {
 public:
  static constexpr int64_t m = 3, k = 5, n = 4;
  SmallProduct(kosmos::Device & device, kosmos::Stream & stream)
      : device_(device),
        stream_(stream),
        a_(m * k),
        b_(k * n),
        ab_(m * n, 0.0f),
        a_memory_(device.allocate(sizeof(float) * m * k, kosmos::BufferUse::kActivations)),
        b_memory_(device.allocate(sizeof(float) * k * n, kosmos::BufferUse::kActivations)),
        c_memory_(device.allocate(sizeof(float) * m * n, kosmos::BufferUse::kActivations)) {
    for (size_t i = 0; i < a_.size(); ++i) a_[i] = 0.25f * static_cast<float>(i) - 1.0f;
    for (size_t i = 0; i < b_.size(); ++i) b_[i] = 0.5f - 0.125f * static_cast<float>(i);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c)
        for (int64_t j = 0; j < k; ++j) ab_[r * n + c] += a_[r * k + j] * b_[j * n + c];
    device.copy(a_view(), kosmos::make_view(a_.data(), kosmos::DType::kF32, {m, k}), stream);
    device.copy(b_view(), kosmos::make_view(b_.data(), kosmos::DType::kF32, {k, n}), stream);
  }
  // C set to `start` everywhere, then C = A B + beta C: checks every element.
  void check(float beta, float start) {
    std::vector<float> c(m * n, start);
    device_.copy(c_view(), kosmos::make_view(c.data(), kosmos::DType::kF32, {m, n}), stream_);
    kosmos::Matmul op;
    op.c = c_view(), op.a = a_view(), op.b = b_view(), op.beta = beta;
    device_.run(op, stream_);
    device_.copy(kosmos::make_view(c.data(), kosmos::DType::kF32, {m, n}), c_view(), stream_);
    for (size_t i = 0; i < c.size(); ++i)
      EXPECT_NEAR(c[i], ab_[i] + beta * start, 1e-5f) << "element " << i << " of C = A B + " << beta << " C";
  }

 private:
  kosmos::TensorView a_view() const { return a_memory_.view(kosmos::DType::kF32, {m, k}); }
  kosmos::TensorView b_view() const { return b_memory_.view(kosmos::DType::kF32, {k, n}); }
  kosmos::TensorView c_view() const { return c_memory_.view(kosmos::DType::kF32, {m, n}); }
  kosmos::Device & device_;
  kosmos::Stream & stream_;
  std::vector<float> a_, b_, ab_;
  kosmos::Buffer a_memory_, b_memory_, c_memory_;
};

// The mma.sync attention kernels read their shared-memory tiles by ldmatrix without bank conflicts (rows padded by
// 16 bytes, attention_tiles.cuh): every matrix of the forward and of the two-pass backward is served in one pass,
// at the model's head size 64 in bf16, causal, over a query block and a half (a step the diagonal cuts).
TEST(GpuEmulator, TheAttentionKernelsLoadTheirTilesWithoutBankConflicts) {
  const kosmos::BackendRegistry registry;
  std::unique_ptr<kosmos::Device> device = registry.create("emulated", 0);
  std::unique_ptr<kosmos::Stream> stream = device->create_stream();
  constexpr int64_t kHeads = 2, kLength = 192, kHeadDim = 64;
  std::vector<kosmos::Buffer> buffers;
  const auto tensor = [&](kosmos::DType dtype, std::vector<int64_t> dims, float value) {
    int64_t count = 1;
    for (const int64_t size : dims) count *= size;
    buffers.push_back(device->allocate(static_cast<size_t>(count) * kosmos::dtype_size(dtype),
                                       kosmos::BufferUse::kActivations));
    const kosmos::TensorView view =
        kosmos::make_view(buffers.back().data(), dtype, static_cast<int>(dims.size()), dims.data());
    device->run(kosmos::Fill{view, value}, *stream);
    return view;
  };
  const std::vector<int64_t> heads{1, kHeads, kLength, kHeadDim};
  const auto bf16 = [&](float value) { return tensor(kosmos::DType::kBF16, heads, value); };
  const kosmos::TensorView q = bf16(0.5f), k = bf16(0.25f), v = bf16(1.0f), out = bf16(0.0f), dout = bf16(1.0f);
  const kosmos::TensorView dq = bf16(0.0f), dk = bf16(0.0f), dv = bf16(0.0f);
  const kosmos::TensorView lse = tensor(kosmos::DType::kF32, {1, kHeads, kLength}, 0.0f);
  kosmos::AttentionParams params;
  params.scale = 0.125f;
  params.causal = true;
  kosmos_emulation::reset_bank_counts();
  device->run(kosmos::AttentionForward{out, lse, q, k, v, params, kosmos::TensorView{}}, *stream);
  device->run(kosmos::AttentionBackward{dq, dk, dv, dout, q, k, v, out, lse, params, kosmos::TensorView{}}, *stream);
  stream->synchronize();
  const kosmos_emulation::BankCounts counts = kosmos_emulation::bank_counts();
  EXPECT_GT(counts.requests, 0) << "no ldmatrix ran: the attention took another path than the mma.sync kernels";
  EXPECT_EQ(counts.conflicted, 0) << "of " << counts.requests << " matrices loaded, the worst in " << counts.worst
                                  << " passes";
}

// cuBLASLt may decline, at the call, the algorithm its heuristic chose for the same descriptors: the product then
// runs on the own GEMM kernel, for that call and for the rest of the run, with one warning; --profile names it.
TEST(GpuEmulator, AProductCublasLtDeclinesAtTheCallRunsOnTheOwnKernel) {
  const kosmos::BackendRegistry registry;
  std::unique_ptr<kosmos::Device> device = registry.create("emulated", 0);
  std::unique_ptr<kosmos::Stream> stream = device->create_stream();
  SmallProduct product(*device, *stream);
  const auto calls = [&](const std::string & name) {  // over every shape (a GPU's names carry it after a tab)
    int64_t total = 0;
    for (const auto & [op, time] : device->profile())
      if (op.substr(0, op.find('\t')) == name) total += time.calls;
    return total;
  };
  device->set_profiling(true);
  product.check(0.0f, 0.0f);  // on cuBLASLt: its plan found
  std::string said;
  {
    const RefusedCall refused("cublasLtMatmul");
    said = stderr_of([&] {
      product.check(0.0f, 0.0f);
      product.check(0.0f, 0.0f);
    });
  }
  product.check(0.0f, 0.0f);  // the plan stays on the own kernel
  EXPECT_EQ(calls("matmul"), 1);
  EXPECT_EQ(calls("matmul (own GEMM)"), 3);
  const std::string warning = "cuBLASLt declined (NOT_SUPPORTED) the algorithm its heuristic chose for the product";
  ASSERT_NE(said.find(warning), std::string::npos) << said;
  EXPECT_EQ(said.find(warning, said.find(warning) + 1), std::string::npos) << "said twice: " << said;
}

// --gemm-tuning: a new product plan times the heuristic's first algorithms on the product and keeps the fastest
// (the emulated library lists three when asked for more than one, its first 2 ms a call slower), once per plan. The
// timed runs leave C as it was, also where the product adds to it (beta 1), so every call gives its own result.
TEST(GpuEmulator, GemmTuningKeepsTheFastestAlgorithmAndLeavesCAsItWas) {
  const kosmos::BackendRegistry registry;
  std::unique_ptr<kosmos::Device> device = registry.create("emulated", 0);
  std::unique_ptr<kosmos::Stream> stream = device->create_stream();
  device->set_gemm_tuning(3);
  SmallProduct product(*device, *stream);
  EXPECT_EQ(device->gemm_tuning_report(), "");
  product.check(0.0f, 0.0f);
  product.check(1.0f, 0.5f);   // another plan: C is read
  product.check(1.0f, -2.0f);  // the plans as made, not timed again
  product.check(0.0f, 7.0f);
  const std::string report = device->gemm_tuning_report();
  EXPECT_NE(report.find("GEMM tuning: 2 product plans"), std::string::npos) << report;
  EXPECT_NE(report.find("timed up to 3 of cuBLASLt's algorithms"), std::string::npos) << report;
  EXPECT_NE(report.find("2 kept another than the heuristic's first"), std::string::npos) << report;
  EXPECT_NE(report.find("the 4 products run so far"), std::string::npos) << report;
  const size_t kept_line = report.find(" of 3, ");
  ASSERT_NE(kept_line, std::string::npos) << report;
  EXPECT_NE(report.find(" (2 calls)", kept_line), std::string::npos) << report;

  std::unique_ptr<kosmos::Device> untuned = registry.create("emulated", 0);
  std::unique_ptr<kosmos::Stream> untuned_stream = untuned->create_stream();
  SmallProduct same(*untuned, *untuned_stream);
  same.check(1.0f, 0.5f);
  EXPECT_EQ(untuned->gemm_tuning_report(), "") << "a device not asked to tune timed a product";
}

// cudaFree waits for all of a device's work. A buffer freed while an error unwinds, when a stream of the device
// still has work queued (on a GPU: a collective whose peers never come), is left to the process's end instead of
// hanging the exit; with nothing queued, or outside an error, it is freed.
TEST(GpuEmulator, ABufferFreedWhileAnErrorUnwindsDoesNotWaitForQueuedWork) {
  const kosmos::BackendRegistry registry;
  std::unique_ptr<kosmos::Device> device = registry.create("emulated", 0);
  const std::unique_ptr<kosmos::Stream> stream = device->create_stream();
  constexpr size_t kBytes = size_t{1} << 20;
  const auto free_bytes = [] {
    size_t free_now = 0, total = 0;
    EXPECT_EQ(cudaMemGetInfo(&free_now, &total), cudaSuccess);
    return free_now;
  };
  struct StepFailed {};  // the error that unwinds: the test's own, so that no other is taken for it
  const auto fail_holding_a_buffer = [&] {
    void * held_data = nullptr;
    try {
      const kosmos::Buffer held = device->allocate(kBytes, kosmos::BufferUse::kActivations);
      held_data = held.data();
      throw StepFailed{};
    } catch (const StepFailed &) {
    }
    return held_data;
  };
  const size_t before = free_bytes();
  void * left = nullptr;
  {
    const RefusedCall refused("cudaStreamQuery");  // the stream's work waits
    left = fail_holding_a_buffer();
    { const kosmos::Buffer held = device->allocate(kBytes, kosmos::BufferUse::kActivations); }  // no error: freed
  }
  EXPECT_EQ(free_bytes(), before - kBytes) << "the buffer freed while unwinding over queued work";
  EXPECT_EQ(cudaFree(left), cudaSuccess) << "the buffer left while unwinding is not one the device still holds";
  fail_holding_a_buffer();
  EXPECT_EQ(free_bytes(), before) << "a buffer not freed while unwinding with nothing queued";
}

// A copy from pinned host memory reads its source when the queue reaches it, as the hardware's DMA does: a source the
// host writes again before then arrives as written then (which is how the staging below is shown to wait).
TEST(GpuEmulator, ACopyFromPinnedMemoryReadsItsSourceWhenTheQueueReachesIt) {
  void * pinned = nullptr;
  void * device = nullptr;
  ASSERT_EQ(cudaHostAlloc(&pinned, sizeof(float), cudaHostAllocDefault), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&device, sizeof(float)), cudaSuccess);
  float * source = static_cast<float *>(pinned);
  *source = 1.0f;
  ASSERT_EQ(cudaMemcpyAsync(device, source, sizeof(float), cudaMemcpyDefault, nullptr), cudaSuccess);
  *source = 2.0f;  // before the queue has run: the copy takes this
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  float arrived = 0.0f;
  ASSERT_EQ(cudaMemcpyAsync(&arrived, device, sizeof(float), cudaMemcpyDefault, nullptr), cudaSuccess);
  EXPECT_EQ(arrived, 2.0f) << "the copy from pinned memory read its source at the call";
  EXPECT_EQ(cudaFree(device), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(pinned), cudaErrorInvalidValue) << "freed twice";
}

// A device's copies from the host go through pinned staging without waiting for the stream (gpu_device.cu
// HostStaging), and the emulator runs a copy from pinned memory only when a later call needs it, as the hardware's
// DMA reads its source late. So: each source overwritten as soon as its copy returns, twelve uploads of 3 MiB queued
// past both 16 MiB halves with no wait between them (the staging must wait for a half's earlier copies before writing
// it again), then one larger than a half (which waits, as before), and a device with no pinned memory: every upload
// arrives as it was when copied.
TEST(GpuEmulator, CopiesFromTheHostMayReuseTheirSourceAtOnceAndArriveWhole) {
  constexpr int64_t kSmall = int64_t{3} << 18, kLarge = int64_t{17} << 18;  // f32 elements: 3 and 17 MiB
  const auto value = [](int copy, int64_t i) { return static_cast<float>(copy * 1000003 + i % 65521); };
  const auto upload_all_and_check = [&](const std::string & refused) {
    std::unique_ptr<RefusedCall> refusal;
    if (!refused.empty()) refusal = std::make_unique<RefusedCall>(refused);
    const kosmos::BackendRegistry registry;
    std::unique_ptr<kosmos::Device> device = registry.create("emulated", 0);
    const std::unique_ptr<kosmos::Stream> stream = device->create_stream();
    std::vector<int64_t> sizes(13, kSmall);
    sizes.back() = kLarge;  // after 12 small ones, 36 MiB queued through the halves
    std::vector<kosmos::Buffer> targets;
    std::vector<float> host;
    for (size_t c = 0; c < sizes.size(); ++c) {
      targets.push_back(device->allocate(sizeof(float) * sizes[c], kosmos::BufferUse::kActivations));
      host.assign(static_cast<size_t>(sizes[c]), 0.0f);
      for (int64_t i = 0; i < sizes[c]; ++i) host[static_cast<size_t>(i)] = value(static_cast<int>(c), i);
      device->copy(targets.back().view(kosmos::DType::kF32, {sizes[c]}),
                   kosmos::make_view(host.data(), kosmos::DType::kF32, {sizes[c]}), *stream);
      std::fill(host.begin(), host.end(), -1.0f);  // the caller reuses its memory at once
    }
    for (size_t c = 0; c < sizes.size(); ++c) {
      host.assign(static_cast<size_t>(sizes[c]), 0.0f);
      device->copy(kosmos::make_view(host.data(), kosmos::DType::kF32, {sizes[c]}),
                   targets[c].view(kosmos::DType::kF32, {sizes[c]}), *stream);
      int64_t wrong = 0;
      for (int64_t i = 0; i < sizes[c]; ++i) wrong += host[static_cast<size_t>(i)] != value(static_cast<int>(c), i);
      EXPECT_EQ(wrong, 0) << "elements of upload " << c << " (" << sizes[c] / (1 << 18) << " MiB) that arrived "
                          << "changed" << (refused.empty() ? "" : ", with " + refused + " refused");
    }
  };
  upload_all_and_check("");
  upload_all_and_check("cudaHostAlloc");
}

TEST(GpuEmulator, BadLaunchShapesFail) {
  std::vector<int> out(64, 0);
  EXPECT_NE(launch(shuffle_kernel, 1, 2048, 0, out.data(), 1).find("invalid block"), std::string::npos);
  EXPECT_NE(launch(shuffle_kernel, dim3(1, 70000), 32, 0, out.data(), 1).find("invalid grid"), std::string::npos);
}

}  // namespace
