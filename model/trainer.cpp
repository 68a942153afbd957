// trainer.cpp: gradient accumulation, clipping, schedule and AdamW for one optimizer step.
#include "model/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>

#include "backends/error.h"
#include "model/partition.h"
#include "parallel/pipeline.h"

namespace kosmos::model {

double learning_rate(const OptimizerConfig & config, int64_t step) {
  if (config.warmup_steps > 0 && step <= config.warmup_steps)
    return config.peak_lr * static_cast<double>(step) / static_cast<double>(config.warmup_steps);
  const double remaining = static_cast<double>(config.total_steps - step) /
                           static_cast<double>(std::max<int64_t>(1, config.total_steps - config.warmup_steps));
  return config.peak_lr * std::max(0.0, remaining);
}

Trainer::Trainer(KosmosModel & model, ModelState & state, const OptimizerConfig & config, DataParallel data_parallel,
                 PipelineParallel pipeline, TensorParallel tensor_parallel)
    : model_(model), state_(state), config_(config), dp_(data_parallel), pp_(pipeline), tp_(tensor_parallel) {
  KOSMOS_CHECK(!dp_.zero1 || dp_.comm, "ZeRO-1 needs a data-parallel communicator (internal error)");
  const Zero1Shard expected = dp_.zero1 ? Zero1Shard{dp_.comm->rank(), dp_.comm->size()} : Zero1Shard{};
  KOSMOS_CHECK(state.shard().rank == expected.rank && state.shard().ranks == expected.ranks,
               "the model state holds the moments of ZeRO-1 slice ", state.shard().rank, " of ", state.shard().ranks,
               " but the trainer updates slice ", expected.rank, " of ", expected.ranks, " (internal error)");
  KOSMOS_CHECK(config.peak_lr > 0 && config.total_steps >= 1 && config.warmup_steps >= 0 &&
                   config.warmup_steps <= config.total_steps,
               "optimizer: lr ", config.peak_lr, ", warm-up ", config.warmup_steps, " and total steps ",
               config.total_steps, " must satisfy lr > 0 and 0 <= warm-up <= total");
  KOSMOS_CHECK(config.loss_scale_window >= 1, "optimizer: the loss scale window is ", config.loss_scale_window,
               " steps; it must be at least 1");
  set_loss_scale({config.loss_scale, 0});
  // Each parameter's place in the layout, worked out once: the steps only look it up.
  stage_ = pp_.comm ? pp_.comm->rank() : 0;
  const int stages = pp_.comm ? pp_.comm->size() : 1, stage = stage_;
  const TensorParallelRank & held = state_.table().tensor_parallel();
  KOSMOS_CHECK(held.rank == (tp_.comm ? tp_.comm->rank() : 0) && held.ranks == (tp_.comm ? tp_.comm->size() : 1),
               "the trainer's tensor-parallel group does not match the shards its parameter table holds (rank ",
               held.rank, " of ", held.ranks, "; internal error)");
  const DecoderConfig & decoder = model_.config().decoder;
  for (const ParameterSpec & spec : state_.table().specs()) {
    const int owner = owning_stage(spec.name, pp_.ranges, stages, decoder);
    const bool holds = stage_holds(spec.name, stage, pp_.ranges, stages, decoder);
    KOSMOS_CHECK(spec.held || !holds, "pipeline stage ", stage, " runs ", spec.name,
                 " but its parameter table does not hold it (internal error: make the table with stage_holds)");
    const bool trains = spec.trainable && holds;
    owners_.push_back(owner);
    // The runs of the flat buffers that AdamW updates here: the parameters it trains (a tied embedding on the
    // first and the last stage), with the zeros of the alignment gaps between them.
    if (!trains) continue;
    if (trained_runs_.empty() || spec.offset > (trained_runs_.back().second + 15) / 16 * 16)
      trained_runs_.push_back({spec.offset, spec.offset});
    trained_runs_.back().second = spec.offset + spec.local_numel;
  }
}

void Trainer::set_loss_scale(const LossScale & loss_scale) {
  KOSMOS_CHECK(is_power_of_two(loss_scale.scale) && loss_scale.finite_steps >= 0, "the loss scale ",
               loss_scale.scale, " is not a power of two (1, 2, 4, ..., 65536, ...); multiplying by a power of two "
               "is exact, so the gradients do not depend on it");
  loss_scale_ = loss_scale;
}

namespace {

// Sums `flat` with the same-shaped `flat` of rank `peer` of `comm`, `bucket` elements at a time through a buffer from
// the arena: both ranks end with the sum, equal bit for bit (the two additions have the same operands).
void exchange_sum(Runtime & rt, parallel::Comm & comm, const TensorView & flat, int peer, int64_t bucket) {
  const Arena::Mark mark = rt.arena.mark();
  const TensorView received = rt.take({std::min(bucket, flat.numel())});
  for (int64_t first = 0; first < flat.numel(); first += bucket) {
    const int64_t count = std::min(bucket, flat.numel() - first);
    const TensorView mine = make_view(flat.as<float>() + first, DType::kF32, {count});
    const TensorView theirs = make_view(received.data, DType::kF32, {count});
    comm.group_begin();
    comm.send(mine, peer, rt.stream);
    comm.recv(theirs, peer, rt.stream);
    comm.group_end();
    rt.run(Add{mine, mine, theirs});
  }
  rt.arena.rewind(mark);
}

// The data-parallel sum of the gradients [0, count) of the flat buffer, overlapped with the backward: buckets are cut
// from the top down (the order the backward finishes gradients in) and each starts its reduction once the backward
// reports every gradient in it final: an all-reduce, or with ZeRO-1 (slice > 0) a reduce to each rank whose slice
// [rank * slice, (rank + 1) * slice) it covers, cut at the slices' edges. Gradients below hold_below() wait for
// finish(), which starts what is left and waits for every bucket.
class BucketedReduction {
 public:
  BucketedReduction(parallel::Comm & comm, const TensorView & grads, int64_t count, int64_t bucket, int64_t slice,
                    Stream & stream)
      : comm_(comm), grads_(grads), bucket_(bucket), slice_(slice), stream_(stream), unstarted_end_(count),
        count_(count) {}

  // Keeps the buckets below `offset` back until finish() (what must be exchanged first).
  void hold_below(int64_t offset) { floor_ = offset; }

  // Every gradient at or above `offset` is final: starts the buckets that lie there. A call follows backward work
  // (a layer's), so the buckets the previous call started ran behind it: they count as overlapped.
  void gradients_final_from(int64_t offset) {
    started_early_ += started_last_;
    started_last_ = 0;
    offset = std::max(offset, floor_);
    while (unstarted_end_ > 0 && std::max<int64_t>(0, unstarted_end_ - bucket_) >= offset) {
      const int64_t begin = std::max<int64_t>(0, unstarted_end_ - bucket_);
      start(begin, unstarted_end_);
      started_last_ += unstarted_end_ - begin;
      unstarted_end_ = begin;
    }
    comm_.progress();
  }
  // gradients_final_from as a runtime's listener (Runtime::gradients_final_from).
  std::function<void(int64_t)> * listener() { return &listener_; }
  // Starts what is left and waits for every bucket. Returns the fraction of the elements whose reduction started
  // while more backward work followed.
  double finish() {
    floor_ = 0;
    started_last_ = 0;  // no backward work followed the last report's buckets
    gradients_final_from(0);
    comm_.wait_reductions(stream_);
    return count_ > 0 ? static_cast<double>(started_early_) / static_cast<double>(count_) : 0.0;
  }

 private:
  void start(int64_t begin, int64_t end) {
    const auto part = [&](int64_t from, int64_t to) {
      return make_view(grads_.as<float>() + from, DType::kF32, {to - from});
    };
    if (slice_ == 0) return comm_.all_reduce_async(part(begin, end), parallel::ReduceOp::kSum, stream_);
    for (int64_t piece_end = end; piece_end > begin;) {
      const int64_t owner = (piece_end - 1) / slice_;
      const int64_t piece_begin = std::max(begin, owner * slice_);
      comm_.reduce_async(part(piece_begin, piece_end), static_cast<int>(owner), parallel::ReduceOp::kSum, stream_);
      piece_end = piece_begin;
    }
  }

  parallel::Comm & comm_;
  TensorView grads_;
  int64_t bucket_, slice_;
  Stream & stream_;
  int64_t unstarted_end_;  // buckets at [unstarted_end_, count) have started
  int64_t count_;
  int64_t floor_ = 0;
  int64_t started_early_ = 0, started_last_ = 0;
  std::function<void(int64_t)> listener_ = [this](int64_t offset) { gradients_final_from(offset); };
};

// Points a runtime's gradients_final_from at a listener for one scope.
class GradientListener {
 public:
  GradientListener(Runtime & rt, std::function<void(int64_t)> * listener) : rt_(rt) {
    rt_.gradients_final_from = listener;
  }
  ~GradientListener() { rt_.gradients_final_from = nullptr; }
  GradientListener(const GradientListener &) = delete;
  GradientListener & operator=(const GradientListener &) = delete;

 private:
  Runtime & rt_;
};

// One stage of the model as the pipeline engine sees it: the step's micro-batches, their forward states. Each
// micro-batch's activations (and the boundaries it receives) live in an arena of their own from its first forward
// here to its last backward (or W pass), then the arena serves a later micro-batch: a stage holds the activations
// of the micro-batches its schedule has in flight, not of the whole step. The arenas persist across steps in
// `arenas` (sized by the first step); what the stage sends lives in the step's arena until the sends complete.
// With a data-parallel `reduction`, the pass that makes a chunk's gradients final (its last backward, or split, its
// last W pass) starts the buckets the model reports final as it goes.
class ModelStage final : public parallel::PipelineStage {
 public:
  ModelStage(KosmosModel & model, Runtime & rt, int stage, int stages, int chunks,
             const std::vector<StageRange> & virtual_stages, const std::vector<Batch> & micro_batches,
             float loss_scale, const StepRandomness & randomness, BucketedReduction * reduction,
             std::vector<std::unique_ptr<Arena>> & arenas)
      : model_(model), rt_(rt), micro_(micro_batches), loss_scale_(loss_scale), randomness_(randomness),
        states_(micro_batches.size() * static_cast<size_t>(chunks)), reduction_(reduction),
        passes_left_(static_cast<size_t>(chunks), static_cast<int>(micro_batches.size())), arenas_(arenas),
        arena_of_(micro_batches.size(), nullptr), held_(static_cast<int>(micro_batches.size()), chunks) {
    KOSMOS_CHECK(static_cast<int>(virtual_stages.size()) == stages * chunks, "pipeline: ", virtual_stages.size(),
                 " stage ranges for ", stages, " stages x ", chunks, " chunks (internal error)");
    for (int c = 0; c < chunks; ++c) ranges_.push_back(virtual_stages[static_cast<size_t>(c * stages + stage)]);
    // The step starts with every arena of the pool free and, the last step's work being done (it ended with the
    // stream synchronised), reset: where an arena is separate buffers, they become one of its deepest stack.
    for (const std::unique_ptr<Arena> & arena : arenas_) {
      arena->reset();
      free_.push_back(arena.get());
    }
  }

  int chunks() const override { return static_cast<int>(ranges_.size()); }

  TensorView boundary(int micro, Direction direction) override {
    const Batch & b = micro_[static_cast<size_t>(micro)];
    const int64_t elements = b.batch * b.length * model_.config().decoder.embed_dim;
    return direction == Direction::kSent ? rt_.take({elements}) : arena(micro).take(DType::kF32, {elements});
  }
  void forward(int micro, int chunk, TensorView input, TensorView output) override {
    held_.ran({parallel::PassKind::kForward, micro, chunk});
    Runtime rt = runtime(micro, nullptr);
    loss_ += model_.stage_forward(rt, ranges_[static_cast<size_t>(chunk)], micro_[static_cast<size_t>(micro)],
                                  rows(input), rows(output), loss_scale_, randomness_, true, state(micro, chunk));
  }
  void backward(int micro, int chunk, TensorView d_output, TensorView d_input) override {
    Runtime rt = runtime(micro, finishing(chunk) ? reduction_->listener() : nullptr);
    model_.stage_backward(rt, ranges_[static_cast<size_t>(chunk)], micro_[static_cast<size_t>(micro)], rows(d_output),
                          rows(d_input), state(micro, chunk));
    if (held_.ran({parallel::PassKind::kBackward, micro, chunk})) release_arena(micro);
  }
  void backward_input(int micro, int chunk, TensorView d_output, TensorView d_input) override {
    Runtime rt = runtime(micro, nullptr);
    model_.stage_backward_input(rt, ranges_[static_cast<size_t>(chunk)], micro_[static_cast<size_t>(micro)],
                                rows(d_output), rows(d_input), state(micro, chunk));
  }
  void backward_weight(int micro, int chunk) override {
    Runtime rt = runtime(micro, finishing(chunk) ? reduction_->listener() : nullptr);
    model_.stage_backward_weights(rt, state(micro, chunk));
    if (held_.ran({parallel::PassKind::kBackwardWeight, micro, chunk})) release_arena(micro);
  }
  double loss() const { return loss_; }

 private:
  MicroState & state(int micro, int chunk) { return states_[static_cast<size_t>(micro * chunks() + chunk)]; }
  // Counts a pass that completes a micro-batch's gradients of `chunk`: whether it is the chunk's last.
  bool finishing(int chunk) { return --passes_left_[static_cast<size_t>(chunk)] == 0 && reduction_ != nullptr; }
  // The micro-batch's arena: a free one (or a new one) at its first use.
  Arena & arena(int micro) {
    Arena *& mine = arena_of_[static_cast<size_t>(micro)];
    if (mine == nullptr) {
      if (free_.empty()) {  // separate buffers (no reserved ranges) come in pieces of 16 MiB: micro-batches are small
        arenas_.push_back(std::make_unique<Arena>(rt_.device, size_t{16} << 20));
        free_.push_back(arenas_.back().get());
      }
      mine = free_.back();
      free_.pop_back();
    }
    return *mine;
  }
  // A runtime on the micro-batch's arena, reporting final gradients to `listener`.
  Runtime runtime(int micro, std::function<void(int64_t)> * listener) {
    Runtime rt{rt_.device, rt_.stream, arena(micro)};
    rt.gradients_final_from = listener;
    return rt;
  }
  // The micro-batch's last pass on the stage is done: its arena is free for another. Emptied, not reset (merging
  // separate buffers frees ones the queued work may still read); the stream orders the next micro-batch's work on
  // the memory after this one's.
  void release_arena(int micro) {
    Arena *& mine = arena_of_[static_cast<size_t>(micro)];
    mine->rewind(Arena::Mark{0, 0, 0});
    free_.push_back(mine);
    mine = nullptr;
  }
  TensorView rows(TensorView flat) const {  // [B*T*d] as [B*T, d]
    if (!flat.present()) return flat;
    const int64_t d = model_.config().decoder.embed_dim;
    return make_view(flat.data, DType::kF32, {flat.numel() / d, d});
  }
  KosmosModel & model_;
  Runtime & rt_;  // the step's: its arena holds what this stage sends
  std::vector<StageRange> ranges_;  // one per chunk
  const std::vector<Batch> & micro_;
  float loss_scale_;
  StepRandomness randomness_;
  std::vector<MicroState> states_;
  double loss_ = 0.0;
  BucketedReduction * reduction_;
  std::vector<int> passes_left_;  // per chunk: the backwards (or W passes) still to come this step
  std::vector<std::unique_ptr<Arena>> & arenas_;
  std::vector<Arena *> free_;       // arenas no micro-batch holds
  std::vector<Arena *> arena_of_;   // per micro-batch, while it holds one
  parallel::MicroBatchesHeld held_;  // when a micro-batch's arena is done with
};

}  // namespace

std::vector<ParameterPart> Trainer::checkpoint_parts() const {
  const int tp_rank = tp_.comm ? tp_.comm->rank() : 0;
  const int dp_rank = dp_.comm ? dp_.comm->rank() : 0;
  const auto [begin, end] = state_.moment_range();
  std::vector<ParameterPart> parts;
  const std::vector<ParameterSpec> & specs = state_.table().specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParameterSpec & spec = specs[i];
    // ZeRO-1 slices the trainable part of the flat buffers; a frozen parameter, which no step changes, is written
    // whole by dp rank 0, as every parameter is without ZeRO-1.
    const bool sliced = dp_.zero1 && spec.trainable;
    const bool replica_elsewhere = (spec.split == TensorParallelSplit::kReplicated && tp_rank != 0) ||
                                   (!sliced && dp_rank != 0);
    if (owners_[i] != stage_ || replica_elsewhere) {
      parts.push_back(ParameterPart::none());
      continue;
    }
    ParameterPart part = spec.local;  // this tp rank's rows or columns (all of a replicated parameter)
    if (sliced) {  // the local elements [first, last) inside the slice, as a range of the whole's order
      const int64_t first = std::clamp(begin - spec.offset, int64_t{0}, spec.local_numel);
      const int64_t last = std::clamp(end - spec.offset, int64_t{0}, spec.local_numel);
      part.flat_begin = first < last ? part.whole_element(first, spec.columns()) : 0;
      part.flat_end = first < last ? part.whole_element(last - 1, spec.columns()) + 1 : 0;
    }
    parts.push_back(part);
  }
  return parts;
}

double Trainer::replica_spread(Runtime & rt) {
  if (!tp_.comm || tp_.comm->size() == 1) return 0.0;
  // The replicated parameters should have stayed identical over the ranks (the same updates from the same
  // gradients): the spread of a fingerprint, their sum of squares, tells whether rank 0's copy speaks for all.
  const Arena::Mark mark = rt.arena.mark();
  const TensorView fingerprint = rt.take({1});
  rt.run(Fill{fingerprint, 0.0f});
  for (const ParameterSpec & spec : state_.table().specs())
    if (spec.held && spec.split == TensorParallelSplit::kReplicated)
      rt.run(SquaredNorm{fingerprint, state_.value(spec)});
  float extremes[2] = {0.0f, 0.0f};  // max and -min over the ranks
  TensorView target = fingerprint;
  target.data = extremes;
  rt.device.copy(target, fingerprint, rt.stream);
  rt.stream.synchronize();
  rt.arena.rewind(mark);
  extremes[1] = -extremes[0];
  tp_.comm->all_reduce(make_view(extremes, DType::kF32, {2}), parallel::ReduceOp::kMax, rt.stream);
  const double highest = extremes[0], lowest = -static_cast<double>(extremes[1]);
  float spread = static_cast<float>((highest - lowest) / std::max(1e-30, std::fabs(highest)));
  if (pp_.comm) pp_.comm->all_reduce(make_view(&spread, DType::kF32, {1}), parallel::ReduceOp::kMax, rt.stream);
  return spread;  // the largest of the stages'
}

std::vector<std::vector<float>> Trainer::collect_parameters(Runtime & rt) {
  std::vector<std::vector<float>> values;
  if (dp_.comm && dp_.comm->rank() != 0) return values;  // dp rank 0's ranks speak for the replicas
  const int stage = stage_;
  const TensorParallelRank & tp = state_.table().tensor_parallel();
  const std::vector<ParameterSpec> & specs = state_.table().specs();
  if (stage == 0 && tp.rank == 0) values.resize(specs.size());
  std::vector<float> mine, gathered, sent;  // this rank's part, the tp group's parts, what a later stage sends
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParameterSpec & spec = specs[i];
    const int owner = owners_[i];
    if (stage != owner && (stage != 0 || tp.rank != 0)) continue;
    std::vector<float> & whole = stage == 0 && tp.rank == 0 ? values[i] : sent;  // used on tp rank 0
    if (tp.rank == 0) whole.resize(static_cast<size_t>(spec.numel));
    if (stage == owner) {  // this rank's part, then under tensor parallelism every tp rank's, to tp rank 0
      mine.resize(static_cast<size_t>(spec.local_numel));
      const TensorView part = make_view(mine.data(), DType::kF32, {spec.local_numel});
      rt.device.copy(part, reshape(state_.value(spec), {spec.local_numel}), rt.stream);
      rt.stream.synchronize();
      if (spec.local_numel == spec.numel) {
        if (tp.rank == 0) whole.swap(mine);
      } else {
        gathered.resize(static_cast<size_t>(spec.local_numel) * static_cast<size_t>(tp.ranks));
        tp_.comm->all_gather(make_view(gathered.data(), DType::kF32, {spec.local_numel * tp.ranks}), part,
                             rt.stream);
        for (int r = 0; tp.rank == 0 && r < tp.ranks; ++r) {
          const ParameterPart theirs = ParameterPart::of_rank(spec, {r, tp.ranks});
          const float * from = gathered.data() + static_cast<size_t>(r) * static_cast<size_t>(spec.local_numel);
          for (int64_t e = 0; e < spec.local_numel; ++e)
            whole[static_cast<size_t>(theirs.whole_element(e, spec.columns()))] = from[e];
        }
      }
    }
    if (owner == 0 || tp.rank != 0) continue;  // the first stage's own, or a part already sent over tp
    const TensorView message = make_view(whole.data(), DType::kF32, {spec.numel});
    if (stage == 0)
      pp_.comm->recv(message, owner, rt.stream);
    else
      pp_.comm->send(message, 0, rt.stream);
  }
  return values;
}

double Trainer::squared_gradient_norm(Runtime & rt, int64_t begin, int64_t end) {
  // [0]: the parameters replicated over tp (counted once), [1]: the tensor-parallel shards (summed over the tp
  // ranks); each stage counts the parameters it owns, summed over the stages.
  const TensorView norms = rt.take({2});
  rt.run(Fill{norms, 0.0f});
  float * grads = state_.flat(ModelState::Slot::kGrads).as<float>();
  const bool sharded = tp_.comm && tp_.comm->size() > 1, pipelined = pp_.comm && pp_.comm->size() > 1;
  if (!sharded && !pipelined) {
    rt.run(SquaredNorm{slice(norms, 0, 0, 1), make_view(grads + begin, DType::kF32, {end - begin})});
  } else {
    const std::vector<ParameterSpec> & specs = state_.table().specs();
    for (size_t i = 0; i < specs.size(); ++i) {  // the part of each parameter inside [begin, end)
      const int64_t first = std::max(begin, specs[i].offset);
      const int64_t last = std::min(end, specs[i].offset + specs[i].local_numel);
      if (first >= last || owners_[i] != stage_) continue;
      const int64_t which = specs[i].split != TensorParallelSplit::kReplicated ? 1 : 0;
      rt.run(SquaredNorm{slice(norms, 0, which, 1), make_view(grads + first, DType::kF32, {last - first})});
    }
  }
  float host[2] = {0.0f, 0.0f};
  TensorView target = norms;
  target.data = host;
  rt.device.copy(target, norms, rt.stream);
  rt.stream.synchronize();
  if (sharded) tp_.comm->all_reduce(make_view(&host[1], DType::kF32, {1}), parallel::ReduceOp::kSum, rt.stream);
  float local = host[0] + host[1];
  if (pipelined) pp_.comm->all_reduce(make_view(&local, DType::kF32, {1}), parallel::ReduceOp::kSum, rt.stream);
  return dp_.zero1 ? sum_over_ranks(rt, local) : local;  // with ZeRO-1 each dp rank holds a slice
}

double Trainer::sum_over_ranks(Runtime & rt, double value) {
  if (!dp_.comm) return value;
  float host = static_cast<float>(value);
  dp_.comm->all_reduce(make_view(&host, DType::kF32, {1}), parallel::ReduceOp::kSum, rt.stream);
  return host;
}

void Trainer::adamw(Runtime & rt, int64_t begin, int64_t end, double lr, double clip, int64_t step) {
  // One AdamW op per run of the parameters this rank trains (the alignment gaps inside a run hold zeros and stay
  // zero), clipped to [begin, end). A pipeline stage updates only the parameters it uses.
  for (const auto & [run_begin, run_end] : trained_runs_) {
    const int64_t from = std::max(begin, run_begin), to = std::min(end, run_end);
    if (from >= to) continue;
    auto window = [&](ModelState::Slot slot) {  // the moments' buffer starts at this rank's ZeRO-1 slice
      return slice(state_.flat(slot), 0, state_.position(slot, from), to - from);
    };
    // The compute copy of the window too, unless ZeRO-1's all-gather brings only the f32 values (then the next
    // step refreshes the whole copy).
    const TensorView compute = state_.compute_values();
    const TensorView compute_window =
        compute.present() && !dp_.zero1 ? slice(compute, 0, from, to - from) : TensorView{};
    rt.run(AdamWStep{window(ModelState::Slot::kValues), window(ModelState::Slot::kMoment1),
                     window(ModelState::Slot::kMoment2), window(ModelState::Slot::kGrads),
                     static_cast<float>(lr), static_cast<float>(config_.beta1), static_cast<float>(config_.beta2),
                     static_cast<float>(config_.eps), static_cast<float>(config_.weight_decay), step,
                     static_cast<float>(clip), compute_window});
  }
}

StepStats Trainer::step(Runtime & rt, const std::vector<Batch> & micro_batches, int64_t step, uint64_t seed) {
  const auto start = std::chrono::steady_clock::now();
  StepStats stats;
  stats.step = step;
  double weight_sum = 0.0;
  for (const Batch & batch : micro_batches) {
    for (float w : batch.loss_weights) weight_sum += w;
    stats.tokens += batch.batch * batch.length;
  }
  // The loss is a mean over every counted token of the step, on every rank, so each micro-batch is scaled by the
  // same 1/count.
  weight_sum = sum_over_ranks(rt, weight_sum);
  stats.tokens = static_cast<int64_t>(sum_over_ranks(rt, static_cast<double>(stats.tokens)));
  KOSMOS_CHECK(weight_sum > 0.0, "step ", step, ": no position of its micro-batches carries a loss (all loss weights "
               "are 0)");
  stats.counted = static_cast<int64_t>(weight_sum);
  // The backward's seed: the mean's 1/count times the loss scale (a power of two, so the product is exact).
  const double scale = loss_scale_.scale;
  stats.loss_scale = scale;
  const float loss_scale = static_cast<float>(scale / weight_sum);
  state_.zero_grads(rt.stream);
  if (config_.poison_gradients_at_step == step)  // the test hook: this rank's backward produces a NaN (accumulated)
    rt.run(Fill{make_view(state_.all_grads().data, DType::kF32, {1}), std::numeric_limits<float>::quiet_NaN()});
  if (!compute_values_current_) {  // the values changed since the copy was made (initialised, loaded, all-gathered)
    state_.refresh_compute_values(rt.stream);
    compute_values_current_ = true;
  }
  double loss = 0.0;
  // Keys depend on the step only; the micro-batch's global sample and image indices set the offsets, so the masks
  // do not depend on how the step's samples are split into micro-batches, ranks or stages.
  const StepRandomness randomness{seed, step, true};
  const bool pipelined = pp_.comm && pp_.comm->size() > 1;
  // Gradients summed over the data-parallel ranks in buckets: all-reduced, or with ZeRO-1 reduced to the rank whose
  // slice holds them. With dp_.overlap each bucket starts as soon as the step's last backward that writes it has
  // passed it (the last micro-batch's; a pipeline stage's, each chunk's last), else all after the backwards.
  // Tensor parallelism exchanges no gradients: each rank holds its shards' gradients and the same gradient of every
  // replicated parameter as the other ranks (computed from the same inputs).
  // Nor does the pipeline, but for a tied embedding: the first stage wrote its part as the embedding, the last as
  // the head, and the two exchange them for the sum (the stages between hold no embedding). After the data-parallel
  // all-reduce, so that both stages add the same two sums and their copies stay equal bit for bit. ZeRO-1 cuts the
  // embedding into other slices on each stage, so there the exchange comes first (its buckets, and those below it,
  // wait for it), and the last stage takes the first stage's updated embedding after the step.
  const int stage = stage_, last_stage = pipelined ? pp_.comm->size() - 1 : 0;
  const bool tied_exchange = pipelined && model_.config().decoder.tied && (stage == 0 || stage == last_stage);
  const std::string tied_name = "decoder.embed_tokens.weight";
  std::optional<BucketedReduction> reduction;
  if (dp_.comm) {
    reduction.emplace(*dp_.comm, state_.flat(ModelState::Slot::kGrads), state_.table().trainable_end(),
                      dp_.bucket_elements, dp_.zero1 ? state_.slice_elements() : 0, rt.stream);
    if (tied_exchange && dp_.zero1) {
      const ParameterSpec & embedding = state_.table().find(tied_name);
      reduction->hold_below(embedding.offset + embedding.local_numel);
    }
  }
  // A pipeline stage sends its input gradients on only after its backward returns: a transport whose reductions
  // block (ROCm's staged MPI) reduces after the backwards there, so that no stage holds up the others.
  const bool overlap = dp_.overlap && (!pipelined || (dp_.comm && dp_.comm->reduces_asynchronously()));
  BucketedReduction * overlapped = reduction && overlap ? &*reduction : nullptr;
  if (pipelined) {  // each micro-batch's activations in an arena of their own, what the stage sends in the step's
    rt.arena.reset();
    const int stages = pp_.comm->size();
    const int chunks = parallel::model_chunks(pp_.schedule, pp_.chunks);
    ModelStage model_stage(model_, rt, stage, stages, chunks, pp_.ranges, micro_batches, loss_scale, randomness,
                           overlapped, micro_arenas_);
    const parallel::PipelineTiming timing = parallel::run_pipeline(
        model_stage, *pp_.comm, rt.stream,
        parallel::make_schedule(pp_.schedule, stages, stage, static_cast<int>(micro_batches.size()), chunks));
    loss = model_stage.loss();  // only the last stage computes one
    stats.bubble = timing.idle_seconds / std::max(1e-12, timing.idle_seconds + timing.busy_seconds);
    float host = static_cast<float>(loss);
    pp_.comm->all_reduce(make_view(&host, DType::kF32, {1}), parallel::ReduceOp::kSum, rt.stream);
    loss = host;
  } else {
    for (size_t i = 0; i < micro_batches.size(); ++i) {
      rt.arena.reset();
      const bool last = i + 1 == micro_batches.size();
      const GradientListener listening(rt, overlapped && last ? overlapped->listener() : nullptr);
      loss += model_.run(rt, micro_batches[i], loss_scale, randomness, true);
    }
  }
  rt.arena.reset();
  stats.loss = sum_over_ranks(rt, loss) / scale;

  const auto exchange_tied_embedding = [&] {
    exchange_sum(rt, *pp_.comm, state_.grad(tied_name), last_stage - stage, dp_.bucket_elements);
  };
  if (tied_exchange && dp_.zero1) exchange_tied_embedding();
  if (reduction) {
    float overlap_fraction = static_cast<float>(reduction->finish());
    if (pipelined) {  // the least of the stages'
      overlap_fraction = -overlap_fraction;
      pp_.comm->all_reduce(make_view(&overlap_fraction, DType::kF32, {1}), parallel::ReduceOp::kMax, rt.stream);
      overlap_fraction = -overlap_fraction;
    }
    stats.reduce_overlap = overlap_fraction;
  }
  if (tied_exchange && !dp_.zero1) exchange_tied_embedding();
  const auto [begin, end] = state_.moment_range();  // with ZeRO-1, the slice whose sums this rank holds
  // The global gradient norm (of the trainable parameters: frozen ones have no gradient), then clipping and AdamW.
  // The norm and the loss are sums over every rank, so every rank sees a NaN or infinity at the same step and
  // decides alike.
  stats.grad_norm = std::sqrt(squared_gradient_norm(rt, begin, end)) / scale;
  stats.lr = learning_rate(config_, step);
  if (!std::isfinite(stats.grad_norm) || !std::isfinite(stats.loss)) {
    stats.skipped = true;  // no update: the parameters and AdamW moments stay as they were
    switch (config_.non_finite) {
      case OptimizerConfig::NonFinite::kStop:
        KOSMOS_FAIL("step ", step, ": the loss (", stats.loss, ") or gradient norm (", stats.grad_norm,
                    ") is not finite (--non-finite stop); lower the learning rate, check the inputs, or resume from "
                    "the last checkpoint");
      case OptimizerConfig::NonFinite::kSkip: break;
      case OptimizerConfig::NonFinite::kReduceScale:
        KOSMOS_CHECK(scale > 1.0, "step ", step, ": the loss (", stats.loss, ") or gradient norm (", stats.grad_norm,
                     ") is not finite with a loss scale of ", scale,
                     " (--non-finite reduce-scale): this is no overflow of the scaled gradients; lower the learning "
                     "rate, check the inputs, or resume from the last checkpoint");
        loss_scale_ = {scale / 2, 0};
        break;
    }
    rt.stream.synchronize();
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return stats;
  }
  if (config_.non_finite == OptimizerConfig::NonFinite::kReduceScale &&
      ++loss_scale_.finite_steps == config_.loss_scale_window)
    loss_scale_ = {scale * 2, 0};
  // Clipping's factor and the loss scale's inverse in one multiplier of the (scaled) gradients.
  const double clip = config_.clip_norm > 0.0 && stats.grad_norm > config_.clip_norm ? config_.clip_norm / stats.grad_norm
                                                                                      : 1.0;
  adamw(rt, begin, end, stats.lr, clip / scale, step);
  if (dp_.zero1) {  // every rank's updated slice to every rank (the last rank's slice ends in the slack)
    compute_values_current_ = false;
    const int ranks = dp_.comm->size();
    const int64_t shard = state_.slice_elements();
    const TensorView values = state_.flat(ModelState::Slot::kValues);
    dp_.comm->all_gather(make_view(values.data, DType::kF32, {shard * ranks}),
                         make_view(values.as<float>() + begin, DType::kF32, {shard}), rt.stream);
    // The two copies of a tied embedding were updated from sums that added the dp ranks in other orders (above):
    // the last stage takes the first stage's, so that they stay equal bit for bit.
    if (tied_exchange) {
      const TensorView embedding = state_.value(tied_name);
      if (stage == 0)
        pp_.comm->send(embedding, last_stage, rt.stream);
      else
        pp_.comm->recv(embedding, 0, rt.stream);
    }
  }
  rt.stream.synchronize();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace kosmos::model
