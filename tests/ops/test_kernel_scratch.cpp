// test_kernel_scratch.cpp: on every backend, the working memory of the kernels themselves (on a GPU: cuBLASLt's
// workspace, a bias staged for its epilogue, a LayerNorm's partial sums and activated input) is taken by the first
// pass over a step's ops and never again by the passes after it, and on the GPU backends the device counts it in
// Device::memory(). Also: a product with alpha 0 leaves C to beta and the bias, even where A holds inf (as BLAS), and
// the xPos tables a GPU keeps from op to op follow each op's parameters.
#include <gtest/gtest.h>

#include <limits>

#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

class KernelScratchOnBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(KernelScratchOnBackend, IsTakenByTheFirstPassOnlyAndCounted) {
  const std::string & backend = GetParam();
  std::unique_ptr<Device> device = create_test_device(backend);
  std::unique_ptr<Stream> stream = device->create_stream();
  DeviceRun run(*device, *stream);
  std::mt19937_64 rng(5);
  constexpr int64_t kRows = 96, kCols = 130;  // 130: a LayerNorm over an activation runs as its parts
  // A bf16 linear layer with an f32 bias (staged in bf16 for cuBLASLt's epilogue), then the FFN's sub-LN over GELU.
  // Whole tensors on one device (no split): the layer's input [rows, 64] bf16, its weight [64, cols] bf16, bias
  // [cols] f32; the product and LN(gelu(product)) [rows, cols] bf16, the LN's mean and rstd [rows] f32, its weight
  // and shift [cols] f32; the gradients at its output and input [rows, cols] bf16, at its weight and shift [cols]
  // f32 (accumulated).
  const TensorView a = run.upload(random_tensor(rng, {kRows, 64}, 1.0, DType::kBF16), DType::kBF16);
  const TensorView b = run.upload(random_tensor(rng, {64, kCols}, 1.0, DType::kBF16), DType::kBF16);
  const TensorView bias = run.upload(random_tensor(rng, {kCols}), DType::kF32);
  const TensorView hidden = run.output({kRows, kCols}, DType::kBF16);
  const TensorView normed = run.output({kRows, kCols}, DType::kBF16);
  const TensorView mean = run.output({kRows}, DType::kF32), rstd = run.output({kRows}, DType::kF32);
  const TensorView weight = run.upload(random_tensor(rng, {kCols}), DType::kF32);
  const TensorView shift = run.upload(random_tensor(rng, {kCols}), DType::kF32);
  const TensorView dnormed = run.upload(random_tensor(rng, {kRows, kCols}, 1.0, DType::kBF16), DType::kBF16);
  const TensorView dhidden = run.output({kRows, kCols}, DType::kBF16);
  const TensorView dweight = run.accumulator({kCols}), dshift = run.accumulator({kCols});
  const auto pass = [&] {
    run.op(Matmul{hidden, a, b, bias});
    run.op(LayerNormForward{normed, mean, rstd, hidden, weight, shift, 1e-5f, Activation::kGelu});
    run.op(LayerNormBackward{dhidden, dweight, dshift, dnormed, hidden, weight, mean, rstd, 1e-5f, Activation::kGelu});
    stream->synchronize();
  };
  const size_t inputs = device->memory().in_use;
  pass();
  const size_t after_first = device->memory().in_use;
  pass();
  pass();
  EXPECT_EQ(device->memory().in_use, after_first) << backend << " took more memory after the first pass";
  if (backend != "cpu") {  // the CPU's kernels keep no scratch of their own (oneDNN's scratchpads are its own)
    EXPECT_GT(after_first, inputs) << backend << "'s kernel scratch is not counted in Device::memory()";
  }
}

TEST_P(KernelScratchOnBackend, AProductWithAlphaZeroIgnoresItsOperands) {
  std::unique_ptr<Device> device = create_test_device(GetParam());
  std::unique_ptr<Stream> stream = device->create_stream();
  DeviceRun run(*device, *stream);
  // Host tensors (f64, uploaded as f32): a [4, 3] all inf, b [3, 5] ones, c [4, 5] twos, bias [5].
  Tensor a({4, 3}, std::numeric_limits<double>::infinity());
  Tensor c_old({4, 5}, 2.0), bias({5}, 0.5);
  const TensorView c = run.upload(c_old, DType::kF32);
  run.op(Matmul{c, run.upload(a, DType::kF32), run.upload(Tensor({3, 5}, 1.0), DType::kF32),
                run.upload(bias, DType::kF32), false, false, 0.0f, 0.5f});
  const Tensor out = run.download(c);
  for (double value : out.v) EXPECT_EQ(value, 0.5 * 2.0 + 0.5);
}

// The GPUs keep the last table of xPos factors of each direction for the next op that asks for the same one: a run of
// ops whose length, offset, direction or scale base change, and return, gets each op's own rotation.
TEST_P(KernelScratchOnBackend, XPosTablesFollowTheirParameters) {
  std::unique_ptr<Device> device = create_test_device(GetParam());
  std::unique_ptr<Stream> stream = device->create_stream();
  DeviceRun run(*device, *stream);
  std::mt19937_64 rng(9);
  struct Rotation {
    int64_t length, offset;
    bool downscale;
    double scale_base;
  };
  const std::vector<Rotation> rotations = {{12, 0, false, 512.0}, {12, 0, true, 512.0}, {12, 3, false, 512.0},
                                           {12, 0, false, 512.0}, {9, 0, false, 512.0}, {12, 0, false, 256.0},
                                           {12, 0, true, 512.0}};
  for (const Rotation & r : rotations) {
    // [1, 2, length, 16] f32 in and out.
    const Tensor x = random_tensor(rng, {1, 2, r.length, 16});
    const TensorView in = run.upload(x, DType::kF32), out = run.output(x.dims, DType::kF32);
    run.op(XPosForward{out, in, {r.offset, r.downscale, static_cast<float>(r.scale_base)}});
    const Tensor got = run.download(out), want = reference::xpos(x, r.offset, r.downscale, r.scale_base);
    for (size_t i = 0; i < want.v.size(); ++i)
      ASSERT_NEAR(got.v[i], want.v[i], 1e-5 * (1.0 + std::abs(want.v[i])))
          << "length " << r.length << ", offset " << r.offset << (r.downscale ? ", down" : ", up") << ", scale base "
          << r.scale_base << ", element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, KernelScratchOnBackend, ::testing::ValuesIn(testable_backends()),
                         [](const auto & info) { return test_name_of_backend(info.param); });

}  // namespace
}  // namespace kosmos::testing
