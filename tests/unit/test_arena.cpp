// test_arena.cpp: the activation arena's stack discipline and sizing (a step that outgrew one buffer, or took far
// less than its one buffer holds, is followed by one buffer of the deepest stack, and the same takes then allocate
// nothing), and the device's count of the memory its buffers hold.
#include <gtest/gtest.h>

#include "backends/registry.h"
#include "model/arena.h"

namespace kosmos::model {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(DeviceMemory, CountsBuffersWhileTheyLiveAndKeepsThePeak) {
  auto device = BackendRegistry().create("cpu", 0);
  const size_t before = device->memory().in_use;
  {
    Buffer a = device->allocate(3 * kMiB, BufferUse::kScratch);
    Buffer b = device->allocate(5 * kMiB, BufferUse::kActivations);
    EXPECT_EQ(device->memory().in_use, before + 8 * kMiB);
    Buffer moved = std::move(a);  // counted once, whoever owns it
    EXPECT_EQ(device->memory().in_use, before + 8 * kMiB);
  }
  EXPECT_EQ(device->memory().in_use, before);
  EXPECT_GE(device->memory().peak, before + 8 * kMiB);
  device->reset_peak();
  EXPECT_EQ(device->memory().peak, before);
}

TEST(Arena, RewindGivesBackWhatWasTakenAfterTheMark) {
  auto device = BackendRegistry().create("cpu", 0);
  Arena arena(*device, 4 * kMiB);
  const TensorView kept = arena.take(DType::kF32, {1024});
  const Arena::Mark mark = arena.mark();
  const TensorView temporary = arena.take(DType::kF32, {256, 256});
  arena.rewind(mark);
  const TensorView again = arena.take(DType::kF32, {256, 256});
  EXPECT_EQ(again.data, temporary.data);
  EXPECT_NE(again.data, kept.data);
  EXPECT_EQ(arena.deepest(), 4096 + 256 * 256 * 4u);
}

TEST(Arena, AStepThatOutgrewOneBufferIsFollowedByOneBufferOfTheDeepestStack) {
  auto device = BackendRegistry().create("cpu", 0);
  Arena arena(*device, 4 * kMiB);
  const auto step = [&] {  // 3 + 3 MiB (two chunks: the second does not fit the first), then 1 MiB after a rewind
    arena.take(DType::kF32, {3 * 256 * 1024});
    const Arena::Mark mark = arena.mark();
    arena.take(DType::kF32, {3 * 256 * 1024});
    arena.rewind(mark);
    arena.take(DType::kF32, {256 * 1024});
  };
  step();
  EXPECT_EQ(arena.reserved(), 8 * kMiB);  // 3 MiB of the first 4 MiB chunk used, the next take in a second one
  EXPECT_EQ(arena.deepest(), 6 * kMiB);
  arena.reset();
  EXPECT_EQ(arena.reserved(), 8 * kMiB);  // one buffer: 6 MiB and 1/16 more, in whole 2 MiB granules
  const size_t in_use = device->memory().in_use;
  device->reset_peak();
  step();
  arena.reset();
  EXPECT_EQ(arena.reserved(), 8 * kMiB);
  EXPECT_EQ(device->memory().peak, in_use);  // nothing allocated by the second step
}

TEST(Arena, AStepInOneOversizedBufferIsFollowedByOneBufferOfTheDeepestStack) {
  auto device = BackendRegistry().create("cpu", 0);
  Arena arena(*device, 64 * kMiB);  // the first chunk's minimum: far more than the 5 MiB the step takes
  arena.take(DType::kF32, {5 * 256 * 1024});
  EXPECT_EQ(arena.reserved(), 64 * kMiB);
  arena.reset();
  EXPECT_EQ(arena.reserved(), 6 * kMiB);  // 5 MiB and 1/16 more, in whole 2 MiB granules
  arena.take(DType::kF32, {5 * 256 * 1024});
  arena.reset();
  EXPECT_EQ(arena.reserved(), 6 * kMiB);  // already that size: kept
}

}  // namespace
}  // namespace kosmos::model
