// pipeline.cpp: executing a schedule on one stage with the p2p exchanges around each pass.
#include "parallel/pipeline.h"

#include <chrono>
#include <map>

#include "backends/error.h"

namespace kosmos::parallel {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

PipelineTiming run_pipeline(PipelineStage & stage, Comm & pipeline, Device & device, Stream & stream,
                            const std::vector<PipeAction> & actions) {
  const int index = pipeline.rank(), stages = pipeline.size();
  const bool first = index == 0, last = index == stages - 1;
  // Every boundary tensor of the step lives until its send has completed (wait_sends below).
  std::map<std::pair<int, int>, Buffer> buffers;  // (micro, 0 input | 1 output | 2 d_output | 3 d_input)
  auto buffer = [&](int micro, int role) {
    const int64_t elements = stage.boundary_elements(micro);
    Buffer & slot = buffers[{micro, role}];
    if (slot.data() == nullptr) slot = device.allocate(static_cast<size_t>(elements) * sizeof(float), BufferUse::kActivations);
    return make_view(slot.data(), DType::kF32, {elements});
  };
  PipelineTiming timing;
  for (const PipeAction & action : actions) {
    KOSMOS_CHECK(action.chunk == 0, "pipeline: interleaved chunks are not executed yet (schedule ",
                 describe({action}), "); use gpipe or 1f1b");
    const int m = action.micro;
    if (action.kind == PassKind::kForward) {
      TensorView input, output;
      if (!first) {
        input = buffer(m, 0);
        const auto wait = std::chrono::steady_clock::now();
        pipeline.recv(input, index - 1, stream);
        timing.idle_seconds += seconds_since(wait);
      }
      if (!last) output = buffer(m, 1);
      const auto start = std::chrono::steady_clock::now();
      stage.forward(m, input, output);
      timing.busy_seconds += seconds_since(start);
      if (!last) pipeline.send_async(output, index + 1, stream);
    } else {
      KOSMOS_CHECK(action.kind == PassKind::kBackward, "pipeline: ", describe({action}),
                   " needs a split backward, which the stage does not offer yet; use gpipe or 1f1b");
      TensorView d_output, d_input;
      if (!last) {
        d_output = buffer(m, 2);
        const auto wait = std::chrono::steady_clock::now();
        pipeline.recv(d_output, index + 1, stream);
        timing.idle_seconds += seconds_since(wait);
      }
      if (!first) d_input = buffer(m, 3);
      const auto start = std::chrono::steady_clock::now();
      stage.backward(m, d_output, d_input);
      timing.busy_seconds += seconds_since(start);
      if (!first) pipeline.send_async(d_input, index - 1, stream);
    }
  }
  const auto wait = std::chrono::steady_clock::now();
  pipeline.wait_sends();
  timing.idle_seconds += seconds_since(wait);
  return timing;
}

}  // namespace kosmos::parallel
