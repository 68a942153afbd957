// kernels_attention.cu: scaled dot-product attention on the GPU in FlashAttention's manner (no Tq x Tk matrix in
// memory; the forward saves the log-sum-exp, the backward recomputes the probabilities from it). One warp owns one
// row: a query row forward and for dq, a key row for dk and dv, so no two warps write the same gradient row and
// nothing needs atomics. Each lane holds head_dim / warp-size elements of its row; a dot product is a warp sum.
// Causal masking, dropout (backends/attention_dropout.h) and strided [B, H, T, dh] views as in ops.h.
// This is the f32 path; bf16 operands go to the tensor-core kernels (kernels_attention_mma.cu, or
// kernels_attention_tc.cu) where those take the head size on an NVIDIA card, else every bf16 tensor of the op is
// widened to f32 here and the results rounded back.
#include "backends/cuda/attention_shape.cuh"
#include "backends/cuda/gpu_kernels.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

constexpr int kPerLane = static_cast<int>((kMaxHeadDim + kWarp - 1) / kWarp);  // register slots per lane
constexpr int kRowsPerBlock = kThreads / kWarp;

// The lane's slice of a row (elements lane, lane + kWarp, ...) of f32 or bf16 into registers, times `factor`.
template <typename T>
__device__ inline void load_row(float (&target)[kPerLane], const T * row, int64_t head_dim, float factor) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + static_cast<int64_t>(e) * kWarp;
    target[e] = d < head_dim ? to_float(row[d]) * factor : 0.0f;
  }
}
template <typename T>
__device__ inline float row_dot(const float (&held)[kPerLane], const T * row, int64_t head_dim) {
  const int lane = threadIdx.x % kWarp;
  float sum = 0.0f;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + static_cast<int64_t>(e) * kWarp;
    if (d < head_dim) sum += held[e] * to_float(row[d]);
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
  AttentionDropoutRow dropout(s.dropout, s.dropout_row(b, h, i));  // keys in order: one block per 16
  for (int64_t j = 0; j < keys; ++j) {
    const float score = row_dot(query, k.row(b, h, j), s.head_dim);
    const float new_max = fmaxf(max_score, score);
    const float rescale = max_score == -INFINITY ? 0.0f : expf(max_score - new_max);
    const float p = expf(score - new_max);
    sum = sum * rescale + p;
    max_score = new_max;
    const float kept = s.dropout.active() ? p * dropout.factor(j) : p;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[e] *= rescale;
    add_scaled_row(acc, v.row(b, h, j), s.head_dim, kept);
  }
  const bool any = sum > 0.0f;
  store_row(out.row(b, h, i), acc, s.head_dim, any ? 1.0f / sum : 0.0f);
  if (threadIdx.x % kWarp == 0) lse[row] = any ? max_score + logf(sum) : -INFINITY;
}

// delta_i = dout_i . out_i, each f32 or bf16 (the tensor-core backward reads them as they are).
template <typename Gradient, typename Output>
__global__ void attention_delta_kernel(float * delta, HeadRowsOf<const Gradient> dout, HeadRowsOf<const Output> out,
                                       AttentionShape s) {
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
  AttentionDropoutRow dropout(s.dropout, s.dropout_row(b, h, i));
  for (int64_t j = 0; j < keys; ++j) {
    const float p = expf(row_dot(query, k.row(b, h, j), s.head_dim) - lse[row]);
    const float dp = row_dot(gradient, v.row(b, h, j), s.head_dim);
    const float factor = s.dropout.active() ? dropout.factor(j) : 1.0f;
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
    const float factor = s.dropout.active() ? s.dropout.factor(s.dropout_row(b, h, i), j) : 1.0f;
    add_scaled_row(dv_acc, dout.row(b, h, i), s.head_dim, p * factor);
    add_scaled_row(dk_acc, q.row(b, h, i), s.head_dim, p * (dp * factor - delta[rows_start + i]));
  }
  store_row(dk.row(b, h, j), dk_acc, s.head_dim, s.scale);
  store_row(dv.row(b, h, j), dv_acc, s.head_dim, 1.0f);
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

// An attention op with bf16 tensors as the f32 kernels take it: each bf16 input widened exactly into a dense f32
// copy in scratch, each bf16 output computed into one and rounded back by finish(); f32 views pass through.
class Widened {
 public:
  Widened(GpuContext & ctx, cudaStream_t stream) : ctx_(ctx), stream_(stream) { ctx.count_slow_path(); }
  TensorView input(const TensorView & view) {
    if (view.dtype == DType::kF32) return view;
    const TensorView wide = scratch_like(view);
    gpu_op(ctx_, Cast{wide, view}, stream_);
    return wide;
  }
  TensorView output(const TensorView & view) {
    if (view.dtype == DType::kF32) return view;
    outputs_[outputs_count_++] = {view, scratch_like(view)};
    return outputs_[outputs_count_ - 1].wide;
  }
  void finish() {
    for (int i = 0; i < outputs_count_; ++i) gpu_op(ctx_, Cast{outputs_[i].target, outputs_[i].wide}, stream_);
  }

 private:
  TensorView scratch_like(const TensorView & view) {
    KOSMOS_CHECK(next_slot_ < kScratchSlots, "attention: more than 8 widened tensors (internal error)");
    void * data = ctx_.scratch(next_slot_++, sizeof(float) * static_cast<size_t>(view.numel()), stream_);
    return make_view(data, DType::kF32, view.ndim, view.dims.data());
  }
  struct Output {
    TensorView target, wide;
  };
  GpuContext & ctx_;
  cudaStream_t stream_;
  int next_slot_ = kScratchWidened;
  Output outputs_[3];
  int outputs_count_ = 0;
};

bool all_f32(std::initializer_list<TensorView> views) {
  for (const TensorView & view : views)
    if (view.dtype != DType::kF32) return false;
  return true;
}

// delta = rowsum(dout * out) for each pairing of f32 and bf16.
void launch_delta(float * delta, const TensorView & dout, const TensorView & out, const AttentionShape & s,
                  cudaStream_t stream) {
  const unsigned blocks = row_blocks(s.batch * s.heads * s.tq);
  const bool dout_f32 = dout.dtype == DType::kF32, out_f32 = out.dtype == DType::kF32;
  if (dout_f32 && out_f32)
    attention_delta_kernel<<<blocks, kThreads, 0, stream>>>(delta, head_rows_of<const float>(dout),
                                                            head_rows_of<const float>(out), s);
  else if (dout_f32)
    attention_delta_kernel<<<blocks, kThreads, 0, stream>>>(delta, head_rows_of<const float>(dout),
                                                            head_rows_of<const Bf16Bits>(out), s);
  else if (out_f32)
    attention_delta_kernel<<<blocks, kThreads, 0, stream>>>(delta, head_rows_of<const Bf16Bits>(dout),
                                                            head_rows_of<const float>(out), s);
  else
    attention_delta_kernel<<<blocks, kThreads, 0, stream>>>(delta, head_rows_of<const Bf16Bits>(dout),
                                                            head_rows_of<const Bf16Bits>(out), s);
  KOSMOS_GPU_LAUNCHED("attention_delta");
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

// With no query no key is seen: dk and dv are zero (overwritten, as the op says), cast from one zero f32 through
// a view of zero strides.
void zero_key_gradients(GpuContext & ctx, const AttentionBackward & op, cudaStream_t stream) {
  void * zero = ctx.scratch(kScratchAttention, sizeof(float), stream);
  KOSMOS_GPU_CHECK(cudaMemsetAsync(zero, 0, sizeof(float), stream));
  for (const TensorView & gradient : {op.dk, op.dv}) {
    TensorView zeros = gradient;  // [B, H, Tk, dh] f32, every stride 0
    zeros.data = zero;
    zeros.dtype = DType::kF32;
    zeros.strides.fill(0);
    gpu_op(ctx, Cast{gradient, zeros}, stream);
  }
}

#ifndef KOSMOS_USE_ROCM
// Whether tensor-core attention runs on the mma.sync kernels (else on the WMMA ones). On cuda-cudnn this is asked
// only of ops cuDNN did not take: they run as on cuda.
bool on_mma(const GpuContext & ctx, const TensorView & q) {
  switch (ctx.attention_kernels()) {
    case AttentionKernels::kMma:
    case AttentionKernels::kCudnn: return mma_attention_takes(q.dim(3));
    case AttentionKernels::kWmma: return false;
  }
  return false;
}
#endif

}  // namespace

int64_t attention_keep_words(const GpuContext & ctx, const AttentionForward & op) {
#ifdef KOSMOS_CUDNN_ATTENTION
  if (cudnn_attention_takes(ctx, op)) return 0;  // cuDNN draws its masks again
#endif
#ifndef KOSMOS_USE_ROCM
  if (op.q.dtype != DType::kF32 && on_tensor_cores(op.q) && on_mma(ctx, op.q)) return mma_attention_keep_words(op);
#endif
  static_cast<void>(ctx);
  static_cast<void>(op);
  return 0;
}

void gpu_op(GpuContext & ctx, const AttentionForward & op, cudaStream_t stream) {
#ifdef KOSMOS_CUDNN_ATTENTION
  if (cudnn_attention_forward(ctx, op, stream)) return;
#endif
#ifndef KOSMOS_USE_ROCM
  if (op.q.dtype != DType::kF32 && on_tensor_cores(op.q))
    return on_mma(ctx, op.q) ? mma_attention_forward(ctx, op, stream) : tensor_core_attention_forward(op, stream);
#endif
  if (!all_f32({op.out, op.q})) {
    Widened wide(ctx, stream);
    gpu_op(ctx, AttentionForward{wide.output(op.out), op.lse, wide.input(op.q), wide.input(op.k), wide.input(op.v),
                                 op.params, op.keep},
           stream);
    return wide.finish();
  }
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  const int64_t rows = s.batch * s.heads * s.tq;
  if (rows == 0) return;
  attention_forward_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(
      head_rows(op.out), op.lse.as<float>(), head_rows(op.q), head_rows(op.k), head_rows(op.v), s);
  KOSMOS_GPU_LAUNCHED("attention_forward");
}

void gpu_op(GpuContext & ctx, const AttentionBackward & op, cudaStream_t stream) {
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  const int64_t query_rows = s.batch * s.heads * s.tq, key_rows = s.batch * s.heads * s.tk;
  if (query_rows == 0 && key_rows > 0) return zero_key_gradients(ctx, op, stream);
#ifdef KOSMOS_CUDNN_ATTENTION
  if (cudnn_attention_backward(ctx, op, stream)) return;
#endif
  const bool tensor_cores = op.q.dtype != DType::kF32 && on_tensor_cores(op.q);
  if (!tensor_cores && !all_f32({op.dq, op.dout, op.q, op.out})) {
    Widened wide(ctx, stream);
    gpu_op(ctx, AttentionBackward{wide.output(op.dq), wide.output(op.dk), wide.output(op.dv), wide.input(op.dout),
                                  wide.input(op.q), wide.input(op.k), wide.input(op.v), wide.input(op.out), op.lse,
                                  op.params, op.keep},
           stream);
    return wide.finish();
  }
  if (key_rows == 0) return;
  auto * delta = static_cast<float *>(ctx.scratch(kScratchAttention, sizeof(float) * query_rows, stream));
  launch_delta(delta, op.dout, op.out, s, stream);
#ifndef KOSMOS_USE_ROCM
  if (tensor_cores && on_mma(ctx, op.q)) {
    if (op.params.deterministic) return mma_attention_backward(ctx, op, delta, nullptr, stream);
    // One pass: dq added up in f32 scratch, then cast into dq's dtype and strides.
    const TensorView dq_sums = make_view(ctx.scratch(kScratchAttentionDq, sizeof(float) * op.dq.numel(), stream),
                                         DType::kF32, {s.batch, s.heads, s.tq, s.head_dim});
    mma_attention_backward(ctx, op, delta, dq_sums.as<float>(), stream);
    return gpu_op(ctx, Cast{op.dq, dq_sums}, stream);
  }
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
