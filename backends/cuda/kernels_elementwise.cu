// kernels_elementwise.cu: the elementwise ops on the GPU (GELU and QuickGELU forward/backward, add with a trailing
// broadcast, scale, cast, strided copy, patchify, fill, dropout), and the deterministic column sums behind the
// bias gradient. One thread per element in grid-stride loops; dtypes through load_float/store_float.
#include "backends/cuda/gpu_kernels.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

constexpr float kInverseSqrt2 = 0.70710678118654752f;
constexpr float kInverseSqrt2Pi = 0.39894228040143268f;
constexpr float kQuickGeluSlope = 1.702f;

// The activations' tensors share one dtype, f32 or bf16; the arithmetic is f32.
__global__ void activation_forward_kernel(void * out, const void * in, DType dtype, int64_t count, Activation kind) {
  KOSMOS_GRID_LOOP(i, count) {
    const float x = load_float(in, dtype, i);
    store_float(out, dtype, i,
                kind == Activation::kGelu ? 0.5f * x * (1.0f + erff(x * kInverseSqrt2))
                                          : x / (1.0f + expf(-kQuickGeluSlope * x)));
  }
}

__global__ void activation_backward_kernel(void * din, const void * dout, const void * in, DType dtype, int64_t count,
                                           Activation kind) {
  KOSMOS_GRID_LOOP(i, count) {
    const float x = load_float(in, dtype, i);
    float slope;
    if (kind == Activation::kGelu) {
      slope = 0.5f * (1.0f + erff(x * kInverseSqrt2)) + x * kInverseSqrt2Pi * expf(-0.5f * x * x);
    } else {
      const float sigmoid = 1.0f / (1.0f + expf(-kQuickGeluSlope * x));
      slope = sigmoid + kQuickGeluSlope * x * sigmoid * (1.0f - sigmoid);
    }
    store_float(din, dtype, i, load_float(dout, dtype, i) * slope);
  }
}

// out[i] = a[i] + b[i % b_count]: b is a's shape (b_count == count) or its trailing dims.
__global__ void add_kernel(void * out, const void * a, const void * b, int64_t count, int64_t b_count, DType dtype) {
  KOSMOS_GRID_LOOP(i, count) store_float(out, dtype, i, load_float(a, dtype, i) + load_float(b, dtype, i % b_count));
}

__global__ void scale_kernel(void * out, const void * in, int64_t count, float alpha, DType dtype) {
  KOSMOS_GRID_LOOP(i, count) store_float(out, dtype, i, alpha * load_float(in, dtype, i));
}

// Element i of the logical (row-major) order of `layout`, as an offset in elements.
__device__ inline int64_t strided_offset(const Layout & layout, int64_t i) {
  int64_t offset = 0;
  for (int axis = layout.ndim - 1; axis >= 0; --axis) {
    offset += (i % layout.dims[axis]) * layout.strides[axis];
    i /= layout.dims[axis];
  }
  return offset;
}

__global__ void cast_kernel(void * out, DType out_dtype, const void * in, DType in_dtype, int64_t count) {
  KOSMOS_GRID_LOOP(i, count) store_float(out, out_dtype, i, load_float(in, in_dtype, i));
}
__global__ void strided_cast_kernel(void * out, DType out_dtype, Layout out_layout, const void * in, DType in_dtype,
                                    Layout in_layout, int64_t count) {
  KOSMOS_GRID_LOOP(i, count)
  store_float(out, out_dtype, strided_offset(out_layout, i), load_float(in, in_dtype, strided_offset(in_layout, i)));
}

template <typename Element>
__global__ void copy_kernel(Element * out, Layout out_layout, const Element * in, Layout in_layout, int64_t count) {
  KOSMOS_GRID_LOOP(i, count) out[strided_offset(out_layout, i)] = in[strided_offset(in_layout, i)];
}

// out[n, i*(W/p) + j, (c*p + y)*p + x] = images[n, c, i*p + y, j*p + x].
__global__ void patchify_kernel(float * out, const float * images, int64_t count, int64_t channels, int64_t height,
                                int64_t width, int64_t patch) {
  const int64_t across = width / patch, patches = (height / patch) * across, row = channels * patch * patch;
  KOSMOS_GRID_LOOP(index, count) {
    const int64_t column = index % row, p = (index / row) % patches, n = index / (row * patches);
    const int64_t x = column % patch, y = (column / patch) % patch, c = column / (patch * patch);
    const int64_t i = p / across, j = p % across;
    out[index] = images[((n * channels + c) * height + i * patch + y) * width + j * patch + x];
  }
}

__global__ void fill_kernel(void * out, DType dtype, int64_t count, float value) {
  KOSMOS_GRID_LOOP(i, count) store_float(out, dtype, i, value);
}

// One thread per Philox block: the (up to) four elements whose stream indices offset + i fall in it.
__global__ void dropout_kernel(float * out, const float * in, int64_t count, DropoutDraw draw, uint64_t offset) {
  const uint64_t first_block = offset >> 2;
  const int64_t blocks = static_cast<int64_t>(((offset + static_cast<uint64_t>(count) + 3) >> 2) - first_block);
  KOSMOS_GRID_LOOP(n, blocks) {
    const uint64_t block = first_block + static_cast<uint64_t>(n);
    const PhiloxBlock bits = philox_block(draw.seed, block);
#pragma unroll
    for (uint32_t lane = 0; lane < 4; ++lane) {
      const int64_t i = static_cast<int64_t>(block * 4 + lane - offset);
      if (i >= 0 && i < count) out[i] = in[i] * dropout_factor_of(draw, philox_lane(bits, lane));
    }
  }
}

// Column sums: a block of kWarp columns x (kThreads / kWarp) row lanes; each thread sums every lanes-th row of its
// column in order, then the lanes are summed in order, so the result does not depend on timing.
__global__ void column_sums_kernel(float * sums, const void * matrix, DType dtype, int64_t rows, int64_t cols,
                                   int64_t row_stride) {
  __shared__ float partial[kThreads];
  const int lanes = blockDim.x / kWarp;
  const int64_t column = static_cast<int64_t>(blockIdx.x) * kWarp + threadIdx.x % kWarp;
  const int lane = threadIdx.x / kWarp;
  float sum = 0.0f;
  if (column < cols)
    for (int64_t row = lane; row < rows; row += lanes) sum += load_float(matrix, dtype, row * row_stride + column);
  partial[threadIdx.x] = sum;
  __syncthreads();
  if (lane == 0 && column < cols) {
    float total = 0.0f;
    for (int l = 0; l < lanes; ++l) total += partial[l * kWarp + threadIdx.x];
    sums[column] += total;
  }
}

int64_t count_of(const TensorView & view) { return view.numel(); }

}  // namespace

void add_column_sums(float * sums, const void * matrix, DType dtype, int64_t rows, int64_t cols, int64_t row_stride,
                     cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((cols + kWarp - 1) / kWarp);
  column_sums_kernel<<<blocks, kThreads, 0, stream>>>(sums, matrix, dtype, rows, cols, row_stride);
  KOSMOS_GPU_LAUNCHED("column_sums");
}

void gpu_op(GpuContext &, const BiasBackward & op, cudaStream_t stream) {
  const int64_t cols = op.dout.dim(-1), rows = op.dout.rows();
  const int64_t row_stride = op.dout.ndim == 2 ? op.dout.stride(0) : cols;
  add_column_sums(op.dbias.as<float>(), op.dout.data, op.dout.dtype, rows, cols, row_stride, stream);
}

void gpu_op(GpuContext &, const ActivationForward & op, cudaStream_t stream) {
  const int64_t count = count_of(op.in);
  activation_forward_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.data, op.in.data, op.in.dtype, count,
                                                                        op.kind);
  KOSMOS_GPU_LAUNCHED("activation_forward");
}

void gpu_op(GpuContext &, const ActivationBackward & op, cudaStream_t stream) {
  const int64_t count = count_of(op.in);
  activation_backward_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.din.data, op.dout.data, op.in.data,
                                                                         op.in.dtype, count, op.kind);
  KOSMOS_GPU_LAUNCHED("activation_backward");
}

void gpu_op(GpuContext &, const Add & op, cudaStream_t stream) {
  const int64_t count = count_of(op.a);
  add_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.data, op.a.data, op.b.data, count, count_of(op.b),
                                                         op.a.dtype);
  KOSMOS_GPU_LAUNCHED("add");
}

void gpu_op(GpuContext &, const Scale & op, cudaStream_t stream) {
  const int64_t count = count_of(op.in);
  scale_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.data, op.in.data, count, op.alpha, op.in.dtype);
  KOSMOS_GPU_LAUNCHED("scale");
}

void gpu_op(GpuContext &, const Cast & op, cudaStream_t stream) {
  const int64_t count = count_of(op.in);
  if (count == 0) return;
  if (op.in.is_contiguous() && op.out.is_contiguous())
    cast_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.data, op.out.dtype, op.in.data, op.in.dtype, count);
  else
    strided_cast_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.data, op.out.dtype, layout_of(op.out),
                                                                    op.in.data, op.in.dtype, layout_of(op.in), count);
  KOSMOS_GPU_LAUNCHED("cast");
}

void gpu_op(GpuContext &, const Copy & op, cudaStream_t stream) {
  const int64_t count = count_of(op.in);
  if (count == 0) return;
  if (op.in.is_contiguous() && op.out.is_contiguous()) {
    KOSMOS_GPU_CHECK(cudaMemcpyAsync(op.out.data, op.in.data, static_cast<size_t>(count) * dtype_size(op.in.dtype),
                                     cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const unsigned blocks = blocks_for(count);
  if (dtype_size(op.in.dtype) == 4)
    copy_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint32_t *>(op.out.data), layout_of(op.out),
                                                 static_cast<const uint32_t *>(op.in.data), layout_of(op.in), count);
  else
    copy_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint16_t *>(op.out.data), layout_of(op.out),
                                                 static_cast<const uint16_t *>(op.in.data), layout_of(op.in), count);
  KOSMOS_GPU_LAUNCHED("copy");
}

void gpu_op(GpuContext &, const Patchify & op, cudaStream_t stream) {
  const int64_t count = count_of(op.out);
  patchify_kernel<<<blocks_for(count), kThreads, 0, stream>>>(
      op.out.as<float>(), op.images.as<float>(), count, op.images.dim(1), op.images.dim(2), op.images.dim(3), op.patch);
  KOSMOS_GPU_LAUNCHED("patchify");
}

void gpu_op(GpuContext &, const Fill & op, cudaStream_t stream) {
  const int64_t count = count_of(op.out);
  fill_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.data, op.out.dtype, count, op.value);
  KOSMOS_GPU_LAUNCHED("fill");
}

void gpu_op(GpuContext &, const DropoutForward & op, cudaStream_t stream) {
  const int64_t count = count_of(op.in);
  dropout_kernel<<<blocks_for(count / 4 + 2), kThreads, 0, stream>>>(
      op.out.as<float>(), op.in.as<float>(), count, dropout_draw(op.params.seed, op.params.p), op.params.offset);
  KOSMOS_GPU_LAUNCHED("dropout_forward");
}

void gpu_op(GpuContext &, const DropoutBackward & op, cudaStream_t stream) {
  const int64_t count = count_of(op.dout);
  dropout_kernel<<<blocks_for(count / 4 + 2), kThreads, 0, stream>>>(
      op.din.as<float>(), op.dout.as<float>(), count, dropout_draw(op.params.seed, op.params.p), op.params.offset);
  KOSMOS_GPU_LAUNCHED("dropout_backward");
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
