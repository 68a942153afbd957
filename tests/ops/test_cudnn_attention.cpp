// test_cudnn_attention.cpp: cuDNN's attention with dropout (the backend cuda-cudnn, where a GPU is). Its masks come
// from cuDNN's generator, so the op cases' fp64 reference (the CPU's masks) cannot check it; here the masks are read
// off the forward instead: with v the identity (as many keys as the head size), the output is the dropped
// probabilities themselves, each 0 (dropped) or P / (1 - p). Then the kept ones must equal the fp64 reference's P
// over keep, about p of them must be dropped, the same seed must give the same masks, and the backward's gradients
// must be those of that mask, computed here in fp64. The op cases check cuDNN's attention without dropout against the
// reference (cases_attention.cpp's cases with AttentionParams::deterministic false).
#include <gtest/gtest.h>

#include <cmath>

#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

std::vector<std::string> cudnn_backends() {
  std::vector<std::string> found;
  for (const std::string & backend : testable_backends())
    if (backend == "cuda-cudnn") found.push_back(backend);
  return found;
}

// sqrt(sum (a - b)^2 / sum b^2).
double relative_error(const std::vector<double> & actual, const std::vector<double> & expected) {
  double difference = 0.0, norm = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    difference += (actual[i] - expected[i]) * (actual[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  return std::sqrt(difference / norm);
}

class CudnnDropout : public ::testing::TestWithParam<std::string> {};

TEST_P(CudnnDropout, MasksReadOffTheForwardAndTheBackwardFollowsThem) {
  std::unique_ptr<Device> device = create_test_device(GetParam());
  std::unique_ptr<Stream> stream = device->create_stream();
  DeviceRun run(*device, *stream);
  // Causal self-attention, [1, 2, 64, 64] bf16 q, k, v, out and gradients; v the identity in each head.
  constexpr int64_t kHeads = 2, kLength = 64, kHeadDim = 64;
  constexpr double kDropout = 0.25;
  static_assert(kLength == kHeadDim, "v is the identity; scores and rows share one indexing below");
  const std::vector<int64_t> dims{1, kHeads, kLength, kHeadDim};
  std::mt19937_64 rng(21);
  const Tensor q_host = random_tensor(rng, dims, 1.0, DType::kBF16);
  const Tensor k_host = random_tensor(rng, dims, 1.0, DType::kBF16);
  const Tensor dout_host = random_tensor(rng, dims, 1.0, DType::kBF16);
  Tensor identity(dims);
  for (int64_t h = 0; h < kHeads; ++h)
    for (int64_t j = 0; j < kLength; ++j) identity.v[static_cast<size_t>((h * kLength + j) * kHeadDim + j)] = 1.0;
  const TensorView q = run.upload(q_host, DType::kBF16), k = run.upload(k_host, DType::kBF16),
                   v = run.upload(identity, DType::kBF16), dout = run.upload(dout_host, DType::kBF16);
  AttentionParams params;
  params.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kHeadDim)));
  params.causal = true;
  params.dropout_p = static_cast<float>(kDropout);
  params.seed = 5;
  params.deterministic = false;  // cuDNN's masks and dq's order allowed
  const auto forward = [&](uint64_t seed) {
    AttentionParams seeded = params;
    seeded.seed = seed;
    const TensorView out = run.output(dims, DType::kBF16), lse = run.output({1, kHeads, kLength}, DType::kF32);
    AttentionForward op{out, lse, q, k, v, seeded, TensorView{}};
    EXPECT_EQ(device->attention_keep_words(op), 0) << "cuDNN did not take the op (the mma.sync kernels keep a record)";
    run.op(op);
    return op;
  };
  const AttentionForward first = forward(5);
  const Tensor dropped = run.download(first.out), lse = run.download(first.lse);

  // The fp64 reference without dropout: with v the identity, its output is P.
  reference::AttentionConfig config;
  config.scale = params.scale;
  config.causal = true;
  const reference::AttentionOut expected = reference::attention(q_host, k_host, identity, config);
  const Tensor & p = expected.out;
  int64_t seen = 0, dropped_count = 0;
  std::vector<double> kept_actual, kept_expected;
  Tensor mask(dims);  // 1 kept, 0 dropped or unseen
  for (int64_t h = 0; h < kHeads; ++h)
    for (int64_t i = 0; i < kLength; ++i)
      for (int64_t j = 0; j < kLength; ++j) {
        const size_t at = static_cast<size_t>((h * kLength + i) * kLength + j);
        if (j > i) {
          EXPECT_EQ(dropped.v[at], 0.0) << "head " << h << " query " << i << " sees the later key " << j;
          continue;
        }
        ++seen;
        if (dropped.v[at] == 0.0) {
          ++dropped_count;
          continue;
        }
        mask.v[at] = 1.0;
        kept_actual.push_back(dropped.v[at]);
        kept_expected.push_back(p.v[at] / (1.0 - kDropout));
      }
  const double fraction = static_cast<double>(dropped_count) / static_cast<double>(seen);
  EXPECT_NEAR(fraction, kDropout, 0.05) << dropped_count << " of " << seen << " probabilities dropped";
  // bf16 P and bf16 output: two roundings of 2^-9.
  EXPECT_LT(relative_error(kept_actual, kept_expected), 1e-2) << "the kept probabilities are not P / (1 - p)";
  EXPECT_LT(relative_error(lse.v, expected.lse.v), 1e-3) << "lse differs from the reference's";
  EXPECT_EQ(run.download(forward(5).out).v, dropped.v) << "the same seed gave other masks";
  EXPECT_NE(run.download(forward(6).out).v, dropped.v) << "another seed gave the same masks";

  // The backward against fp64 gradients of the masks read above: Pd = P M / keep, dv = Pd^T dout,
  // dP = (dout v^T) M / keep = dout M / keep (v the identity), dS = P (dP - rowsum(dP P)) scale, dq = dS k,
  // dk = dS^T q.
  const TensorView dq = run.output(dims, DType::kBF16), dk = run.output(dims, DType::kBF16),
                   dv = run.output(dims, DType::kBF16);
  run.op(AttentionBackward{dq, dk, dv, dout, q, k, v, first.out, first.lse, first.params, TensorView{}});
  const double keep = 1.0 - kDropout;
  Tensor dq_expected(dims), dk_expected(dims), dv_expected(dims);
  for (int64_t h = 0; h < kHeads; ++h) {
    const auto at = [&](int64_t row, int64_t column) {
      return static_cast<size_t>((h * kLength + row) * kLength + column);
    };
    std::vector<double> dscores(static_cast<size_t>(kLength * kLength));
    for (int64_t i = 0; i < kLength; ++i) {
      double delta = 0.0;
      for (int64_t j = 0; j < kLength; ++j) delta += dout_host.v[at(i, j)] * mask.v[at(i, j)] / keep * p.v[at(i, j)];
      for (int64_t j = 0; j < kLength; ++j) {
        const double dprobability = dout_host.v[at(i, j)] * mask.v[at(i, j)] / keep;
        dscores[static_cast<size_t>(i * kLength + j)] = p.v[at(i, j)] * (dprobability - delta) * params.scale;
        for (int64_t e = 0; e < kHeadDim; ++e)  // dv[j] += Pd[i, j] dout[i]
          dv_expected.v[at(j, e)] += p.v[at(i, j)] * mask.v[at(i, j)] / keep * dout_host.v[at(i, e)];
      }
    }
    for (int64_t i = 0; i < kLength; ++i)
      for (int64_t j = 0; j < kLength; ++j)
        for (int64_t e = 0; e < kHeadDim; ++e) {
          const double ds = dscores[static_cast<size_t>(i * kLength + j)];
          dq_expected.v[at(i, e)] += ds * k_host.v[at(j, e)];
          dk_expected.v[at(j, e)] += ds * q_host.v[at(i, e)];
        }
  }
  EXPECT_LT(relative_error(run.download(dv).v, dv_expected.v), 2e-2) << "dv is not the gradient of these masks";
  EXPECT_LT(relative_error(run.download(dq).v, dq_expected.v), 2e-2) << "dq is not the gradient of these masks";
  EXPECT_LT(relative_error(run.download(dk).v, dk_expected.v), 2e-2) << "dk is not the gradient of these masks";
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CudnnDropout);
INSTANTIATE_TEST_SUITE_P(Devices, CudnnDropout, ::testing::ValuesIn(cudnn_backends()),
                         [](const auto & info) { return test_name_of_backend(info.param); });

}  // namespace
}  // namespace kosmos::testing
