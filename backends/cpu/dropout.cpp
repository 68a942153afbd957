// dropout.cpp: inverted dropout with Philox masks regenerated in the backward (no mask is stored). Threads take
// chunks of the flat tensor; a chunk draws exactly the elements a whole-tensor draw would.
#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/dropout_mask.h"

namespace kosmos::cpu {
namespace {

void dropout_apply(const TensorView & out, const TensorView & in, const DropoutParams & params) {
  constexpr int64_t kChunk = 4096;
  const int64_t count = in.numel();
  const float * source = in.as<float>();
  float * target = out.as<float>();
  if (params.p == 0.0f) {
    std::copy(source, source + count, target);
    return;
  }
#pragma omp parallel
  {
    std::vector<float> factors(kChunk);
#pragma omp for
    for (int64_t first = 0; first < count; first += kChunk) {
      const int64_t length = std::min(kChunk, count - first);
      dropout_factors(params.seed, params.offset + static_cast<uint64_t>(first), length, params.p, factors.data());
#pragma omp simd
      for (int64_t i = 0; i < length; ++i) target[first + i] = source[first + i] * factors[i];
    }
  }
}

}  // namespace

void cpu_op(CpuContext &, const DropoutForward & op) { dropout_apply(op.out, op.in, op.params); }
void cpu_op(CpuContext &, const DropoutBackward & op) { dropout_apply(op.din, op.dout, op.params); }

}  // namespace kosmos::cpu
