// test_weights_files.cpp: hostile and mismatched weight files give clear errors, never a crash: truncated files,
// headers that lie about offsets or sizes, overlapping tensors, wrong shapes, unknown and missing names; and the
// good paths: bf16/f16/f32 files load, a CLIP-tower-only file loads into the vision tower, a pipeline stage's
// tensor-parallel rank loads its part of a whole file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backends/error.h"
#include "tests/test_errors.h"
#include "backends/registry.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "model/partition.h"

namespace kosmos {
namespace {

// A file name of this test's own, so that tests running in parallel processes never share one.
std::string temp_path(const std::string & name) {
  return ::testing::TempDir() + "/kosmos_" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
         name;
}

// A file with a hand-written header and `data_bytes` bytes of data.
void write_raw(const std::string & path, const std::string & header, size_t data_bytes, bool lie_length = false) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t length = header.size() + (lie_length ? 1000 : 0);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((length >> (8 * i)) & 0xff));
  out << header;
  out << std::string(data_bytes, '\0');
}

using kosmos::testing::error_of;

TEST(SafetensorsFile, RejectsHostileHeadersWithTheTensorNamed) {
  const std::string path = temp_path("hostile.safetensors");
  struct Case {
    std::string header;
    size_t data;
    bool lie_length;
    std::string expected;
  };
  const Case cases[] = {
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, false, "'a' claims bytes [0, 8)"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, false, "'a' is F32 shape [3] = 12 bytes"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, false, "overlap"},
      {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, false, "'a' has dtype Q4"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, false, "impossible dim"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, false, "'a' has a malformed header entry"},
      {"{\"a\": not json", 8, false, "not valid JSON"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, true, "the header claims"},
  };
  for (const Case & c : cases) {
    write_raw(path, c.header, c.data, c.lie_length);
    const std::string message = error_of([&] { io::SafetensorsFile file(path); });
    EXPECT_NE(message.find(c.expected), std::string::npos) << "header " << c.header << " gave: " << message;
    EXPECT_NE(message.find(path), std::string::npos) << message;
  }
  std::ofstream(path, std::ios::trunc) << "abc";
  EXPECT_NE(error_of([&] { io::SafetensorsFile file(path); }).find("too short"), std::string::npos);
  EXPECT_NE(error_of([&] { io::SafetensorsFile file(temp_path("missing.safetensors")); }).find("cannot open"),
            std::string::npos);
}

TEST(SafetensorsFile, ReadsHalfPrecisionAndWritesRoundTrips) {
  const std::string path = temp_path("halves.safetensors");
  // bf16 1.0 = 0x3f80, f16 -2.0 = 0xc000, little-endian.
  const std::string header = "{\"h\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]},"
                             "\"f\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[2,4]}}";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((length >> (8 * i)) & 0xff));
    out << header;
    const unsigned char data[4] = {0x80, 0x3f, 0x00, 0xc0};
    out.write(reinterpret_cast<const char *>(data), 4);
  }
  const io::SafetensorsFile file(path);
  EXPECT_EQ(file.read_f32("h")[0], 1.0f);
  EXPECT_EQ(file.read_f32("f")[0], -2.0f);
  io::write_safetensors(path, {{"x", {{2, 2}, {1, 2, 3, 4}}}});
  const io::SafetensorsFile again(path);
  EXPECT_EQ(again.read_f32("x"), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(again.entry("x").shape, (std::vector<int64_t>{2, 2}));
}

class WeightsImport : public ::testing::Test {
 protected:
  WeightsImport() : table(model::preset("tiny")), state(*device, table) { state.initialise(3, *stream); }
  std::unique_ptr<Device> device = BackendRegistry().create("cpu", 0);
  std::unique_ptr<Stream> stream = device->create_stream();
  model::ParameterTable table;
  model::ModelState state;

  std::map<std::string, io::SafetensorsTensor> every_parameter() {
    std::map<std::string, io::SafetensorsTensor> tensors;
    for (const model::ParameterSpec & spec : table.specs())
      tensors[spec.name] = {spec.shape, std::vector<float>(static_cast<size_t>(spec.numel), 0.5f)};
    return tensors;
  }
  std::string load(const std::map<std::string, io::SafetensorsTensor> & tensors) {
    const std::string path = temp_path("weights.safetensors");
    io::write_safetensors(path, tensors);
    return error_of([&] { io::load_weights(state, io::SafetensorsFile(path), *stream); });
  }
};

TEST_F(WeightsImport, AWholeModelLoads) {
  EXPECT_EQ(load(every_parameter()), "");
  EXPECT_EQ(state.value("decoder.layers.1.ffn.fc2.bias").as<float>()[0], 0.5f);
}

TEST_F(WeightsImport, WrongShapeNamesTheTensorAndBothShapes) {
  auto tensors = every_parameter();
  tensors["decoder.layers.0.ffn.fc1.weight"].shape = {64, 256};
  const std::string message = load(tensors);
  EXPECT_NE(message.find("'decoder.layers.0.ffn.fc1.weight' has shape [64, 256]"), std::string::npos) << message;
  EXPECT_NE(message.find("[256, 64]"), std::string::npos) << message;
}

TEST_F(WeightsImport, MissingAndUnknownNamesAreListedTogether) {
  auto tensors = every_parameter();
  tensors.erase("decoder.layer_norm.bias");
  tensors.erase("perceive.latents");
  tensors["decoder.layers.7.ffn.fc1.weight"] = {{2}, {0, 0}};
  const std::string message = load(tensors);
  EXPECT_NE(message.find("2 parameters missing"), std::string::npos) << message;
  EXPECT_NE(message.find("decoder.layer_norm.bias"), std::string::npos) << message;
  EXPECT_NE(message.find("perceive.latents"), std::string::npos) << message;
  EXPECT_NE(message.find("1 unexpected tensors (decoder.layers.7.ffn.fc1.weight)"), std::string::npos) << message;
}

TEST_F(WeightsImport, AClipTowerAloneLoadsIntoTheVisionTower) {
  std::map<std::string, io::SafetensorsTensor> tensors;
  for (const model::ParameterSpec & spec : table.specs())
    if (spec.name.rfind("clip_model.", 0) == 0)
      tensors["vision_model." + spec.name.substr(11)] = {spec.shape, std::vector<float>(static_cast<size_t>(spec.numel), 2.0f)};
  EXPECT_EQ(load(tensors), "");
  EXPECT_EQ(state.value("clip_model.post_layernorm.weight").as<float>()[0], 2.0f);
}

TEST_F(WeightsImport, DuplicatesMustAgree) {
  auto tensors = every_parameter();
  tensors["embed.weight"] = tensors["decoder.embed_tokens.weight"];
  EXPECT_EQ(load(tensors), "");
  tensors["embed.weight"].values[0] = 9.0f;
  EXPECT_NE(load(tensors).find("hold different values"), std::string::npos);
}

// A rank of pipeline stage 1 of 2 and tensor-parallel rank 1 of 2 loads a whole model's file: the parameters its
// stage runs, of the split ones its rows or columns, each element as the whole model has it.
TEST_F(WeightsImport, ARankLoadsItsStageAndShardOfAWholeFile) {
  const std::string path = temp_path("whole.safetensors");
  io::save_weights(state, path, *stream);
  const model::KosmosConfig config = model::preset("tiny");
  const std::vector<model::StageRange> stages = model::partition_stages(config, 2, model::StageCosts{1.0, 0.0, 0.0});
  const model::ParameterTable part_table(
      config, model::stage_holding(1, stages, 2, config.decoder), model::TensorParallelRank{1, 2});
  model::ModelState part(*device, part_table);
  const io::WeightsReport report = io::load_weights(part, io::SafetensorsFile(path), *stream);
  EXPECT_EQ(report.loaded, static_cast<int64_t>(table.specs().size()));
  int64_t held = 0;
  for (const model::ParameterSpec & spec : part_table.specs()) {
    if (!spec.held) continue;
    ++held;
    const float * whole = state.value(spec.name).as<float>();
    const std::vector<float> expected = model::local_values(spec, std::vector<float>(whole, whole + spec.numel));
    const TensorView loaded = part.value(spec);
    ASSERT_EQ(loaded.numel(), static_cast<int64_t>(expected.size())) << spec.name;
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), loaded.as<float>())) << spec.name;
  }
  EXPECT_GT(held, 0);
  EXPECT_LT(held, static_cast<int64_t>(part_table.specs().size())) << "stage 1 runs some of the model only";
}

}  // namespace
}  // namespace kosmos
