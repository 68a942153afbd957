// cross_entropy.cpp: fused softmax + cross-entropy over the vocab. The forward is three row passes (max, sum of
// exponentials, target logit); a vocab-parallel version all-reduces between them. The backward needs only the
// saved log-sum-exp, so it is the same with or without a vocab split.
#include <algorithm>
#include <cmath>
#include <limits>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/simd.h"
#include "backends/error.h"

namespace kosmos::cpu {
namespace {

// The target's logit when it lies in this slice, else 0 (the owner's rank contributes it).
float target_logit(const float * row, int64_t target, int64_t vocab_start, int64_t count) {
  const int64_t local = target - vocab_start;
  return local >= 0 && local < count ? row[local] : 0.0f;
}

void check_targets(const char * op, const TensorView & targets, const TensorView & weights, int64_t vocab_total) {
  const int32_t * values = targets.as<int32_t>();
  const float * weight = weights.as<float>();
  for (int64_t n = 0; n < targets.numel(); ++n)
    KOSMOS_CHECK(weight[n] == 0.0f || (values[n] >= 0 && values[n] < vocab_total), op, ": target ", values[n],
                 " of row ", n, " is outside the vocabulary [0, ", vocab_total,
                 "); give such rows weight 0 or fix the token ids");
}

}  // namespace

void cpu_op(CpuContext &, const CrossEntropyForward & op) {
  const int64_t rows = op.logits.dim(0), vocab = op.logits.dim(1);
  check_targets("cross_entropy_forward", op.targets, op.weights, op.vocab_total == 0 ? vocab : op.vocab_total);
  const float * logits = op.logits.as<float>();
  const int32_t * targets = op.targets.as<int32_t>();
  const float * weights = op.weights.as<float>();
  float * lse = op.lse.as<float>();
  double total = 0.0;
#pragma omp parallel for reduction(+ : total)
  for (int64_t n = 0; n < rows; ++n) {
    const float * row = logits + n * vocab;
    const float max = max_of(row, vocab);
    lse[n] = max + std::log(exp_shift(row, nullptr, vocab, max));
    if (weights[n] != 0.0f)
      total += static_cast<double>(weights[n]) * (lse[n] - target_logit(row, targets[n], op.vocab_start, vocab));
  }
  op.loss.as<float>()[0] = static_cast<float>(total * op.loss_scale);
}

void cpu_op(CpuContext &, const CrossEntropyBackward & op) {
  const int64_t rows = op.logits.dim(0), vocab = op.logits.dim(1);
  check_targets("cross_entropy_backward", op.targets, op.weights, op.vocab_total == 0 ? vocab : op.vocab_total);
  const float * logits = op.logits.as<float>();
  const int32_t * targets = op.targets.as<int32_t>();
  const float * weights = op.weights.as<float>();
  const float * lse = op.lse.as<float>();
  float * dlogits = op.dlogits.as<float>();
#pragma omp parallel for
  for (int64_t n = 0; n < rows; ++n) {
    const float factor = op.dloss * op.loss_scale * weights[n];
    const float * row = logits + n * vocab;
    float * grad = dlogits + n * vocab;
    if (factor == 0.0f) std::fill(grad, grad + vocab, 0.0f);
    else exp_shift(row, grad, vocab, lse[n], factor);
    const int64_t local = targets[n] - op.vocab_start;
    if (factor != 0.0f && local >= 0 && local < vocab) grad[local] -= factor;
  }
}

}  // namespace kosmos::cpu
