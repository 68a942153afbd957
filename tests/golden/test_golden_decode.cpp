// test_golden_decode.cpp: decoding with the KV cache computes what a full forward over the whole sequence does, on
// both fixtures: the KOSMOS-1 seed composition (xPos, whose centre moves with the length, so the cached raw keys
// are rotated again each step; kosmos-spec 3.5, 4.3) and HF Kosmos-2 (sinusoidal positions continuing after the
// prompt). Two rows, one image each, 8 greedy steps: each step's logits against the full forward's last row.
#include <gtest/gtest.h>

#include <cmath>

#include "io/safetensors.h"
#include "launch/decoding.h"

namespace kosmos {
namespace {

class GoldenDecode : public ::testing::TestWithParam<const char *> {};

TEST_P(GoldenDecode, TheCacheGivesTheFullForwardsLogits) {
  const std::string folder = std::string(KOSMOS_GOLDEN_DIR) + "/" + GetParam() + "/";
  ModelSource source;
  source.model_config = folder + "config.json";
  source.weights = folder + "weights.safetensors";
  LoadedModel loaded = load_model(BackendRegistry(), source);
  const io::SafetensorsFile inputs(folder + "inputs.safetensors");
  const std::vector<float> tokens = inputs.read_f32("tokens"), images = inputs.read_f32("images");
  const int64_t length = inputs.entry("tokens").shape[1], per_image = static_cast<int64_t>(images.size()) /
                                                                       inputs.entry("images").shape[0];
  const int64_t prompt = 2 + loaded.config.image_slots() + 1;  // <s> <image> slots </image> and one word
  model::Batch batch;
  batch.batch = 2, batch.length = prompt;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < prompt; ++t) batch.tokens.push_back(static_cast<int32_t>(tokens[b * length + t]));
  // Each row's first image: row 0's is image 0; row 1's follows row 0's images (one in both fixtures' row 0).
  batch.images.assign(images.begin(), images.begin() + 2 * per_image);
  batch.image_count = 2;
  batch.image_slots = model::find_image_slots(batch.tokens, batch.batch, batch.length, loaded.config);
  ASSERT_EQ(batch.image_slots.size(), 2u);

  std::vector<std::vector<float>> step_logits;
  const std::vector<std::vector<int32_t>> generated = decode(loaded, batch, 8, Sampling{}, true, &step_logits);
  ASSERT_EQ(step_logits.size(), 8u);
  const int64_t vocab = loaded.config.decoder.vocab_size;
  for (size_t step = 0; step < step_logits.size(); ++step) {
    model::Batch whole = batch;  // the prompt and the tokens generated before this step, one full forward
    whole.length = prompt + static_cast<int64_t>(step);
    whole.tokens.clear();
    for (int64_t b = 0; b < 2; ++b) {
      whole.tokens.insert(whole.tokens.end(), batch.tokens.begin() + b * prompt, batch.tokens.begin() + (b + 1) * prompt);
      whole.tokens.insert(whole.tokens.end(), generated[static_cast<size_t>(b)].begin(),
                          generated[static_cast<size_t>(b)].begin() + static_cast<long>(step));
    }
    whole.image_slots = model::find_image_slots(whole.tokens, whole.batch, whole.length, loaded.config);
    const std::vector<float> full = forward_logits(loaded, whole);
    for (int64_t b = 0; b < 2; ++b) {
      double error = 0.0, norm = 0.0;
      for (int64_t v = 0; v < vocab; ++v) {
        const double want = full[((b + 1) * whole.length - 1) * vocab + v], got = step_logits[step][b * vocab + v];
        error += (got - want) * (got - want);
        norm += want * want;
      }
      EXPECT_LE(std::sqrt(error / norm), 1e-5) << GetParam() << " step " << step << " row " << b;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Peers, GoldenDecode, ::testing::Values("kosmos1", "kosmos2"),
                         [](const auto & info) { return std::string(info.param); });

}  // namespace
}  // namespace kosmos
