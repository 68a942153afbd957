// dropout.cpp: inverted dropout with Philox masks regenerated in the backward (no mask is stored), with the
// forward's optional residual add and the backward's f32 or bf16 gradient (and its column sums, the bias gradient
// before the dropout: a second pass here, one on a GPU). Threads take chunks of the flat tensor; a chunk draws
// exactly the elements a whole-tensor draw would.
#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/dropout_mask.h"
#include "backends/dtype.h"

namespace kosmos::cpu {
namespace {

// out = residual + in * mask (without residual where it is absent); residual f32, in f32 (or bf16, widened a chunk at
// a time), out f32 or bf16.
void dropout_apply(const TensorView & out, const TensorView & in, const TensorView & residual,
                   const DropoutParams & params) {
  constexpr int64_t kChunk = 4096;
  const int64_t count = in.numel();
  const bool widens = in.dtype != DType::kF32;
  const float * kept = residual.present() ? residual.as<float>() : nullptr;
#pragma omp parallel
  {
    std::vector<float> factors(kChunk, 1.0f), widened(widens ? kChunk : 0);
#pragma omp for
    for (int64_t first = 0; first < count; first += kChunk) {
      const int64_t length = std::min(kChunk, count - first);
      if (params.p > 0.0f)
        dropout_factors(params.seed, params.offset + static_cast<uint64_t>(first), length, params.p, factors.data());
      // The chunk's elements of in, as f32: source[j] is element first + j.
      const float * source = widens ? widened.data() : in.as<float>() + first;
      if (widens)
        for (int64_t j = 0; j < length; ++j) widened[j] = load_as_float(in.data, in.dtype, first + j);
      if (out.dtype == DType::kF32) {
        float * target = out.as<float>() + first;
        if (kept) {
          const float * kept_chunk = kept + first;
#pragma omp simd
          for (int64_t j = 0; j < length; ++j) target[j] = kept_chunk[j] + source[j] * factors[j];
        } else {
#pragma omp simd
          for (int64_t j = 0; j < length; ++j) target[j] = source[j] * factors[j];
        }
      } else {
        for (int64_t j = 0; j < length; ++j) {
          const float dropped = source[j] * factors[j];
          store_from_float(out.data, out.dtype, first + j, kept ? kept[first + j] + dropped : dropped);
        }
      }
    }
  }
}

}  // namespace

void cpu_op(CpuContext &, const DropoutForward & op) { dropout_apply(op.out, op.in, op.residual, op.params); }
void cpu_op(CpuContext & ctx, const DropoutBackward & op) {
  dropout_apply(op.din, op.dout, TensorView{}, op.params);
  if (op.din_column_sums.present()) cpu_op(ctx, BiasBackward{op.din_column_sums, op.din});  // din as it holds it
}

}  // namespace kosmos::cpu
