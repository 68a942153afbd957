// pipeline.cpp: executing a schedule on one stage with the p2p exchanges around each pass.
#include "parallel/pipeline.h"

#include <algorithm>
#include <chrono>

#include "backends/error.h"

namespace kosmos::parallel {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

PipelineTiming run_pipeline(PipelineStage & stage, Comm & pipeline, Stream & stream,
                            const std::vector<PipeAction> & actions) {
  const int index = pipeline.rank(), stages = pipeline.size(), chunks = stage.chunks();
  const int prev = (index + stages - 1) % stages, next = (index + 1) % stages;  // chunk c of the last stage feeds
                                                                                // chunk c + 1 of the first
  // A message names its micro-batch, the sender's chunk and its direction (the sender's rank is the source), so
  // messages between the same two ranks may arrive in any order.
  auto tag = [&](int micro, int virtual_stage, int direction) {
    return (micro * chunks + virtual_stage / stages) * 2 + direction;
  };
  int micros = 0;
  for (const PipeAction & action : actions) micros = std::max(micros, action.micro + 1);
  KOSMOS_CHECK(micros * chunks * 2 <= 32768, "pipeline: ", micros, " micro-batches x ", chunks,
               " chunks need more message tags than MPI guarantees (32768); use fewer micro-batches per step");
  PipelineTiming timing;
  for (const PipeAction & action : actions) {
    const int m = action.micro, c = action.chunk, virtual_stage = c * stages + index;
    const bool first = virtual_stage == 0, last = virtual_stage == stages * chunks - 1;
    if (action.kind == PassKind::kForward) {
      TensorView input, output;
      if (!first) {
        input = stage.boundary(m, PipelineStage::Direction::kReceived);
        const auto wait = std::chrono::steady_clock::now();
        pipeline.recv(input, prev, stream, tag(m, virtual_stage - 1, 0));
        timing.idle_seconds += seconds_since(wait);
      }
      if (!last) output = stage.boundary(m, PipelineStage::Direction::kSent);
      const auto start = std::chrono::steady_clock::now();
      stage.forward(m, c, input, output);
      timing.busy_seconds += seconds_since(start);
      if (!last) pipeline.send_async(output, next, stream, tag(m, virtual_stage, 0));
    } else if (action.kind == PassKind::kBackwardWeight) {
      const auto start = std::chrono::steady_clock::now();
      stage.backward_weight(m, c);
      timing.busy_seconds += seconds_since(start);
    } else {
      TensorView d_output, d_input;
      if (!last) {
        d_output = stage.boundary(m, PipelineStage::Direction::kReceived);
        const auto wait = std::chrono::steady_clock::now();
        pipeline.recv(d_output, next, stream, tag(m, virtual_stage + 1, 1));
        timing.idle_seconds += seconds_since(wait);
      }
      if (!first) d_input = stage.boundary(m, PipelineStage::Direction::kSent);
      const auto start = std::chrono::steady_clock::now();
      if (action.kind == PassKind::kBackward) stage.backward(m, c, d_output, d_input);
      else stage.backward_input(m, c, d_output, d_input);
      timing.busy_seconds += seconds_since(start);
      if (!first) pipeline.send_async(d_input, prev, stream, tag(m, virtual_stage, 1));
    }
  }
  const auto wait = std::chrono::steady_clock::now();
  pipeline.wait_sends();
  timing.idle_seconds += seconds_since(wait);
  return timing;
}

}  // namespace kosmos::parallel
