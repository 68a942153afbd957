// test_config.cpp: presets, the JSON config with the peers' key names (round trip, unknown keys, wrong types), and
// the constraints between hyper-parameters, each error naming the numbers involved.
#include <gtest/gtest.h>

#include "backends/error.h"
#include "tests/test_errors.h"
#include "model/config.h"
#include "backends/registry.h"
#include "model/kosmos.h"
#include "model/parameters.h"
#include "model/partition.h"

namespace kosmos::model {
namespace {

using kosmos::testing::error_of;

TEST(Config, PresetsAreValidAndRoundTripThroughJson) {
  for (const char * name : {"tiny", "small", "kosmos1", "kosmos2"}) {
    const KosmosConfig config = preset(name);
    EXPECT_EQ(error_of([&] { validate(config); }), "") << name;
    const KosmosConfig again = config_from_json(config_to_json(config), preset("tiny"), name);
    EXPECT_EQ(config_to_json(again), config_to_json(config)) << name;
  }
  EXPECT_NE(error_of([] { preset("huge"); }).find("choose tiny, small, kosmos1 or kosmos2"), std::string::npos);
}

TEST(Config, PaperSizesGiveThePapersParameterCounts) {
  // kosmos-spec section 12: LM layer 50,378,752; CLIP ViT-L/14 303,179,776; flamingo resampler 21,314,560.
  const ParameterTable table(preset("kosmos1"));
  int64_t layer = 0, clip = 0, resampler = 0;
  for (const ParameterSpec & spec : table.specs()) {
    if (spec.name.rfind("decoder.layers.0.", 0) == 0) layer += spec.numel;
    if (spec.name.rfind("clip_model.", 0) == 0) clip += spec.numel;
    if (spec.name.rfind("perceive.", 0) == 0) resampler += spec.numel;
  }
  EXPECT_EQ(layer, 50378752);
  EXPECT_EQ(clip, 303179776);
  EXPECT_EQ(resampler, 21314560);
}

TEST(Config, PeerKeyNamesOverrideThePreset) {
  const KosmosConfig config = config_from_json(
      R"({"decoder_layers": 3, "decoder_attention_heads": 8, "no_scale_embedding": true, "abs_pos": "learned",
          "vision": {"hidden_act": "gelu", "num_hidden_layers": 4},
          "connector": {"type": "xconnector", "heads": 8}})",
      preset("tiny"), "test.json");
  EXPECT_EQ(config.decoder.layers, 3);
  EXPECT_EQ(config.decoder.heads, 8);
  EXPECT_FALSE(config.decoder.scale_embedding);
  EXPECT_EQ(config.decoder.abs_pos, AbsolutePositions::kLearned);
  EXPECT_EQ(config.vision.activation, Activation::kGelu);
  EXPECT_EQ(config.vision.layers, 4);
  EXPECT_EQ(config.connector.kind, ConnectorKind::kXConnector);
}

TEST(Config, MistakesAreNamed) {
  const KosmosConfig base = preset("tiny");
  auto load = [&](const std::string & text) { return error_of([&] { config_from_json(text, base, "run.json"); }); };
  EXPECT_NE(load(R"({"decoder_layerz": 2})").find("run.json has unknown keys: decoder_layerz"), std::string::npos);
  EXPECT_NE(load(R"({"vision": {"hidden_sise": 2}})").find("vision has unknown keys: hidden_sise"), std::string::npos);
  EXPECT_NE(load(R"({"decoder_layers": "two"})").find("decoder_layers = \"two\" has the wrong type"), std::string::npos);
  EXPECT_NE(load(R"({"abs_pos": "rotary"})").find("abs_pos = \"rotary\" is not one of: none, sinusoidal, learned"),
            std::string::npos);
  EXPECT_NE(load("{not json").find("run.json: not valid JSON"), std::string::npos);
  // Found by tests/fuzz (fuzz_model_config): a number beyond double's range was an uncaught out_of_range.
  EXPECT_NE(load(R"({"dec777777777t":80.0777e7777})").find("run.json: not valid JSON"), std::string::npos);
  EXPECT_NE(load(R"({"decoder_embed_dim": 64, "decoder_attention_heads": 5})")
                .find("decoder_embed_dim 64 is not divisible by decoder_attention_heads 5"),
            std::string::npos);
  EXPECT_NE(load(R"({"vision": {"image_size": 30}})").find("vision.image_size 30 is not a multiple of vision.patch_size 14"),
            std::string::npos);
  EXPECT_NE(load(R"({"image_token_id": 500})").find("image_token_id = 500 is outside the vocabulary [0, 128)"),
            std::string::npos);
  EXPECT_NE(load(R"({"vision": {"trainable_layers": 3}})").find("vision.trainable_layers 3 must be between 0 and"),
            std::string::npos);
  // Found by fuzz_model_config: an integer field given a number beyond its range was cast with undefined behaviour
  // (tests/fuzz/regressions/model_config_integer_beyond_range.json); and 2.5 was silently 2.
  const std::string beyond = load(R"({"vision": {"trainable_layers": 33333333333333333333332}})");
  EXPECT_NE(beyond.find("vision.trainable_layers = 3.33333333333333"), std::string::npos) << beyond;
  EXPECT_NE(beyond.find("is not an integer between"), std::string::npos) << beyond;
  EXPECT_NE(load(R"({"decoder_layers": 2.5})").find("decoder_layers = 2.5 is not an integer between"),
            std::string::npos);
  EXPECT_NE(load(R"({"decoder_layers": 18446744073709551615})").find("is not an integer between"), std::string::npos);
}

}  // namespace
}  // namespace kosmos::model

namespace kosmos::model {
namespace {

// Runs the tiny model on one hand-made sequence and returns the error, if any.
std::string run_error(KosmosConfig config, std::vector<int32_t> tokens, int64_t images) {
  auto device = BackendRegistry().create("cpu", 0);
  auto stream = device->create_stream();
  const ParameterTable table(config);
  ModelState state(*device, table);
  state.initialise(1, *stream);
  KosmosModel kosmos_model(config, state);
  Arena arena(*device);
  Runtime rt{*device, *stream, arena};
  Batch batch;
  batch.batch = 1;
  batch.length = static_cast<int64_t>(tokens.size());
  batch.tokens = tokens;
  batch.targets.assign(tokens.size(), 0);
  batch.loss_weights.assign(tokens.size(), 1.0f);
  batch.image_count = images;
  batch.images.assign(static_cast<size_t>(images * 3 * 28 * 28), 0.1f);
  return error_of([&] {
    batch.image_slots = find_image_slots(batch.tokens, 1, batch.length, config);
    kosmos_model.run(rt, batch, 1.0f, {0, 0, false}, false);
  });
}

TEST(ModelInput, BadSequencesAreNamed) {
  const KosmosConfig tiny = preset("tiny");
  EXPECT_EQ(run_error(tiny, {0, 5, 6, 2, 1, 1}, 0), "");
  EXPECT_NE(run_error(tiny, {1, 1, 0, 5, 6, 2}, 0).find("sequence 0 has a real token at position 2 after padding"),
            std::string::npos);
  EXPECT_NE(run_error(tiny, {0, 126, 126, 126}, 1).find("needs 8 image slots after it"), std::string::npos);
  EXPECT_NE(run_error(tiny, {0, 5, 6, 2}, 1).find("0 <image> tokens but 1 images"), std::string::npos);
  KosmosConfig learned = tiny;
  learned.decoder.abs_pos = AbsolutePositions::kLearned;
  learned.decoder.max_positions = 6;
  EXPECT_NE(run_error(learned, {0, 5, 6, 7, 8, 2}, 0).find("need learned position id 7 but max_target_positions is 6"),
            std::string::npos);
}

}  // namespace
}  // namespace kosmos::model

#include "model/partition.h"

namespace kosmos::model {
namespace {

TEST(Partition, CutsMinimiseTheMostExpensiveStage) {
  KosmosConfig config = preset("tiny");
  config.decoder.layers = 8;
  auto counts = [](const std::vector<StageRange> & ranges) {
    std::vector<int64_t> layers;
    for (const StageRange & r : ranges) layers.push_back(r.layer_end - r.layer_begin);
    return layers;
  };
  // Layers alone: an even split.
  EXPECT_EQ(counts(partition_stages(config, 4, StageCosts{1.0, 0.0, 0.0})), (std::vector<int64_t>{2, 2, 2, 2}));
  // A head worth three layers: the last stage keeps fewer layers, the others take them.
  // (8 layers + 3 over 4 stages: no stage can cost less than 4, which needs the last to hold one layer.)
  const std::vector<StageRange> heavy_head = partition_stages(config, 4, StageCosts{1.0, 0.0, 3.0});
  EXPECT_EQ(counts(heavy_head).back(), 1);
  EXPECT_TRUE(heavy_head.front().first && heavy_head.back().last && !heavy_head[1].first && !heavy_head[1].last);
  const std::vector<double> costs = partition_costs(heavy_head, StageCosts{1.0, 0.0, 3.0});
  EXPECT_EQ(*std::max_element(costs.begin(), costs.end()), 4.0);
  // An image path worth two layers: the first stage gives way.
  EXPECT_EQ(counts(partition_stages(config, 2, StageCosts{1.0, 2.0, 0.0})), (std::vector<int64_t>{3, 5}));
  // The cost model's real numbers for the paper's model put the 64007-token head on the last stage.
  const StageCosts paper = stage_costs(preset("kosmos1"), 8, 2048, 8);
  EXPECT_GT(paper.head, paper.layer);  // 6 d V > 6 (4d^2 + 2dF) per token at d 2048, V 64007
}

TEST(Partition, UserCountsAreCheckedAndUsed) {
  KosmosConfig config = preset("tiny");
  config.decoder.layers = 6;
  const std::vector<StageRange> ranges = partition_stages(config, 3, StageCosts{1.0, 0.0, 0.0}, {1, 2, 3});
  EXPECT_EQ(ranges[2].layer_begin, 3);
  EXPECT_EQ(ranges[2].layer_end, 6);
  EXPECT_NE(error_of([&] { partition_stages(config, 3, StageCosts{}, {1, 2}); }).find("--stage-layers gives 2 stages"),
            std::string::npos);
  EXPECT_NE(error_of([&] { partition_stages(config, 3, StageCosts{}, {0, 3, 3}); }).find("each stage at least one"),
            std::string::npos);
  EXPECT_NE(error_of([&] { partition_stages(config, 8, StageCosts{}); }).find("8 pipeline (virtual) stages but the "
                                                                             "decoder has 6 layers"),
            std::string::npos);
}

// Each parameter belongs to one stage; a stage trains what it owns, and the last stage also a tied embedding (its
// head). Interleaved over 2 stages: stage s owns chunks s and s + 2.
TEST(Partition, EveryParameterHasOneOwnerAndTheTiedEmbeddingTwoHolders) {
  for (const bool tied : {true, false}) {
    KosmosConfig config = preset("tiny");
    config.decoder.layers = 8;
    config.decoder.tied = tied;
    const ParameterTable table(config);
    const std::vector<StageRange> virtual_stages = partition_stages(config, 4, StageCosts{1.0, 0.0, 0.0});
    for (const ParameterSpec & spec : table.specs()) {
      const int owner = owning_stage(spec.name, virtual_stages, 2, config.decoder);
      int holders = 0;
      for (int stage = 0; stage < 2; ++stage) {
        const bool holds = stage_holds(spec.name, stage, virtual_stages, 2, config.decoder);
        holders += holds ? 1 : 0;
        EXPECT_TRUE(holds || stage != owner) << spec.name;
      }
      const bool embedding = spec.name == "decoder.embed_tokens.weight";
      EXPECT_EQ(holders, tied && embedding ? 2 : 1) << spec.name;
      const bool layer = spec.name.rfind("decoder.layers.", 0) == 0;
      const bool head_end =
          spec.name.rfind("decoder.layer_norm.", 0) == 0 || spec.name == "decoder.output_projection.weight";
      const int expected =
          layer ? (std::stoi(spec.name.substr(std::string("decoder.layers.").size())) / 2) % 2 : head_end ? 1 : 0;
      EXPECT_EQ(owner, expected) << spec.name;  // layers 0-1 and 4-5 on stage 0, 2-3 and 6-7 on stage 1
    }
  }
}

}  // namespace
}  // namespace kosmos::model
