// test_head_chunks.cpp: the head and loss computed over chunks of rows give the loss and every gradient of the
// whole batch in one chunk (the default at this size, also while the logits are returned to the host), for several
// chunks and a last chunk that is short.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/registry.h"
#include "io/synthetic.h"
#include "model/kosmos.h"

namespace kosmos::model {
namespace {

struct Result {
  double loss = 0.0;
  std::vector<float> gradients;
};

// One micro-batch's forward and backward of the tiny model; `chunk_rows` < 0: the default chunks (one here), with
// the logits returned to the host.
Result run_tiny(int64_t chunk_rows) {
  const KosmosConfig config = preset("tiny");
  auto device = BackendRegistry().create("cpu", 0);
  auto stream = device->create_stream();
  const ParameterTable table(config);
  ModelState state(*device, table);
  state.initialise(3, *stream);
  state.zero_grads(*stream);
  KosmosModel kosmos_model(config, state);
  if (chunk_rows >= 0) kosmos_model.set_head_chunk_rows(chunk_rows);
  Arena arena(*device);
  Runtime rt{*device, *stream, arena};
  Batch batch = io::synthetic_batch(config, 2, 40, 0, 7);
  for (size_t i = 0; i < batch.loss_weights.size(); ++i)  // every row counts, the last chunk's too
    batch.loss_weights[i] = 1.0f + 0.01f * static_cast<float>(i % 5);
  std::vector<float> logits;
  Result result;
  result.loss = kosmos_model.run(rt, batch, 0.5f, {11, 1, true}, true, chunk_rows < 0 ? &logits : nullptr);
  const TensorView grads = state.flat(ModelState::Slot::kGrads);
  result.gradients.assign(grads.as<float>(), grads.as<float>() + grads.numel());
  return result;
}

TEST(HeadChunks, GiveTheWholeBatchLossAndGradients) {
  const Result whole = run_tiny(-1);
  for (int64_t chunk_rows : {0, 16, 7}) {  // one chunk (80 rows), five, and twelve with a short last one
    const Result chunked = run_tiny(chunk_rows);
    EXPECT_NEAR(chunked.loss, whole.loss, 1e-5 * std::abs(whole.loss)) << chunk_rows << " rows per chunk";
    double largest = 0.0, worst = 0.0;
    for (float g : whole.gradients) largest = std::max(largest, std::abs(static_cast<double>(g)));
    for (size_t i = 0; i < whole.gradients.size(); ++i)
      worst = std::max(worst, std::abs(static_cast<double>(chunked.gradients[i]) - whole.gradients[i]));
    EXPECT_LT(worst, 1e-5 * largest) << chunk_rows << " rows per chunk: largest gradient " << largest;
    EXPECT_GT(largest, 0.0);
  }
}

}  // namespace
}  // namespace kosmos::model
