// kernels_attention.cu: scaled dot-product attention on the GPU in FlashAttention's manner (no Tq x Tk matrix in
// memory; the forward saves the log-sum-exp, the backward recomputes the probabilities from it). One warp owns one
// row: a query row forward and for dq, a key row for dk and dv, so no two warps write the same gradient row and
// nothing needs atomics. Each lane holds head_dim / warp-size elements of its row; a dot product is a warp sum.
// Causal masking, dropout (Philox, the CPU's element indices) and strided [B, H, T, dh] views as in ops.h.
// This is the f32 path; bf16 operands go to the tensor-core kernels (kernels_attention_tc.cu) where those take the
// head size on an NVIDIA card, else they are widened to f32 here.
#include "backends/cuda/attention_shape.cuh"
#include "backends/cuda/gpu_kernels.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

constexpr int kPerLane = static_cast<int>((kMaxHeadDim + kWarp - 1) / kWarp);  // register slots per lane
constexpr int kRowsPerBlock = kThreads / kWarp;

// The lane's slice of a row (elements lane, lane + kWarp, ...) into registers, times `factor`.
__device__ inline void load_row(float (&target)[kPerLane], const float * row, int64_t head_dim, float factor) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + static_cast<int64_t>(e) * kWarp;
    target[e] = d < head_dim ? row[d] * factor : 0.0f;
  }
}
__device__ inline float row_dot(const float (&held)[kPerLane], const float * row, int64_t head_dim) {
  const int lane = threadIdx.x % kWarp;
  float sum = 0.0f;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + static_cast<int64_t>(e) * kWarp;
    if (d < head_dim) sum += held[e] * row[d];
  }
  return warp_sum(sum);
}
__device__ inline void add_scaled_row(float (&acc)[kPerLane], const float * row, int64_t head_dim, float factor) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + static_cast<int64_t>(e) * kWarp;
    if (d < head_dim) acc[e] += factor * row[d];
  }
}
__device__ inline void store_row(float * row, const float (&values)[kPerLane], int64_t head_dim, float factor) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + static_cast<int64_t>(e) * kWarp;
    if (d < head_dim) row[d] = values[e] * factor;
  }
}

// The warp's row among all B * H * rows rows; false for the warps past the end.
__device__ inline bool warp_row(int64_t rows_total, int64_t & row) {
  row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  return row < rows_total;
}

__global__ void attention_forward_kernel(HeadRows out, float * lse, HeadRows q, HeadRows k, HeadRows v,
                                         AttentionShape s) {
  int64_t row;
  if (!warp_row(s.batch * s.heads * s.tq, row)) return;
  const int64_t i = row % s.tq, h = (row / s.tq) % s.heads, b = row / (s.tq * s.heads);
  float query[kPerLane], acc[kPerLane];
  load_row(query, q.row(b, h, i), s.head_dim, s.scale);
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) acc[e] = 0.0f;
  float max_score = -INFINITY, sum = 0.0f;
  const int64_t keys = s.keys_for(i);
  const uint64_t dropout_start = s.dropout ? s.dropout_row(b, h, i) : 0;
  for (int64_t j = 0; j < keys; ++j) {
    const float score = row_dot(query, k.row(b, h, j), s.head_dim);
    const float new_max = fmaxf(max_score, score);
    const float rescale = max_score == -INFINITY ? 0.0f : expf(max_score - new_max);
    const float p = expf(score - new_max);
    sum = sum * rescale + p;
    max_score = new_max;
    const float kept = s.dropout ? p * dropout_factor(s.draw, dropout_start + j) : p;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[e] *= rescale;
    add_scaled_row(acc, v.row(b, h, j), s.head_dim, kept);
  }
  const bool any = sum > 0.0f;
  store_row(out.row(b, h, i), acc, s.head_dim, any ? 1.0f / sum : 0.0f);
  if (threadIdx.x % kWarp == 0) lse[row] = any ? max_score + logf(sum) : -INFINITY;
}

// delta_i = dout_i . out_i
__global__ void attention_delta_kernel(float * delta, HeadRows dout, HeadRows out, AttentionShape s) {
  int64_t row;
  if (!warp_row(s.batch * s.heads * s.tq, row)) return;
  const int64_t i = row % s.tq, h = (row / s.tq) % s.heads, b = row / (s.tq * s.heads);
  float held[kPerLane];
  load_row(held, dout.row(b, h, i), s.head_dim, 1.0f);
  const float value = row_dot(held, out.row(b, h, i), s.head_dim);
  if (threadIdx.x % kWarp == 0) delta[row] = value;
}

// dq_i = scale * sum_j ds_ij k_j, ds_ij = p_ij (dp_ij f_ij - delta_i), dp_ij = dout_i . v_j, f the dropout factor.
__global__ void attention_dq_kernel(HeadRows dq, HeadRows dout, HeadRows q, HeadRows k, HeadRows v, const float * lse,
                                    const float * delta, AttentionShape s) {
  int64_t row;
  if (!warp_row(s.batch * s.heads * s.tq, row)) return;
  const int64_t i = row % s.tq, h = (row / s.tq) % s.heads, b = row / (s.tq * s.heads);
  float query[kPerLane], gradient[kPerLane], acc[kPerLane];
  load_row(query, q.row(b, h, i), s.head_dim, s.scale);
  load_row(gradient, dout.row(b, h, i), s.head_dim, 1.0f);
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) acc[e] = 0.0f;
  const int64_t keys = s.keys_for(i);
  const uint64_t dropout_start = s.dropout ? s.dropout_row(b, h, i) : 0;
  for (int64_t j = 0; j < keys; ++j) {
    const float p = expf(row_dot(query, k.row(b, h, j), s.head_dim) - lse[row]);
    const float dp = row_dot(gradient, v.row(b, h, j), s.head_dim);
    const float factor = s.dropout ? dropout_factor(s.draw, dropout_start + j) : 1.0f;
    add_scaled_row(acc, k.row(b, h, j), s.head_dim, p * (dp * factor - delta[row]));
  }
  store_row(dq.row(b, h, i), acc, s.head_dim, s.scale);
}

// dv_j = sum_i p_ij f_ij dout_i, dk_j = scale * sum_i ds_ij q_i, over the queries that see key j.
__global__ void attention_dkdv_kernel(HeadRows dk, HeadRows dv, HeadRows dout, HeadRows q, HeadRows k, HeadRows v,
                                      const float * lse, const float * delta, AttentionShape s) {
  int64_t key_row;
  if (!warp_row(s.batch * s.heads * s.tk, key_row)) return;
  const int64_t j = key_row % s.tk, h = (key_row / s.tk) % s.heads, b = key_row / (s.tk * s.heads);
  float key[kPerLane], value[kPerLane], dk_acc[kPerLane], dv_acc[kPerLane];
  load_row(key, k.row(b, h, j), s.head_dim, s.scale);
  load_row(value, v.row(b, h, j), s.head_dim, 1.0f);
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) dk_acc[e] = dv_acc[e] = 0.0f;
  const int64_t rows_start = (b * s.heads + h) * s.tq;
  for (int64_t i = s.queries_from(j); i < s.tq; ++i) {
    const float p = expf(row_dot(key, q.row(b, h, i), s.head_dim) - lse[rows_start + i]);
    const float dp = row_dot(value, dout.row(b, h, i), s.head_dim);
    const float factor = s.dropout ? dropout_factor(s.draw, s.dropout_row(b, h, i) + j) : 1.0f;
    add_scaled_row(dv_acc, dout.row(b, h, i), s.head_dim, p * factor);
    add_scaled_row(dk_acc, q.row(b, h, i), s.head_dim, p * (dp * factor - delta[rows_start + i]));
  }
  store_row(dk.row(b, h, j), dk_acc, s.head_dim, s.scale);
  store_row(dv.row(b, h, j), dv_acc, s.head_dim, 1.0f);
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

// A dense f32 copy of a bf16 operand in scratch slot `slot` (exact), for the f32 kernels.
TensorView widened(GpuContext & ctx, const TensorView & view, int slot, cudaStream_t stream) {
  const TensorView wide = make_view(ctx.scratch(slot, sizeof(float) * static_cast<size_t>(view.numel()), stream),
                                    DType::kF32, view.ndim, view.dims.data());
  gpu_op(ctx, Cast{wide, view}, stream);
  return wide;
}

// Whether bf16 operands of this head size run on tensor cores here (else they are widened to f32).
bool on_tensor_cores(const TensorView & q) {
#ifdef KOSMOS_USE_ROCM
  (void)q;
  return false;
#else
  return tensor_core_attention_takes(q.dim(3));
#endif
}

}  // namespace

void gpu_op(GpuContext & ctx, const AttentionForward & op, cudaStream_t stream) {
  if (op.q.dtype != DType::kF32) {
#ifndef KOSMOS_USE_ROCM
    if (on_tensor_cores(op.q)) return tensor_core_attention_forward(op, stream);
#endif
    return gpu_op(ctx, AttentionForward{op.out, op.lse, widened(ctx, op.q, kScratchWideQ, stream),
                                        widened(ctx, op.k, kScratchWideK, stream),
                                        widened(ctx, op.v, kScratchWideV, stream), op.params},
                  stream);
  }
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  const int64_t rows = s.batch * s.heads * s.tq;
  if (rows == 0) return;
  attention_forward_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(
      head_rows(op.out), op.lse.as<float>(), head_rows(op.q), head_rows(op.k), head_rows(op.v), s);
  KOSMOS_GPU_LAUNCHED("attention_forward");
}

void gpu_op(GpuContext & ctx, const AttentionBackward & op, cudaStream_t stream) {
  const bool tensor_cores = op.q.dtype != DType::kF32 && on_tensor_cores(op.q);
  if (op.q.dtype != DType::kF32 && !tensor_cores)
    return gpu_op(ctx, AttentionBackward{op.dq, op.dk, op.dv, op.dout, widened(ctx, op.q, kScratchWideQ, stream),
                                         widened(ctx, op.k, kScratchWideK, stream),
                                         widened(ctx, op.v, kScratchWideV, stream), op.out, op.lse, op.params},
                  stream);
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  const int64_t query_rows = s.batch * s.heads * s.tq, key_rows = s.batch * s.heads * s.tk;
  if (query_rows == 0 || key_rows == 0) return;
  auto * delta = static_cast<float *>(ctx.scratch(kScratchAttention, sizeof(float) * query_rows, stream));
  attention_delta_kernel<<<row_blocks(query_rows), kThreads, 0, stream>>>(delta, head_rows(op.dout), head_rows(op.out),
                                                                          s);
  KOSMOS_GPU_LAUNCHED("attention_delta");
#ifndef KOSMOS_USE_ROCM
  if (tensor_cores) return tensor_core_attention_backward(op, delta, stream);
#endif
  attention_dq_kernel<<<row_blocks(query_rows), kThreads, 0, stream>>>(head_rows(op.dq), head_rows(op.dout),
                                                                       head_rows(op.q), head_rows(op.k),
                                                                       head_rows(op.v), op.lse.as<float>(), delta, s);
  KOSMOS_GPU_LAUNCHED("attention_dq");
  attention_dkdv_kernel<<<row_blocks(key_rows), kThreads, 0, stream>>>(
      head_rows(op.dk), head_rows(op.dv), head_rows(op.dout), head_rows(op.q), head_rows(op.k), head_rows(op.v),
      op.lse.as<float>(), delta, s);
  KOSMOS_GPU_LAUNCHED("attention_dkdv");
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
