// cross_entropy.cpp: fused softmax + cross-entropy over the vocab. The forward is three row passes (max, sum of
// exponentials, target logit); a vocab-parallel version all-reduces between them. The backward needs only the
// saved log-sum-exp, so it is the same with or without a vocab split; a bf16 gradient is rounded from the f32 one,
// and bf16 logits are widened to f32 first.
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

// The operands both passes read, after checking every counted target lies in the vocabulary.
struct LossRows {
  int64_t rows, vocab, row_stride;  // logits' rows lie row_stride elements apart
  const float * logits;
  const int32_t * targets;
  const float * weights;
};

template <typename Op>
LossRows loss_rows(const Op & op, const char * name) {
  const LossRows rows{op.logits.dim(0), op.logits.dim(1), op.logits.stride(0), op.logits.template as<float>(),
                      op.targets.template as<int32_t>(), op.weights.template as<float>()};
  const int64_t vocab_total = op.vocab_total == 0 ? rows.vocab : op.vocab_total;
  for (int64_t n = 0; n < rows.rows; ++n)
    KOSMOS_CHECK(rows.weights[n] == 0.0f || (rows.targets[n] >= 0 && rows.targets[n] < vocab_total), name,
                 ": target ", rows.targets[n], " of row ", n, " is outside the vocabulary [0, ", vocab_total,
                 "); give such rows weight 0 or fix the token ids");
  return rows;
}

}  // namespace

void cpu_op(CpuContext & ctx, const CrossEntropyForward & op) {
  if (any_narrow({op.logits})) {  // a bf16 head's logits
    WidenedOperands wide(ctx);
    CrossEntropyForward widened = op;
    widened.logits = wide.input(op.logits);
    cpu_op(ctx, widened);
    return;
  }
  const auto [rows, vocab, row_stride, logits, targets, weights] = loss_rows(op, "cross_entropy_forward");
  float * lse = op.lse.as<float>();
  double total = 0.0;
#pragma omp parallel for reduction(+ : total)
  for (int64_t n = 0; n < rows; ++n) {
    const float * row = logits + n * row_stride;
    const float max = max_of(row, vocab);
    lse[n] = max + std::log(exp_shift(row, nullptr, vocab, max));
    if (weights[n] != 0.0f)
      total += static_cast<double>(weights[n]) * (lse[n] - target_logit(row, targets[n], op.vocab_start, vocab));
  }
  op.loss.as<float>()[0] = static_cast<float>(total * op.loss_scale);
}

void cpu_op(CpuContext & ctx, const CrossEntropyBackward & op) {
  if (any_narrow({op.dlogits, op.logits})) {  // a 16-bit head's gradient (computed in f32, rounded once), its logits
    WidenedOperands wide(ctx);
    CrossEntropyBackward widened = op;
    widened.logits = wide.input(op.logits);  // read before the gradient is stored over them, when in place
    // In place: the gradient over the widened logits too (the f32 pass works in place), then rounded over op's.
    widened.dlogits = op.dlogits.data == op.logits.data ? wide.output_over(op.dlogits, widened.logits)
                                                        : wide.output(op.dlogits);
    cpu_op(ctx, widened);
    wide.finish();
    return;
  }
  const auto [rows, vocab, row_stride, logits, targets, weights] = loss_rows(op, "cross_entropy_backward");
  const float * lse = op.lse.as<float>();
  float * dlogits = op.dlogits.as<float>();
#pragma omp parallel for
  for (int64_t n = 0; n < rows; ++n) {
    const float factor = op.dloss * op.loss_scale * weights[n];
    const float * row = logits + n * row_stride;
    float * grad = dlogits + n * op.dlogits.stride(0);
    if (factor == 0.0f) std::fill(grad, grad + vocab, 0.0f);
    else exp_shift(row, grad, vocab, lse[n], factor);
    const int64_t local = targets[n] - op.vocab_start;
    if (factor != 0.0f && local >= 0 && local < vocab) grad[local] -= factor;
  }
}

}  // namespace kosmos::cpu
