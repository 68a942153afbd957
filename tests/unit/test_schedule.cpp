// test_schedule.cpp: the pipeline schedules pinned by table (the orders Megatron and the zero-bubble paper give),
// every schedule valid (no deadlock, every pass once) over a range of stages and micro-batches, and their bubbles:
// 1F1B and GPipe at (p-1)/(m+p-1), interleaving and ZB-H1 below it.
#include <gtest/gtest.h>

#include "backends/error.h"
#include "parallel/schedule.h"

namespace kosmos::parallel {
namespace {

std::vector<std::vector<PipeAction>> all_stages(ScheduleKind kind, int stages, int micros, int chunks = 1) {
  std::vector<std::vector<PipeAction>> lists;
  for (int s = 0; s < stages; ++s) lists.push_back(make_schedule(kind, stages, s, micros, chunks));
  return lists;
}

TEST(Schedule, OneFOneBOrders) {
  EXPECT_EQ(describe(schedule_1f1b(4, 0, 8)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
  EXPECT_EQ(describe(schedule_1f1b(4, 2, 8)), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7");
  EXPECT_EQ(describe(schedule_1f1b(4, 3, 8)), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7");
  EXPECT_EQ(describe(schedule_1f1b(4, 0, 2)), "F0 F1 B0 B1");  // fewer micro-batches than the warm-up
  EXPECT_EQ(describe(schedule_gpipe(2, 1, 3)), "F0 F1 F2 B0 B1 B2");
}

TEST(Schedule, InterleavedOrders) {
  EXPECT_EQ(describe(schedule_interleaved(2, 0, 4, 2)),
            "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0");
  EXPECT_EQ(describe(schedule_interleaved(2, 1, 4, 2)),
            "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0");
  EXPECT_THROW(schedule_interleaved(4, 0, 6, 2), Error);  // micro-batches not a multiple of stages
}

TEST(Schedule, ZeroBubbleSplitsTheBackwardWithinOneFOneBsMemory) {
  for (int stages : {2, 4})
    for (int micros : {4, 8})
      for (int s = 0; s < stages; ++s) {
        const std::vector<PipeAction> actions = schedule_zb_h1(stages, s, micros);
        std::vector<int> seen(3 * micros, 0);
        int forwards = 0, inputs = 0;
        for (const PipeAction & a : actions) {
          ASSERT_NE(a.kind, PassKind::kBackward) << describe(actions);  // always split
          forwards += a.kind == PassKind::kForward;
          inputs += a.kind == PassKind::kBackwardInput;
          if (a.kind == PassKind::kBackwardWeight) {
            EXPECT_EQ(seen[micros + a.micro], 1) << "W before its B";
          }
          ++seen[(a.kind == PassKind::kForward ? 0 : a.kind == PassKind::kBackwardInput ? 1 : 2) * micros + a.micro];
          // 1F1B's activation bound: at most stages - s micro-batches between their F and their B.
          EXPECT_LE(forwards - inputs, stages - s) << describe(actions);
        }
        for (int count : seen) EXPECT_EQ(count, 1) << describe(actions);
      }
}

TEST(Schedule, MicroBatchesHeldFollowTheSchedule) {
  // A stage keeps a micro-batch's activations from its first forward to its chunks' last backward or W pass: GPipe
  // all of them, 1F1B the stages - s micro-batches in flight, zero-bubble until the W pass.
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(peak_micro_batches_held(schedule_gpipe(4, s, 8), 1), 8) << "stage " << s;
    EXPECT_EQ(peak_micro_batches_held(schedule_1f1b(4, s, 8), 1), 4 - s) << "stage " << s;
  }
  EXPECT_EQ(peak_micro_batches_held({{PassKind::kForward, 0, 0}, {PassKind::kBackwardInput, 0, 0},
                                     {PassKind::kForward, 1, 0}, {PassKind::kBackwardWeight, 0, 0},
                                     {PassKind::kBackwardInput, 1, 0}, {PassKind::kBackwardWeight, 1, 0}},
                                    1),
            2);  // micro-batch 0 waits for its W pass while micro-batch 1 runs its forward
  EXPECT_EQ(peak_micro_batches_held({{PassKind::kForward, 0, 0}, {PassKind::kBackwardInput, 0, 0},
                                     {PassKind::kBackwardWeight, 0, 0}, {PassKind::kForward, 1, 0}},
                                    1),
            1);
  // Interleaved, two chunks: a micro-batch stays held until its last chunk's backward.
  EXPECT_EQ(peak_micro_batches_held({{PassKind::kForward, 0, 0}, {PassKind::kForward, 0, 1},
                                     {PassKind::kBackward, 0, 1}, {PassKind::kForward, 1, 0},
                                     {PassKind::kBackward, 0, 0}, {PassKind::kForward, 1, 1},
                                     {PassKind::kBackward, 1, 1}, {PassKind::kBackward, 1, 0}},
                                    2),
            2);
}

TEST(Schedule, EverySchedulesRunsEveryPassOnceWithoutDeadlock) {
  for (int stages : {1, 2, 3, 4, 6})
    for (int micros : {1, 2, 4, 8, 12}) {
      for (ScheduleKind kind : {ScheduleKind::kGPipe, ScheduleKind::kOneFOneB, ScheduleKind::kZeroBubbleH1}) {
        EXPECT_NO_THROW(simulate(all_stages(kind, stages, micros), micros, 1, {}))
            << schedule_name(kind) << " p=" << stages << " m=" << micros;
      }
      if (micros % stages == 0) {
        for (int chunks : {1, 2, 3}) {
          EXPECT_NO_THROW(simulate(all_stages(ScheduleKind::kInterleaved, stages, micros, chunks), micros, chunks, {}))
              << "interleaved p=" << stages << " m=" << micros << " v=" << chunks;
        }
      }
    }
}

TEST(Schedule, BubblesMatchTheTheory) {
  for (int micros : {4, 8, 16}) {
    const double theory = 3.0 / (micros + 3.0);  // (p-1)/(m+p-1) at p = 4
    const double one_f_one_b = simulate(all_stages(ScheduleKind::kOneFOneB, 4, micros), micros, 1, {}).bubble;
    EXPECT_NEAR(one_f_one_b, theory, 1e-12) << "m=" << micros;
    EXPECT_NEAR(simulate(all_stages(ScheduleKind::kGPipe, 4, micros), micros, 1, {}).bubble, theory, 1e-12);
    EXPECT_LT(simulate(all_stages(ScheduleKind::kZeroBubbleH1, 4, micros), micros, 1, {}).bubble, one_f_one_b);
    EXPECT_LT(simulate(all_stages(ScheduleKind::kInterleaved, 4, micros, 2), micros, 2, {}).bubble, one_f_one_b);
  }
}

TEST(Schedule, DeadlocksAndMissingPassesAreCaught) {
  std::vector<std::vector<PipeAction>> broken = all_stages(ScheduleKind::kOneFOneB, 2, 2);
  std::swap(broken[1][0], broken[1][1]);  // stage 1 tries B0 before F0
  try {
    simulate(broken, 2, 1, {});
    ADD_FAILURE() << "a deadlock was not reported";
  } catch (const Error & error) {
    EXPECT_NE(std::string(error.what()).find("deadlock"), std::string::npos) << error.what();
  }
  std::vector<std::vector<PipeAction>> missing = all_stages(ScheduleKind::kOneFOneB, 2, 2);
  missing[0].pop_back();
  EXPECT_THROW(simulate(missing, 2, 1, {}), Error);
}

}  // namespace
}  // namespace kosmos::parallel
