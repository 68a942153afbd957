// test_attention_keep.cpp: on every backend, the record of an attention forward's dropout masks
// (AttentionForward::keep, Device::attention_keep_words): none without dropout, none on the CPU, one on the emulated
// GPU (the CUDA mma.sync kernels); where there is one, the backward reads it (a record of all zeros, every
// probability dropped, changes its gradients) and gives the same bits as a backward that draws the masks again. The
// WMMA kernels (emulated-wmma) and the ROCm build keep none.
// The op cases (cases_attention.cpp) check both backwards against the fp64 reference. An op cuda-cudnn leaves to
// our kernels runs on the mma.sync ones, as on cuda (seen by its record, on the emulated GPU).
#include <gtest/gtest.h>

#include "backends/cuda/gpu_device.h"
#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

class AttentionKeepOnBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionKeepOnBackend, TheBackwardReadsTheForwardsRecordAndMatchesDrawingAgain) {
  const std::string & backend = GetParam();
  std::unique_ptr<Device> device = create_test_device(backend);
  std::unique_ptr<Stream> stream = device->create_stream();
  DeviceRun run(*device, *stream);
  std::mt19937_64 rng(11);
  // Causal self-attention over two heads of 130 rows (ragged tiles) at head size 64: q, k, v, the output and the
  // gradients [1, 2, 130, 64] bf16, lse [1, 2, 130] f32.
  const std::vector<int64_t> dims{1, 2, 130, 64};
  const auto input = [&] { return run.upload(random_tensor(rng, dims, 1.0, DType::kBF16), DType::kBF16); };
  const TensorView q = input(), k = input(), v = input(), dout = input();
  const TensorView out = run.output(dims, DType::kBF16), lse = run.output({1, 2, 130}, DType::kF32);
  AttentionParams params;
  params.scale = 0.125f;
  params.causal = true;
  params.seed = 3;
  AttentionForward forward{out, lse, q, k, v, params, TensorView{}};
  EXPECT_EQ(device->attention_keep_words(forward), 0) << backend << " records masks without dropout";
  forward.params.dropout_p = 0.1f;
  const int64_t words = device->attention_keep_words(forward);
  if (backend == "cpu") {
    EXPECT_EQ(words, 0) << "the CPU draws the masks again in the backward";
  }
  if (backend == "emulated") {
    EXPECT_GT(words, 0) << "the mma.sync kernels record the masks";
  }
  if (words == 0) GTEST_SKIP() << backend << " keeps no record";
  forward.keep = run.output({words}, DType::kI32);
  run.op(forward);

  const auto gradients = [&](const TensorView & keep) {
    const TensorView dq = run.output(dims, DType::kBF16), dk = run.output(dims, DType::kBF16),
                     dv = run.output(dims, DType::kBF16);
    run.op(AttentionBackward{dq, dk, dv, dout, q, k, v, out, lse, forward.params, keep});
    return std::vector<Tensor>{run.download(dq), run.download(dk), run.download(dv)};
  };
  const std::vector<Tensor> recorded = gradients(forward.keep), drawn = gradients(TensorView{});
  const std::vector<Tensor> all_dropped = gradients(run.output({words}, DType::kI32, 0.0));
  for (size_t g = 0; g < recorded.size(); ++g) {
    EXPECT_EQ(recorded[g].v, drawn[g].v) << "gradient " << g << ": the record gives other masks than drawing again";
    EXPECT_NE(recorded[g].v, all_dropped[g].v) << "gradient " << g << ": the backward did not read the record";
  }
}

#ifdef KOSMOS_USE_GPU_EMULATION
// The cuda-cudnn variant built for the emulated GPU (which has no cuDNN, so it takes no op) dispatches what cuDNN
// declines as cuda-cudnn does on a GPU: the mma.sync kernels, which keep a record, not the WMMA ones, which keep none.
TEST(AttentionKeepOnCudnnVariant, AnOpCudnnDeclinesRunsOnTheMmaKernels) {
  const BackendEntry entry = emulated::backend_entry(GpuVariant::kCudnnAttention);
  ASSERT_EQ(entry.name, "emulated-cudnn");
  std::unique_ptr<Device> device = entry.create(0);
  std::unique_ptr<Stream> stream = device->create_stream();
  DeviceRun run(*device, *stream);
  const std::vector<int64_t> dims{1, 2, 130, 64};  // bf16 q, k, v, out [1, 2, 130, 64]; lse [1, 2, 130] f32
  const TensorView q = run.output(dims, DType::kBF16), out = run.output(dims, DType::kBF16);
  AttentionParams params;
  params.scale = 0.125f;
  params.causal = true;
  params.dropout_p = 0.1f;
  const AttentionForward forward{out, run.output({1, 2, 130}, DType::kF32), q, q, q, params, TensorView{}};
  EXPECT_GT(device->attention_keep_words(forward), 0) << "the op went to the WMMA kernels";
}
#endif

INSTANTIATE_TEST_SUITE_P(Devices, AttentionKeepOnBackend, ::testing::ValuesIn(testable_backends()),
                         [](const auto & info) { return test_name_of_backend(info.param); });

}  // namespace
}  // namespace kosmos::testing
