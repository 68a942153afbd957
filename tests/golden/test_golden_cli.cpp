// test_golden_cli.cpp: `kosmos forward` and `kosmos generate` on the Kosmos-2 fixture, from the kosmos config +
// weights and from an HF folder (config.json + model.safetensors as save_pretrained writes them): the logits file
// matches the peer's logits, and greedy ids match transformers' generate.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "backends/registry.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

const std::string kFixture = std::string(KOSMOS_GOLDEN_DIR) + "/kosmos2/";

class GoldenCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    const io::SafetensorsFile inputs(kFixture + "inputs.safetensors");
    const std::vector<float> tokens = inputs.read_f32("tokens"), images = inputs.read_f32("images");
    length = inputs.entry("tokens").shape[1];
    per_image = static_cast<int64_t>(images.size()) / inputs.entry("images").shape[0];
    prompt = static_cast<int64_t>(inputs.read_f32("prompt_length")[0]);
    // Row 0 and its image.
    for (int64_t t = 0; t < length; ++t) row0.push_back(static_cast<int32_t>(tokens[t]));
    const std::string own = ::testing::TempDir() + "/kosmos_" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name();  // per test: ctest -j
    image_path = own + "_image0.npy";
    io::write_npy(image_path, {1, 3, 28, 28}, std::vector<float>(images.begin(), images.begin() + per_image));
    // An HF folder: the peer's config.json and weights, as save_pretrained leaves them.
    hf_dir = own + "_hf_kosmos2";
    std::filesystem::create_directories(hf_dir);
    std::filesystem::copy_file(kFixture + "hf_config.json", hf_dir + "/config.json",
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(kFixture + "weights.safetensors", hf_dir + "/model.safetensors",
                               std::filesystem::copy_options::overwrite_existing);
  }

  static std::string ids(const std::vector<int32_t> & values, size_t count) {
    std::string text;
    for (size_t i = 0; i < count; ++i) text += (i ? "," : "") + std::to_string(values[i]);
    return text;
  }

  std::vector<int32_t> row0;
  int64_t length = 0, per_image = 0, prompt = 0;
  std::string image_path, hf_dir;
};

TEST_F(GoldenCommand, ForwardWritesThePeersLogits) {
  const io::SafetensorsFile expected(kFixture + "expected.safetensors");
  const std::vector<float> logits = expected.read_f32("logits");
  const int64_t vocab = expected.entry("logits").shape[1];
  for (bool from_hf : {false, true}) {
    InferenceOptions options;
    if (from_hf) {
      options.model.hf_dir = hf_dir;
    } else {
      options.model.model_config = kFixture + "config.json";
      options.model.weights = kFixture + "weights.safetensors";
    }
    options.tokens = ids(row0, row0.size());
    options.image_tensor = image_path;
    options.out = hf_dir + "_logits.npy";
    std::ostringstream log;
    ASSERT_EQ(run_forward(log, BackendRegistry(), options), 0);
    const io::NpyArray written = io::read_npy(options.out);
    ASSERT_EQ(written.shape, (std::vector<int64_t>{length, vocab}));
    double error = 0.0, norm = 0.0;
    for (int64_t i = 0; i < length * vocab; ++i) {
      error += (written.values[i] - logits[i]) * (written.values[i] - logits[i]);
      norm += logits[i] * logits[i];
    }
    EXPECT_LE(std::sqrt(error / norm), 1e-5) << (from_hf ? "--hf" : "--model-config/--weights");
  }
}

TEST_F(GoldenCommand, GenerateGivesTransformersGreedyIds) {
  const io::SafetensorsFile expected(kFixture + "expected.safetensors");
  const std::vector<float> generated = expected.read_f32("generated");
  const int64_t total = expected.entry("generated").shape[1];
  InferenceOptions options;
  options.model.hf_dir = hf_dir;
  options.tokens = ids(row0, static_cast<size_t>(prompt));
  options.image_tensor = image_path;
  options.max_new_tokens = total - prompt;
  options.ignore_eos = true;  // the fixture was generated with eos_token_id=None
  options.print_ids = true;
  std::ostringstream printed;
  ASSERT_EQ(run_generate(printed, BackendRegistry(), options), 0);
  std::vector<int32_t> want;
  for (int64_t t = prompt; t < total; ++t) want.push_back(static_cast<int32_t>(generated[t]));
  EXPECT_EQ(printed.str(), ids(want, want.size()) + "\n");
}

}  // namespace
}  // namespace kosmos
