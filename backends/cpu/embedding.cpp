// embedding.cpp: token embedding gather and its scatter-add backward (threads own columns, so repeated ids never
// race and the sums are deterministic), and fairseq's sinusoidal position table.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/error.h"

namespace kosmos::cpu {
namespace {

void check_ids(const char * op, const TensorView & ids) {
  const int32_t * values = ids.as<int32_t>();
  for (int64_t n = 0; n < ids.numel(); ++n)
    KOSMOS_CHECK(values[n] >= 0, op, ": id ", values[n], " at position ", n, " of ", describe(ids),
                 " is negative; token ids must be >= 0");
}

}  // namespace

void cpu_op(CpuContext &, const EmbeddingForward & op) {
  check_ids("embedding_forward", op.ids);
  const int64_t count = op.ids.dim(0), width = op.table.dim(1), rows = op.table.dim(0);
  const int32_t * ids = op.ids.as<int32_t>();
  const float * table = op.table.as<float>();
  float * out = op.out.as<float>();
#pragma omp parallel for
  for (int64_t n = 0; n < count; ++n) {
    const int64_t row = ids[n] - op.vocab_start;
    const bool here = row >= 0 && row < rows;
#pragma omp simd
    for (int64_t d = 0; d < width; ++d) out[n * width + d] = here ? table[row * width + d] : 0.0f;
  }
}

void cpu_op(CpuContext &, const EmbeddingBackward & op) {
  check_ids("embedding_backward", op.ids);
  constexpr int64_t kColumns = 64;  // columns per task
  const int64_t count = op.ids.dim(0), width = op.dtable.dim(1), rows = op.dtable.dim(0);
  const int32_t * ids = op.ids.as<int32_t>();
  const float * dout = op.dout.as<float>();
  float * dtable = op.dtable.as<float>();
#pragma omp parallel for
  for (int64_t first = 0; first < width; first += kColumns) {
    const int64_t last = std::min(width, first + kColumns);
    for (int64_t n = 0; n < count; ++n) {
      const int64_t row = ids[n] - op.vocab_start;
      if (row < 0 || row >= rows || ids[n] == op.padding_idx) continue;
#pragma omp simd
      for (int64_t d = first; d < last; ++d) dtable[row * width + d] += dout[n * width + d];
    }
  }
}

void cpu_op(CpuContext &, const SinusoidalPositions & op) {
  const int64_t count = op.positions.dim(0), width = op.out.dim(1), half = width / 2;
  const int32_t * positions = op.positions.as<int32_t>();
  float * out = op.out.as<float>();
  const double step = std::log(10000.0) / static_cast<double>(half - 1);
#pragma omp parallel for
  for (int64_t n = 0; n < count; ++n) {
    const bool padding = positions[n] == op.padding_idx;
    for (int64_t j = 0; j < half; ++j) {
      const double angle = static_cast<double>(positions[n]) * std::exp(-static_cast<double>(j) * step);
      out[n * width + j] = padding ? 0.0f : static_cast<float>(std::sin(angle));
      out[n * width + half + j] = padding ? 0.0f : static_cast<float>(std::cos(angle));
    }
  }
}

}  // namespace kosmos::cpu
