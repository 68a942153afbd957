// test_golden_convert.cpp: `kosmos convert` round trips the peers' own files bit for bit: the seed composition's
// weights (kosmos1) and HF Kosmos-2's (kosmos2) into an HDF5 checkpoint and back into safetensors in the same
// peer's names. Every parameter comes back with its name, shape and bits; only buffers (position ids, xPos scales)
// are left out; the exported file's metadata keeps the model config, so that it converts back without one.
// make_golden.py --check-export loads such a file into the PyTorch peers.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "backends/registry.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

struct Case {
  const char * fixture;
  const char * names;
};

class GoldenConvert : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenConvert, SafetensorsToCheckpointAndBackIsBitExact) {
  const std::string folder = std::string(KOSMOS_GOLDEN_DIR) + "/" + GetParam().fixture + "/";
  const std::string own = ::testing::TempDir() + "/kosmos_convert_" + GetParam().fixture;
  const BackendRegistry registry;
  std::ostringstream log;
  ConvertOptions to_checkpoint;
  to_checkpoint.input = folder + "weights.safetensors";
  to_checkpoint.output = own + ".h5";
  to_checkpoint.model_config = folder + "config.json";
  ASSERT_EQ(run_convert(log, registry, to_checkpoint), 0);
  ConvertOptions to_weights;
  to_weights.input = own + ".h5";
  to_weights.output = own + ".safetensors";
  to_weights.names = GetParam().names;
  ASSERT_EQ(run_convert(log, registry, to_weights), 0);

  const io::SafetensorsFile original(folder + "weights.safetensors"), exported(own + ".safetensors");
  for (const auto & [name, entry] : exported.entries()) {
    ASSERT_TRUE(original.entries().count(name)) << name << " is not a name of the peer's file";
    EXPECT_EQ(entry.shape, original.entry(name).shape) << name;
    const std::vector<float> a = original.read_f32(name), b = exported.read_f32(name);
    ASSERT_EQ(a.size(), b.size()) << name;
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << name << " changed its bits";
  }
  int64_t parameters = 0;
  const model::ParameterTable any_table(model::preset("tiny"));  // buffers are told by their names alone
  for (const auto & [name, entry] : original.entries()) {
    if (io::parameter_name_for(name, any_table).empty()) continue;
    ++parameters;
    EXPECT_TRUE(exported.entries().count(name)) << name << " is missing from the exported file";
  }
  EXPECT_EQ(static_cast<int64_t>(exported.entries().size()), parameters) << log.str();

  // The exported file keeps the model's config in its metadata: converted back without --model-config (over the
  // kosmos1 preset, which the kosmos2 fixture is not), it is the same model.
  EXPECT_EQ(exported.metadata(io::kModelConfigKey), io::read_checkpoint_info(own + ".h5").model_config);
  ConvertOptions again;
  again.input = own + ".safetensors";
  again.output = own + "_again.h5";
  ASSERT_EQ(run_convert(log, registry, again), 0) << log.str();
  EXPECT_EQ(io::read_checkpoint_info(again.output).model_config, io::read_checkpoint_info(own + ".h5").model_config);
}

INSTANTIATE_TEST_SUITE_P(Peers, GoldenConvert,
                         ::testing::Values(Case{"kosmos1", "seed"}, Case{"kosmos2", "hf-kosmos2"}),
                         [](const auto & info) { return std::string(info.param.fixture); });

}  // namespace
}  // namespace kosmos
