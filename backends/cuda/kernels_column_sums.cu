// kernels_column_sums.cu: deterministic column sums of a [rows, cols] matrix added into f32 sums, the reduction
// behind the bias gradient (BiasBackward) and the LayerNorm parameter gradients. Two passes: blocks of 256 columns x
// a chunk of rows write partial sums [chunks, cols], in packs of 8 columns per thread; then one thread per column
// adds its chunks in order. The chunking depends on the shape and the warp width only, so the result does not depend
// on timing. Matrices the packs do not fit (unaligned, odd widths) take one pass of one column per thread. The first
// pass may also make the rows it adds up: the dropout's gradient, stored as it is summed (DropoutBackward's
// din_column_sums, the bias gradient of the projection before the dropout, without a pass of its own over din).
#include "backends/cuda/gpu_kernels.h"
#include "backends/cuda/vector_access.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int64_t kColumnsPerBlock = int64_t{kPack} * kWarp;  // a warp's lanes side by side, a pack each
constexpr int64_t kTargetBlocks = 1024;                       // enough to fill the largest GPU's SMs a few times
constexpr int64_t kMinChunkRows = 64;

// sums[c] += sum over rows of matrix[row * row_stride + c], one thread per column: kWarp columns x kWarpsPerBlock
// row lanes per block, each lane summing every kWarpsPerBlock-th row in order, then the lanes in order.
__global__ void column_sums_kernel(float * sums, const void * matrix, DType dtype, int64_t rows, int64_t cols,
                                   int64_t row_stride) {
  __shared__ float partial[kThreads];
  const int64_t column = static_cast<int64_t>(blockIdx.x) * kWarp + threadIdx.x % kWarp;
  const int lane = threadIdx.x / kWarp;
  float sum = 0.0f;
  if (column < cols)
    for (int64_t row = lane; row < rows; row += kWarpsPerBlock)
      sum += load_float(matrix, dtype, row * row_stride + column);
  partial[threadIdx.x] = sum;
  __syncthreads();
  if (lane == 0 && column < cols) {
    float total = 0.0f;
    for (int l = 0; l < kWarpsPerBlock; ++l) total += partial[l * kWarp + threadIdx.x];
    sums[column] += total;
  }
}

// Where the first pass's rows come from: a matrix's own, or (DropoutGradientRows) made by the pass itself. `pack`
// gives the 8 values at (row, column), column a multiple of 8.
template <typename T>
struct MatrixRows {
  static constexpr int kRowsUnrolled = 4;  // loads in flight
  const T * matrix;
  int64_t row_stride;  // a multiple of 8, matrix 16-byte aligned
  __device__ void pack(int64_t row, int64_t column, float (&values)[kPack]) const {
    load_pack(matrix + row * row_stride + column, 0, values);
  }
};
// din = dout times the dropout's factors, [rows, cols] dense (cols a multiple of 8, both 16-byte aligned), stored in
// Out as the dropout kernel stores it (each product rounded on its own, by dropped_onto: no compiler may fuse it into
// the sum after it) and given back as stored, for the sums.
template <typename Out>
struct DropoutGradientRows {
  static constexpr int kRowsUnrolled = 1;  // each pack's Philox blocks take registers enough (4 rows: 208 a thread)
  Out * din;
  const float * dout;
  int64_t cols;
  DropoutDraw draw;
  uint64_t offset;
  __device__ void pack(int64_t row, int64_t column, float (&values)[kPack]) const {
    const int64_t first = row * cols + column;
    float factors[kPack];
    load_pack(dout + first, 0, values);
    dropout_pack_factors(draw, offset + static_cast<uint64_t>(first), factors);
#pragma unroll
    for (int e = 0; e < kPack; ++e) values[e] = as_stored<Out>(dropped_onto(0.0f, values[e], factors[e]));
    store_pack(din + first, 0, values);
  }
};

// partials[chunk, c] = sum of the rows [chunk * chunk_rows, + chunk_rows) at column c, for block (x: columns
// [256 x, + 256), y: chunk). Warp w takes rows w, w + 8, ... of the chunk; lane l its pack of columns 8 l .. 8 l + 7;
// the warps' sums are then added in order. cols is a multiple of 8.
template <typename Rows>
__global__ void __launch_bounds__(kThreads)
    column_partials_kernel(float * partials, Rows source, int64_t rows, int64_t cols, int64_t chunk_rows) {
  __shared__ float warp_sums[kWarpsPerBlock][kColumnsPerBlock];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t first_column = static_cast<int64_t>(blockIdx.x) * kColumnsPerBlock;
  const int64_t column = first_column + int64_t{lane} * kPack;
  const int64_t first_row = static_cast<int64_t>(blockIdx.y) * chunk_rows;
  const int64_t end_row = first_row + chunk_rows < rows ? first_row + chunk_rows : rows;
  float sum[kPack] = {};
  if (column < cols) {
#pragma unroll Rows::kRowsUnrolled
    for (int64_t row = first_row + warp; row < end_row; row += kWarpsPerBlock) {
      float values[kPack];
      source.pack(row, column, values);
#pragma unroll
      for (int e = 0; e < kPack; ++e) sum[e] += values[e];
    }
  }
#pragma unroll
  for (int e = 0; e < kPack; ++e) warp_sums[warp][lane * kPack + e] = sum[e];
  __syncthreads();
  for (int64_t c = threadIdx.x; c < kColumnsPerBlock; c += blockDim.x) {
    if (first_column + c >= cols) continue;
    float total = 0.0f;
    for (int w = 0; w < kWarpsPerBlock; ++w) total += warp_sums[w][c];
    partials[static_cast<int64_t>(blockIdx.y) * cols + first_column + c] = total;
  }
}

// How the two passes cut [rows, cols]: blocks of 256 columns, rows in `chunks` of `chunk_rows`, enough blocks to
// fill the GPU a few times and chunks of at least kMinChunkRows rows.
struct RowChunks {
  int64_t column_blocks, chunks, chunk_rows;
};
RowChunks row_chunks(int64_t rows, int64_t cols) {
  const int64_t column_blocks = (cols + kColumnsPerBlock - 1) / kColumnsPerBlock;
  const int64_t most_chunks = (rows + kMinChunkRows - 1) / kMinChunkRows;
  int64_t chunks = kTargetBlocks / column_blocks;
  chunks = chunks < 1 ? 1 : (chunks > most_chunks ? most_chunks : chunks);
  const int64_t chunk_rows = (rows + chunks - 1) / chunks;
  return {column_blocks, (rows + chunk_rows - 1) / chunk_rows, chunk_rows};
}

// Both passes over `source`'s rows, their sums added into sums[cols].
template <typename Rows>
void add_chunked_column_sums(GpuContext & ctx, float * sums, const Rows & source, int64_t rows, int64_t cols,
                             const RowChunks & cut, cudaStream_t stream) {
  auto * partials = static_cast<float *>(ctx.scratch(kScratchColumnSums, sizeof(float) * cut.chunks * cols, stream));
  const dim3 grid(static_cast<unsigned>(cut.column_blocks), static_cast<unsigned>(cut.chunks));
  column_partials_kernel<<<grid, kThreads, 0, stream>>>(partials, source, rows, cols, cut.chunk_rows);
  KOSMOS_GPU_LAUNCHED("column_partials");
  const unsigned blocks = static_cast<unsigned>((cols + kWarp - 1) / kWarp);
  column_sums_kernel<<<blocks, kThreads, 0, stream>>>(sums, partials, DType::kF32, cut.chunks, cols, cols);
  KOSMOS_GPU_LAUNCHED("column_sums");
}

}  // namespace

void add_column_sums(GpuContext & ctx, float * sums, const void * matrix, DType dtype, int64_t rows, int64_t cols,
                     int64_t row_stride, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const RowChunks cut = row_chunks(rows, cols);
  const bool packed = dtype != DType::kI32 && cols % kPack == 0 && row_stride % kPack == 0 && aligned_to_pack(matrix);
  if (!packed || cut.chunks < 2) {  // one pass
    const unsigned blocks = static_cast<unsigned>((cols + kWarp - 1) / kWarp);
    column_sums_kernel<<<blocks, kThreads, 0, stream>>>(sums, matrix, dtype, rows, cols, row_stride);
    KOSMOS_GPU_LAUNCHED("column_sums");
    return;
  }
  with_storage(dtype, [&](auto element) {
    using T = decltype(element);
    add_chunked_column_sums(ctx, sums, MatrixRows<T>{static_cast<const T *>(matrix), row_stride}, rows, cols, cut,
                            stream);
  });
}

bool dropout_gradient_with_column_sums(GpuContext & ctx, const DropoutBackward & op, cudaStream_t stream) {
  const int64_t cols = op.din.dim(-1), rows = op.din.rows();
  if (cols % kPack != 0 || !aligned_to_pack({op.din.data, op.dout.data})) return false;
  if (rows == 0 || cols == 0) return true;
  with_storage(op.din.dtype, [&](auto element) {
    using Out = decltype(element);
    const DropoutGradientRows<Out> source{static_cast<Out *>(op.din.data), op.dout.as<float>(), cols,
                                          dropout_draw(op.params.seed, op.params.p), op.params.offset};
    add_chunked_column_sums(ctx, op.din_column_sums.as<float>(), source, rows, cols, row_chunks(rows, cols), stream);
  });
  return true;
}

void gpu_op(GpuContext & ctx, const BiasBackward & op, cudaStream_t stream) {
  const int64_t cols = op.dout.dim(-1), rows = op.dout.rows();
  const int64_t row_stride = op.dout.ndim == 2 ? op.dout.stride(0) : cols;
  add_column_sums(ctx, op.dbias.as<float>(), op.dout.data, op.dout.dtype, rows, cols, row_stride, stream);
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
