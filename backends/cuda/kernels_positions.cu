// kernels_positions.cu: what turns ids and positions into vectors on the GPU: the token embedding (vocab-slice
// aware gather; a scatter-add backward that groups the tokens by row, then adds each row's in token order, so the
// sums are deterministic), fairseq's sinusoidal positions, and xPos (kosmos-spec section 4) with its factors
// computed in double into a table, as the CPU's are (kept while the next op asks for the same one).
#include <algorithm>
#include <cstring>

#include "backends/cuda/gpu_kernels.h"
#include "backends/cuda/vector_access.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

__global__ void embedding_forward_kernel(float * out, const int32_t * ids, const float * table, int64_t count,
                                         int64_t width, int64_t rows, int64_t vocab_start) {
  KOSMOS_GRID_LOOP(index, count * width) {
    const int64_t n = index / width, d = index % width;
    const int64_t row = ids[n] - vocab_start;
    out[index] = row >= 0 && row < rows ? table[row * width + d] : 0.0f;
  }
}

// The backward groups the tokens by row (a counting sort), then one block per row present adds that row's gradient
// rows in token order, each column in turn: the sums are deterministic, and the same as the CPU's (which adds each
// token's row in order). Before, one thread per column walked every id: 2048 threads for the paper's width, which
// left an H200 at 47 GB/s and 8.6 ms a step (kosmos bench ops, 2026-12-04).
// The ids that add to this slice of the table: in it, and not the padding id.
__device__ inline bool adds_to_slice(int64_t id, int64_t rows, int64_t vocab_start, int64_t padding_idx) {
  return id != padding_idx && id - vocab_start >= 0 && id - vocab_start < rows;
}

// How many tokens each row has.
__global__ void embedding_count_kernel(int32_t * counts, const int32_t * ids, int64_t count, int64_t rows,
                                       int64_t vocab_start, int64_t padding_idx) {
  KOSMOS_GRID_LOOP(n, count) {
    if (adds_to_slice(ids[n], rows, vocab_start, padding_idx)) atomicAdd(&counts[ids[n] - vocab_start], 1);
  }
}

// One block: each row's first place in the grouped order (`cursor`, the prefix sum of the counts), and the rows
// present (a count above 0) in row order, with how many there are at present[rows].
__global__ void embedding_group_starts_kernel(int32_t * cursor, int32_t * present, const int32_t * counts,
                                              int64_t rows) {
  __shared__ int32_t tokens_before[kThreads], present_before[kThreads];
  const int64_t chunk = (rows + blockDim.x - 1) / blockDim.x;
  const int64_t first = threadIdx.x * chunk, last = first + chunk < rows ? first + chunk : rows;
  int32_t tokens = 0, present_rows = 0;
  for (int64_t row = first; row < last; ++row) {
    tokens += counts[row];
    present_rows += counts[row] > 0;
  }
  tokens_before[threadIdx.x] = tokens;
  present_before[threadIdx.x] = present_rows;
  __syncthreads();
  if (threadIdx.x == 0) {  // exclusive prefix sums over the threads' chunks, in order
    int32_t tokens_total = 0, present_total = 0;
    for (unsigned t = 0; t < blockDim.x; ++t) {
      const int32_t chunk_tokens = tokens_before[t], chunk_present = present_before[t];
      tokens_before[t] = tokens_total;
      present_before[t] = present_total;
      tokens_total += chunk_tokens;
      present_total += chunk_present;
    }
    present[rows] = present_total;
  }
  __syncthreads();
  tokens = tokens_before[threadIdx.x];
  present_rows = present_before[threadIdx.x];
  for (int64_t row = first; row < last; ++row) {
    cursor[row] = tokens;
    tokens += counts[row];
    if (counts[row] > 0) present[present_rows++] = static_cast<int32_t>(row);
  }
}

// Each token's index into its row's group (in no particular order within the group; the row's block sorts it).
__global__ void embedding_group_kernel(int32_t * grouped, int32_t * cursor, const int32_t * ids, int64_t count,
                                       int64_t rows, int64_t vocab_start, int64_t padding_idx) {
  KOSMOS_GRID_LOOP(n, count) {
    if (adds_to_slice(ids[n], rows, vocab_start, padding_idx))
      grouped[atomicAdd(&cursor[ids[n] - vocab_start], 1)] = static_cast<int32_t>(n);
  }
}

// One block per row present: its group's token indices put in order (each one's place is the number of smaller ones
// in the group, counted through shared memory a tile at a time), then dtable[row] += dout[n] for the group's tokens n
// in that order, each thread down its columns.
constexpr int kGroupTile = 1024;
__global__ void embedding_rows_kernel(float * dtable, const float * __restrict__ dout, const int32_t * counts,
                                      const int32_t * cursor, const int32_t * present, const int32_t * grouped,
                                      int32_t * in_order, int64_t rows, int64_t width) {
  __shared__ int32_t tile[kGroupTile];
  const int32_t present_total = present[rows];
  for (int64_t k = blockIdx.x; k < present_total; k += gridDim.x) {
    const int64_t row = present[k];
    const int32_t size = counts[row], start = cursor[row] - size;  // cursor: the group's end, after the grouping
    const int32_t * group = grouped + start;
    int32_t * ordered = in_order + start;
    for (int32_t base = 0; base < size; base += static_cast<int32_t>(blockDim.x)) {
      const int32_t i = base + static_cast<int32_t>(threadIdx.x);
      const int32_t mine = i < size ? group[i] : 0;
      int32_t place = 0;
      for (int32_t tile_first = 0; tile_first < size; tile_first += kGroupTile) {
        const int32_t tile_size = size - tile_first < kGroupTile ? size - tile_first : kGroupTile;
        for (int32_t t = static_cast<int32_t>(threadIdx.x); t < tile_size; t += static_cast<int32_t>(blockDim.x))
          tile[t] = group[tile_first + t];
        __syncthreads();
        if (i < size)
          for (int32_t t = 0; t < tile_size; ++t) place += tile[t] < mine;
        __syncthreads();
      }
      if (i < size) ordered[place] = mine;
    }
    __syncthreads();  // the block's writes of `ordered` seen by all of it
    for (int64_t d = threadIdx.x; d < width; d += blockDim.x) {
      float sum = dtable[row * width + d];
      for (int32_t t = 0; t < size; ++t) sum += dout[static_cast<int64_t>(ordered[t]) * width + d];
      dtable[row * width + d] = sum;
    }
    __syncthreads();  // `tile` free for the next row's group
  }
}

__global__ void sinusoidal_kernel(float * out, const int32_t * positions, int64_t count, int64_t width,
                                  int64_t padding_idx, double step) {
  const int64_t half = width / 2;
  KOSMOS_GRID_LOOP(index, count * half) {
    const int64_t n = index / half, j = index % half;
    const bool padding = positions[n] == padding_idx;
    const double angle = static_cast<double>(positions[n]) * exp(-static_cast<double>(j) * step);
    out[n * width + j] = padding ? 0.0f : static_cast<float>(sin(angle));
    out[n * width + half + j] = padding ? 0.0f : static_cast<float>(cos(angle));
  }
}

// The factors of xPos per (row t, pair i), computed in double as the CPU's table is: table[t * pairs + i] =
// {scale cos(p theta_i), scale sin(p theta_i)} with p = offset + t, theta_i = 10000^(-2i/dh) and scale =
// zeta_i^(centred p / scale_base), zeta_i = (2i + 0.4 dh) / (1.4 dh) (reciprocal when downscaling). One small kernel
// per table, so that the pass over the activations does no double-precision arithmetic.
__global__ void xpos_table_kernel(float2 * table, int64_t length, int64_t head_dim, XPosParams params) {
  const int64_t pairs = head_dim / 2;
  const double min_position = floor(-static_cast<double>(length + params.offset) / 2.0);
  KOSMOS_GRID_LOOP(index, length * pairs) {
    const int64_t i = index % pairs, t = index / pairs;
    const double position = static_cast<double>(params.offset + t);
    const double zeta = (2.0 * i + 0.4 * head_dim) / (1.4 * head_dim);
    const double theta = pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    double scale = pow(zeta, (min_position + position) / params.scale_base);
    if (params.downscale) scale = 1.0 / scale;
    table[index] = make_float2(static_cast<float>(scale * cos(position * theta)),
                               static_cast<float>(scale * sin(position * theta)));
  }
}

// A pair (a, b) at row t: forward (sign +1) (a c - b s, b c + a s), backward (sign -1) the transpose, with (c, s)
// the table's factors.
__device__ inline float2 xpos_rotate(float a, float b, float2 factors, float sign) {
  const float c = factors.x, s = sign * factors.y;
  return make_float2(a * c - b * s, b * c + a * s);
}

// One pair per thread, for any strides and dtype.
__global__ void xpos_kernel(void * out, Layout out_layout, const void * in, Layout in_layout, DType dtype,
                            int64_t pairs_total, const float2 * table, float sign) {
  const int64_t heads = in_layout.dims[1], length = in_layout.dims[2], head_dim = in_layout.dims[3];
  const int64_t pairs = head_dim / 2;
  KOSMOS_GRID_LOOP(index, pairs_total) {
    const int64_t i = index % pairs, t = (index / pairs) % length, h = (index / (pairs * length)) % heads;
    const int64_t b = index / (pairs * length * heads);
    const int64_t source = b * in_layout.strides[0] + h * in_layout.strides[1] + t * in_layout.strides[2] + 2 * i;
    const int64_t target = b * out_layout.strides[0] + h * out_layout.strides[1] + t * out_layout.strides[2] + 2 * i;
    const float2 rotated =
        xpos_rotate(load_float(in, dtype, source), load_float(in, dtype, source + 1), table[t * pairs + i], sign);
    store_float(out, dtype, target, rotated.x);
    store_float(out, dtype, target + 1, rotated.y);
  }
}

// The same over packs of 8 elements (4 pairs) of a head's row: for views whose head_dim and
// strides are multiples of 8 and whose data are 16-byte aligned (the model's q and k column windows).
template <typename T>
__global__ void xpos_packed_kernel(T * out, Layout out_layout, const T * in, Layout in_layout, int64_t packs_total,
                                   const float2 * table, float sign) {
  const int64_t heads = in_layout.dims[1], length = in_layout.dims[2], head_dim = in_layout.dims[3];
  const int64_t row_packs = head_dim / kPack, pairs = head_dim / 2;
  KOSMOS_GRID_LOOP(index, packs_total) {
    const int64_t j = index % row_packs, t = (index / row_packs) % length, h = (index / (row_packs * length)) % heads;
    const int64_t b = index / (row_packs * length * heads);
    float values[kPack];
    load_pack(in + b * in_layout.strides[0] + h * in_layout.strides[1] + t * in_layout.strides[2], j, values);
#pragma unroll
    for (int q = 0; q < kPack / 2; ++q) {
      const float2 rotated =
          xpos_rotate(values[2 * q], values[2 * q + 1], table[t * pairs + j * (kPack / 2) + q], sign);
      values[2 * q] = rotated.x;
      values[2 * q + 1] = rotated.y;
    }
    store_pack(out + b * out_layout.strides[0] + h * out_layout.strides[1] + t * out_layout.strides[2], j, values);
  }
}

// The same over position rows that hold every head side by side, as the model's q and k are (column windows of
// q | k | v: [B, H, T, dh] with heads adjacent): a row (b, t) is heads * dh contiguous elements at row * row_stride.
// A block takes a row at a time with a thread for each pack of up to kXPosThreadHeads heads, so each thread works at
// one place within a head on every kXPosThreadHeads-th head of the row: it reads its four pairs' factors once a row
// and uses them for all those heads, and splits no index by division (xpos_packed_kernel divides every pack's index
// into (b, h, t, j) and reads 32 bytes of factors for every 16-byte pack).
template <typename T>
__global__ void xpos_rows_kernel(T * out, int64_t out_row_stride, const T * in, int64_t in_row_stride, uint32_t rows,
                                 uint32_t length, int head_dim, int heads, const float2 * table, float sign) {
  const int head_packs = head_dim / kPack, row_packs = heads * head_packs, pairs = head_dim / 2;
  const int first_pair = static_cast<int>(threadIdx.x) % head_packs * (kPack / 2);
  for (uint32_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float2 * factors = table + static_cast<int64_t>(row % length) * pairs + first_pair;
    float2 mine[kPack / 2];
#pragma unroll
    for (int q = 0; q < kPack / 2; ++q) mine[q] = factors[q];
    for (int j = threadIdx.x; j < row_packs; j += blockDim.x) {
      float values[kPack];
      load_pack(in + row * in_row_stride, j, values);
#pragma unroll
      for (int q = 0; q < kPack / 2; ++q) {
        const float2 rotated = xpos_rotate(values[2 * q], values[2 * q + 1], mine[q], sign);
        values[2 * q] = rotated.x;
        values[2 * q + 1] = rotated.y;
      }
      store_pack(out + row * out_row_stride, j, values);
    }
  }
}

// xpos_rows_kernel's grid: enough blocks for every SM many times over, each looping over rows; and how many heads
// of a row its threads take at once (the model's 32 heads of 64: 64 threads, four packs each a row).
constexpr int64_t kXPosRowBlocks = 4096;
constexpr int64_t kXPosThreadHeads = 8;
constexpr int64_t kMaxBlockThreads = 1024;

// Whether a [B, H, T, dh] view holds its heads side by side in position rows (xpos_rows_kernel), 16-byte aligned.
bool heads_in_rows(const TensorView & view) {
  const int64_t head_dim = view.dim(3);
  return view.strides[3] == 1 && view.strides[1] == head_dim && view.strides[0] == view.dim(2) * view.strides[2] &&
         view.strides[2] % kPack == 0 && head_dim % kPack == 0 && aligned_to_pack(view.data);
}

bool strides_hold_packs(const TensorView & view) {
  for (int axis = 0; axis < 3; ++axis)
    if (view.strides[axis] % kPack != 0) return false;
  return view.dim(3) % kPack == 0 && aligned_to_pack(view.data);
}

// The tag of a table's contents (GpuContext::scratch_tag): every input of xpos_table_kernel but the scale's
// direction, which picks the slot: the length, offset and head size packed (lengths and offsets below 2^24, head
// sizes below 2^15; beyond, none, and the table is made every time), and the scale base's bits.
GpuContext::ScratchTag xpos_table_tag(int64_t length, int64_t head_dim, const XPosParams & params) {
  const bool packs = length < (1 << 24) && params.offset >= 0 && params.offset < (1 << 24) && head_dim < (1 << 15);
  if (!packs) return {};
  uint32_t scale_bits = 0;
  std::memcpy(&scale_bits, &params.scale_base, sizeof scale_bits);
  const uint64_t shape = (uint64_t{1} << 63) | (static_cast<uint64_t>(length) << 39) |
                         (static_cast<uint64_t>(params.offset) << 15) | static_cast<uint64_t>(head_dim);
  return {shape, scale_bits};
}

void xpos_apply(GpuContext & ctx, const TensorView & out, const TensorView & in, const XPosParams & params, float sign,
                cudaStream_t stream) {
  const int64_t pairs_total = in.numel() / 2;
  if (pairs_total == 0) return;
  const int64_t length = in.dim(2), head_dim = in.dim(3), entries = length * (head_dim / 2);
  // A training step's layers all rotate by the same two tables (queries up, keys down): each made once, where its
  // slot still holds it.
  const int slot = params.downscale ? kScratchTableDown : kScratchTable;
  auto * table = static_cast<float2 *>(ctx.scratch(slot, sizeof(float2) * entries, stream));
  const GpuContext::ScratchTag tag = xpos_table_tag(length, head_dim, params);
  if (tag == GpuContext::ScratchTag{} || ctx.scratch_tag(slot) != tag) {
    xpos_table_kernel<<<blocks_for(entries), kThreads, 0, stream>>>(table, length, head_dim, params);
    KOSMOS_GPU_LAUNCHED("xpos_table");
    ctx.scratch_tag(slot) = tag;
  }
  const int64_t rows = in.dim(0) * length, heads = in.dim(1), head_packs = head_dim / kPack;
  const int64_t row_threads = head_packs * std::min(heads, kXPosThreadHeads);
  if (in.dtype != DType::kF16 && heads_in_rows(in) && heads_in_rows(out) && rows < (int64_t{1} << 31) &&
      row_threads <= kMaxBlockThreads && heads * head_packs < (int64_t{1} << 31)) {
    const unsigned threads = static_cast<unsigned>(row_threads);
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(rows, kXPosRowBlocks));
    with_storage(in.dtype, [&](auto element) {
      using T = decltype(element);
      xpos_rows_kernel<<<blocks, threads, 0, stream>>>(
          static_cast<T *>(out.data), out.strides[2], static_cast<const T *>(in.data), in.strides[2],
          static_cast<uint32_t>(rows), static_cast<uint32_t>(length), static_cast<int>(head_dim),
          static_cast<int>(in.dim(1)), table, sign);
    });
    KOSMOS_GPU_LAUNCHED("xpos_rows");
    return;
  }
  if (in.dtype != DType::kF16 && strides_hold_packs(in) && strides_hold_packs(out)) {
    const int64_t packs_total = in.numel() / kPack;
    with_storage(in.dtype, [&](auto element) {
      using T = decltype(element);
      xpos_packed_kernel<<<blocks_for(packs_total), kThreads, 0, stream>>>(
          static_cast<T *>(out.data), layout_of(out), static_cast<const T *>(in.data), layout_of(in), packs_total,
          table, sign);
    });
    KOSMOS_GPU_LAUNCHED("xpos_packed");
    return;
  }
  xpos_kernel<<<blocks_for(pairs_total), kThreads, 0, stream>>>(out.data, layout_of(out), in.data, layout_of(in),
                                                                in.dtype, pairs_total, table, sign);
  KOSMOS_GPU_LAUNCHED("xpos");
}

}  // namespace

void gpu_op(GpuContext &, const EmbeddingForward & op, cudaStream_t stream) {
  const int64_t count = op.ids.dim(0), width = op.table.dim(1);
  if (count == 0) return;
  embedding_forward_kernel<<<blocks_for(count * width), kThreads, 0, stream>>>(
      op.out.as<float>(), op.ids.as<int32_t>(), op.table.as<float>(), count, width, op.table.dim(0), op.vocab_start);
  KOSMOS_GPU_LAUNCHED("embedding_forward");
}

void gpu_op(GpuContext & ctx, const EmbeddingBackward & op, cudaStream_t stream) {
  const int64_t count = op.ids.dim(0), width = op.dtable.dim(1), rows = op.dtable.dim(0);
  if (count == 0 || rows == 0) return;
  KOSMOS_CHECK(count < (int64_t{1} << 31) && rows < (int64_t{1} << 31), "embedding_backward on the GPU: ", count,
               " ids and ", rows, " table rows; each must be under 2^31 (int32 indices)");
  // Scratch (int32): counts [rows], cursor [rows], present [rows + 1], grouped [count], in_order [count].
  auto * counts = static_cast<int32_t *>(
      ctx.scratch(kScratchEmbedding, sizeof(int32_t) * static_cast<size_t>(3 * rows + 1 + 2 * count), stream));
  int32_t *cursor = counts + rows, *present = cursor + rows, *grouped = present + rows + 1, *in_order = grouped + count;
  const int32_t * ids = op.ids.as<int32_t>();
  KOSMOS_GPU_CHECK(cudaMemsetAsync(counts, 0, sizeof(int32_t) * static_cast<size_t>(rows), stream));
  embedding_count_kernel<<<blocks_for(count), kThreads, 0, stream>>>(counts, ids, count, rows, op.vocab_start,
                                                                    op.padding_idx);
  KOSMOS_GPU_LAUNCHED("embedding_count");
  embedding_group_starts_kernel<<<1, kThreads, 0, stream>>>(cursor, present, counts, rows);
  KOSMOS_GPU_LAUNCHED("embedding_group_starts");
  embedding_group_kernel<<<blocks_for(count), kThreads, 0, stream>>>(grouped, cursor, ids, count, rows, op.vocab_start,
                                                                    op.padding_idx);
  KOSMOS_GPU_LAUNCHED("embedding_group");
  // At most one row per id present: a block each (a grid-stride loop past kMaxBlocks).
  const unsigned row_blocks = static_cast<unsigned>(std::min({count, rows, kMaxBlocks}));
  embedding_rows_kernel<<<row_blocks, kThreads, 0, stream>>>(op.dtable.as<float>(), op.dout.as<float>(), counts,
                                                             cursor, present, grouped, in_order, rows, width);
  KOSMOS_GPU_LAUNCHED("embedding_backward");
}

void gpu_op(GpuContext &, const SinusoidalPositions & op, cudaStream_t stream) {
  const int64_t count = op.positions.dim(0), width = op.out.dim(1), half = width / 2;
  if (count * half == 0) return;
  const double step = std::log(10000.0) / static_cast<double>(half - 1);
  sinusoidal_kernel<<<blocks_for(count * half), kThreads, 0, stream>>>(op.out.as<float>(), op.positions.as<int32_t>(),
                                                                       count, width, op.padding_idx, step);
  KOSMOS_GPU_LAUNCHED("sinusoidal_positions");
}

void gpu_op(GpuContext & ctx, const XPosForward & op, cudaStream_t stream) {
  xpos_apply(ctx, op.out, op.in, op.params, 1.0f, stream);
}
void gpu_op(GpuContext & ctx, const XPosBackward & op, cudaStream_t stream) {
  xpos_apply(ctx, op.din, op.dout, op.params, -1.0f, stream);
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
