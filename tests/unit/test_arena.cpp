// test_arena.cpp: the activation arena's stack discipline and sizing: in one reserved buffer that grows in place
// (the first step holds no more than its deepest stack, in whole granules), and in separate buffers where the device
// reserves none (a step that outgrew one buffer, or took far less than its one buffer holds, is followed by one
// buffer of the deepest stack); either way the same takes then allocate nothing. Also the device's count of the
// memory its buffers hold, reserved or not.
#include <gtest/gtest.h>

#include <cstring>

#include "backends/error.h"
#include "backends/registry.h"
#include "model/arena.h"
#include "tests/cpu_stand_in.h"

namespace kosmos::model {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

// The CPU device without reserved address ranges, as ROCm's.
using WithoutReservations = testing::CpuStandIn;

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

TEST(DeviceMemory, AReservedBufferCountsTheMemoryBehindItAsItGrows) {
  auto device = BackendRegistry().create("cpu", 0);
  const size_t before = device->memory().in_use;
  {
    Buffer reserved = device->reserve(BufferUse::kActivations);
    ASSERT_NE(reserved.data(), nullptr);
    ASSERT_TRUE(reserved.is_reserved());
    EXPECT_GE(reserved.capacity(), size_t{1} << 30);
    EXPECT_EQ(reserved.bytes(), 0u);
    EXPECT_EQ(device->memory().in_use, before);  // addresses only
    device->grow(reserved, 3 * kMiB);
    EXPECT_EQ(reserved.bytes(), 4 * kMiB);  // whole 2 MiB granules
    std::memset(reserved.data(), 1, reserved.bytes());
    const void * base = reserved.data();
    device->grow(reserved, 5 * kMiB);
    EXPECT_EQ(reserved.data(), base);  // in place: what was written stays where it was
    EXPECT_EQ(static_cast<const unsigned char *>(base)[4 * kMiB - 1], 1);
    EXPECT_EQ(reserved.bytes(), 6 * kMiB);
    device->grow(reserved, kMiB);  // never shrinks
    EXPECT_EQ(reserved.bytes(), 6 * kMiB);
    EXPECT_EQ(device->memory().in_use, before + 6 * kMiB);
    Buffer moved = std::move(reserved);
    EXPECT_EQ(moved.bytes(), 6 * kMiB);
    EXPECT_EQ(device->memory().in_use, before + 6 * kMiB);
    EXPECT_THROW(device->grow(moved, moved.capacity() + 1), Error);
    Buffer ordinary = device->allocate(kMiB, BufferUse::kScratch);
    EXPECT_THROW(device->grow(ordinary, 2 * kMiB), Error);  // only reserved buffers grow
  }
  EXPECT_EQ(device->memory().in_use, before);
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

// 3 + 3 MiB, then 1 MiB after rewinding the second: a stack 6 MiB deep.
void take_a_step(Arena & arena) {
  arena.take(DType::kF32, {3 * 256 * 1024});
  const Arena::Mark mark = arena.mark();
  arena.take(DType::kF32, {3 * 256 * 1024});
  arena.rewind(mark);
  arena.take(DType::kF32, {256 * 1024});
}

TEST(Arena, GrowsOneReservedBufferInPlaceAsDeepAsTheStackAndNoMore) {
  auto device = BackendRegistry().create("cpu", 0);
  const size_t before = device->memory().in_use;
  device->reset_peak();
  Arena arena(*device, 4 * kMiB);
  const TensorView first = arena.take(DType::kF32, {3 * 256 * 1024});
  const TensorView second = arena.take(DType::kF32, {3 * 256 * 1024});
  EXPECT_EQ(static_cast<const char *>(second.data) - static_cast<const char *>(first.data),
            static_cast<std::ptrdiff_t>(3 * kMiB));  // one stack: no buffer's tail skipped
  arena.reset();
  EXPECT_EQ(arena.reserved(), 6 * kMiB);
  EXPECT_EQ(device->memory().peak, before + 6 * kMiB);  // the first step held its deepest stack and no more
  arena.reset();
  device->reset_peak();
  take_a_step(arena);
  arena.reset();
  EXPECT_EQ(arena.reserved(), 6 * kMiB);
  EXPECT_EQ(device->memory().peak, before + 6 * kMiB);  // nothing allocated by the next step
  const TensorView again = arena.take(DType::kF32, {256});
  EXPECT_EQ(again.data, first.data);  // the same addresses, step after step
}

TEST(Arena, AStepThatOutgrewOneBufferIsFollowedByOneBufferOfTheDeepestStack) {
  WithoutReservations separate;
  Device * device = separate.cpu.get();
  Arena arena(separate, 4 * kMiB);
  take_a_step(arena);
  EXPECT_EQ(arena.reserved(), 8 * kMiB);  // 3 MiB of the first 4 MiB chunk used, the next take in a second one
  EXPECT_EQ(arena.deepest(), 6 * kMiB);
  arena.reset();
  EXPECT_EQ(arena.reserved(), 8 * kMiB);  // one buffer: 6 MiB and 1/16 more, in whole 2 MiB granules
  const size_t in_use = device->memory().in_use;
  device->reset_peak();
  take_a_step(arena);
  arena.reset();
  EXPECT_EQ(arena.reserved(), 8 * kMiB);
  EXPECT_EQ(device->memory().peak, in_use);  // nothing allocated by the second step
}

TEST(Arena, AStepInOneOversizedBufferIsFollowedByOneBufferOfTheDeepestStack) {
  WithoutReservations separate;
  Arena arena(separate, 64 * kMiB);  // the first chunk's minimum: far more than the 5 MiB the step takes
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
