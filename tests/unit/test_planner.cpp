// test_planner.cpp: the layout planner's model (bench/planner.h) on cases with known answers: a pipeline without
// communication idles (p-1)/(m+p-1) of the time under 1F1B, recomputation trades memory for a third more layer
// work, the data-parallel reduction hides behind the last backward only where the machine overlaps them, impossible
// layouts say why, a layout fits only in the usable share of the device's memory, calibration inverts a prediction,
// and the ranking puts fitting layouts first.
#include <gtest/gtest.h>

#include "backends/error.h"
#include "bench/planner.h"
#include "model/config.h"

namespace kosmos::bench {
namespace {

Hardware without_links(Hardware h) {  // communication free, so that only compute and the schedule remain
  h.intra_alpha_us = h.inter_alpha_us = 0.0;
  h.intra_gbs = h.inter_gbs = 1e12;
  h.memory_gbs = 1e12;
  return h;
}

TEST(Planner, OneFOneBIdlesByTheTextbookFraction) {
  const model::KosmosConfig config = model::preset("kosmos1");
  const Hardware h100 = without_links(hardware_preset("h100"));
  Workload work;
  work.sequences = 64;
  for (int micro_batches : {4, 8, 16}) {
    const Layout layout{1, 4, 1, micro_batches, parallel::ScheduleKind::kOneFOneB, 1, false, false};
    const Prediction p = predict(config, h100, work, layout, 1);
    ASSERT_GT(p.step_seconds, 0.0) << p.why_not;  // it need not fit in memory here
    // The image path makes stage 0 heaviest; the bubble is measured against the heaviest stage's work.
    const double busy = p.compute_seconds, idle = p.bubble_seconds;
    EXPECT_NEAR(idle / (idle + busy), 3.0 / (micro_batches + 3.0), 1e-6) << "m " << micro_batches;
  }
}

// Recomputation runs each layer's forward again but for fc2: for kosmos1's layers (fc2 8 of a forward's 26 d^2 FLOPs
// a token at 2048 positions) about 18/78 more of their training work, less than the third a whole forward would be.
TEST(Planner, RecomputationTradesMemoryForLessThanAThirdMoreLayerWork) {
  const model::KosmosConfig config = model::preset("kosmos1");
  const Hardware h100 = without_links(hardware_preset("h100"));
  Workload work;
  work.sequences = 16;
  Layout plain{1, 1, 8, 2, parallel::ScheduleKind::kOneFOneB, 1, false, false};
  Layout recomputed = plain;
  recomputed.recompute = true;
  const Prediction a = predict(config, h100, work, plain, 1), b = predict(config, h100, work, recomputed, 1);
  EXPECT_LT(b.memory_gib, a.memory_gib);
  EXPECT_GT(b.compute_seconds, a.compute_seconds);
  EXPECT_LT(b.compute_seconds, a.compute_seconds * (1.0 + 18.5 / 78.0));  // the image path and head are not redone
}

TEST(Planner, TheReductionHidesBehindTheLastBackwardWhereTheMachineOverlapsThem) {
  const model::KosmosConfig config = model::preset("kosmos1");
  const Hardware gpu = hardware_preset("h100");
  Hardware blocking = gpu;  // the same machine, its reduction after the backward
  blocking.reduction_overlaps_backward = false;
  Workload work;
  work.sequences = 64;
  for (const bool zero1 : {false, true}) {
    const Layout layout{16, 1, 1, 4, parallel::ScheduleKind::kOneFOneB, 1, zero1, false};  // two nodes of 8
    const Prediction overlapped = predict(config, gpu, work, layout, 2);
    const Prediction after = predict(config, blocking, work, layout, 2);
    ASSERT_GT(after.dp_seconds, 0.0) << after.why_not;
    EXPECT_LT(overlapped.dp_seconds, after.dp_seconds) << "zero1 " << zero1;
    EXPECT_GT(overlapped.dp_seconds, 0.0) << "the embeddings' gradients, which the backward finishes last, show";
    EXPECT_NEAR(after.step_seconds - overlapped.step_seconds, after.dp_seconds - overlapped.dp_seconds, 1e-12);
    // At most the last micro-batch's backward (two thirds of a micro-batch's work) hides it; ZeRO-1's all-gather of
    // the updated slices follows the update and stays exposed.
    EXPECT_LE(after.dp_seconds - overlapped.dp_seconds, after.compute_seconds / 4.0 * 2.0 / 3.0 + 1e-12);
    if (zero1) {
      EXPECT_GE(overlapped.dp_seconds, after.dp_seconds / 2.0 - 1e-12);
    }
  }
  EXPECT_FALSE(hardware_preset("cpu").reduction_overlaps_backward);     // MPI moves data inside its calls
  EXPECT_FALSE(hardware_preset("mi300x").reduction_overlaps_backward);  // staged through blocking MPI calls
}

TEST(Planner, ImpossibleLayoutsSayWhy) {
  const model::KosmosConfig config = model::preset("kosmos1");
  const Hardware h100 = hardware_preset("h100");
  Workload work;
  work.sequences = 16;
  const Prediction odd_tp = predict(config, h100, work, Layout{1, 1, 3, 1}, 1);
  EXPECT_EQ(odd_tp.step_seconds, 0.0);
  EXPECT_NE(odd_tp.why_not.find("tp does not divide"), std::string::npos);
  const Prediction batch = predict(config, h100, work, Layout{3, 1, 1, 1}, 1);
  EXPECT_NE(batch.why_not.find("global batch"), std::string::npos);
  EXPECT_THROW(hardware_preset("tpu"), Error);
  EXPECT_THROW(calibrated(h100, R"({"matmul_tflop": 1})", "rates.json"), Error);
}

TEST(Planner, ALayoutFitsOnlyInTheUsableShareOfTheDevicesMemory) {
  const model::KosmosConfig config = model::preset("kosmos1");
  Workload work;
  work.sequences = 8;
  const Layout layout{1, 1, 1, 1};
  Hardware gpu = hardware_preset("h200");
  const double needs = predict(config, gpu, work, layout, 1).memory_gib;
  gpu.memory_gib = needs / 0.95;  // it would fill 95%: more than the 90% a layout may
  const Prediction tight = predict(config, gpu, work, layout, 1);
  EXPECT_FALSE(tight.fits);
  EXPECT_NE(tight.why_not.find("usable"), std::string::npos) << tight.why_not;
  const Hardware roomier = calibrated(gpu, R"({"usable_fraction": 0.96})", "machine.json");
  EXPECT_TRUE(predict(config, roomier, work, layout, 1).fits);
  EXPECT_THROW(calibrated(gpu, R"({"usable_fraction": 1.5})", "machine.json"), Error);
}

TEST(Planner, CalibrationInvertsAPrediction) {
  const model::KosmosConfig config = model::preset("small");
  Hardware cpu = hardware_preset("cpu");
  Workload work;
  work.sequences = 8;
  work.length = 256;
  const Layout layout{2, 1, 1, 1};
  cpu.matmul_tflops = 0.037;
  const double measured = predict(config, cpu, work, layout, 1).step_seconds;
  EXPECT_NEAR(matmul_rate_for(config, cpu, work, layout, measured), 0.037, 1e-9);
  EXPECT_THROW(matmul_rate_for(config, cpu, work, layout, 1e-9), Error);  // faster than the non-matmul terms
}

TEST(Planner, RankingPutsFittingLayoutsFirstAndFasterAbove) {
  const model::KosmosConfig config = model::preset("kosmos1");
  Workload work;
  work.sequences = 512;
  const std::vector<Prediction> ranked = rank_layouts(config, hardware_preset("h100"), work, 64, 8);
  ASSERT_FALSE(ranked.empty());
  EXPECT_TRUE(ranked.front().fits);
  for (size_t i = 1; i < ranked.size(); ++i) {
    if (ranked[i].fits == ranked[i - 1].fits) {
      EXPECT_GE(ranked[i - 1].tokens_per_second, ranked[i].tokens_per_second);
    }
    EXPECT_EQ(ranked[i].layout.dp * ranked[i].layout.pp * ranked[i].layout.tp, 64);
    EXPECT_GE(ranked[i].sequences, work.sequences);
  }
  EXPECT_GT(ranked.front().mfu, 0.0);
  EXPECT_LT(ranked.front().mfu, 1.0);
}

}  // namespace
}  // namespace kosmos::bench
