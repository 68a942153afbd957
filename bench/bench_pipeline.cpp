// bench_pipeline.cpp: the pipeline bubble of each schedule at p = 4 stages and m = 4, 8, 16 micro-batches, from the
// dependency simulator (parallel/schedule.h) with the forward, input-gradient and weight-gradient passes costing
// the same, beside the 1F1B formula (p-1)/(m+p-1). bench/pipeline_bubble.sh measures the real engine.
#include <cstdio>

#include "parallel/schedule.h"

using namespace kosmos::parallel;

int main() {
  const int stages = 4;
  std::printf("simulated bubble (idle fraction), p = %d, F = B = W = 1 (1F1B's backward = B + W)\n", stages);
  std::printf("%4s %10s %10s %10s %16s %10s\n", "m", "(p-1)/(m+p-1)", "gpipe", "1f1b", "interleaved v=2", "zb-h1");
  for (int micros : {4, 8, 16}) {
    auto bubble = [&](ScheduleKind kind, int chunks) {
      std::vector<std::vector<PipeAction>> all;
      for (int s = 0; s < stages; ++s) all.push_back(make_schedule(kind, stages, s, micros, chunks));
      return simulate(all, micros, chunks, {}).bubble;
    };
    std::printf("%4d %13.4f %10.4f %10.4f %16.4f %10.4f\n", micros, (stages - 1.0) / (micros + stages - 1.0),
                bubble(ScheduleKind::kGPipe, 1), bubble(ScheduleKind::kOneFOneB, 1),
                bubble(ScheduleKind::kInterleaved, 2), bubble(ScheduleKind::kZeroBubbleH1, 1));
  }
  return 0;
}
