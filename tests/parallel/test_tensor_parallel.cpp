// test_tensor_parallel.cpp: a two-layer MLP split Megatron-style over all ranks (fc1 column-parallel, GELU, fc2
// row-parallel) gives the single-rank output and gradients: every rank also runs the whole MLP and compares its
// slices (the layout test of the pairs).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backends/registry.h"
#include "parallel/tensor_parallel.h"

namespace kosmos::parallel {
namespace {

std::vector<float> randoms(size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(count);
  for (float & v : values) v = normal(rng);
  return values;
}

TensorView view(std::vector<float> & data, std::initializer_list<int64_t> dims) {
  return make_view(data.data(), DType::kF32, dims);
}

void expect_close(const std::vector<float> & actual, const std::vector<float> & expected, const char * what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5f * (1.0f + std::abs(expected[i])))
      << what << "[" << i << "]";
}

TEST(TensorParallel, ColumnThenRowEqualsTheWholeLayer) {
  auto device = BackendRegistry().create("cpu", 0);
  auto stream = device->create_stream();
  auto tp = mpi_world();
  const int64_t n = tp->size(), r = tp->rank(), rows = 5, in = 8, hidden = 12, out = 6, part = hidden / n;
  ASSERT_EQ(hidden % n, 0) << "run with 1, 2, 3, 4 or 6 ranks";
  // The whole layers, identical on every rank.
  std::vector<float> x = randoms(rows * in, 1), w1 = randoms(hidden * in, 2), b1 = randoms(hidden, 3);
  std::vector<float> w2 = randoms(out * hidden, 4), b2 = randoms(out, 5), dy = randoms(rows * out, 6);
  // Reference on one rank: h = x W1^T + b1, a = gelu(h), y = a W2^T + b2, and the backward from dy.
  std::vector<float> h(rows * hidden), a(rows * hidden), y(rows * out), da(rows * hidden), dh(rows * hidden);
  std::vector<float> dx(rows * in), dw1(hidden * in, 0.0f), db1(hidden, 0.0f), dw2(out * hidden, 0.0f), db2(out, 0.0f);
  op_run(*device, Matmul{view(h, {rows, hidden}), view(x, {rows, in}), view(w1, {hidden, in}), view(b1, {hidden}), false,
                         true}, *stream);
  op_run(*device, ActivationForward{view(a, {rows, hidden}), view(h, {rows, hidden}), Activation::kGelu}, *stream);
  op_run(*device, Matmul{view(y, {rows, out}), view(a, {rows, hidden}), view(w2, {out, hidden}), view(b2, {out}), false,
                         true}, *stream);
  matmul_backward(*device, MatmulBackward{view(da, {rows, hidden}), view(dw2, {out, hidden}), view(db2, {out}),
                                          view(dy, {rows, out}), view(a, {rows, hidden}), view(w2, {out, hidden}), false,
                                          true}, *stream);
  op_run(*device, ActivationBackward{view(dh, {rows, hidden}), view(da, {rows, hidden}), view(h, {rows, hidden}),
                                     Activation::kGelu}, *stream);
  matmul_backward(*device, MatmulBackward{view(dx, {rows, in}), view(dw1, {hidden, in}), view(db1, {hidden}),
                                          view(dh, {rows, hidden}), view(x, {rows, in}), view(w1, {hidden, in}), false,
                                          true}, *stream);

  // This rank's shards: rows [r*part, (r+1)*part) of W1 and b1, columns of W2.
  std::vector<float> w1_r(part * in), b1_r(part), w2_r(out * part);
  for (int64_t i = 0; i < part; ++i) {
    for (int64_t j = 0; j < in; ++j) w1_r[i * in + j] = w1[(r * part + i) * in + j];
    b1_r[i] = b1[r * part + i];
  }
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < part; ++i) w2_r[o * part + i] = w2[o * hidden + r * part + i];
  std::vector<float> h_r(rows * part), a_r(rows * part), y_tp(rows * out), da_r(rows * part), dh_r(rows * part);
  std::vector<float> dx_tp(rows * in), dw1_r(part * in, 0.0f), db1_r(part, 0.0f), dw2_r(out * part, 0.0f), db2_tp(out, 0.0f);
  column_parallel_forward(*device, *stream, view(h_r, {rows, part}), view(x, {rows, in}), view(w1_r, {part, in}),
                          view(b1_r, {part}));
  op_run(*device, ActivationForward{view(a_r, {rows, part}), view(h_r, {rows, part}), Activation::kGelu}, *stream);
  row_parallel_forward(*device, *stream, *tp, view(y_tp, {rows, out}), view(a_r, {rows, part}), view(w2_r, {out, part}),
                       view(b2, {out}));
  row_parallel_backward(*device, *stream, view(da_r, {rows, part}), view(dw2_r, {out, part}), view(db2_tp, {out}),
                        view(dy, {rows, out}), view(a_r, {rows, part}), view(w2_r, {out, part}));
  op_run(*device, ActivationBackward{view(dh_r, {rows, part}), view(da_r, {rows, part}), view(h_r, {rows, part}),
                                     Activation::kGelu}, *stream);
  column_parallel_backward(*device, *stream, *tp, view(dx_tp, {rows, in}), view(dw1_r, {part, in}), view(db1_r, {part}),
                           view(dh_r, {rows, part}), view(x, {rows, in}), view(w1_r, {part, in}));

  expect_close(y_tp, y, "y");
  expect_close(dx_tp, dx, "dx");
  expect_close(db2_tp, db2, "db2");
  std::vector<float> dw1_slice(dw1.begin() + r * part * in, dw1.begin() + (r + 1) * part * in);
  std::vector<float> db1_slice(db1.begin() + r * part, db1.begin() + (r + 1) * part), dw2_slice(out * part);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < part; ++i) dw2_slice[o * part + i] = dw2[o * hidden + r * part + i];
  expect_close(dw1_r, dw1_slice, "dW1 shard");
  expect_close(db1_r, db1_slice, "db1 shard");
  expect_close(dw2_r, dw2_slice, "dW2 shard");
}

}  // namespace
}  // namespace kosmos::parallel
