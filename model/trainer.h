// trainer.h: one training step on one rank: gradient accumulation over micro-batches, the global gradient norm and
// its clipping, the learning-rate schedule (linear warm-up, then linear decay to zero) and AdamW.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "model/kosmos.h"
#include "parallel/comm.h"
#include "parallel/schedule.h"

namespace kosmos::model {

struct OptimizerConfig {
  double peak_lr = 2e-4;        // the paper's peak learning rate
  int64_t warmup_steps = 375;   // the paper's warm-up
  int64_t total_steps = 300000; // linear decay reaches 0 here
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-6;
  double weight_decay = 0.01;   // decoupled, on every trainable parameter (fairseq's adam)
  double clip_norm = 2.0;       // global L2 norm; 0 turns clipping off
  // A loss or gradient norm that is NaN or infinite: skip the step's update (counted; the default), stop the run,
  // or skip it and halve the loss scale (dynamic loss scaling, as fp16 training needs; the scale doubles again after
  // loss_scale_window finite steps in a row).
  enum class NonFinite : uint8_t { kSkip, kStop, kReduceScale };
  NonFinite non_finite = NonFinite::kSkip;
  // The backward computes the gradients of loss * loss_scale, which are divided by it before the norm, clipping and
  // AdamW. A power of two, so that both multiplications are exact: the update does not depend on it (only which
  // gradients overflow does). With kReduceScale it is the starting scale.
  double loss_scale = 1.0;
  int64_t loss_scale_window = 2000;
  // A test hook: at this step this rank writes a NaN into its gradients (0: never), as a fault would.
  int64_t poison_gradients_at_step = 0;
};

// Dynamic loss scaling's state (checkpointed): the scale, and the finite steps since it last changed.
struct LossScale {
  double scale = 1.0;
  int64_t finite_steps = 0;
};

// Whether `value` is a power of two (1/4, 1, 2, 65536, ...): what a loss scale must be, so that scaling is exact.
inline bool is_power_of_two(double value) {
  int exponent = 0;
  return std::isfinite(value) && std::frexp(value, &exponent) == 0.5;
}

// The learning rate of 1-based step `step`: peak * step / warmup during warm-up, then linear decay to 0.
double learning_rate(const OptimizerConfig & config, int64_t step);

struct StepStats {
  int64_t step = 0;
  double loss = 0.0;       // mean loss per counted token over the step's micro-batches
  double grad_norm = 0.0;  // before clipping
  double lr = 0.0;
  int64_t tokens = 0;      // positions processed (all B*T of every micro-batch)
  int64_t counted = 0;     // positions with a loss
  double seconds = 0.0;
  double bubble = 0.0;     // pipeline: the fraction of the step this stage waited for other stages
  bool skipped = false;    // the loss or gradient norm was not finite: no update was applied
  double loss_scale = 1.0; // the scale this step's gradients were computed with (OptimizerConfig::loss_scale)
  double reduce_overlap = 0.0;  // data parallelism: the fraction of gradient elements whose reduction started while
                                // more of this rank's backward work followed (the least of the pipeline stages')
};

// Data parallelism: the ranks of `comm` each hold a replica (of what their stage and tp rank hold) and a share of
// the step's samples. Gradients are summed over them in buckets (all-reduce), or with ZeRO-1 reduce-scattered so
// that each rank updates only its 1/dp slice of the flat parameter buffer with AdamW and all-gathers the result;
// the ModelState then holds the AdamW moments of that slice alone (made with Zero1Shard{dp rank, dp size}).
struct DataParallel {
  parallel::Comm * comm = nullptr;       // null: one rank
  bool zero1 = false;
  int64_t bucket_elements = int64_t{1} << 22;  // reduction granularity (16 MiB of f32)
  // Start each bucket's reduction (all-reduce, or ZeRO-1's reduce to its slice's rank) during the step's last
  // backward that writes it, as soon as its gradients are final, instead of all of them after the backwards.
  bool overlap = true;
};

// Pipeline parallelism: the ranks of `comm` each run a contiguous range of decoder layers (the first also the
// image path and embeddings, the last the head), micro-batches flowing between them in `schedule` order. A stage's
// parameter table holds the parameters it runs (ParameterTable with stage_holds; a whole table works too, its other
// parameters unused, their zero gradients summed over dp with the rest): no gradient crosses the stages but a tied
// embedding's, which the first and the last stage exchange; the norm sums the stages' parts, and
// collect_parameters() brings them all to the first stage.
struct PipelineParallel {
  parallel::Comm * comm = nullptr;  // null: one stage
  parallel::ScheduleKind schedule = parallel::ScheduleKind::kOneFOneB;
  int chunks = 1;                   // model chunks per stage (interleaving)
  std::vector<StageRange> ranges;   // every virtual stage's layers (partition.h); chunk c of stage s is c*stages+s
};

// Tensor parallelism: the ranks of `comm` split every decoder layer's heads and FFN and the vocabulary (the model
// holds the comm for its forward and backward). Each rank's parameter table holds its shards and the replicated
// parameters (ParameterTable with its TensorParallelRank); no gradient crosses the tp group, the norm adds the
// shards' parts, and collect_parameters() gathers the shards.
struct TensorParallel {
  parallel::Comm * comm = nullptr;  // null: one rank
};

class Trainer {
 public:
  Trainer(KosmosModel & model, ModelState & state, const OptimizerConfig & config, DataParallel data_parallel = {},
          PipelineParallel pipeline = {}, TensorParallel tensor_parallel = {});
  // A whole optimizer step over the micro-batches (gradients accumulate across them). The first step remakes the
  // state's compute copy from its values (as loaded or initialised before it); later ones expect the values to
  // change only through this trainer.
  StepStats step(Runtime & rt, const std::vector<Batch> & micro_batches, int64_t step, uint64_t seed);
  // The relative spread over the tp ranks of the replicated parameters' sum of squares, the largest of the pipeline
  // stages': 0 when the replicas agree, as they should (collective over the tp and pp groups; 0 without tp).
  double replica_spread(Runtime & rt);
  // Every parameter's whole value, in table order, on the host of the first stage's rank of dp rank 0 and tp rank 0
  // (the one that saves them): each stage's tp ranks of dp rank 0 gather their shards to their tp rank 0, which
  // sends them to the first stage's (collective over those ranks). Empty on other ranks.
  std::vector<std::vector<float>> collect_parameters(Runtime & rt);
  // The part of each parameter (in table order) whose value and AdamW moments are current on this rank and which
  // no other rank claims: the owning pipeline stage, this tp rank's shard (tp rank 0 for replicated parameters),
  // and dp rank 0, or with ZeRO-1 this rank's slice of the flat buffers (a frozen parameter, outside the slices:
  // dp rank 0, whole). Together the ranks cover every element once: what each writes to a checkpoint.
  std::vector<ParameterPart> checkpoint_parts() const;
  // The loss scale the next step uses, and where its growth window stands; restored from a checkpoint on resume.
  const LossScale & loss_scale() const { return loss_scale_; }
  void set_loss_scale(const LossScale & loss_scale);

 private:
  // The squared global gradient norm over [begin, end) of the flat buffers and the ranks holding other parts.
  double squared_gradient_norm(Runtime & rt, int64_t begin, int64_t end);
  // Sums a host value over the data-parallel ranks.
  double sum_over_ranks(Runtime & rt, double value);
  // AdamW over the trainable parameters inside [begin, end) of the flat buffers.
  void adamw(Runtime & rt, int64_t begin, int64_t end, double lr, double clip, int64_t step);

  KosmosModel & model_;
  ModelState & state_;
  OptimizerConfig config_;
  DataParallel dp_;
  PipelineParallel pp_;
  TensorParallel tp_;
  // The pipeline stage that owns each parameter (by index in the table; each by exactly one stage): its gradient
  // is current there, and that stage writes and collects it.
  std::vector<int> owners_;
  int stage_ = 0;  // this rank's pipeline stage
  // [begin, end) runs of the flat buffers holding the parameters this stage updates, in order: what AdamW updates
  // (its layers, its chunks' under interleaving, and on the last a tied embedding; without a pipeline one run, the
  // whole trainable part).
  std::vector<std::pair<int64_t, int64_t>> trained_runs_;
  // Pipelining: the arenas of the micro-batches a stage has in flight, reused from step to step.
  std::vector<std::unique_ptr<Arena>> micro_arenas_;
  LossScale loss_scale_;
  // Whether the state's compute copy (mixed precision) matches its values. Not before the first step (the values
  // were initialised or loaded by others since the copy was made) nor after a ZeRO-1 all-gather: a step then
  // refreshes it first; AdamW keeps it current otherwise.
  bool compute_values_current_ = false;
};

}  // namespace kosmos::model
