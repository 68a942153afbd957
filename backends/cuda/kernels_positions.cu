// kernels_positions.cu: what turns ids and positions into vectors on the GPU: the token embedding (vocab-slice
// aware gather; a scatter-add backward with one thread per column, walking the ids in order so the sums are
// deterministic), fairseq's sinusoidal positions, and xPos (kosmos-spec section 4) with its factors computed in
// double into a table per op, as the CPU's are.
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

// One thread per column walks the ids in order, kGroup at a time: the group's gradient values are summed per
// distinct row in the ids' order (a repeated id joins its first occurrence in the group), then each distinct row is
// read and written once, the reads issued together. The sums are deterministic; the group keeps the loop from
// waiting out one memory round trip per id: with 32 a thread waits about 2 round trips per 32 ids (172 registers on
// sm_90, no spills; the pairwise merge is 16 compares per id). Blocks of 64 threads spread a model's few thousand
// columns over more SMs, whose load queues then hold the requests in flight.
constexpr int kGroup = 32;
constexpr int kEmbeddingBackwardThreads = 64;

__global__ void embedding_backward_kernel(float * dtable, const float * __restrict__ dout,
                                          const int32_t * __restrict__ ids, int64_t count, int64_t width,
                                          int64_t rows, int64_t vocab_start, int64_t padding_idx) {
  KOSMOS_GRID_LOOP(d, width) {
    for (int64_t first = 0; first < count; first += kGroup) {
      int64_t row[kGroup];
      float value[kGroup];
      bool leads[kGroup];  // this entry carries the group's sum for its row
#pragma unroll
      for (int i = 0; i < kGroup; ++i) {
        const int64_t n = first + i;
        const int64_t id = n < count ? ids[n] : padding_idx;
        row[i] = id - vocab_start;
        leads[i] = n < count && row[i] >= 0 && row[i] < rows && id != padding_idx;
        value[i] = leads[i] ? dout[n * width + d] : 0.0f;
      }
#pragma unroll
      for (int i = 1; i < kGroup; ++i)
#pragma unroll
        for (int j = 0; j < i; ++j)
          if (leads[i] && leads[j] && row[j] == row[i]) {
            value[j] += value[i];
            leads[i] = false;
          }
      float held[kGroup];
#pragma unroll
      for (int i = 0; i < kGroup; ++i) held[i] = leads[i] ? dtable[row[i] * width + d] : 0.0f;
#pragma unroll
      for (int i = 0; i < kGroup; ++i)
        if (leads[i]) dtable[row[i] * width + d] = held[i] + value[i];
    }
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
// per op, so that the pass over the activations does no double-precision arithmetic.
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

bool strides_hold_packs(const TensorView & view) {
  for (int axis = 0; axis < 3; ++axis)
    if (view.strides[axis] % kPack != 0) return false;
  return view.dim(3) % kPack == 0 && aligned_to_pack(view.data);
}

void xpos_apply(GpuContext & ctx, const TensorView & out, const TensorView & in, const XPosParams & params, float sign,
                cudaStream_t stream) {
  const int64_t pairs_total = in.numel() / 2;
  if (pairs_total == 0) return;
  const int64_t length = in.dim(2), head_dim = in.dim(3), entries = length * (head_dim / 2);
  auto * table = static_cast<float2 *>(ctx.scratch(kScratchTable, sizeof(float2) * entries, stream));
  xpos_table_kernel<<<blocks_for(entries), kThreads, 0, stream>>>(table, length, head_dim, params);
  KOSMOS_GPU_LAUNCHED("xpos_table");
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

void gpu_op(GpuContext &, const EmbeddingBackward & op, cudaStream_t stream) {
  const int64_t count = op.ids.dim(0), width = op.dtable.dim(1);
  if (count == 0) return;
  embedding_backward_kernel<<<blocks_for(width, kEmbeddingBackwardThreads), kEmbeddingBackwardThreads, 0, stream>>>(
      op.dtable.as<float>(), op.dout.as<float>(), op.ids.as<int32_t>(), count, width, op.dtable.dim(0), op.vocab_start,
      op.padding_idx);
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
