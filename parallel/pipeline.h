// pipeline.h: the engine that runs one pipeline stage's schedule (schedule.h) for a step: it receives a
// micro-batch's activation from the previous stage before its forward and sends the result on, receives the
// gradient from the next stage before its backward and sends the input gradient back. Sends never block (posted
// asynchronously, completed at the end), so consistent schedules cannot deadlock. model/ implements the stage.
#pragma once

#include <vector>

#include "backends/device.h"
#include "parallel/comm.h"
#include "parallel/schedule.h"

namespace kosmos::parallel {

class PipelineStage {
 public:
  virtual ~PipelineStage() = default;
  // Model chunks on this stage: with interleaving, chunk c of stage s is virtual stage c * stages + s.
  virtual int chunks() const { return 1; }
  // A buffer for one activation this stage exchanges with a neighbour (or the gradient coming back) for a
  // micro-batch: [elements] f32. One it receives lives as long as the micro-batch's other activations (until its
  // last pass here); one it sends, until the step ends (when the asynchronous sends complete).
  enum class Direction : uint8_t { kReceived, kSent };
  virtual TensorView boundary(int micro, Direction direction) = 0;
  // input is absent on the first virtual stage, output on the last.
  virtual void forward(int micro, int chunk, TensorView input, TensorView output) = 0;
  // d_output is absent on the last virtual stage, d_input on the first.
  virtual void backward(int micro, int chunk, TensorView d_output, TensorView d_input) = 0;
  // The backward split in two for zero-bubble schedules: the input gradient now, the weight gradient later.
  virtual void backward_input(int micro, int chunk, TensorView d_output, TensorView d_input) = 0;
  virtual void backward_weight(int micro, int chunk) = 0;
};

struct PipelineTiming {
  double busy_seconds = 0.0;  // in forward and backward passes
  double idle_seconds = 0.0;  // waiting for activations or gradients from the other stages
};

PipelineTiming run_pipeline(PipelineStage & stage, Comm & pipeline, Stream & stream,
                            const std::vector<PipeAction> & actions);

}  // namespace kosmos::parallel
