// test_model_state.cpp: the flat layout of the parameter table (trainable part, slack, frozen part) and the device
// memory of a ModelState: a frozen parameter has a value but no gradient and no AdamW moments; a pipeline stage's
// table holds only the parameters the stage runs, a tensor-parallel rank's only its shards of the split ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/registry.h"
#include "model/config.h"
#include "model/parameters.h"
#include "model/partition.h"

namespace kosmos::model {
namespace {

KosmosConfig tiny_with_trainable_vision_layers(int64_t layers) {
  KosmosConfig config = preset("tiny");
  config.vision.trainable_layers = layers;
  return config;
}

TEST(ParameterLayout, TrainableFirstThenTheSlackThenFrozenWithNoOverlap) {
  for (const char * name : {"tiny", "kosmos1", "kosmos2"}) {
    const ParameterTable table(preset(name));
    std::vector<const ParameterSpec *> by_offset;
    for (const ParameterSpec & spec : table.specs()) by_offset.push_back(&spec);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const ParameterSpec * a, const ParameterSpec * b) { return a->offset < b->offset; });
    int64_t end = 0, frozen = 0;
    for (const ParameterSpec * spec : by_offset) {
      EXPECT_GE(spec->offset, end) << name << ": " << spec->name << " overlaps the parameter before it";
      EXPECT_EQ(spec->offset % 16, 0) << name << ": " << spec->name << " does not start on 64 bytes";
      if (spec->trainable) {
        EXPECT_LE(spec->offset + spec->numel, table.trainable_end()) << name << ": " << spec->name;
      } else {
        EXPECT_GE(spec->offset, table.trainable_end() + ParameterTable::kShardSlack) << name << ": " << spec->name;
        frozen += spec->numel;
      }
      end = spec->offset + spec->numel;
    }
    EXPECT_LE(end, table.total()) << name;
    EXPECT_GT(frozen, 0) << name << ": the preset freezes most of the CLIP tower";
    EXPECT_EQ(table.count() - table.trainable_count(), frozen) << name;
  }
}

TEST(ParameterLayout, TheFusedProjectionsStayAdjacent) {  // BlockWeights::qkv multiplies q | k | v as one matrix
  for (const int64_t trainable_layers : {int64_t{0}, int64_t{2}}) {
    const ParameterTable table(tiny_with_trainable_vision_layers(trainable_layers));
    for (const std::string prefix : {"clip_model.encoder.layers.0.self_attn.", "decoder.layers.1.self_attn."})
      for (const char * part : {"weight", "bias"}) {
        const ParameterSpec & q = table.find(prefix + "q_proj." + part);
        const ParameterSpec & k = table.find(prefix + "k_proj." + part);
        const ParameterSpec & v = table.find(prefix + "v_proj." + part);
        EXPECT_EQ(k.offset, q.offset + q.numel) << prefix << part;
        EXPECT_EQ(v.offset, k.offset + k.numel) << prefix << part;
      }
  }
}

TEST(ModelState, FrozenParametersHaveValuesButNoGradientsOrMoments) {
  const std::unique_ptr<Device> device = BackendRegistry().create("cpu", 0);
  auto state_bytes = [&](const ParameterTable & table) {
    const size_t before = device->memory().in_use;
    const ModelState state(*device, table);
    const size_t bytes = device->memory().in_use - before;
    for (const ParameterSpec & spec : table.specs()) {
      EXPECT_TRUE(state.value(spec).present()) << spec.name;
      EXPECT_EQ(state.grad(spec).present(), spec.trainable) << spec.name;
      EXPECT_EQ(state.moment1(spec).present(), spec.trainable) << spec.name;
      EXPECT_EQ(state.moment2(spec).present(), spec.trainable) << spec.name;
    }
    return bytes;
  };
  const KosmosConfig config = preset("tiny");
  const ParameterTable all_trained(tiny_with_trainable_vision_layers(config.vision.layers));
  const ParameterTable none_trained(tiny_with_trainable_vision_layers(0));
  // The vision layers frozen in the second table, whose three f32 buffers (gradient, two moments) it does not hold.
  int64_t newly_frozen = 0;
  for (const ParameterSpec & spec : none_trained.specs())
    if (!spec.trainable && all_trained.find(spec.name).trainable) newly_frozen += spec.numel;
  ASSERT_GT(newly_frozen, 0);
  const size_t all_bytes = state_bytes(all_trained), none_bytes = state_bytes(none_trained);
  EXPECT_GE(all_bytes, none_bytes + 3 * sizeof(float) * static_cast<size_t>(newly_frozen))
      << "a ModelState with the vision layers frozen takes " << none_bytes << " bytes, with them trained "
      << all_bytes;
}

// ZeRO-1 over N ranks: the slices' moment ranges tile the trainable part, each rank holds 1/N of the moments, and a
// parameter's moments are a view only where its slice holds all of them.
TEST(ModelState, Zero1RanksHoldTheMomentsOfTheirSliceAlone) {
  const std::unique_ptr<Device> device = BackendRegistry().create("cpu", 0);
  const ParameterTable table(preset("tiny"));
  auto bytes_of = [&](Zero1Shard shard) {
    const size_t before = device->memory().in_use;
    const ModelState state(*device, table, DType::kF32, shard);
    return device->memory().in_use - before;
  };
  const size_t unsharded = bytes_of({});
  for (const int ranks : {2, 3, 4}) {
    int64_t next = 0;
    for (int rank = 0; rank < ranks; ++rank) {
      const ModelState state(*device, table, DType::kF32, Zero1Shard{rank, ranks});
      const auto [begin, end] = state.moment_range();
      EXPECT_EQ(begin, next) << rank << " of " << ranks;
      EXPECT_LE(end - begin, state.slice_elements());
      EXPECT_EQ(state.flat(ModelState::Slot::kMoment1).numel(), state.slice_elements());
      next = end;
      for (const ParameterSpec & spec : table.specs()) {
        const bool inside = spec.trainable && spec.offset >= begin && spec.offset + spec.numel <= end;
        EXPECT_EQ(state.moment1(spec).present(), inside) << spec.name << ", slice " << rank << " of " << ranks;
        if (inside) {
          EXPECT_EQ(state.moment2(spec).as<float>(),
                    state.flat(ModelState::Slot::kMoment2).as<float>() + (spec.offset - begin));
        }
      }
    }
    EXPECT_EQ(next, table.trainable_end()) << ranks << " slices";
    const size_t sharded = bytes_of({0, ranks});
    const int64_t slice = table.trainable_end() / ranks + 1;  // at least ceil(trainable_end / ranks)
    const size_t saved = 2 * sizeof(float) * static_cast<size_t>(table.trainable_end() - slice);
    EXPECT_GE(unsharded, sharded + saved) << ranks << " ranks: " << sharded << " bytes against " << unsharded;
  }
}

// Two pipeline stages of an 8-layer tiny model, with interleaving (layers 0-1 and 4-5 on the first stage, 2-3 and 6-7
// on the second): each stage's state holds exactly the parameters stage_holds gives it (a tied embedding on both),
// initialised as the whole model's, and takes less memory than the whole.
TEST(ModelState, APipelineStageHoldsOnlyTheParametersItRuns) {
  const std::unique_ptr<Device> device = BackendRegistry().create("cpu", 0);
  std::unique_ptr<Stream> stream = device->create_stream();
  for (const bool tied : {true, false}) {
    KosmosConfig config = preset("tiny");
    config.decoder.layers = 8;
    config.decoder.tied = tied;
    const std::vector<StageRange> virtual_stages = partition_stages(config, 4, StageCosts{1.0, 0.0, 0.0});
    const ParameterTable whole_table(config);
    ModelState whole(*device, whole_table);
    whole.initialise(5, *stream);
    int64_t held_by_some_stage = 0;
    for (int stage = 0; stage < 2; ++stage) {
      const ParameterTable table(config, stage_holding(stage, virtual_stages, 2, config.decoder));
      EXPECT_FALSE(table.holds_whole_model());
      EXPECT_EQ(table.count(), whole_table.count()) << "the model's count, held here or not";
      ModelState state(*device, table);
      state.initialise(5, *stream);
      int64_t held = 0;
      for (const ParameterSpec & spec : table.specs()) {
        const bool holds = stage_holds(spec.name, stage, virtual_stages, 2, config.decoder);
        ASSERT_EQ(spec.held, holds) << "stage " << stage << ": " << spec.name;
        EXPECT_EQ(state.value(spec).present(), holds) << spec.name;
        EXPECT_EQ(state.grad(spec).present(), holds && spec.trainable) << spec.name;
        EXPECT_EQ(state.moment1(spec).present(), holds && spec.trainable) << spec.name;
        if (!holds) continue;
        held += spec.numel;
        EXPECT_LE(spec.offset + spec.numel, table.total()) << spec.name;
        std::vector<float> mine(static_cast<size_t>(spec.numel)), reference(mine.size());
        for (auto [values, source] : {std::pair{&mine, &state}, std::pair{&reference, &whole}}) {
          TensorView target = source->value(spec.name);
          target.data = values->data();
          device->copy(target, source->value(spec.name), *stream);
        }
        stream->synchronize();
        EXPECT_EQ(mine, reference) << "stage " << stage << ": " << spec.name << " is not initialised as in the whole";
      }
      held_by_some_stage += held;
      EXPECT_LT(table.total(), whole_table.total()) << "stage " << stage;
      EXPECT_GE(table.total(), held) << "stage " << stage;
      EXPECT_LT(state.bytes().total(), whole.bytes().total()) << "stage " << stage;
    }
    const int64_t embedding = config.decoder.vocab_size * config.decoder.embed_dim;
    EXPECT_EQ(held_by_some_stage, whole_table.count() + (tied ? embedding : 0))
        << "every parameter on one stage, a tied embedding on both";
  }
}

// Tensor parallelism over 2 and 4 ranks: each rank's state holds its rows (q, k, v, fc1, the vocabulary) or columns
// (out_proj, fc2) of the split parameters and the whole of the others, initialised as the whole model's; the ranks'
// parts tile each split parameter, and a rank's state is smaller than the whole.
TEST(ModelState, ATensorParallelRankHoldsItsRowsOrColumns) {
  const std::unique_ptr<Device> device = BackendRegistry().create("cpu", 0);
  std::unique_ptr<Stream> stream = device->create_stream();
  const KosmosConfig config = preset("tiny");
  const ParameterTable whole_table(config);
  ModelState whole(*device, whole_table);
  whole.initialise(5, *stream);
  auto host_values = [&](const ModelState & state, const std::string & name) {  // what `state` holds of it
    std::vector<float> values(static_cast<size_t>(state.table().find(name).local_numel));
    TensorView target = state.value(name);
    target.data = values.data();
    device->copy(target, state.value(name), *stream);
    stream->synchronize();
    return values;
  };
  for (const int ranks : {2, 4}) {
    std::map<std::string, std::vector<int>> covered;  // each split parameter's elements: how many ranks hold each
    for (int rank = 0; rank < ranks; ++rank) {
      const ParameterTable table(config, {}, TensorParallelRank{rank, ranks});
      EXPECT_FALSE(table.holds_whole_model());
      ModelState state(*device, table);
      state.initialise(5, *stream);
      EXPECT_LT(state.bytes().total(), whole.bytes().total()) << "rank " << rank << " of " << ranks;
      for (const ParameterSpec & spec : table.specs()) {
        const TensorParallelSplit split = tensor_parallel_split(spec.name);
        EXPECT_EQ(spec.split, split) << spec.name;
        EXPECT_EQ(spec.local_numel * (split == TensorParallelSplit::kReplicated ? 1 : ranks), spec.numel) << spec.name;
        EXPECT_EQ(state.value(spec).numel(), spec.local_numel) << spec.name;
        const std::vector<float> mine = host_values(state, spec.name), reference = host_values(whole, spec.name);
        std::vector<int> & count = covered[spec.name];
        count.resize(static_cast<size_t>(spec.numel));
        for (int64_t i = 0; i < spec.local_numel; ++i) {
          const int64_t at = spec.local.whole_element(i, spec.columns());
          ++count[static_cast<size_t>(at)];
          ASSERT_EQ(mine[static_cast<size_t>(i)], reference[static_cast<size_t>(at)])
              << spec.name << " element " << i << " of rank " << rank << " of " << ranks;
        }
      }
    }
    for (const ParameterSpec & spec : whole_table.specs()) {
      const int expected = spec.split == TensorParallelSplit::kReplicated ? ranks : 1;
      const std::vector<int> & count = covered[spec.name];
      EXPECT_EQ(std::count(count.begin(), count.end(), expected), spec.numel)
          << spec.name << ": every element on " << expected << " of " << ranks << " ranks";
    }
  }
}

}  // namespace
}  // namespace kosmos::model
