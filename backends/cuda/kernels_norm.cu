// kernels_norm.cu: LayerNorm forward/backward and L2 normalisation forward/backward on the GPU: one block per row
// (the LayerNorm backward: per 32 rows), statistics in fp32 through block sums (mean first, then the centred
// variance, as the CPU's oneDNN does), and the LayerNorm weight and bias gradients as deterministic column sums.
#include "backends/cuda/gpu_kernels.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

// The activations are f32 or bf16 (each its own dtype, read and written through load_float / store_float); the
// statistics, parameters and sums are f32.
__global__ void layernorm_forward_kernel(void * out, DType out_dtype, float * mean_out, float * rstd_out,
                                         const void * in, DType in_dtype, const float * weight, const float * bias,
                                         int64_t cols, float eps) {
  __shared__ float shared[kThreads / kWarp];
  const int64_t row = blockIdx.x, base = row * cols;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += load_float(in, in_dtype, base + c);
  const float mean = block_sum(sum, shared) / static_cast<float>(cols);
  float squares = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float centred = load_float(in, in_dtype, base + c) - mean;
    squares += centred * centred;
  }
  const float rstd = rsqrtf(block_sum(squares, shared) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    store_float(out, out_dtype, base + c, (load_float(in, in_dtype, base + c) - mean) * rstd * weight[c] + bias[c]);
  if (threadIdx.x == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// The backward's activations, each f32 or bf16.
struct NormGradOperands {
  void * din;
  const void *dout, *in;
  DType din_dtype, dout_dtype, in_dtype;
};

// din = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dout * weight and xhat = (x - mean) * rstd.
__global__ void layernorm_backward_kernel(NormGradOperands t, const float * weight, const float * mean,
                                          const float * rstd, int64_t cols) {
  __shared__ float shared[kThreads / kWarp];
  const int64_t row = blockIdx.x, base = row * cols;
  const float mu = mean[row], r = rstd[row];
  float sum_g = 0.0f, sum_g_xhat = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float g = load_float(t.dout, t.dout_dtype, base + c) * weight[c];
    sum_g += g;
    sum_g_xhat += g * (load_float(t.in, t.in_dtype, base + c) - mu) * r;
  }
  const float mean_g = block_sum(sum_g, shared) / static_cast<float>(cols);
  const float mean_g_xhat = block_sum(sum_g_xhat, shared) / static_cast<float>(cols);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float xhat = (load_float(t.in, t.in_dtype, base + c) - mu) * r;
    const float g = load_float(t.dout, t.dout_dtype, base + c) * weight[c];
    store_float(t.din, t.din_dtype, base + c, r * (g - mean_g - xhat * mean_g_xhat));
  }
}

// The fused backward for rows of up to kFusedColumns: din as above, row by row, over kFusedRows rows per block,
// while each thread sums dout * xhat and dout over the block's rows for its columns (c = thread + k * blockDim) in
// registers; the block's sums go to partials [blocks, 2, cols] (weight then bias), which column sums reduce in a
// fixed order. dout and x are read once less than by the two-kernel path.
constexpr int kFusedRows = 32;
constexpr int kFusedColumnsPerThread = 32;
constexpr int64_t kFusedColumns = int64_t{kFusedColumnsPerThread} * kThreads;

__global__ void __launch_bounds__(kThreads)
    layernorm_backward_fused_kernel(NormGradOperands t, const float * weight, const float * mean, const float * rstd,
                                    int64_t rows, int64_t cols, float * partials) {
  __shared__ float shared[kThreads / kWarp];
  float weight_sum[kFusedColumnsPerThread], bias_sum[kFusedColumnsPerThread];
#pragma unroll
  for (int k = 0; k < kFusedColumnsPerThread; ++k) weight_sum[k] = bias_sum[k] = 0.0f;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kFusedRows;
  const int64_t last = first + kFusedRows < rows ? first + kFusedRows : rows;
  for (int64_t row = first; row < last; ++row) {
    const int64_t base = row * cols;
    const float mu = mean[row], r = rstd[row];
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
#pragma unroll
    for (int k = 0; k < kFusedColumnsPerThread; ++k) {
      const int64_t c = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (c < cols) {
        const float g = load_float(t.dout, t.dout_dtype, base + c) * weight[c];
        sum_g += g;
        sum_g_xhat += g * (load_float(t.in, t.in_dtype, base + c) - mu) * r;
      }
    }
    const float mean_g = block_sum(sum_g, shared) / static_cast<float>(cols);
    const float mean_g_xhat = block_sum(sum_g_xhat, shared) / static_cast<float>(cols);
#pragma unroll
    for (int k = 0; k < kFusedColumnsPerThread; ++k) {
      const int64_t c = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (c < cols) {
        const float dy = load_float(t.dout, t.dout_dtype, base + c);
        const float xhat = (load_float(t.in, t.in_dtype, base + c) - mu) * r;
        store_float(t.din, t.din_dtype, base + c, r * (dy * weight[c] - mean_g - xhat * mean_g_xhat));
        weight_sum[k] += dy * xhat;
        bias_sum[k] += dy;
      }
    }
  }
  float * block_partials = partials + static_cast<int64_t>(blockIdx.x) * 2 * cols;
#pragma unroll
  for (int k = 0; k < kFusedColumnsPerThread; ++k) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (c < cols) {
      block_partials[c] = weight_sum[k];
      block_partials[cols + c] = bias_sum[k];
    }
  }
}

// The two-kernel path's parameter gradients, for rows wider than kFusedColumns: dweight[c] += sum over rows of
// dout * xhat, dbias[c] += sum of dout: column sums in a fixed order (see column_sums_kernel), xhat recomputed from
// the saved statistics.
__global__ void layernorm_parameter_grads_kernel(float * dweight, float * dbias, NormGradOperands t,
                                                 const float * mean, const float * rstd, int64_t rows, int64_t cols) {
  __shared__ float partial_weight[kThreads], partial_bias[kThreads];
  const int lanes = blockDim.x / kWarp;
  const int64_t column = static_cast<int64_t>(blockIdx.x) * kWarp + threadIdx.x % kWarp;
  const int lane = threadIdx.x / kWarp;
  float sum_weight = 0.0f, sum_bias = 0.0f;
  if (column < cols) {
    for (int64_t row = lane; row < rows; row += lanes) {
      const float dy = load_float(t.dout, t.dout_dtype, row * cols + column);
      sum_weight += dy * (load_float(t.in, t.in_dtype, row * cols + column) - mean[row]) * rstd[row];
      sum_bias += dy;
    }
  }
  partial_weight[threadIdx.x] = sum_weight;
  partial_bias[threadIdx.x] = sum_bias;
  __syncthreads();
  if (lane == 0 && column < cols) {
    float total_weight = 0.0f, total_bias = 0.0f;
    for (int l = 0; l < lanes; ++l) {
      total_weight += partial_weight[l * kWarp + threadIdx.x];
      total_bias += partial_bias[l * kWarp + threadIdx.x];
    }
    dweight[column] += total_weight;
    dbias[column] += total_bias;
  }
}

__global__ void l2_normalize_forward_kernel(float * out, float * norm_out, const float * in, int64_t cols, float eps) {
  __shared__ float shared[kThreads / kWarp];
  const int64_t row = blockIdx.x;
  const float * x = in + row * cols;
  float squares = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) squares += x[c] * x[c];
  const float norm = sqrtf(block_sum(squares, shared));
  const float inverse = 1.0f / fmaxf(norm, eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[row * cols + c] = x[c] * inverse;
  if (threadIdx.x == 0) norm_out[row] = norm;
}

// din = (dy - y (y . dy)) / ||x||, or dy / eps where the norm was clamped.
__global__ void l2_normalize_backward_kernel(float * din, const float * dout, const float * out, const float * norm,
                                             int64_t cols, float eps) {
  __shared__ float shared[kThreads / kWarp];
  const int64_t row = blockIdx.x;
  const float * y = out + row * cols;
  const float * dy = dout + row * cols;
  if (norm[row] <= eps) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) din[row * cols + c] = dy[c] / eps;
    return;
  }
  float dot = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += y[c] * dy[c];
  dot = block_sum(dot, shared);
  const float inverse = 1.0f / norm[row];
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) din[row * cols + c] = (dy[c] - y[c] * dot) * inverse;
}

unsigned row_blocks(const TensorView & view) { return static_cast<unsigned>(view.rows()); }

}  // namespace

void gpu_op(GpuContext &, const LayerNormForward & op, cudaStream_t stream) {
  if (op.in.rows() == 0) return;
  layernorm_forward_kernel<<<row_blocks(op.in), kThreads, 0, stream>>>(
      op.out.data, op.out.dtype, op.mean.as<float>(), op.rstd.as<float>(), op.in.data, op.in.dtype,
      op.weight.as<float>(), op.bias.as<float>(), op.in.dim(-1), op.eps);
  KOSMOS_GPU_LAUNCHED("layernorm_forward");
}

void gpu_op(GpuContext & ctx, const LayerNormBackward & op, cudaStream_t stream) {
  const int64_t rows = op.in.rows(), cols = op.in.dim(-1);
  if (rows == 0) return;
  const NormGradOperands operands{op.din.data, op.dout.data, op.in.data, op.din.dtype, op.dout.dtype, op.in.dtype};
  if (cols <= kFusedColumns) {
    const int64_t blocks = (rows + kFusedRows - 1) / kFusedRows;
    auto * partials = static_cast<float *>(ctx.scratch(kScratchRows, sizeof(float) * 2 * blocks * cols, stream));
    layernorm_backward_fused_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        operands, op.weight.as<float>(), op.mean.as<float>(), op.rstd.as<float>(), rows, cols, partials);
    KOSMOS_GPU_LAUNCHED("layernorm_backward_fused");
    add_column_sums(op.dweight.as<float>(), partials, DType::kF32, blocks, cols, 2 * cols, stream);
    add_column_sums(op.dbias.as<float>(), partials + cols, DType::kF32, blocks, cols, 2 * cols, stream);
    return;
  }
  layernorm_backward_kernel<<<row_blocks(op.in), kThreads, 0, stream>>>(operands, op.weight.as<float>(),
                                                                        op.mean.as<float>(), op.rstd.as<float>(), cols);
  KOSMOS_GPU_LAUNCHED("layernorm_backward");
  const unsigned blocks = static_cast<unsigned>((cols + kWarp - 1) / kWarp);
  layernorm_parameter_grads_kernel<<<blocks, kThreads, 0, stream>>>(op.dweight.as<float>(), op.dbias.as<float>(),
                                                                    operands, op.mean.as<float>(), op.rstd.as<float>(),
                                                                    rows, cols);
  KOSMOS_GPU_LAUNCHED("layernorm_parameter_grads");
}

void gpu_op(GpuContext &, const L2NormalizeForward & op, cudaStream_t stream) {
  if (op.in.rows() == 0) return;
  l2_normalize_forward_kernel<<<row_blocks(op.in), kThreads, 0, stream>>>(op.out.as<float>(), op.norm.as<float>(),
                                                                          op.in.as<float>(), op.in.dim(-1), op.eps);
  KOSMOS_GPU_LAUNCHED("l2_normalize_forward");
}

void gpu_op(GpuContext &, const L2NormalizeBackward & op, cudaStream_t stream) {
  if (op.out.rows() == 0) return;
  l2_normalize_backward_kernel<<<row_blocks(op.out), kThreads, 0, stream>>>(
      op.din.as<float>(), op.dout.as<float>(), op.out.as<float>(), op.norm.as<float>(), op.out.dim(-1), op.eps);
  KOSMOS_GPU_LAUNCHED("l2_normalize_backward");
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
