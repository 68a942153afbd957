// test_checkpoint.cpp: HDF5 checkpoints on one rank: values, moments and /meta come back bit for bit; a truncated
// file, a flipped byte inside a parameter's data (caught by the Fletcher32 checksum) and a checkpoint of another
// model are errors naming the file and the dataset; a damaged newest checkpoint falls back to the one before, with
// a warning; damaged metadata (an array for a number, a JSON text of another form) is an error naming the
// attribute; the run folder's publishing, pruning and `latest` logic.
// Layouts and resharding are tested end to end under mpirun (check_resume.cmake).
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "backends/registry.h"
#include "io/checkpoint.h"
#include "io/checkpoint_dir.h"
#include "model/config.h"
#include "parallel/comm.h"
#include "tests/test_errors.h"
#include "tests/tools/flip_chunk_byte.h"

namespace kosmos {
namespace {

namespace fs = std::filesystem;
using kosmos::testing::error_of;
using Slot = model::ModelState::Slot;

std::string temp_path(const std::string & name) {
  return ::testing::TempDir() + "/kosmos_" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
         name;
}

std::vector<float> slot_values(const model::ModelState & state, Slot slot) {
  const TensorView flat = state.flat(slot);
  return std::vector<float>(flat.as<float>(), flat.as<float>() + flat.numel());
}

struct Fixture {
  std::unique_ptr<Device> device = BackendRegistry().create("cpu", 0);
  std::unique_ptr<Stream> stream = device->create_stream();
  std::unique_ptr<parallel::Comm> world = parallel::mpi_world();
  model::KosmosConfig config;
  model::ParameterTable table;
  model::ModelState state;

  explicit Fixture(const model::KosmosConfig & model_config, uint64_t seed = 7)
      : config(model_config), table(config), state(*device, table) {
    state.initialise(seed, *stream);
    // Moments that differ from the values and from each other: the values of other seeds.
    model::ModelState other(*device, table);
    for (const auto & [slot, other_seed] : {std::pair{Slot::kMoment1, seed + 1}, std::pair{Slot::kMoment2, seed + 2}}) {
      other.initialise(other_seed, *stream);
      std::memcpy(state.flat(slot).data, other.flat(Slot::kValues).data, sizeof(float) * state.flat(slot).numel());
    }
  }
  std::vector<model::ParameterPart> whole_parts() const {
    std::vector<model::ParameterPart> parts;
    for (const model::ParameterSpec & spec : table.specs()) parts.push_back(model::ParameterPart::whole(spec));
    return parts;
  }
  void write(const std::string & path, int64_t step = 12) {
    io::CheckpointInfo info{step, 99, 1.0, 0, R"({"synthetic":{"next_sample":48}})", model::config_to_json(config),
                            "dp 1 x pp 1 x tp 1", R"({"peak_lr":0.002})", "test", "[train]\nsteps=12\n"};
    io::write_checkpoint(path, state, whole_parts(), info, *world, *stream);
  }
};

TEST(Checkpoint, ValuesMomentsAndMetaComeBackBitForBit) {
  Fixture written(model::preset("tiny"));
  const std::string path = temp_path("round.h5");
  written.write(path);
  Fixture read(model::preset("tiny"), 1234);  // other values and moments, to be overwritten
  const io::CheckpointInfo info = io::read_checkpoint(path, read.state, true, *read.world, *read.stream);
  for (Slot slot : {Slot::kValues, Slot::kMoment1, Slot::kMoment2})
    EXPECT_EQ(slot_values(written.state, slot), slot_values(read.state, slot)) << static_cast<int>(slot);
  EXPECT_EQ(info.step, 12);
  EXPECT_EQ(info.seed, 99u);
  EXPECT_EQ(info.data_position, R"({"synthetic":{"next_sample":48}})");
  EXPECT_EQ(info.layout, "dp 1 x pp 1 x tp 1");
  EXPECT_EQ(info.run_config, "[train]\nsteps=12\n");
  EXPECT_EQ(io::read_checkpoint_info(path).model_config, model::config_to_json(model::preset("tiny")));
}

// A frozen parameter has no AdamW moments: the file holds zeros in their place, so a run that trains more of the
// CLIP tower resumes with those layers' values and zero moments, and every other parameter as written.
TEST(Checkpoint, FrozenParametersGetZeroMomentsWhenALaterRunTrainsThem) {
  Fixture written(model::preset("tiny"));  // the last of the 2 vision layers trains
  const std::string path = temp_path("frozen.h5");
  written.write(path);
  model::KosmosConfig all_trained = model::preset("tiny");
  all_trained.vision.trainable_layers = all_trained.vision.layers;
  Fixture read(all_trained, 1234);
  io::read_checkpoint(path, read.state, true, *read.world, *read.stream);
  int newly_trained = 0;
  for (const model::ParameterSpec & spec : read.table.specs()) {
    const model::ParameterSpec & before = written.table.find(spec.name);
    const auto download = [](const TensorView & view) {
      return std::vector<float>(view.as<float>(), view.as<float>() + view.numel());
    };
    EXPECT_EQ(download(read.state.value(spec)), download(written.state.value(before))) << spec.name;
    if (!spec.trainable) continue;
    const std::vector<float> zeros(static_cast<size_t>(spec.numel), 0.0f);
    const bool was_frozen = !before.trainable;
    newly_trained += was_frozen ? 1 : 0;
    EXPECT_EQ(download(read.state.moment1(spec)), was_frozen ? zeros : download(written.state.moment1(before)))
        << spec.name;
    EXPECT_EQ(download(read.state.moment2(spec)), was_frozen ? zeros : download(written.state.moment2(before)))
        << spec.name;
  }
  EXPECT_GT(newly_trained, 0);
}

// Under ZeRO-1 a rank holds the moments of its slice of the trainable part alone, and reads those: every slice of 3
// gets the written moments of its range, parameters cut by a slice's ends included.
TEST(Checkpoint, AZero1RankReadsTheMomentsOfItsSlice) {
  Fixture written(model::preset("tiny"));
  const std::string path = temp_path("sliced.h5");
  written.write(path);
  const TensorView whole[2] = {written.state.flat(Slot::kMoment1), written.state.flat(Slot::kMoment2)};
  for (int rank = 0; rank < 3; ++rank) {
    model::ModelState sliced(*written.device, written.table, DType::kF32, model::Zero1Shard{rank, 3});
    io::read_checkpoint(path, sliced, true, *written.world, *written.stream);
    const auto [begin, end] = sliced.moment_range();
    EXPECT_EQ(end - begin, rank < 2 ? sliced.slice_elements() : written.table.trainable_end() - begin);
    for (int m = 0; m < 2; ++m) {
      const TensorView mine = sliced.flat(m == 0 ? Slot::kMoment1 : Slot::kMoment2);
      const std::vector<float> expected(whole[m].as<float>() + begin, whole[m].as<float>() + end);
      EXPECT_EQ(std::vector<float>(mine.as<float>(), mine.as<float>() + (end - begin)), expected)
          << "moment " << m + 1 << " of slice " << rank;
    }
    EXPECT_EQ(slot_values(sliced, Slot::kValues), slot_values(written.state, Slot::kValues));
  }
}

TEST(Checkpoint, ATruncatedFileIsAnErrorNamingIt) {
  Fixture fixture(model::preset("tiny"));
  const std::string path = temp_path("whole.h5"), truncated = temp_path("truncated.h5");
  fixture.write(path);
  fs::copy_file(path, truncated, fs::copy_options::overwrite_existing);
  fs::resize_file(truncated, fs::file_size(path) / 2);
  const std::string message =
      error_of([&] { io::read_checkpoint(truncated, fixture.state, true, *fixture.world, *fixture.stream); });
  EXPECT_NE(message.find(truncated), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
}

void flip_a_byte(const std::string & path, const std::string & dataset) {
  ASSERT_EQ(kosmos::testing::flip_chunk_byte(path, dataset), "");
}

const std::string kFlipped = "/params/decoder.layers.1.ffn.fc1.weight";

TEST(Checkpoint, AFlippedByteInAParameterFailsItsChecksum) {
  Fixture fixture(model::preset("tiny"));
  const std::string path = temp_path("flipped.h5");
  fixture.write(path);
  flip_a_byte(path, kFlipped);
  const std::string message =
      error_of([&] { io::read_checkpoint(path, fixture.state, true, *fixture.world, *fixture.stream); });
  EXPECT_NE(message.find(kFlipped), std::string::npos) << message;
  EXPECT_NE(message.find("Fletcher32"), std::string::npos) << message;
}

TEST(Checkpoint, ADamagedNewestCheckpointFallsBackToTheOneBefore) {
  Fixture fixture(model::preset("tiny"));
  const std::string dir = temp_path("run");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (int64_t step : {10, 20}) {
    fixture.write(io::partial_path(io::checkpoint_path(dir, step)), step);
    io::publish_checkpoint(dir, io::checkpoint_path(dir, step), 0);
  }
  flip_a_byte(io::checkpoint_path(dir, 20), kFlipped);
  const std::vector<std::string> candidates = io::resume_candidates("auto", dir);
  ASSERT_EQ(candidates, (std::vector<std::string>{io::checkpoint_path(dir, 20), io::checkpoint_path(dir, 10)}));
  std::vector<std::string> warnings;
  const auto [path, info] =
      io::read_newest_checkpoint(candidates, fixture.state, true, *fixture.world, *fixture.stream, warnings);
  EXPECT_EQ(path, io::checkpoint_path(dir, 10));
  EXPECT_EQ(info.step, 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step_00000020.h5"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find(kFlipped), std::string::npos) << warnings[0];
  flip_a_byte(io::checkpoint_path(dir, 10), kFlipped);  // every one damaged: an error, not a fresh start
  warnings.clear();
  const std::string message = error_of(
      [&] { io::read_newest_checkpoint(candidates, fixture.state, true, *fixture.world, *fixture.stream, warnings); });
  EXPECT_NE(message.find("every older checkpoint is damaged too"), std::string::npos) << message;
}

TEST(Checkpoint, AnotherModelsCheckpointIsAnErrorNamingTheDifference) {
  Fixture tiny(model::preset("tiny"));
  const std::string path = temp_path("tiny.h5");
  tiny.write(path);
  model::KosmosConfig wider = model::preset("tiny");
  wider.decoder.ffn_dim *= 2;
  Fixture other(wider);
  const std::string message =
      error_of([&] { io::read_checkpoint(path, other.state, true, *other.world, *other.stream); });
  EXPECT_NE(message.find("decoder.layers.0.ffn.fc1.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("another model"), std::string::npos) << message;
}

// Replaces /meta/<name> of a written checkpoint by `elements` copies of `value` (a fixed-length string, or an
// int64 when `value` is empty).
void replace_meta_attribute(const std::string & path, const char * name, hsize_t elements, const std::string & value) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  const hid_t meta = H5Gopen2(file, "/meta", H5P_DEFAULT);
  ASSERT_GE(H5Adelete(meta, name), 0);
  const hid_t space = H5Screate_simple(1, &elements, nullptr);
  const hid_t type = value.empty() ? H5Tcopy(H5T_NATIVE_INT64) : H5Tcopy(H5T_C_S1);
  if (!value.empty()) H5Tset_size(type, value.size());
  std::string bytes;
  for (hsize_t i = 0; i < elements; ++i) bytes += value.empty() ? std::string(sizeof(int64_t), '\1') : value;
  const hid_t attribute = H5Acreate2(meta, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(H5Awrite(attribute, type, bytes.data()), 0);
  H5Aclose(attribute), H5Tclose(type), H5Sclose(space), H5Gclose(meta), H5Fclose(file);
}

// What the fuzz target fuzz_checkpoint_meta found: an array where one integer belongs overflowed the reader's
// variable (tests/fuzz/regressions/checkpoint_meta_array_attribute). And a JSON attribute that is not the expected
// object is caught while the file is read, so that resume falls back to an earlier checkpoint.
TEST(Checkpoint, DamagedMetadataIsAnErrorNamingTheAttribute) {
  Fixture fixture(model::preset("tiny"));
  const std::string path = temp_path("meta.h5");
  fixture.write(path);
  replace_meta_attribute(path, "step", 1000, "");
  std::string message = error_of([&] { io::read_checkpoint_info(path); });
  EXPECT_NE(message.find("attribute 'step' is not one integer"), std::string::npos) << message;
  fixture.write(path);
  replace_meta_attribute(path, "data_position", 1, R"({"synthetic": {"next_sample": -4}})");
  message = error_of([&] { io::read_checkpoint(path, fixture.state, true, *fixture.world, *fixture.stream); });
  EXPECT_NE(message.find("/meta/data_position has no count 'next_sample'"), std::string::npos) << message;
  fixture.write(path);
  replace_meta_attribute(path, "model_config", 1, "[1, 2]");
  message = error_of([&] { io::read_checkpoint_info(path); });
  EXPECT_NE(message.find("/meta/model_config is not a JSON object"), std::string::npos) << message;
}

TEST(CheckpointDir, PublishesKeepsTheNewestAndResumesFromLatest) {
  const std::string dir = temp_path("run");
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_EQ(io::resolve_resume("auto", dir), "");  // nothing yet: a fresh start
  for (int64_t step : {10, 20, 30}) {
    const std::string path = io::checkpoint_path(dir, step);
    std::ofstream(io::partial_path(path)) << "data";
    EXPECT_EQ(io::resolve_resume("auto", dir), step == 10 ? "" : io::checkpoint_path(dir, step - 10))
        << "a partial file is never resumed from";
    io::publish_checkpoint(dir, path, 2);
  }
  EXPECT_FALSE(fs::exists(io::checkpoint_path(dir, 10)));
  EXPECT_TRUE(fs::exists(io::checkpoint_path(dir, 20)));
  EXPECT_EQ(io::resolve_resume("auto", dir), io::checkpoint_path(dir, 30));
  EXPECT_EQ(io::resolve_resume(dir, ""), io::checkpoint_path(dir, 30));
  std::ofstream(dir + "/latest") << "step_00000099.h5\n";  // stale: the newest complete file is used
  EXPECT_EQ(io::resolve_resume("auto", dir), io::checkpoint_path(dir, 30));
  EXPECT_NE(error_of([&] { io::resolve_resume("auto", ""); }).find("--save-dir"), std::string::npos);
  EXPECT_NE(error_of([&] { io::resolve_resume(dir + "/nothing", ""); }).find("no such file"), std::string::npos);
}

}  // namespace
}  // namespace kosmos
