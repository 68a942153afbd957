// test_cudnn_graph.cpp: the graphs of cuDNN's attention (backend cuda-cudnn, cudnn_attention.cu), built on the build
// machine: cuDNN checks each descriptor (tensor, pointwise, matmul, reduction, reshape, random-number and the
// operation graph) as it is finalised, which needs its library but no GPU. Both directions, causal or not, with
// dropout or not, at the paper's shapes (32 heads of 64 over 2048 positions) and the vision tower's (16 of 64 over
// 257). Whether cuDNN's engines take the graphs needs a GPU: bench/device_check.sh runs them there. Where this
// machine has no cuDNN 9 to open, the test says so and skips.
#include <gtest/gtest.h>

#include <tuple>

#include "backends/cuda/cudnn_attention.h"

namespace kosmos::cuda {
namespace {

class CudnnGraph : public ::testing::TestWithParam<std::tuple<bool, bool, bool>> {};

TEST_P(CudnnGraph, EveryDescriptorIsAccepted) {
  const auto [causal, dropout, backward] = GetParam();
  const int64_t heads = causal ? 32 : 16, length = causal ? 2048 : 257;
  const std::string problem =
      cudnn_attention_graph_problem(8, heads, length, 64, causal, dropout ? 0.1f : 0.0f, backward);
  if (problem.rfind("cannot open libcudnn", 0) == 0) GTEST_SKIP() << problem;
  EXPECT_EQ(problem, "") << (backward ? "backward" : "forward") << (causal ? " causal" : " full")
                         << (dropout ? " with dropout" : "");
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
