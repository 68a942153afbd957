// test_model_gradients.cpp: a training micro-batch's gradients with dropout on (the tiny preset's 0.1 at every site)
// against central finite differences of its loss, along random directions of chosen decoder parameters: the biases
// whose gradients fused passes add up (out_proj's and fc2's in the dropout's backward, fc1's in the FFN sub-LN's) and
// the weights and LayerNorms beside them. The golden fixtures check gradients without dropout (the peer's masks are
// not ours); the masks depend on the step's keys only, so here the loss is one function of the parameters in every
// run. On the CPU and on the emulated GPU (the GPU kernels' paths through the model), where built.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/registry.h"
#include "io/synthetic.h"
#include "model/kosmos.h"

namespace kosmos::model {
namespace {

class ModelGradients : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGradients, MatchFiniteDifferencesWithDropout) {
  const std::vector<std::string> built = BackendRegistry().available_names();
  if (std::find(built.begin(), built.end(), GetParam()) == built.end()) GTEST_SKIP() << "built without " << GetParam();
  const KosmosConfig config = preset("tiny");
  ASSERT_GT(config.decoder.dropout, 0.0) << "the test needs the residual dropout on";
  auto device = BackendRegistry().create(GetParam(), 0);
  auto stream = device->create_stream();
  const ParameterTable table(config);
  ModelState state(*device, table);
  state.initialise(5, *stream);
  state.zero_grads(*stream);
  KosmosModel kosmos_model(config, state);
  Arena arena(*device);
  Runtime rt{*device, *stream, arena};
  const Batch batch = io::synthetic_batch(config, 2, 24, 0, 7);
  double weights = 0.0;
  for (float w : batch.loss_weights) weights += w;
  const float loss_scale = static_cast<float>(1.0 / weights);  // the mean over the counted tokens
  const StepRandomness randomness{13, 2, true};
  const auto loss = [&](bool backward) {
    arena.reset();
    return kosmos_model.run(rt, batch, loss_scale, randomness, backward);
  };
  loss(true);
  std::mt19937_64 rng(17);
  std::normal_distribution<double> normal;
  constexpr double kStep = 3e-2;  // along a unit direction
  for (const char * name :
       {"decoder.layers.0.self_attn.out_proj.bias", "decoder.layers.1.self_attn.out_proj.bias",
        "decoder.layers.0.ffn.fc2.bias", "decoder.layers.1.ffn.fc2.bias", "decoder.layers.1.ffn.fc1.bias",
        "decoder.layers.0.self_attn.out_proj.weight", "decoder.layers.1.ffn.fc2.weight",
        "decoder.layers.0.final_layer_norm.weight", "decoder.layers.1.self_attn_layer_norm.bias"}) {
    const TensorView values = state.value(name), grads = state.grad(name);
    const int64_t count = values.numel();
    std::vector<float> gradient(static_cast<size_t>(count)), original(static_cast<size_t>(count));
    const auto host = [&](std::vector<float> & data) { return make_view(data.data(), DType::kF32, values.ndim,
                                                                        values.dims.data()); };
    device->copy(host(gradient), grads, *stream);
    device->copy(host(original), values, *stream);
    std::vector<double> direction(static_cast<size_t>(count));
    double length = 0.0;
    for (double & d : direction) {
      d = normal(rng);
      length += d * d;
    }
    for (double & d : direction) d /= std::sqrt(length);
    double along = 0.0;  // the backward's gradient along the direction
    for (size_t i = 0; i < gradient.size(); ++i) along += gradient[i] * direction[i];
    double sides[2];
    std::vector<float> moved(original.size());
    for (int side = 0; side < 2; ++side) {
      const double step = side == 0 ? kStep : -kStep;
      for (size_t i = 0; i < moved.size(); ++i) moved[i] = static_cast<float>(original[i] + step * direction[i]);
      device->copy(values, host(moved), *stream);
      sides[side] = loss(false);
    }
    device->copy(values, host(original), *stream);
    const double differences = (sides[0] - sides[1]) / (2.0 * kStep);
    EXPECT_GT(std::abs(along), 5e-4) << name << ": too flat a direction for the test to tell";
    EXPECT_NEAR(differences, along, 0.02 * std::abs(along) + 2e-5)
        << name << ": the backward's gradient along a random direction against the loss's central differences";
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ModelGradients, ::testing::Values("cpu", "emulated"));

}  // namespace
}  // namespace kosmos::model
