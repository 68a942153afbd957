// test_head_chunks.cpp: the head and loss computed over chunks of rows give the loss and every gradient of the
// whole batch in one chunk (the default at this size, also while the logits are returned to the host), for several
// chunks and a last chunk that is short; and on the emulated GPU, whose logits rows are padded to 16 bytes (an odd
// vocabulary's), the CPU's dense rows' loss, logits and gradients; a bf16 head's logits are bf16, in chunks as in one;
// the default chunk is the most whole 128 rows whose logits (and gradient) fit its budget.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backends/registry.h"
#include "io/synthetic.h"
#include "model/kosmos.h"

namespace kosmos::model {
namespace {

struct Result {
  double loss = 0.0;
  std::vector<float> gradients;
  std::vector<float> logits;  // [rows, vocab], dense, where the run returned them
};

// One micro-batch's forward and backward of the tiny model (with `vocab` tokens where given) on `backend`;
// `chunk_rows` < 0: the default chunks (one here), with the logits returned to the host. `precision`: the matmuls'
// dtype (ModelState's compute copy), bf16 for mixed precision.
Result run_tiny(int64_t chunk_rows, const std::string & backend = "cpu", int64_t vocab = 0,
                DType precision = DType::kF32) {
  KosmosConfig config = preset("tiny");
  if (vocab > 0) config.decoder.vocab_size = vocab;
  auto device = BackendRegistry().create(backend, 0);
  auto stream = device->create_stream();
  const ParameterTable table(config);
  ModelState state(*device, table, precision);
  state.initialise(3, *stream);
  state.zero_grads(*stream);
  KosmosModel kosmos_model(config, state);
  if (chunk_rows >= 0) kosmos_model.set_head_chunk_rows(chunk_rows);
  Arena arena(*device);
  Runtime rt{*device, *stream, arena};
  Batch batch = io::synthetic_batch(config, 2, 40, 0, 7);
  for (size_t i = 0; i < batch.loss_weights.size(); ++i)  // every row counts, the last chunk's too
    batch.loss_weights[i] = 1.0f + 0.01f * static_cast<float>(i % 5);
  Result result;
  result.loss = kosmos_model.run(rt, batch, 0.5f, {11, 1, true}, true, chunk_rows < 0 ? &result.logits : nullptr);
  const TensorView grads = state.flat(ModelState::Slot::kGrads);
  result.gradients.resize(static_cast<size_t>(grads.numel()));
  device->copy(make_view(result.gradients.data(), DType::kF32, {grads.numel()}), grads, *stream);
  return result;
}

// The largest difference between two runs' values, and the largest magnitude among the first's.
struct Difference {
  double worst = 0.0, largest = 0.0;
};
Difference compare(const std::vector<float> & expected, const std::vector<float> & actual) {
  Difference d;
  for (size_t i = 0; i < expected.size(); ++i) {
    d.largest = std::max(d.largest, std::abs(static_cast<double>(expected[i])));
    d.worst = std::max(d.worst, std::abs(static_cast<double>(actual[i]) - expected[i]));
  }
  return d;
}

TEST(HeadChunks, GiveTheWholeBatchLossAndGradients) {
  const Result whole = run_tiny(-1);
  for (int64_t chunk_rows : {0, 16, 7}) {  // one chunk (80 rows), five, and twelve with a short last one
    const Result chunked = run_tiny(chunk_rows);
    EXPECT_NEAR(chunked.loss, whole.loss, 1e-5 * std::abs(whole.loss)) << chunk_rows << " rows per chunk";
    const Difference d = compare(whole.gradients, chunked.gradients);
    EXPECT_LT(d.worst, 1e-5 * d.largest) << chunk_rows << " rows per chunk: largest gradient " << d.largest;
    EXPECT_GT(d.largest, 0.0);
  }
}

// A vocabulary of 131 tokens: the emulated GPU (Device::matmul_row_alignment 16) lays the logits' rows 132 f32
// apart, the CPU 131; the loss, the logits returned to the host (the padding left out) and every gradient agree, in
// one chunk and in chunks of 7 rows.
TEST(HeadChunks, PaddedLogitsRowsOnTheEmulatedGpuGiveTheCpusResults) {
  const std::vector<std::string> built = BackendRegistry().available_names();
  if (std::find(built.begin(), built.end(), "emulated") == built.end())
    GTEST_SKIP() << "built without the emulated GPU";
  const int64_t vocab = 131;
  const size_t alignment = BackendRegistry().create("emulated", 0)->matmul_row_alignment();
  ASSERT_EQ(KosmosModel::head_row_pitch(vocab, DType::kF32, alignment), 132) << "the rows must be padded here";
  const size_t cpu_alignment = BackendRegistry().create("cpu", 0)->matmul_row_alignment();
  ASSERT_EQ(KosmosModel::head_row_pitch(vocab, DType::kF32, cpu_alignment), vocab) << "and dense on the CPU";
  const Result cpu = run_tiny(-1, "cpu", vocab);
  ASSERT_EQ(cpu.logits.size(), size_t{80} * vocab);
  for (int64_t chunk_rows : {-1, 7}) {
    const Result gpu = run_tiny(chunk_rows, "emulated", vocab);
    EXPECT_NEAR(gpu.loss, cpu.loss, 1e-5 * std::abs(cpu.loss)) << chunk_rows << " rows per chunk";
    const Difference gradients = compare(cpu.gradients, gpu.gradients);
    EXPECT_LT(gradients.worst, 1e-4 * gradients.largest) << chunk_rows << " rows per chunk";
    EXPECT_GT(gradients.largest, 0.0);
    if (chunk_rows >= 0) continue;
    ASSERT_EQ(gpu.logits.size(), cpu.logits.size());
    const Difference logits = compare(cpu.logits, gpu.logits);
    EXPECT_LT(logits.worst, 1e-5 * logits.largest);
  }
}

// Under bf16 the head's product stays in bf16 (as PyTorch's autocast leaves it) and the loss widens it: the logits
// returned are bf16 values, where the f32 head's are not; chunks give the one chunk's loss, and its gradients to
// 1e-3 of the largest (the gradient is stored over the logits, chunk by chunk). Not to 1e-5 as in f32: the CPU's
// GEMM sums a row's products in an order that depends on how many rows it is given, and a last-bit difference
// that a bf16 rounding (of the logits, of the head's input gradient) keeps is 2^-8 of the value; with the logits
// in f32 the chunked gradients of this test differ by 4e-5 of the largest, in bf16 by 1.3e-4. A chunk's rows or
// columns taken wrongly differ by far more.
TEST(HeadChunks, ABf16HeadsLogitsAreBf16) {
  const auto bf16_values = [](const std::vector<float> & values) {
    return std::count_if(values.begin(), values.end(),
                         [](float value) { return bf16_to_float(float_to_bf16(value)) == value; });
  };
  const Result f32 = run_tiny(-1);
  ASSERT_FALSE(f32.logits.empty());
  EXPECT_LT(bf16_values(f32.logits), static_cast<int64_t>(f32.logits.size()) / 10) << "f32 logits, mostly not bf16";
  const Result whole = run_tiny(-1, "cpu", 0, DType::kBF16);
  ASSERT_EQ(whole.logits.size(), f32.logits.size());
  EXPECT_EQ(bf16_values(whole.logits), static_cast<int64_t>(whole.logits.size()));
  EXPECT_NEAR(whole.loss, f32.loss, 1e-2 * std::abs(f32.loss));
  for (int64_t chunk_rows : {16, 7}) {
    const Result chunked = run_tiny(chunk_rows, "cpu", 0, DType::kBF16);
    EXPECT_NEAR(chunked.loss, whole.loss, 1e-5 * std::abs(whole.loss)) << chunk_rows << " rows per chunk";
    const Difference d = compare(whole.gradients, chunked.gradients);
    EXPECT_LT(d.worst, 1e-3 * d.largest) << chunk_rows << " rows per chunk: largest gradient " << d.largest;
    EXPECT_GT(d.largest, 0.0);
  }
}

// The default chunk: the most rows whose logits (and their gradient, where not over them) fit the budget, in whole
// 128s where 128 fit (so that on a GPU none of the head's products has a row count its GEMM library would split),
// else as many as fit, at least one. What a logit takes: bf16 logits with their gradient over them, f32 the same,
// f32 logits beside an f16 gradient.
TEST(HeadChunks, DefaultRowsAreTheMostWhole128sThatFitTheBudget) {
  EXPECT_EQ(KosmosModel::head_bytes_per_logit(DType::kBF16), 2);
  EXPECT_EQ(KosmosModel::head_bytes_per_logit(DType::kF32), 4);
  EXPECT_EQ(KosmosModel::head_bytes_per_logit(DType::kF16), 6);
  constexpr int64_t kBudget = KosmosModel::kHeadChunkBytes, kMultiple = KosmosModel::kHeadChunkRowMultiple;
  const int64_t vocabularies[] = {64007, 32003, 131, kBudget / 800, kBudget / 400, kBudget * 2};
  for (const DType dtype : {DType::kBF16, DType::kF32, DType::kF16}) {
    const int64_t bytes = KosmosModel::head_bytes_per_logit(dtype);
    for (const int64_t vocab : vocabularies) {
      const int64_t rows = KosmosModel::default_head_chunk_rows(vocab, bytes);
      const std::string what = std::string("vocabulary ") + std::to_string(vocab) + ", " + dtype_name(dtype) + ": " +
                               std::to_string(rows) + " rows";
      ASSERT_GE(rows, 1) << what;
      const int64_t fitting = kBudget / (vocab * bytes);
      if (fitting >= kMultiple) {
        EXPECT_EQ(rows % kMultiple, 0) << what;
        EXPECT_LE(rows * vocab * bytes, kBudget) << what;
        EXPECT_GT((rows + kMultiple) * vocab * bytes, kBudget) << what;
      } else {
        EXPECT_EQ(rows, std::max<int64_t>(1, fitting)) << what;
      }
    }
  }
  // kosmos1's vocabulary: 2048 rows of f32 logits, 4096 of bf16 ones (half the f32 gradient's reads and writes by
  // the head's weight-gradient product), 1280 of f32 logits beside an f16 gradient.
  EXPECT_EQ(KosmosModel::default_head_chunk_rows(64007, 4), 2048);
  EXPECT_EQ(KosmosModel::default_head_chunk_rows(64007, 2), 4096);
  EXPECT_EQ(KosmosModel::default_head_chunk_rows(64007, 6), 1280);
}

}  // namespace
}  // namespace kosmos::model
