// optimizer.cpp: the AdamW step (one fused pass over param, m, v, grad; then the compute copy's rounding, if asked
// for) and the squared norm used for global gradient clipping (summed in double so that a billion small squares do
// not lose precision).
#include <cmath>

#include "backends/cpu/cpu_kernels.h"

namespace kosmos::cpu {

void cpu_op(CpuContext & ctx, const AdamWStep & op) {
  const int64_t count = op.param.numel();
  const double correction1 = 1.0 - std::pow(static_cast<double>(op.beta1), static_cast<double>(op.step));
  const double correction2 = 1.0 - std::pow(static_cast<double>(op.beta2), static_cast<double>(op.step));
  const float step_size = static_cast<float>(op.lr / correction1);
  const float inverse_sqrt_correction2 = static_cast<float>(1.0 / std::sqrt(correction2));
  const float decay = 1.0f - op.lr * op.weight_decay;
  const float beta1 = op.beta1, beta2 = op.beta2, eps = op.eps, grad_scale = op.grad_scale;
  float * param = op.param.as<float>();
  float * m = op.m.as<float>();
  float * v = op.v.as<float>();
  const float * grad = op.grad.as<float>();
#pragma omp parallel for simd
  for (int64_t i = 0; i < count; ++i) {
    const float g = grad[i] * grad_scale;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    const float denominator = std::sqrt(v[i]) * inverse_sqrt_correction2 + eps;
    param[i] = param[i] * decay - step_size * m[i] / denominator;
  }
  if (op.compute_param.present()) cpu_op(ctx, Cast{op.compute_param, op.param});  // the compute copy, rounded
}

void cpu_op(CpuContext &, const SquaredNorm & op) {
  const int64_t count = op.in.numel();
  const float * in = op.in.as<float>();
  double sum = 0.0;
#pragma omp parallel for simd reduction(+ : sum)
  for (int64_t i = 0; i < count; ++i) sum += static_cast<double>(in[i]) * in[i];
  op.out.as<float>()[0] += static_cast<float>(sum);
}

}  // namespace kosmos::cpu
