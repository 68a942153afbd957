// schedule.h: pipeline schedules as pure functions. Each returns the ordered actions one pipeline stage performs
// in a step: forwards and backwards of micro-batches (on a model chunk, for interleaving), the backward split into
// input-gradient and weight-gradient passes for zero-bubble schedules. One engine executes any of them; a
// simulator checks their dependencies and measures their idle time under given pass costs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kosmos::parallel {

enum class PassKind : uint8_t {
  kForward,         // F: the forward of a micro-batch
  kBackward,        // B: its whole backward (input and weight gradients)
  kBackwardInput,   // B with the weight gradients left for later (zero-bubble schedules)
  kBackwardWeight,  // W: the weight gradients of an earlier kBackwardInput
};

struct PipeAction {
  PassKind kind = PassKind::kForward;
  int micro = 0;  // micro-batch index
  int chunk = 0;  // model chunk on this stage (virtual stage = chunk * stages + stage); 0 without interleaving
};

enum class ScheduleKind : uint8_t { kGPipe, kOneFOneB, kInterleaved, kZeroBubbleH1 };
const char * schedule_name(ScheduleKind kind);
ScheduleKind schedule_from_name(const std::string & name);  // gpipe, 1f1b, interleaved, zb-h1

// GPipe: all forwards, then all backwards (in micro-batch order).
std::vector<PipeAction> schedule_gpipe(int stages, int stage, int micros);
// 1F1B (PipeDream-flush): stages - stage - 1 warm-up forwards, then one forward / one backward, then cool-down.
std::vector<PipeAction> schedule_1f1b(int stages, int stage, int micros);
// Interleaved 1F1B (Megatron): `chunks` model chunks per stage; micros must be a multiple of stages.
std::vector<PipeAction> schedule_interleaved(int stages, int stage, int micros, int chunks);
// Zero-bubble (after ZB-H1 of Qi et al., "Zero Bubble Pipeline Parallelism", 2024): the backward split into B
// (input gradient) and W (weight gradient), W passes moved into what would be bubbles, at most stages - stage
// micro-batches between F and B as in 1F1B. Derived by list scheduling (see schedule.cpp).
std::vector<PipeAction> schedule_zb_h1(int stages, int stage, int micros);
// The schedule of one stage by kind (chunks matters for interleaving only); errors name the numbers and a fix.
std::vector<PipeAction> make_schedule(ScheduleKind kind, int stages, int stage, int micros, int chunks);

// The model chunks each stage runs under `kind`: `chunks` when interleaved, else 1.
inline int model_chunks(ScheduleKind kind, int chunks) { return kind == ScheduleKind::kInterleaved ? chunks : 1; }
// Which micro-batches a stage holds as it runs its passes: each from its first forward on the stage to the last of
// its chunks' passes that finish gradients (a whole backward, or the W pass of a split one). model/trainer.cpp's
// pipeline stage gives a micro-batch's arena to another when ran() says it is done.
class MicroBatchesHeld {
 public:
  MicroBatchesHeld(int micros, int chunks);
  // Records `action`; true when it was the micro-batch's last pass on the stage (its activations may go).
  bool ran(const PipeAction & action);
  int held() const { return held_; }

 private:
  int chunks_;
  std::vector<int> chunks_finished_;  // per micro-batch
  std::vector<bool> holding_;         // per micro-batch
  int held_ = 0;
};
// The most micro-batches a stage running `actions` holds at once (MicroBatchesHeld): how many arenas
// model/trainer.cpp's pipeline stage uses, each as large as the fullest micro-batch it held.
int peak_micro_batches_held(const std::vector<PipeAction> & actions, int chunks);

// "F0 F1 B0 ..." (with the chunk as F0.1 when interleaved): what the table tests compare.
std::string describe(const std::vector<PipeAction> & actions);

// Pass costs for the simulator, in any time unit.
struct PassCosts {
  double forward = 1.0, backward_input = 1.0, backward_weight = 1.0;
};
struct SimulatedStep {
  double makespan = 0.0;
  std::vector<double> idle;  // per stage: makespan minus its busy time
  double bubble = 0.0;       // total idle / (stages * makespan)
};
// Runs every stage's actions in order, each waiting for what it depends on (a forward for the previous virtual
// stage's forward, a backward for the next one's backward or, on the last, its own forward; W for its B). Fails
// with the blocked actions when the schedules deadlock or miss a pass.
SimulatedStep simulate(const std::vector<std::vector<PipeAction>> & stages, int micros, int chunks,
                       const PassCosts & costs);

}  // namespace kosmos::parallel
