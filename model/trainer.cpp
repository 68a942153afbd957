// trainer.cpp: gradient accumulation, clipping, schedule and AdamW for one optimizer step.
#include "model/trainer.h"

#include <chrono>
#include <cmath>

#include "backends/error.h"

namespace kosmos::model {

double learning_rate(const OptimizerConfig & config, int64_t step) {
  if (config.warmup_steps > 0 && step <= config.warmup_steps)
    return config.peak_lr * static_cast<double>(step) / static_cast<double>(config.warmup_steps);
  const double remaining = static_cast<double>(config.total_steps - step) /
                           static_cast<double>(std::max<int64_t>(1, config.total_steps - config.warmup_steps));
  return config.peak_lr * std::max(0.0, remaining);
}

Trainer::Trainer(KosmosModel & model, ModelState & state, const OptimizerConfig & config)
    : model_(model), state_(state), config_(config) {
  KOSMOS_CHECK(config.peak_lr > 0 && config.total_steps >= 1 && config.warmup_steps >= 0 &&
                   config.warmup_steps <= config.total_steps,
               "optimizer: lr ", config.peak_lr, ", warm-up ", config.warmup_steps, " and total steps ",
               config.total_steps, " must satisfy lr > 0 and 0 <= warm-up <= total");
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
  KOSMOS_CHECK(weight_sum > 0.0, "step ", step, ": no position of its ", micro_batches.size(),
               " micro-batches carries a loss (all loss weights are 0)");
  stats.counted = static_cast<int64_t>(weight_sum);
  // The loss is a mean over every counted token of the step, so each micro-batch is scaled by the same 1/count.
  const float loss_scale = static_cast<float>(1.0 / weight_sum);
  state_.zero_grads(rt.stream);
  for (size_t m = 0; m < micro_batches.size(); ++m) {
    rt.arena.reset();
    // Keys depend on the step only; the micro-batch's global sample and image indices set the offsets, so the masks
    // do not depend on how the step's samples are split into micro-batches.
    const StepRandomness randomness{seed, step, true};
    stats.loss += model_.run(rt, micro_batches[m], loss_scale, randomness, true);
  }
  rt.arena.reset();
  // Global gradient norm (frozen parameters have zero gradients), clipping, AdamW.
  const TensorView norm = rt.take({1});
  rt.run(Fill{norm, 0.0f});
  rt.run(SquaredNorm{norm, state_.all_grads()});
  float norm_host = 0.0f;
  TensorView target = norm;
  target.data = &norm_host;
  rt.device.copy(target, norm, rt.stream);
  rt.stream.synchronize();
  stats.grad_norm = std::sqrt(static_cast<double>(norm_host));
  KOSMOS_CHECK(std::isfinite(stats.grad_norm) && std::isfinite(stats.loss), "step ", step, ": the loss (",
               stats.loss, ") or gradient norm (", stats.grad_norm,
               ") is not finite; lower the learning rate or check the inputs");
  const double clip = config_.clip_norm > 0.0 && stats.grad_norm > config_.clip_norm ? config_.clip_norm / stats.grad_norm
                                                                                      : 1.0;
  stats.lr = learning_rate(config_, step);
  // One AdamW op per run of consecutive trainable parameters in the flat buffers (the alignment gaps between them
  // hold zeros and stay zero), instead of one per tensor.
  const std::vector<ParameterSpec> & specs = state_.table().specs();
  for (size_t first = 0; first < specs.size();) {
    if (!specs[first].trainable) {
      ++first;
      continue;
    }
    size_t last = first;
    while (last + 1 < specs.size() && specs[last + 1].trainable) ++last;
    const int64_t begin = specs[first].offset, end = specs[last].offset + specs[last].numel;
    auto run_of = [&](TensorView (ModelState::*view)(const ParameterSpec &) const) {
      const TensorView whole = (state_.*view)(specs[first]);
      return make_view(whole.data, DType::kF32, {end - begin});
    };
    rt.run(AdamWStep{run_of(&ModelState::value), run_of(&ModelState::moment1), run_of(&ModelState::moment2),
                     run_of(&ModelState::grad), static_cast<float>(stats.lr), static_cast<float>(config_.beta1),
                     static_cast<float>(config_.beta2), static_cast<float>(config_.eps),
                     static_cast<float>(config_.weight_decay), step, static_cast<float>(clip)});
    first = last + 1;
  }
  rt.stream.synchronize();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace kosmos::model
