// kernels_elementwise.cu: the elementwise ops on the GPU (GELU and QuickGELU forward/backward, add with a trailing
// broadcast, scale, cast, strided copy, patchify, fill, dropout with the residual add). Dense tensors go in packs of
// 8 elements per thread (vector_access.cuh), strided ones and broadcasts one element per thread; grid-stride loops.
// The dropout's backward that also sums its gradient's columns runs in kernels_column_sums.cu.
#include "backends/cuda/activation_maps.cuh"
#include "backends/cuda/gpu_kernels.h"
#include "backends/cuda/vector_access.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

// The elementwise maps besides the activations (activation_maps.cuh): out = f(x) or out = f(x, y) in f32.
struct SumMap {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct ScaleMap {
  float alpha;
  __device__ float operator()(float x) const { return alpha * x; }
};
struct IdentityMap {  // a cast: the conversion is in the load and the store
  __device__ float operator()(float x) const { return x; }
};

// out[i] = map(in[i]) over a dense tensor: packs, then the tail.
template <typename Out, typename In, typename Map>
__global__ void unary_map_kernel(Out * out, const In * in, int64_t count, int64_t packs, Map map) {
  KOSMOS_GRID_LOOP(pack, packs) {
    float values[kPack];
    load_pack(in, pack, values);
#pragma unroll
    for (int e = 0; e < kPack; ++e) values[e] = map(values[e]);
    store_pack(out, pack, values);
  }
  KOSMOS_TAIL_LOOP(i, packs, count) put(out[i], map(to_float(in[i])));
}

// out[i] = map(a[i], b[i]) over dense tensors of one dtype.
template <typename T, typename Map>
__global__ void binary_map_kernel(T * out, const T * a, const T * b, int64_t count, int64_t packs, Map map) {
  KOSMOS_GRID_LOOP(pack, packs) {
    float x[kPack], y[kPack];
    load_pack(a, pack, x);
    load_pack(b, pack, y);
#pragma unroll
    for (int e = 0; e < kPack; ++e) x[e] = map(x[e], y[e]);
    store_pack(out, pack, x);
  }
  KOSMOS_TAIL_LOOP(i, packs, count) put(out[i], map(to_float(a[i]), to_float(b[i])));
}

// Launches the unary map over dense `out` and `in`, each f32, bf16 or f16.
template <typename Map>
void launch_unary_map(const TensorView & out, const TensorView & in, Map map, cudaStream_t stream, const char * name) {
  const int64_t count = in.numel();
  if (count == 0) return;
  const int64_t packs = packs_of(count, {out.data, in.data});
  with_storage(out.dtype, [&](auto out_element) {
    with_storage(in.dtype, [&](auto in_element) {
      using Out = decltype(out_element);
      using In = decltype(in_element);
      unary_map_kernel<<<pack_blocks(count, packs), kThreads, 0, stream>>>(
          static_cast<Out *>(out.data), static_cast<const In *>(in.data), count, packs, map);
    });
  });
  KOSMOS_GPU_LAUNCHED(name);
}

// Launches the binary map over dense `out`, `a` and `b` of one dtype.
template <typename Map>
void launch_binary_map(const TensorView & out, const TensorView & a, const TensorView & b, Map map,
                       cudaStream_t stream, const char * name) {
  const int64_t count = a.numel();
  if (count == 0) return;
  const int64_t packs = packs_of(count, {out.data, a.data, b.data});
  with_storage(out.dtype, [&](auto element) {
    using T = decltype(element);
    binary_map_kernel<<<pack_blocks(count, packs), kThreads, 0, stream>>>(
        static_cast<T *>(out.data), static_cast<const T *>(a.data), static_cast<const T *>(b.data), count, packs, map);
  });
  KOSMOS_GPU_LAUNCHED(name);
}

// out[i] = a[i] + b[i % b_count]: b is a's trailing dims (a table added to every leading index).
__global__ void broadcast_add_kernel(void * out, const void * a, const void * b, int64_t count, int64_t b_count,
                                     DType dtype) {
  KOSMOS_GRID_LOOP(i, count) store_float(out, dtype, i, load_float(a, dtype, i) + load_float(b, dtype, i % b_count));
}

// Index i of the logical (row-major) order of `layout`'s axes 0..last, as an offset in elements.
__device__ inline int64_t offset_over_axes(const Layout & layout, int64_t i, int last) {
  int64_t offset = 0;
  for (int axis = last; axis >= 0; --axis) {
    offset += (i % layout.dims[axis]) * layout.strides[axis];
    i /= layout.dims[axis];
  }
  return offset;
}
// Element i of `layout`.
__device__ inline int64_t strided_offset(const Layout & layout, int64_t i) {
  return offset_over_axes(layout, i, layout.ndim - 1);
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

// The same two over views whose last axis is at least a warp wide (by_rows): a warp per row of that axis, its lanes
// over the row (coalesced where the axis is dense in memory), the other axes' offsets worked out once per row and
// lane. strided_offset's 64-bit divisions, eight per 4-D view an element (sixteen for the two views), cost more than
// the bytes they move: the cast of an attention's dq from its f32 sums into the heads' strided view is one.
// The first element of row `row` of `layout` (its axes but the last).
__device__ inline int64_t row_offset(const Layout & layout, int64_t row) {
  return offset_over_axes(layout, row, layout.ndim - 2);
}
// element(out_offset, in_offset) for every element of `rows` rows; out and in have the same dims.
template <typename ElementOp>
__device__ inline void for_each_in_rows(const Layout & out_layout, const Layout & in_layout, int64_t rows,
                                        ElementOp element) {
  const int last = out_layout.ndim - 1;
  const int64_t width = out_layout.dims[last], out_step = out_layout.strides[last], in_step = in_layout.strides[last];
  const int64_t warps_per_block = blockDim.x / kWarp, lane = threadIdx.x % kWarp;
  for (int64_t row = blockIdx.x * warps_per_block + threadIdx.x / kWarp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    const int64_t out_base = row_offset(out_layout, row), in_base = row_offset(in_layout, row);
    for (int64_t col = lane; col < width; col += kWarp) element(out_base + col * out_step, in_base + col * in_step);
  }
}
__global__ void strided_cast_rows_kernel(void * out, DType out_dtype, Layout out_layout, const void * in,
                                         DType in_dtype, Layout in_layout, int64_t rows) {
  for_each_in_rows(out_layout, in_layout, rows, [&](int64_t to, int64_t from) {
    store_float(out, out_dtype, to, load_float(in, in_dtype, from));
  });
}
template <typename Element>
__global__ void copy_rows_kernel(Element * out, Layout out_layout, const Element * in, Layout in_layout,
                                 int64_t rows) {
  for_each_in_rows(out_layout, in_layout, rows, [&](int64_t to, int64_t from) { out[to] = in[from]; });
}
// Whether a strided cast or copy of this shape goes by rows.
bool by_rows(const TensorView & view) { return view.ndim >= 2 && view.dims[view.ndim - 1] >= kWarp; }
// The rows of that shape, and the blocks that give each a warp (a grid-stride loop past kMaxBlocks).
int64_t rows_of(const TensorView & view) { return view.numel() / view.dims[view.ndim - 1]; }
unsigned row_blocks_for(int64_t rows) { return blocks_for(rows * kWarp); }

// A strided copy of `count` elements of Element's size (the bits as they are).
template <typename Element>
void launch_copy(const Copy & op, int64_t count, cudaStream_t stream) {
  auto * out = static_cast<Element *>(op.out.data);
  const auto * in = static_cast<const Element *>(op.in.data);
  if (by_rows(op.out)) {
    const int64_t rows = rows_of(op.out);
    copy_rows_kernel<<<row_blocks_for(rows), kThreads, 0, stream>>>(out, layout_of(op.out), in, layout_of(op.in),
                                                                     rows);
  } else {
    copy_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, layout_of(op.out), in, layout_of(op.in), count);
  }
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

template <typename T>
__global__ void fill_kernel(T * out, int64_t count, int64_t packs, float value) {
  float values[kPack];
#pragma unroll
  for (int e = 0; e < kPack; ++e) values[e] = value;
  KOSMOS_GRID_LOOP(pack, packs) store_pack(out, pack, values);
  KOSMOS_TAIL_LOOP(i, packs, count) put(out[i], value);
}
__global__ void fill_i32_kernel(int32_t * out, int64_t count, int32_t value) {
  KOSMOS_GRID_LOOP(i, count) out[i] = value;
}

// out[i] = residual[i] + in[i] * factor(offset + i), without the residual where it is null; residual f32, in f32
// or bf16 (a bf16 projection's output joining the residual stream).
template <typename Out, typename In>
__global__ void dropout_kernel(Out * out, const In * in, const float * residual, int64_t count, int64_t packs,
                               DropoutDraw draw, uint64_t offset) {
  KOSMOS_GRID_LOOP(pack, packs) {
    float values[kPack], factors[kPack];
    load_pack(in, pack, values);
    dropout_pack_factors(draw, offset + static_cast<uint64_t>(pack) * kPack, factors);
    float kept[kPack] = {};
    if (residual != nullptr) load_pack(residual, pack, kept);
#pragma unroll
    for (int e = 0; e < kPack; ++e) values[e] = dropped_onto(kept[e], values[e], factors[e]);
    store_pack(out, pack, values);
  }
  KOSMOS_TAIL_LOOP(i, packs, count) {
    const float factor = dropout_factor_of(draw, philox_bits(draw.seed, offset + static_cast<uint64_t>(i)));
    put(out[i], dropped_onto(residual != nullptr ? residual[i] : 0.0f, to_float(in[i]), factor));
  }
}

void launch_dropout(const TensorView & out, const TensorView & in, const TensorView & residual,
                    const DropoutParams & params, cudaStream_t stream, const char * name) {
  const int64_t count = in.numel();
  if (count == 0) return;
  const int64_t packs = packs_of(count, {out.data, in.data, residual.present() ? residual.data : nullptr});
  with_storage(out.dtype, [&](auto element) {
    using Out = decltype(element);
    const auto launch = [&](auto in_element) {
      using In = decltype(in_element);
      dropout_kernel<<<pack_blocks(count, packs), kThreads, 0, stream>>>(
          static_cast<Out *>(out.data), static_cast<const In *>(in.data),
          residual.present() ? residual.as<float>() : nullptr, count, packs, dropout_draw(params.seed, params.p),
          params.offset);
    };
    if constexpr (std::is_same_v<Out, float>)
      with_f32_or_bf16_storage(in.dtype, name, launch);
    else
      launch(float{});  // a 16-bit output (a backward's din) comes from an f32 input only (ops_validate.cpp)
  });
  KOSMOS_GPU_LAUNCHED(name);
}

int64_t count_of(const TensorView & view) { return view.numel(); }

}  // namespace

void gpu_op(GpuContext &, const ActivationForward & op, cudaStream_t stream) {
  launch_unary_map(op.out, op.in, ActivationMap{op.kind}, stream, "activation_forward");
}

void gpu_op(GpuContext &, const ActivationBackward & op, cudaStream_t stream) {
  launch_binary_map(op.din, op.dout, op.in, ActivationGradientMap{op.kind}, stream, "activation_backward");
}

void gpu_op(GpuContext &, const Add & op, cudaStream_t stream) {
  const int64_t count = count_of(op.a), b_count = count_of(op.b);
  if (b_count == count) {
    launch_binary_map(op.out, op.a, op.b, SumMap{}, stream, "add");
    return;
  }
  broadcast_add_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.data, op.a.data, op.b.data, count, b_count,
                                                                   op.a.dtype);
  KOSMOS_GPU_LAUNCHED("broadcast_add");
}

void gpu_op(GpuContext &, const Scale & op, cudaStream_t stream) {
  launch_unary_map(op.out, op.in, ScaleMap{op.alpha}, stream, "scale");
}

void gpu_op(GpuContext &, const Cast & op, cudaStream_t stream) {
  const int64_t count = count_of(op.in);
  if (count == 0) return;
  if (op.in.is_contiguous() && op.out.is_contiguous()) {
    launch_unary_map(op.out, op.in, IdentityMap{}, stream, "cast");
    return;
  }
  if (by_rows(op.out)) {
    const int64_t rows = rows_of(op.out);
    strided_cast_rows_kernel<<<row_blocks_for(rows), kThreads, 0, stream>>>(
        op.out.data, op.out.dtype, layout_of(op.out), op.in.data, op.in.dtype, layout_of(op.in), rows);
  } else {
    strided_cast_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.data, op.out.dtype, layout_of(op.out),
                                                                      op.in.data, op.in.dtype, layout_of(op.in), count);
  }
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
  if (dtype_size(op.in.dtype) == 4)
    launch_copy<uint32_t>(op, count, stream);
  else
    launch_copy<uint16_t>(op, count, stream);
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
  if (count == 0) return;
  if (op.out.dtype == DType::kI32) {
    fill_i32_kernel<<<blocks_for(count), kThreads, 0, stream>>>(op.out.as<int32_t>(), count,
                                                                static_cast<int32_t>(op.value));
  } else {
    const int64_t packs = packs_of(count, {op.out.data});
    with_storage(op.out.dtype, [&](auto element) {
      using T = decltype(element);
      fill_kernel<<<pack_blocks(count, packs), kThreads, 0, stream>>>(static_cast<T *>(op.out.data), count, packs,
                                                                      op.value);
    });
  }
  KOSMOS_GPU_LAUNCHED("fill");
}

void gpu_op(GpuContext &, const DropoutForward & op, cudaStream_t stream) {
  launch_dropout(op.out, op.in, op.residual, op.params, stream, "dropout_forward");
}

void gpu_op(GpuContext & ctx, const DropoutBackward & op, cudaStream_t stream) {
  if (op.din_column_sums.present() && dropout_gradient_with_column_sums(ctx, op, stream)) return;
  launch_dropout(op.din, op.dout, TensorView{}, op.params, stream, "dropout_backward");
  if (op.din_column_sums.present()) gpu_op(ctx, BiasBackward{op.din_column_sums, op.din}, stream);
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
