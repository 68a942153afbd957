// test_golden.cpp: parity with the real PyTorch peers (fixtures written by tests/golden/make_golden.py from
// torchscale, transformers and flamingo-pytorch). In fp32 on the CPU backend: logits, the masked loss, every
// parameter gradient, the losses of 3 AdamW steps, and (Kosmos-2) 8 greedily generated tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "backends/registry.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "model/trainer.h"

#ifndef KOSMOS_GOLDEN_DIR
#error "KOSMOS_GOLDEN_DIR must name tests/golden"
#endif

namespace kosmos {
namespace {

std::string fixture_path(const std::string & name, const std::string & file) {
  return std::string(KOSMOS_GOLDEN_DIR) + "/" + name + "/" + file;
}

std::string read_text(const std::string & path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// ||actual - expected|| / ||expected||
double relative_error(const std::vector<float> & actual, const std::vector<float> & expected) {
  double error = 0.0, norm = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    error += (static_cast<double>(actual[i]) - expected[i]) * (static_cast<double>(actual[i]) - expected[i]);
    norm += static_cast<double>(expected[i]) * expected[i];
  }
  return std::sqrt(error / std::max(norm, 1e-30));
}

std::vector<int32_t> as_ints(const std::vector<float> & values) {
  return std::vector<int32_t>(values.begin(), values.end());
}

class Golden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string name = GetParam();
    config = model::config_from_json(read_text(fixture_path(name, "config.json")), model::preset("tiny"),
                                     fixture_path(name, "config.json"));
    device = BackendRegistry().create("cpu", 0);
    stream = device->create_stream();
    table = std::make_unique<model::ParameterTable>(config);
    weights = std::make_unique<io::SafetensorsFile>(fixture_path(name, "weights.safetensors"));
    inputs = std::make_unique<io::SafetensorsFile>(fixture_path(name, "inputs.safetensors"));
    expected = std::make_unique<io::SafetensorsFile>(fixture_path(name, "expected.safetensors"));
    const io::SafetensorsEntry & tokens = inputs->entry("tokens");
    batch.batch = tokens.shape[0];
    batch.length = tokens.shape[1];
    batch.tokens = as_ints(inputs->read_f32("tokens"));
    batch.targets = as_ints(inputs->read_f32("targets"));
    batch.loss_weights = inputs->read_f32("loss_weights");
    batch.images = inputs->read_f32("images");
    batch.image_count = inputs->entry("images").shape[0];
    batch.image_slots = model::find_image_slots(batch.tokens, batch.batch, batch.length, config);
  }

  // A fresh model holding the fixture's weights (its matmuls reading a `compute_dtype` copy of them).
  std::unique_ptr<model::ModelState> load_state(DType compute_dtype = DType::kF32) {
    auto state = std::make_unique<model::ModelState>(*device, *table, compute_dtype);
    state->zero_grads(*stream);
    state->zero_moments(*stream);
    io::load_weights(*state, *weights, *stream);
    return state;
  }

  std::vector<float> download(const TensorView & view) {
    std::vector<float> host(static_cast<size_t>(view.numel()));
    TensorView target = view;
    target.data = host.data();
    device->copy(target, view, *stream);
    stream->synchronize();
    return host;
  }

  // The golden script's torch.optim.AdamW: constant lr 1e-3, no clipping.
  static model::OptimizerConfig constant_lr_adamw() {
    model::OptimizerConfig optimizer;
    optimizer.peak_lr = 1e-3;
    optimizer.warmup_steps = 0;
    optimizer.total_steps = int64_t{1} << 40;  // decay so slow that the rate stays 1e-3 to 1e-12
    optimizer.clip_norm = 0.0;
    return optimizer;
  }

  float loss_scale() const {
    double sum = 0.0;
    for (float w : batch.loss_weights) sum += w;
    return static_cast<float>(1.0 / sum);
  }

  model::KosmosConfig config;
  std::unique_ptr<Device> device;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<model::ParameterTable> table;
  std::unique_ptr<io::SafetensorsFile> weights, inputs, expected;
  model::Batch batch;
};

TEST_P(Golden, LogitsLossAndEveryGradientMatchThePeer) {
  auto state = load_state();
  model::KosmosModel kosmos_model(config, *state);
  model::Arena arena(*device);
  model::Runtime rt{*device, *stream, arena};
  std::vector<float> logits;
  const double loss = kosmos_model.run(rt, batch, loss_scale(), {0, 0, false}, true, &logits);
  // fp32 against fp32: different summation orders leave a few ulps, so 1e-5 relative is the bound.
  EXPECT_LE(relative_error(logits, expected->read_f32("logits")), 1e-5) << "logits";
  EXPECT_NEAR(loss, expected->read_f32("loss")[0], 1e-5 * std::abs(expected->read_f32("loss")[0])) << "loss";
  // The key projections' biases have a gradient that is exactly zero in exact arithmetic (a bias on k shifts
  // every score of a query row equally, and softmax ignores that), so their fp32 values on both sides are rounding
  // noise. Each tensor's error is therefore measured against its own norm, or 1e-3 of the largest gradient norm
  // when its own is smaller than that.
  double largest = 0.0;
  for (const auto & [name, entry] : expected->entries())
    if (name.rfind("grad:", 0) == 0) {
      double norm = 0.0;
      for (float g : expected->read_f32(name)) norm += static_cast<double>(g) * g;
      largest = std::max(largest, std::sqrt(norm));
    }
  int compared = 0;
  for (const auto & [name, entry] : expected->entries()) {
    if (name.rfind("grad:", 0) != 0) continue;
    const std::string peer_name = name.substr(5);
    const std::string ours = io::parameter_name_for(peer_name, *table);
    ASSERT_FALSE(ours.empty() || ours == "?") << peer_name << " has no parameter here";
    const std::vector<float> theirs = expected->read_f32(name), mine = download(state->grad(ours));
    double error = 0.0, norm = 0.0;
    for (size_t i = 0; i < theirs.size(); ++i) {
      error += (static_cast<double>(mine[i]) - theirs[i]) * (static_cast<double>(mine[i]) - theirs[i]);
      norm += static_cast<double>(theirs[i]) * theirs[i];
    }
    // Gradients pass through up to a dozen more ops than the logits: 1e-4 relative per tensor (the bound).
    EXPECT_LE(std::sqrt(error) / std::max(std::sqrt(norm), 1e-3 * largest), 1e-4) << "gradient of " << ours;
    ++compared;
  }
  int trainable = 0;
  for (const model::ParameterSpec & spec : table->specs()) trainable += spec.trainable ? 1 : 0;
  EXPECT_EQ(compared, trainable) << "the peer's gradients do not cover every trainable parameter";
}

// The gradients above come through the fused q | k | v matmul: the table lays the three projections side by side so
// that each block runs them as one (BlockWeights::qkv), and a tensor-parallel rank's shards of them too (the tp 2
// layout tests compare those against one rank).
TEST_P(Golden, AttentionProjectionsRunAsOneMatmul) {
  auto state = load_state();
  const model::BlockWeights decoder = model::make_magneto_block(*state, "decoder.layers.0.", 1e-5);
  const model::BlockWeights vision = model::make_clip_block(*state, "clip_model.encoder.layers.0.", 1e-5);
  for (const model::BlockWeights * block : {&decoder, &vision}) {
    ASSERT_TRUE(block->qkv.has_value()) << (block == &decoder ? "decoder" : "vision") << " layer 0";
    const model::Linear & qkv = *block->qkv;
    EXPECT_EQ(qkv.out(), 3 * block->q.out());
    EXPECT_EQ(qkv.in(), block->q.in());
    EXPECT_EQ(qkv.weight.data, block->q.weight.data);
    EXPECT_EQ(qkv.dweight.data, block->q.dweight.data);
    EXPECT_EQ(qkv.bias.data, block->q.bias.data);
    EXPECT_EQ(qkv.dbias.data, block->q.dbias.data);
    EXPECT_EQ(qkv.bias.dim(0), 3 * block->q.out());
  }
  const model::ParameterTable shard_table(config, {}, model::TensorParallelRank{1, 2});
  const model::ModelState shard_state(*device, shard_table);
  const model::BlockWeights shard = model::make_magneto_block(shard_state, "decoder.layers.0.", 1e-5);
  ASSERT_TRUE(shard.qkv.has_value()) << "tp rank 1 of 2: its shards of q, k and v are not side by side";
  EXPECT_EQ(2 * shard.q.out(), decoder.q.out());
  EXPECT_EQ(shard.qkv->out(), 3 * shard.q.out());
  EXPECT_EQ(shard.qkv->weight.data, shard.q.weight.data);
}

TEST_P(Golden, ThreeAdamWStepsGiveThePeersLosses) {
  auto state = load_state();
  model::KosmosModel kosmos_model(config, *state);
  model::Trainer trainer(kosmos_model, *state, constant_lr_adamw());
  model::Arena arena(*device);
  model::Runtime rt{*device, *stream, arena};
  const std::vector<float> losses = expected->read_f32("train_losses");
  for (size_t step = 0; step < losses.size(); ++step) {
    const model::StepStats stats = trainer.step(rt, {batch}, static_cast<int64_t>(step) + 1, 0);
    // Each step compounds the last one's rounding: 1e-5 relative on the loss.
    EXPECT_NEAR(stats.loss, losses[step], 1e-5 * std::abs(losses[step])) << "loss before step " << step + 1;
  }
}

// With --precision bf16 the matmuls read a bf16 copy of the values. The trainer makes it at its first step; after
// that AdamW writes it with each update (no refresh), so after every step it must be the values rounded, element for
// element, and it must have moved between the steps (a copy AdamW did not write would not have).
TEST_P(Golden, AdamWKeepsTheBf16CopyOfTheValues) {
  const std::unique_ptr<model::ModelState> loaded = load_state(DType::kBF16);
  model::ModelState & state = *loaded;
  model::KosmosModel kosmos_model(config, state);
  model::Trainer trainer(kosmos_model, state, constant_lr_adamw());
  model::Arena arena(*device);
  model::Runtime rt{*device, *stream, arena};
  const int64_t total = table->total();
  std::vector<uint16_t> previous;
  for (int64_t step = 1; step <= 3; ++step) {
    trainer.step(rt, {batch}, step, 0);
    const std::vector<float> values = download(make_view(state.flat(model::ModelState::Slot::kValues).data,
                                                         DType::kF32, {total}));
    std::vector<uint16_t> copy(static_cast<size_t>(total));
    device->copy(make_view(copy.data(), DType::kBF16, {total}), state.compute_values(), *stream);
    stream->synchronize();
    int64_t stale = 0, moved = 0;
    for (int64_t i = 0; i < total; ++i) {
      stale += copy[i] != float_to_bf16(values[i]) ? 1 : 0;
      moved += !previous.empty() && copy[i] != previous[i] ? 1 : 0;
    }
    EXPECT_EQ(stale, 0) << "elements of the bf16 copy that are not the values rounded, after step " << step;
    if (step > 1) {
      EXPECT_GT(moved, total / 100) << "elements of the bf16 copy that step " << step << " changed";
    }
    previous = std::move(copy);
  }
}

TEST_P(Golden, GreedyGenerationMatchesThePeer) {
  if (!expected->contains("generated")) GTEST_SKIP() << GetParam() << " has no generation fixture";
  auto state = load_state();
  model::KosmosModel kosmos_model(config, *state);
  model::Arena arena(*device);
  model::Runtime rt{*device, *stream, arena};
  const std::vector<int32_t> generated = as_ints(expected->read_f32("generated"));
  const int64_t rows = expected->entry("generated").shape[0], total = expected->entry("generated").shape[1];
  const int64_t prompt = static_cast<int64_t>(inputs->read_f32("prompt_length")[0]);
  std::vector<std::vector<int32_t>> sequences(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    sequences[r].assign(batch.tokens.begin() + r * batch.length, batch.tokens.begin() + r * batch.length + prompt);
  for (int64_t length = prompt; length < total; ++length) {  // full forward each step, argmax of the last row
    model::Batch step = batch;
    step.length = length;
    step.tokens.clear();
    for (const auto & sequence : sequences) step.tokens.insert(step.tokens.end(), sequence.begin(), sequence.end());
    step.targets.assign(step.tokens.size(), 0);
    step.loss_weights.assign(step.tokens.size(), 0.0f);
    step.image_slots = model::find_image_slots(step.tokens, rows, length, config);
    arena.reset();
    std::vector<float> logits;
    kosmos_model.run(rt, step, 1.0f, {0, 0, false}, false, &logits);
    const int64_t vocab = config.decoder.vocab_size;
    for (int64_t r = 0; r < rows; ++r) {
      const float * last = logits.data() + ((r + 1) * length - 1) * vocab;
      sequences[r].push_back(static_cast<int32_t>(std::max_element(last, last + vocab) - last));
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = prompt; t < total; ++t)
      EXPECT_EQ(sequences[r][t], generated[r * total + t]) << "row " << r << " position " << t;
}

INSTANTIATE_TEST_SUITE_P(Peers, Golden, ::testing::Values("kosmos1", "kosmos2"));

}  // namespace
}  // namespace kosmos
