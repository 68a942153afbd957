// l2_normalize.cpp: y = x / max(||x||, eps) per row (torch.nn.functional.normalize) and its backward.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_kernels.h"

namespace kosmos::cpu {

void cpu_op(CpuContext &, const L2NormalizeForward & op) {
  const int64_t cols = op.in.dim(-1), rows = op.in.rows();
  const float * in = op.in.as<float>();
  float * out = op.out.as<float>();
  float * norm = op.norm.as<float>();
#pragma omp parallel for
  for (int64_t row = 0; row < rows; ++row) {
    const float * x = in + row * cols;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cols; ++c) sum += static_cast<double>(x[c]) * x[c];
    norm[row] = static_cast<float>(std::sqrt(sum));
    const float inverse = 1.0f / std::max(norm[row], op.eps);
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) out[row * cols + c] = x[c] * inverse;
  }
}

void cpu_op(CpuContext &, const L2NormalizeBackward & op) {
  const int64_t cols = op.out.dim(-1), rows = op.out.rows();
  const float * y = op.out.as<float>();
  const float * dy = op.dout.as<float>();
  const float * norm = op.norm.as<float>();
  float * dx = op.din.as<float>();
#pragma omp parallel for
  for (int64_t row = 0; row < rows; ++row) {
    const float * y_row = y + row * cols;
    const float * dy_row = dy + row * cols;
    float * dx_row = dx + row * cols;
    if (norm[row] <= op.eps) {  // clamped: y = x / eps is linear in x
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) dx_row[c] = dy_row[c] / op.eps;
      continue;
    }
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < cols; ++c) dot += y_row[c] * dy_row[c];
    const float inverse = 1.0f / norm[row];
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) dx_row[c] = (dy_row[c] - y_row[c] * dot) * inverse;
  }
}

}  // namespace kosmos::cpu
