// test_cudnn_graph.cpp: the graphs of cuDNN's attention (backend cuda-cudnn, cudnn_attention.cu), built on a machine
// without a GPU, both directions, causal or not, with dropout or not, at the paper's shapes (32 heads of 64 over
// 2048 positions) and the vision tower's (16 of 64 over 257):
// - cuDNN checks each descriptor (tensor, pointwise, matmul, reduction, reshape, random numbers, the operation graph)
//   as it is finalised: its library is enough;
// - for an H200 described by its properties (cuDNN's deviceless plans), cuDNN's heuristics must offer engines for the
//   graph, that is, its fusion engines must recognise it, and each must compile its kernel: where the CUDA driver is
//   the toolkit's stub (ctest's cudnn_attention_plans_h200 puts it on the loader path), loading the compiled kernel
//   is the one step that fails, and on a GPU a plan is made.
// What the kernels compute needs a GPU: test_cudnn_attention.cpp and the op cases on cuda-cudnn. Without cuDNN 9 to
// open, or without a driver or its stub, the tests say so and skip.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <tuple>

#include "backends/cuda/cudnn_attention.h"

namespace kosmos::cuda {
namespace {

// An H200's properties as cuDNN's device-property JSON names them (CUDA's device attributes of that card).
constexpr const char * kH200 = R"({"cudaDeviceId": 0, "deviceName": "NVIDIA H200", "deviceVer": 900,
  "driverVer": 13000, "isTccDriver": 0, "l2CacheSize": 62914560, "maxCtasPerSM": 32, "maxRegistersPerSM": 65536,
  "maxSharedMemoryPerBlock": 49152, "maxSharedMemoryPerBlockOptin": 232448, "maxThreadsPerBlock": 1024,
  "maxThreadsPerSM": 2048, "memClockRateKHz": 3201000, "multiProcessorCount": 132, "pciDeviceId": 0,
  "regsPerBlock": 65536, "reservedSharedMemoryPerBlock": 1024, "smClockRateKHz": 1980000, "supportCoopLaunch": 1,
  "totalGlobalMem": 150109978624, "warpSize": 32, "maxBlockSize": [1024, 1024, 64],
  "maxGridSize": [2147483647, 65535, 65535]})";

class CudnnGraph : public ::testing::TestWithParam<std::tuple<bool, bool, bool>> {
 protected:
  CudnnGraphCheck check(const std::string & device_json = "") const {
    const auto [causal, dropout, backward] = GetParam();
    const int64_t heads = causal ? 32 : 16, length = causal ? 2048 : 257;
    return check_cudnn_attention_graph(8, heads, length, 64, causal, dropout ? 0.1f : 0.0f, backward, device_json);
  }
};

TEST_P(CudnnGraph, EveryDescriptorIsAccepted) {
  const CudnnGraphCheck result = check();
  if (result.refused.rfind("cannot open libcudnn", 0) == 0) GTEST_SKIP() << result.refused;
  EXPECT_EQ(result.refused, "");
}

TEST_P(CudnnGraph, EnginesForAnH200CompileIt) {
  void * driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr)
    GTEST_SKIP() << "no libcuda.so.1 on the loader path, with which cuDNN's engines compile (ctest's "
                    "cudnn_attention_plans_h200 puts the toolkit's stub there)";
  dlclose(driver);
  const CudnnGraphCheck result = check(kH200);
  if (result.refused.rfind("cannot open libcudnn", 0) == 0) GTEST_SKIP() << result.refused;
  ASSERT_EQ(result.refused, "");
  EXPECT_GT(result.engines_offered, 0) << "cuDNN's heuristics offer no engine: " << result.reasons;
  EXPECT_EQ(result.other_refusals, 0) << result.reasons;
  EXPECT_TRUE(result.plan_made || result.compiled_unloaded == result.engines_offered) << result.reasons;
}

INSTANTIATE_TEST_SUITE_P(Graphs, CudnnGraph,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(), ::testing::Bool()),
                         [](const auto & info) {
                           return std::string(std::get<0>(info.param) ? "causal" : "full") +
                                  (std::get<1>(info.param) ? "_dropout" : "") +
                                  (std::get<2>(info.param) ? "_backward" : "_forward");
                         });

}  // namespace
}  // namespace kosmos::cuda
