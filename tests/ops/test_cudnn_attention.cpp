// test_cudnn_attention.cpp: cuDNN's attention with dropout (the backend cuda-cudnn, where a GPU is). Its masks come
// from cuDNN's generator, so the op cases' fp64 reference (the CPU's masks) cannot check it; here the masks are read
// off forwards instead: with v the identity over one block of head-size keys (0 elsewhere), the output is those keys'
// dropped probabilities themselves, each 0 (dropped) or P / keep; two such forwards read 128 keys (a whole key tile,
// which every cuDNN from 9.10.2 takes). The kept ones must equal the fp64 reference's P over keep, about p of them
// must be dropped, the same seed must give the same masks and another seed others. Then, with the same seed (so the
// same masks) and a random v, the output and the backward's gradients must be those of the masks read, computed here
// in fp64. Two sequences of two heads, every operand in [B, T, H, dh] memory (strided, as the model's views).
// The op cases check cuDNN's attention without dropout against the reference (cases_attention.cpp's cases with
// AttentionParams::deterministic false).
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

constexpr int64_t kBatch = 2, kHeads = 2, kLength = 128, kHeadDim = 64;
constexpr int64_t kKeyBlocks = kLength / kHeadDim;  // forwards that read the masks, a block of head-size keys each
static_assert(kLength % kHeadDim == 0, "the keys are read in blocks of the head size");
constexpr double kDropout = 0.25, kKeep = 1.0 - kDropout;

// Element (pair, row, column) of a [B, H, 128, 64] tensor, pair = b * H + h.
size_t at(int64_t pair, int64_t row, int64_t column) {
  return static_cast<size_t>((pair * kLength + row) * kHeadDim + column);
}
// Entry (pair, query, key) of the [B, H, 128, 128] scores.
size_t score_at(int64_t pair, int64_t query, int64_t key) {
  return static_cast<size_t>((pair * kLength + query) * kLength + key);
}

class CudnnDropout : public ::testing::TestWithParam<std::string> {};

TEST_P(CudnnDropout, MasksReadOffTheForwardAndTheGradientsFollowThem) {
  std::unique_ptr<Device> device = create_test_device(GetParam());
  std::unique_ptr<Stream> stream = device->create_stream();
  DeviceRun run(*device, *stream);
  const std::vector<int64_t> dims{kBatch, kHeads, kLength, kHeadDim};
  const std::vector<int> rows{0, 2, 1, 3};  // [B, H, T, dh] seen through [B, T, H, dh] memory
  std::mt19937_64 rng(21);
  const Tensor q_host = random_tensor(rng, dims, 1.0, DType::kBF16);
  const Tensor k_host = random_tensor(rng, dims, 1.0, DType::kBF16);
  const Tensor v_host = random_tensor(rng, dims, 1.0, DType::kBF16);
  const Tensor dout_host = random_tensor(rng, dims, 1.0, DType::kBF16);
  // v = the identity on keys [block * 64, block * 64 + 64), 0 on the others: out[i, e] is key block * 64 + e's.
  std::vector<Tensor> identities;
  for (int64_t block = 0; block < kKeyBlocks; ++block) {
    Tensor identity(dims);
    for (int64_t pair = 0; pair < kBatch * kHeads; ++pair)
      for (int64_t e = 0; e < kHeadDim; ++e) identity.v[at(pair, block * kHeadDim + e, e)] = 1.0;
    identities.push_back(identity);
  }
  const TensorView q = run.upload_permuted(q_host, rows, DType::kBF16);
  const TensorView k = run.upload_permuted(k_host, rows, DType::kBF16);
  AttentionParams params;
  params.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kHeadDim)));
  params.causal = true;
  params.dropout_p = static_cast<float>(kDropout);
  params.seed = 5;
  params.deterministic = false;  // cuDNN's masks and dq's order allowed
  const auto forward = [&](const TensorView & v, uint64_t seed) {
    AttentionParams seeded = params;
    seeded.seed = seed;
    const TensorView out = run.upload_permuted(Tensor(dims), rows, DType::kBF16),
                     lse = run.output({kBatch, kHeads, kLength}, DType::kF32);
    AttentionForward op{out, lse, q, k, v, seeded, TensorView{}};
    EXPECT_EQ(device->attention_keep_words(op), 0) << "cuDNN did not take the op (the mma.sync kernels keep a record)";
    run.op(op);
    return op;
  };

  // The masks, a key block at a time: with v an identity block, the output is those keys' P M / keep.
  reference::AttentionConfig config;
  config.scale = params.scale;
  config.causal = true;
  std::vector<double> p(static_cast<size_t>(kBatch * kHeads * kLength * kLength));  // fp64 P, no dropout
  std::vector<double> mask(p.size());                                              // 1 kept, 0 dropped or not seen
  int64_t seen = 0, dropped_count = 0;
  std::vector<double> kept_actual, kept_expected;
  for (int64_t block = 0; block < kKeyBlocks; ++block) {
    const TensorView v_identity = run.upload_permuted(identities[static_cast<size_t>(block)], rows, DType::kBF16);
    const Tensor dropped = run.download(forward(v_identity, 5).out);
    const Tensor p_block = reference::attention(q_host, k_host, identities[static_cast<size_t>(block)], config).out;
    for (int64_t pair = 0; pair < kBatch * kHeads; ++pair)
      for (int64_t i = 0; i < kLength; ++i)
        for (int64_t e = 0; e < kHeadDim; ++e) {
          const int64_t j = block * kHeadDim + e;
          p[score_at(pair, i, j)] = p_block.v[at(pair, i, e)];
          const double value = dropped.v[at(pair, i, e)];
          if (j > i) {
            EXPECT_EQ(value, 0.0) << "pair " << pair << " query " << i << " sees the later key " << j;
            continue;
          }
          ++seen;
          if (value == 0.0) {
            ++dropped_count;
            continue;
          }
          mask[score_at(pair, i, j)] = 1.0;
          kept_actual.push_back(value);
          kept_expected.push_back(p[score_at(pair, i, j)] / kKeep);
        }
    EXPECT_EQ(run.download(forward(v_identity, 5).out).v, dropped.v) << "the same seed gave other masks";
    EXPECT_NE(run.download(forward(v_identity, 6).out).v, dropped.v) << "another seed gave the same masks";
  }
  EXPECT_NEAR(static_cast<double>(dropped_count) / static_cast<double>(seen), kDropout, 0.03)
      << dropped_count << " of " << seen << " probabilities dropped";
  // bf16 P and bf16 output: two roundings of 2^-9.
  EXPECT_LT(relative_error(kept_actual, kept_expected), 1e-2) << "the kept probabilities are not P / keep";

  // The same masks (seed 5) over a random v, forward and backward, against fp64 with the masks read:
  // Pd = P M / keep, out = Pd v, dv = Pd^T dout, dP = (dout v^T) M / keep, dS = P (dP - rowsum(dP P)) scale,
  // dq = dS k, dk = dS^T q.
  const TensorView v = run.upload_permuted(v_host, rows, DType::kBF16),
                   dout = run.upload_permuted(dout_host, rows, DType::kBF16);
  const AttentionForward random_v = forward(v, 5);
  // Every gradient laid out as its tensor, as the model has them (the layout cudnn_attention_takes planned for).
  const TensorView dq = run.upload_permuted(Tensor(dims), rows, DType::kBF16),
                   dk = run.upload_permuted(Tensor(dims), rows, DType::kBF16),
                   dv = run.upload_permuted(Tensor(dims), rows, DType::kBF16);
  run.op(AttentionBackward{dq, dk, dv, dout, q, k, v, random_v.out, random_v.lse, random_v.params, TensorView{}});
  Tensor out_expected(dims), dq_expected(dims), dk_expected(dims), dv_expected(dims);
  for (int64_t pair = 0; pair < kBatch * kHeads; ++pair) {
    std::vector<double> dscores(static_cast<size_t>(kLength * kLength));
    for (int64_t i = 0; i < kLength; ++i) {
      std::vector<double> dprobabilities(static_cast<size_t>(kLength));
      double delta = 0.0;
      for (int64_t j = 0; j < kLength; ++j) {
        const double kept = p[score_at(pair, i, j)] * mask[score_at(pair, i, j)] / kKeep;
        double dkept = 0.0;  // (dout v^T)[i, j]
        for (int64_t e = 0; e < kHeadDim; ++e) {
          out_expected.v[at(pair, i, e)] += kept * v_host.v[at(pair, j, e)];
          dv_expected.v[at(pair, j, e)] += kept * dout_host.v[at(pair, i, e)];
          dkept += dout_host.v[at(pair, i, e)] * v_host.v[at(pair, j, e)];
        }
        dprobabilities[static_cast<size_t>(j)] = dkept * mask[score_at(pair, i, j)] / kKeep;
        delta += dprobabilities[static_cast<size_t>(j)] * p[score_at(pair, i, j)];
      }
      for (int64_t j = 0; j < kLength; ++j)
        dscores[static_cast<size_t>(i * kLength + j)] =
            p[score_at(pair, i, j)] * (dprobabilities[static_cast<size_t>(j)] - delta) * params.scale;
    }
    for (int64_t i = 0; i < kLength; ++i)
      for (int64_t j = 0; j < kLength; ++j)
        for (int64_t e = 0; e < kHeadDim; ++e) {
          const double ds = dscores[static_cast<size_t>(i * kLength + j)];
          dq_expected.v[at(pair, i, e)] += ds * k_host.v[at(pair, j, e)];
          dk_expected.v[at(pair, j, e)] += ds * q_host.v[at(pair, i, e)];
        }
  }
  EXPECT_LT(relative_error(run.download(random_v.out).v, out_expected.v), 1e-2) << "out is not Pd v for these masks";
  EXPECT_LT(relative_error(run.download(dv).v, dv_expected.v), 2e-2) << "dv is not the gradient for these masks";
  EXPECT_LT(relative_error(run.download(dq).v, dq_expected.v), 2e-2) << "dq is not the gradient for these masks";
  EXPECT_LT(relative_error(run.download(dk).v, dk_expected.v), 2e-2) << "dk is not the gradient for these masks";
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CudnnDropout);
INSTANTIATE_TEST_SUITE_P(Devices, CudnnDropout, ::testing::ValuesIn(cudnn_backends()),
                         [](const auto & info) { return test_name_of_backend(info.param); });

}  // namespace
}  // namespace kosmos::testing
