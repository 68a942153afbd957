// kernels_loss.cu: the fused softmax cross-entropy (one block per row: max and sum of exponentials in one read of
// the row, in 16-byte loads where its rows allow, the weighted loss per row, then one block adds the rows in order;
// logits f32 or bf16, the backward's gradient f32, bf16 or f16, in place over them or not), the AdamW step, and the
// squared norm for global clipping (per-block partial sums in double, added in order by one block), all
// deterministic.
#include <algorithm>
#include <cmath>

#include "backends/cuda/gpu_kernels.h"
#include "backends/cuda/vector_access.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

// A thread's running max and sum of exponentials relative to it over the logits it reads (rescaled when the max
// grows). A -inf logit adds nothing (its exponential is 0; -inf - -inf would be NaN); a NaN logit never raises the
// max but stays in the sum, so the row's lse is NaN as on the CPU. A sum of 0 (no element, or only -inf) stays 0.
struct RunningSum {
  float max = -INFINITY, sum = 0.0f;
  // Values taken at once: the max grows once for all of them.
  template <int N>
  __device__ void add(const float (&values)[N]) {
    float new_max = max;
#pragma unroll
    for (int e = 0; e < N; ++e) new_max = fmaxf(new_max, values[e]);  // fmaxf passes over NaN
    if (new_max != max) sum *= expf(max - new_max);  // max -inf: 0, as the sum so far is of nothing
    max = new_max;
#pragma unroll
    for (int e = 0; e < N; ++e) sum += values[e] == -INFINITY ? 0.0f : expf(values[e] - max);
  }
};

// logits (L: float, or Bf16Bits for a bf16 head) have rows `row_stride` elements apart (a head pads them; see
// CrossEntropyForward); `packs` of 8 of each row are read in 16-byte loads (where every row starts on 16 bytes; else
// 0), the rest one by one, each widened to f32.
template <typename L>
__global__ void cross_entropy_rows_kernel(float * lse, double * row_loss, const L * logits, int64_t row_stride,
                                          int64_t packs, const int32_t * targets, const float * weights,
                                          int64_t vocab, int64_t vocab_start) {
  __shared__ float shared[kThreads / kWarp];
  const int64_t n = blockIdx.x;
  const L * row = logits + n * row_stride;
  // One read of the row into each thread's running sum, then the block brings the threads' sums to the row's max
  // and adds them in a fixed order.
  RunningSum running;
  for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
    float values[kPack];
    load_pack(row, pack, values);
    running.add(values);
  }
  for (int64_t v = packs * kPack + threadIdx.x; v < vocab; v += blockDim.x) {
    const float value[1] = {to_float(row[v])};
    running.add(value);
  }
  const float max_value = block_max(running.max, shared);
  float sum = running.sum;
  if (sum != 0.0f) sum *= expf(running.max - max_value);
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    const float row_lse = max_value + logf(sum);
    lse[n] = row_lse;
    const int64_t local = static_cast<int64_t>(targets[n]) - vocab_start;
    const float target_logit = local >= 0 && local < vocab ? to_float(row[local]) : 0.0f;
    row_loss[n] = weights[n] != 0.0f ? static_cast<double>(weights[n]) * (row_lse - target_logit) : 0.0;
  }
}

// out[0] = scale * sum of values[0 .. count), summed in a fixed order by one block.
__global__ void ordered_sum_kernel(float * out, const double * values, int64_t count, double scale, bool accumulate) {
  __shared__ double shared[kThreads / kWarp];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += values[i];
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) out[0] = static_cast<float>(sum * scale) + (accumulate ? out[0] : 0.0f);
}

// dlogits (T) f32, or bf16 for a bf16 head (rounded once, as a cast of the f32 gradient would), from logits (L) f32
// or bf16, or over them (in place: each thread reads its pack or element before it stores the gradient there);
// `packs` of 8 of each row in 16-byte loads and stores (where both tensors' rows start on 16 bytes; else 0), the rest
// one by one.
__device__ inline float logit_gradient(float logit, float lse, float factor, bool target) {
  if (factor == 0.0f) return 0.0f;
  const float value = factor * expf(logit - lse);
  return target ? value - factor : value;
}
template <typename T, typename L>
__global__ void cross_entropy_backward_kernel(T * dlogits, int64_t dlogits_row_stride, const L * logits,
                                              int64_t logits_row_stride, int64_t packs, const int32_t * targets,
                                              const float * weights, const float * lse, int64_t vocab,
                                              int64_t vocab_start, float scale) {
  const int64_t n = blockIdx.x;
  const float factor = scale * weights[n], row_lse = lse[n];
  const L * row = logits + n * logits_row_stride;
  T * grad = dlogits + n * dlogits_row_stride;
  const int64_t local = static_cast<int64_t>(targets[n]) - vocab_start;
  for (int64_t pack = threadIdx.x; pack < packs; pack += blockDim.x) {
    float values[kPack];
    load_pack(row, pack, values);
#pragma unroll
    for (int e = 0; e < kPack; ++e) values[e] = logit_gradient(values[e], row_lse, factor, pack * kPack + e == local);
    store_pack(grad, pack, values);
  }
  for (int64_t v = packs * kPack + threadIdx.x; v < vocab; v += blockDim.x)
    put(grad[v], logit_gradient(to_float(row[v]), row_lse, factor, v == local));
}

// AdamW with the bias corrections folded into step_size = lr / (1 - b1^t) and inverse_sqrt_correction2 =
// 1 / sqrt(1 - b2^t), decay = 1 - lr wd.
struct AdamWConstants {
  float beta1, beta2, eps, grad_scale, step_size, inverse_sqrt_correction2, decay;
};
__device__ inline void adamw_update(float & param, float & m, float & v, float grad, const AdamWConstants & k) {
  const float g = grad * k.grad_scale;
  m = k.beta1 * m + (1.0f - k.beta1) * g;
  v = k.beta2 * v + (1.0f - k.beta2) * g * g;
  param = param * k.decay - k.step_size * m / (sqrtf(v) * k.inverse_sqrt_correction2 + k.eps);
}

// In packs of 8 over the aligned body, element by element over the tail; the updated values also rounded into
// `copy` (the compute copy, Bf16Bits or __half) unless it is null.
template <typename Copy>
__global__ void adamw_kernel(float * param, float * m, float * v, const float * grad, Copy * copy, int64_t count,
                             int64_t packs, AdamWConstants constants) {
  KOSMOS_GRID_LOOP(pack, packs) {
    float p[kPack], m_pack[kPack], v_pack[kPack], g[kPack];
    load_pack(param, pack, p);
    load_pack(m, pack, m_pack);
    load_pack(v, pack, v_pack);
    load_pack(grad, pack, g);
#pragma unroll
    for (int e = 0; e < kPack; ++e) adamw_update(p[e], m_pack[e], v_pack[e], g[e], constants);
    store_pack(m, pack, m_pack);
    store_pack(v, pack, v_pack);
    store_pack(param, pack, p);
    if (copy != nullptr) store_pack(copy, pack, p);
  }
  KOSMOS_TAIL_LOOP(i, packs, count) {
    adamw_update(param[i], m[i], v[i], grad[i], constants);
    if (copy != nullptr) put(copy[i], param[i]);
  }
}

// Partial sums of the squared norm: at most 1024 blocks of 256 threads striding over any count, enough to fill an
// H100/H200 (about 8 blocks on each of its 132 SMs) with the loads that keep its memory busy; fewer where the count
// fills fewer. The grid depends on the count and on whether the tensor starts on 16 bytes (as the packs do), so that
// the order of the sum is fixed for each tensor at its address.
constexpr unsigned kNormBlocks = 1024;

__global__ void squared_partials_kernel(double * partials, const float * in, int64_t count, int64_t packs) {
  __shared__ double shared[kThreads / kWarp];
  double sum = 0.0;
  KOSMOS_GRID_LOOP(pack, packs) {
    float values[kPack];
    load_pack(in, pack, values);
#pragma unroll
    for (int e = 0; e < kPack; ++e) sum += static_cast<double>(values[e]) * values[e];
  }
  KOSMOS_TAIL_LOOP(i, packs, count) sum += static_cast<double>(in[i]) * in[i];
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// The whole packs of 8 in each row of `cols` elements, where every row of each of the tensors (base, row stride in
// elements, dtype) starts on 16 bytes; else 0.
struct RowsOf {
  const void * base;
  int64_t row_stride;
  DType dtype;
};
int64_t row_packs(int64_t cols, std::initializer_list<RowsOf> tensors) {
  for (const RowsOf & t : tensors)
    if (!aligned_to_pack(t.base) || t.row_stride * static_cast<int64_t>(dtype_size(t.dtype)) % 16 != 0) return 0;
  return cols / kPack;
}

}  // namespace

void gpu_op(GpuContext & ctx, const CrossEntropyForward & op, cudaStream_t stream) {
  const int64_t rows = op.logits.dim(0), vocab = op.logits.dim(1);
  if (rows == 0) {
    KOSMOS_GPU_CHECK(cudaMemsetAsync(op.loss.data, 0, sizeof(float), stream));
    return;
  }
  auto * row_loss = static_cast<double *>(ctx.scratch(kScratchRows, sizeof(double) * rows, stream));
  const int64_t packs = row_packs(vocab, {{op.logits.data, op.logits.stride(0), op.logits.dtype}});
  with_f32_or_bf16_storage(op.logits.dtype, "cross_entropy_forward", [&](auto logit_element) {
    using L = decltype(logit_element);
    cross_entropy_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        op.lse.as<float>(), row_loss, static_cast<const L *>(op.logits.data), op.logits.stride(0), packs,
        op.targets.as<int32_t>(), op.weights.as<float>(), vocab, op.vocab_start);
  });
  KOSMOS_GPU_LAUNCHED("cross_entropy_rows");
  ordered_sum_kernel<<<1, kThreads, 0, stream>>>(op.loss.as<float>(), row_loss, rows, op.loss_scale, false);
  KOSMOS_GPU_LAUNCHED("cross_entropy_sum");
}

void gpu_op(GpuContext &, const CrossEntropyBackward & op, cudaStream_t stream) {
  const int64_t rows = op.logits.dim(0), vocab = op.logits.dim(1);
  if (rows == 0) return;
  const int64_t packs = row_packs(vocab, {{op.logits.data, op.logits.stride(0), op.logits.dtype},
                                         {op.dlogits.data, op.dlogits.stride(0), op.dlogits.dtype}});
  with_storage(op.dlogits.dtype, [&](auto element) {
    with_f32_or_bf16_storage(op.logits.dtype, "cross_entropy_backward", [&](auto logit_element) {
      using T = decltype(element);
      using L = decltype(logit_element);
      cross_entropy_backward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
          static_cast<T *>(op.dlogits.data), op.dlogits.stride(0), static_cast<const L *>(op.logits.data),
          op.logits.stride(0), packs, op.targets.as<int32_t>(), op.weights.as<float>(), op.lse.as<float>(), vocab,
          op.vocab_start, op.dloss * op.loss_scale);
    });
  });
  KOSMOS_GPU_LAUNCHED("cross_entropy_backward");
}

void gpu_op(GpuContext &, const AdamWStep & op, cudaStream_t stream) {
  const int64_t count = op.param.numel();
  if (count == 0) return;
  const double correction1 = 1.0 - std::pow(static_cast<double>(op.beta1), static_cast<double>(op.step));
  const double correction2 = 1.0 - std::pow(static_cast<double>(op.beta2), static_cast<double>(op.step));
  const AdamWConstants constants{op.beta1, op.beta2, op.eps, op.grad_scale, static_cast<float>(op.lr / correction1),
                                  static_cast<float>(1.0 / std::sqrt(correction2)), 1.0f - op.lr * op.weight_decay};
  const int64_t packs = packs_of(count, {op.param.data, op.m.data, op.v.data, op.grad.data, op.compute_param.data});
  // Without a compute copy: the bf16 instance with a null copy (validate() keeps f32 copies out).
  with_storage(op.compute_param.present() ? op.compute_param.dtype : DType::kBF16, [&](auto element) {
    using Copy = decltype(element);
    if constexpr (!std::is_same_v<Copy, float>)
      adamw_kernel<<<pack_blocks(count, packs), kThreads, 0, stream>>>(
          op.param.as<float>(), op.m.as<float>(), op.v.as<float>(), op.grad.as<float>(),
          static_cast<Copy *>(op.compute_param.data), count, packs, constants);
  });
  KOSMOS_GPU_LAUNCHED("adamw_step");
}

void gpu_op(GpuContext & ctx, const SquaredNorm & op, cudaStream_t stream) {
  const int64_t count = op.in.numel();
  if (count == 0) return;
  const int64_t packs = packs_of(count, {op.in.data});
  // A small tensor (a bias, one tensor-parallel shard of many) takes the blocks it fills, not the whole grid.
  const unsigned blocks = std::min(kNormBlocks, pack_blocks(count, packs));
  auto * partials = static_cast<double *>(ctx.scratch(kScratchReduce, sizeof(double) * blocks, stream));
  squared_partials_kernel<<<blocks, kThreads, 0, stream>>>(partials, op.in.as<float>(), count, packs);
  KOSMOS_GPU_LAUNCHED("squared_norm_partials");
  ordered_sum_kernel<<<1, kThreads, 0, stream>>>(op.out.as<float>(), partials, blocks, 1.0, true);
  KOSMOS_GPU_LAUNCHED("squared_norm_sum");
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
