// kernels_norm.cu: LayerNorm forward/backward and L2 normalisation forward/backward on the GPU: one block per row
// (the LayerNorm backward: per 32 rows), statistics in fp32 through block sums (mean first, then the centred
// variance, as the CPU's oneDNN does), and the LayerNorm weight and bias gradients as deterministic column sums.
// LayerNorm rows of up to 8192 aligned columns (every row of the model) go in packs: 8-column packs held in
// registers between the passes (up to four a thread in the forward, one in the backward), so each element is read
// from memory once; these apply an input activation on the fly (the backward: GELU, where its three activations
// share a dtype, as the model's FFN sub-LN has them), and the forward may make its input from a sub-layer's output
// and the residual stream in the same pass (a join: in = residual + dropout(added), written as DropoutForward would).
// Other rows with an input activation or a join run as their parts (through f32 scratch, or the dropout first).
#include <type_traits>

#include "backends/cuda/activation_maps.cuh"
#include "backends/cuda/gpu_kernels.h"
#include "backends/cuda/vector_access.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

// x as the compiler must take it, rounded: the operation that made it is not fused with the one that reads it. nvcc
// and hipcc fuse a product and a following sum into one FMA where they see fit, so that GELU's last product and the
// normalisation's subtraction could round once in a backward and twice in a forward. (The emulated build is
// compiled with -ffp-contract=off.)
__device__ inline float unfused(float x) {
#if defined(KOSMOS_GPU_EMULATION)
#elif defined(KOSMOS_USE_ROCM)
  asm volatile("" : "+v"(x));
#else
  asm volatile("" : "+f"(x));
#endif
  return x;
}

// A LayerNorm's output element in two steps, x (act(in) where it has an activation) normalised by its row's
// statistics, then scaled and shifted (one FMA): the same operations, rounded alike, in every forward kernel and in
// the backward that makes the forward's output again from the normalised row it holds (LayerNormBackward::out).
__device__ inline float normalised(float x, float mean, float rstd) { return (unfused(x) - mean) * rstd; }
__device__ inline float affine(float xhat, float weight, float bias) { return fmaf(xhat, weight, bias); }

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
    store_float(out, out_dtype, base + c, affine(normalised(load_float(in, in_dtype, base + c), mean, rstd),
                                                 weight[c], bias[c]));
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
// fixed order. dout and x are read once less than by the two-kernel path. The activations' storage types are template
// parameters (float or Bf16Bits): with the dtypes as arguments, the compiler copied the unrolled loops for every
// combination of load_float's four cases (120,000 lines of PTX; this file's nvcc took 426 s for sm_80 and sm_90, 49
// without them).
constexpr int kFusedRows = 32;
constexpr int kFusedColumnsPerThread = 32;
constexpr int64_t kFusedColumns = int64_t{kFusedColumnsPerThread} * kThreads;

template <typename DIn, typename DOut, typename In>
__global__ void __launch_bounds__(kThreads)
    layernorm_backward_fused_kernel(DIn * din, const DOut * dout, const In * in, const float * weight,
                                    const float * mean, const float * rstd, int64_t rows, int64_t cols,
                                    float * partials) {
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
        const float g = to_float(dout[base + c]) * weight[c];
        sum_g += g;
        sum_g_xhat += g * (to_float(in[base + c]) - mu) * r;
      }
    }
    const float mean_g = block_sum(sum_g, shared) / static_cast<float>(cols);
    const float mean_g_xhat = block_sum(sum_g_xhat, shared) / static_cast<float>(cols);
#pragma unroll
    for (int k = 0; k < kFusedColumnsPerThread; ++k) {
      const int64_t c = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (c < cols) {
        const float dy = to_float(dout[base + c]);
        const float xhat = (to_float(in[base + c]) - mu) * r;
        put(din[base + c], r * (dy * weight[c] - mean_g - xhat * mean_g_xhat));
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

// The packed LayerNorm kernels take rows of a multiple of 8 columns, up to kPackedColumns, every tensor 16-byte
// aligned; a thread holds whole 8-column packs in registers between the passes. The forward gives a row a block of at
// most kForwardRowThreads threads, kPacks packs each, so that several rows share an SM and one row's loads overlap
// another's sums (a 1024-thread block for each row of 8192 left an SM two rows, and its memory idle through their
// sums). The backward gives each thread one pack of every row of its block's kFusedRows rows.
constexpr int kForwardRowThreads = 256;
constexpr int kMaxPacksPerThread = 4;
constexpr int kMaxRowThreads = 1024;
constexpr int64_t kPackedColumns = int64_t{kForwardRowThreads} * kMaxPacksPerThread * kPack;
static_assert(kPackedColumns == int64_t{kMaxRowThreads} * kPack, "the forward and the backward take the same rows");
static_assert(kMaxRowThreads / kWarp <= kWarp, "block_sum_pair adds up the warps' sums in one warp");

bool packed_rows(int64_t cols, std::initializer_list<const void *> pointers) {
  return cols > 0 && cols % kPack == 0 && cols <= kPackedColumns && aligned_to_pack(pointers);
}
// Whole warps over the packs of a row of `cols` columns, `per_thread` packs to a thread.
unsigned packed_row_threads(int64_t cols, int per_thread = 1) {
  const int64_t threads = (cols / kPack + per_thread - 1) / per_thread;
  return static_cast<unsigned>((threads + kWarp - 1) / kWarp * kWarp);
}
// The forward's packs per thread: the fewest that keep a row's block within kForwardRowThreads.
int forward_packs_per_thread(int64_t cols) {
  return static_cast<int>((cols / kPack + kForwardRowThreads - 1) / kForwardRowThreads);
}

// The activation a LayerNorm applies to its input first (LayerNormForward::activation), as a kernel argument.
struct InputActivation {
  bool on;
  Activation kind;
};
InputActivation input_activation(const std::optional<Activation> & activation) {
  return {activation.has_value(), activation.value_or(Activation::kGelu)};
}

// x = act(x) over a pack, the kind's branch taken once for the pack rather than per element.
__device__ inline void activate(float (&x)[kPack], Activation kind) {
  if (kind == Activation::kGelu) {
#pragma unroll
    for (int e = 0; e < kPack; ++e) x[e] = ActivationMap{Activation::kGelu}(x[e]);
  } else {
#pragma unroll
    for (int e = 0; e < kPack; ++e) x[e] = ActivationMap{Activation::kQuickGelu}(x[e]);
  }
}

// The join a forward makes its input from (LayerNormForward::added): in = residual + dropout(added), f32; added f32
// or bf16 (the kernel's Added).
struct JoinOperands {
  float * in;  // written
  const void * added;
  const float * residual;
  DropoutDraw draw;
  uint64_t offset;
};
JoinOperands join_operands(const LayerNormForward & op) {
  if (!op.added.present()) return JoinOperands{};
  return {op.in.as<float>(), op.added.data, op.residual.as<float>(), dropout_draw(op.dropout.seed, op.dropout.p),
          op.dropout.offset};
}
// Pack `pack` of the row starting at element `start`, joined (as DropoutForward with a residual makes it) and stored;
// without dropout (p 0: every factor 1, CLIP's blocks) no Philox is drawn.
template <typename Added>
__device__ inline void join_pack(const JoinOperands & join, int64_t start, int64_t pack, float (&x)[kPack]) {
  float kept[kPack], factors[kPack];
  load_pack(static_cast<const Added *>(join.added) + start, pack, x);
  load_pack(join.residual + start, pack, kept);
  if (join.draw.threshold > 0) {
    dropout_pack_factors(join.draw, join.offset + static_cast<uint64_t>(start + pack * kPack), factors);
  } else {
#pragma unroll
    for (int e = 0; e < kPack; ++e) factors[e] = join.draw.keep_scale;
  }
#pragma unroll
  for (int e = 0; e < kPack; ++e) x[e] = dropped_onto(kept[e], x[e], factors[e]);
  store_pack(join.in + start, pack, x);
}

// Thread t holds packs t, t + blockDim.x, ... (kPacks of them), each pack's loads coalesced over the block. With
// kJoins the packs come from join_pack, of added's storage type Added (In is float; `in` is join.in).
template <int kPacks, bool kJoins, typename Out, typename In, typename Added = float>
__global__ void __launch_bounds__(kForwardRowThreads)
    layernorm_forward_packed_kernel(Out * out, float * mean_out, float * rstd_out, const In * in, const float * weight,
                                    const float * bias, int64_t cols, float eps, InputActivation activation,
                                    JoinOperands join) {
  __shared__ float shared[kForwardRowThreads / kWarp];
  const int64_t row = blockIdx.x, packs = cols / kPack;
  float x[kPacks][kPack] = {};
#pragma unroll
  for (int p = 0; p < kPacks; ++p) {
    const int64_t pack = threadIdx.x + int64_t{p} * blockDim.x;
    if (pack >= packs) continue;
    if constexpr (kJoins)
      join_pack<Added>(join, row * cols, pack, x[p]);
    else
      load_pack(in + row * cols, pack, x[p]);
  }
  float sum = 0.0f;
#pragma unroll
  for (int p = 0; p < kPacks; ++p) {
    if (activation.on) activate(x[p], activation.kind);  // both kinds map the padding's 0 to 0
#pragma unroll
    for (int e = 0; e < kPack; ++e) sum += x[p][e];
  }
  const float mean = block_sum(sum, shared) / static_cast<float>(cols);
  float squares = 0.0f;
#pragma unroll
  for (int p = 0; p < kPacks; ++p) {
    if (threadIdx.x + int64_t{p} * blockDim.x < packs) {
#pragma unroll
      for (int e = 0; e < kPack; ++e) squares += (x[p][e] - mean) * (x[p][e] - mean);
    }
  }
  const float rstd = rsqrtf(block_sum(squares, shared) / static_cast<float>(cols) + eps);
#pragma unroll
  for (int p = 0; p < kPacks; ++p) {
    const int64_t pack = threadIdx.x + int64_t{p} * blockDim.x;
    if (pack < packs) {
      float w[kPack], b[kPack];
      load_pack(weight, pack, w);
      load_pack(bias, pack, b);
#pragma unroll
      for (int e = 0; e < kPack; ++e) x[p][e] = affine(normalised(x[p][e], mean, rstd), w[e], b[e]);
      store_pack(out + row * cols, pack, x[p]);
    }
  }
  if (threadIdx.x == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// The sums of a and b over the block's threads, to every thread, in one round of shared memory: each warp's sums,
// then every warp adds those up across its lanes (a block has at most kWarp warps) in the same fixed order. Where
// two block_sums have every thread read and add all 32 warps' sums twice a row (more instructions than the
// LayerNorm's own work on its pack), this takes one load and five shuffles a sum.
__device__ inline void block_sum_pair(float & a, float & b, float2 * shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) shared[warp] = make_float2(a, b);
  __syncthreads();
  const float2 mine = lane < warps ? shared[lane] : make_float2(0.0f, 0.0f);
  a = warp_sum(mine.x);
  b = warp_sum(mine.y);
  __syncthreads();
}

// The fused backward in packs: din row by row as layernorm_backward_kernel (plus residual_gradient where given: din
// is f32 then), and the block's weight and bias gradient sums per column into partials [blocks, 2, cols], as
// layernorm_backward_fused_kernel. A row's two sums share one round of shared memory, and 16-bit rows' packs come in
// while the row before is worked on: at 8192 columns a block has an SM to itself (64 registers a thread), so
// nothing else would hide its loads. f32 packs are loaded as they are needed: one row ahead they would spill (at
// bf16 precision the model's f32 rows are its 2048-wide pre-LNs, four blocks to an SM, which hide each other's
// loads; an f32 run's 8192-wide sub-LN goes without). kGeluInput (the input
// goes through GELU first, as the Magneto FFN's sub-LN takes it) is a template parameter: at 64 registers, GELU' kept
// for a row takes eight of them, and a kind chosen per element would branch in every one. With sums_din the block
// also adds up din's columns as din holds them, in dynamic shared memory ([cols] f32: no registers are left), into
// a third row of partials [blocks, 3, cols]. kRemakeOut (the GELU input's kernels only) also writes the forward's
// output `out` (in's dtype) from the normalised row it holds, with `bias`: the Magneto FFN's sub-LN output, which fc2's
// weight gradient reads and a run that recomputes the FFN's tail does not keep.
template <bool kGeluInput, bool kRemakeOut, typename DIn, typename DOut, typename In>
__global__ void __launch_bounds__(kMaxRowThreads)
    layernorm_backward_packed_kernel(DIn * din, const DOut * dout, const In * in, const float * weight,
                                     const float * mean, const float * rstd, int64_t rows, int64_t cols,
                                     float * partials, const float * residual_gradient, bool sums_din, In * out,
                                     const float * bias) {
  static_assert(!kRemakeOut || kGeluInput, "the forward's output is made again by the GELU input's kernels only");
  __shared__ float2 shared[kMaxRowThreads / kWarp];
  extern __shared__ __align__(16) unsigned char din_sum_bytes[];
  float * din_sums = reinterpret_cast<float *>(din_sum_bytes);  // each thread its own pack's columns
  const int64_t pack = threadIdx.x;
  const bool mine = pack * kPack < cols;
  float weight_sum[kPack] = {}, bias_sum[kPack] = {};
  if (sums_din && mine) store_pack(din_sums, pack, bias_sum);  // zeros
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kFusedRows;
  const int64_t last = first + kFusedRows < rows ? first + kFusedRows : rows;
  constexpr bool kAhead = sizeof(DOut) == 2 && sizeof(In) == 2;
  RawPack<DOut> loaded_dy{};
  RawPack<In> loaded_in{};
  const auto load_row = [&](int64_t row) {
    loaded_dy = load_raw_pack(dout + row * cols, pack);
    loaded_in = load_raw_pack(in + row * cols, pack);
  };
  if (kAhead && mine) load_row(first);
  for (int64_t row = first; row < last; ++row) {
    const float mu = mean[row], r = rstd[row];
    float dy[kPack] = {}, g[kPack] = {}, xhat[kPack] = {}, slope[kGeluInput ? kPack : 1];
    if (mine) {
      if (!kAhead) load_row(row);
      widen_pack(loaded_dy, dy);
      widen_pack(loaded_in, xhat);
      if (kAhead && row + 1 < last) load_row(row + 1);
      load_pack(weight, pack, g);  // the weight, times dy below
    }
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
#pragma unroll
    for (int e = 0; e < kPack; ++e) {
      if constexpr (kGeluInput) {
        slope[e] = ActivationGradientMap{Activation::kGelu}(1.0f, xhat[e]);
        xhat[e] = ActivationMap{Activation::kGelu}(xhat[e]);
      }
      xhat[e] = normalised(xhat[e], mu, r);  // beyond the row (not mine), dy and g are 0
      g[e] *= dy[e];
      sum_g += g[e];
      sum_g_xhat += g[e] * xhat[e];
      weight_sum[e] += dy[e] * xhat[e];
      bias_sum[e] += dy[e];
    }
    block_sum_pair(sum_g, sum_g_xhat, shared);
    const float mean_g = sum_g / static_cast<float>(cols), mean_g_xhat = sum_g_xhat / static_cast<float>(cols);
    if (mine) {
      float result[kPack];
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        result[e] = r * (g[e] - mean_g - xhat[e] * mean_g_xhat);
        if constexpr (kGeluInput) result[e] *= slope[e];
      }
      if (residual_gradient != nullptr) {
        float residual[kPack];
        load_pack(residual_gradient + row * cols, pack, residual);
#pragma unroll
        for (int e = 0; e < kPack; ++e) result[e] += residual[e];
      }
      store_pack(din + row * cols, pack, result);
      if (sums_din) {
        float running[kPack];
        load_pack(din_sums, pack, running);
#pragma unroll
        for (int e = 0; e < kPack; ++e) running[e] += as_stored<DIn>(result[e]);
        store_pack(din_sums, pack, running);
      }
      if constexpr (kRemakeOut) {  // last, when result is dead: the weight and bias loaded again into its registers
        float scale[kPack], shift[kPack];
        load_pack(weight, pack, scale);
        load_pack(bias, pack, shift);
#pragma unroll
        for (int e = 0; e < kPack; ++e) scale[e] = affine(xhat[e], scale[e], shift[e]);
        store_pack(out + row * cols, pack, scale);
      }
    }
  }
  if (mine) {
    float * block_partials = partials + static_cast<int64_t>(blockIdx.x) * (sums_din ? 3 : 2) * cols;
    store_pack(block_partials, pack, weight_sum);
    store_pack(block_partials + cols, pack, bias_sum);
    if (sums_din) {
      float running[kPack];
      load_pack(din_sums, pack, running);
      store_pack(block_partials + 2 * cols, pack, running);
    }
  }
}

// f(std::integral_constant<int, packs>{}) for the forward's packs per thread, 1 to kMaxPacksPerThread.
template <typename F>
void with_packs_per_thread(int packs, F && f) {
  switch (packs) {
    case 1: f(std::integral_constant<int, 1>{}); return;
    case 2: f(std::integral_constant<int, 2>{}); return;
    case 3: f(std::integral_constant<int, 3>{}); return;
    case 4: f(std::integral_constant<int, 4>{}); return;
  }
  KOSMOS_FAIL("layernorm forward: ", packs, " packs a thread (internal error: packed_rows() takes rows of at most ",
              kPackedColumns, " columns, ", kMaxPacksPerThread, " packs a thread)");
}

// f(Element{}) for a LayerNorm activation's dtype: float or Bf16Bits (LayerNorm takes no f16: 8 dtype combinations
// of the backward kernel instead of 27, 4 of the forward instead of 9).
template <typename F>
void with_activation_storage(DType dtype, F && f) {
  with_f32_or_bf16_storage(dtype, "layernorm", f);
}

// f(DIn{}, DOut{}, In{}) for a LayerNorm backward's din, dout and in dtypes (each float or Bf16Bits).
template <typename F>
void with_backward_storage(const LayerNormBackward & op, F && f) {
  with_activation_storage(op.din.dtype, [&](auto din_element) {
    with_activation_storage(op.dout.dtype, [&](auto dout_element) {
      with_activation_storage(op.in.dtype, [&](auto in_element) { f(din_element, dout_element, in_element); });
    });
  });
}

// act(in) as a dense f32 view in `slot` (the parts of a LayerNorm of an activation the packed kernels do not take).
TensorView activated_scratch(GpuContext & ctx, int slot, const TensorView & in, const std::optional<Activation> & kind,
                             cudaStream_t stream) {
  void * data = ctx.scratch(slot, sizeof(float) * static_cast<size_t>(in.numel()), stream);
  const TensorView widened = make_view(data, DType::kF32, in.ndim, in.dims.data());
  gpu_op(ctx, Cast{widened, in}, stream);
  if (kind) gpu_op(ctx, ActivationForward{widened, widened, *kind}, stream);
  return widened;
}

template <bool kGeluInput, bool kRemakeOut, typename DIn, typename DOut, typename In>
void launch_layernorm_backward_packed(const LayerNormBackward & op, int64_t blocks, float * partials,
                                      cudaStream_t stream) {
  const int64_t cols = op.in.dim(-1);
  const bool sums_din = op.din_column_sums.present();
  const size_t din_sum_bytes = sums_din ? sizeof(float) * static_cast<size_t>(cols) : 0;
  const auto kernel = layernorm_backward_packed_kernel<kGeluInput, kRemakeOut, DIn, DOut, In>;
  kernel<<<static_cast<unsigned>(blocks), packed_row_threads(cols), din_sum_bytes, stream>>>(
      static_cast<DIn *>(op.din.data), static_cast<const DOut *>(op.dout.data), static_cast<const In *>(op.in.data),
      op.weight.as<float>(), op.mean.as<float>(), op.rstd.as<float>(), op.in.rows(), cols, partials,
      op.residual_gradient.as<float>(), sums_din, static_cast<In *>(op.out.data), op.bias.as<float>());
}

}  // namespace

void gpu_op(GpuContext & ctx, const LayerNormForward & op, cudaStream_t stream) {
  const int64_t cols = op.in.dim(-1);
  if (op.in.rows() == 0) return;
  const bool packed = packed_rows(cols, {op.out.data, op.in.data, op.weight.data, op.bias.data}) &&
                      (!op.added.present() || aligned_to_pack({op.added.data, op.residual.data}));
  if (op.added.present() && !packed) {  // the join first, then the LayerNorm of what it wrote
    gpu_op(ctx, DropoutForward{op.in, op.added, op.residual, op.dropout}, stream);
    LayerNormForward plain = op;
    plain.added = plain.residual = TensorView{};
    gpu_op(ctx, plain, stream);
    return;
  }
  if (op.activation && !packed) {
    LayerNormForward plain = op;
    plain.in = activated_scratch(ctx, kScratchActivated, op.in, op.activation, stream);
    plain.activation.reset();
    gpu_op(ctx, plain, stream);
    return;
  }
  if (packed) {
    const auto launch = [&](auto kernel, auto out_element, auto in_element, auto packs_per_thread) {
      using Out = decltype(out_element);
      using In = decltype(in_element);
      kernel<<<row_blocks(op.in), packed_row_threads(cols, packs_per_thread), 0, stream>>>(
          static_cast<Out *>(op.out.data), op.mean.as<float>(), op.rstd.as<float>(),
          static_cast<const In *>(op.in.data), op.weight.as<float>(), op.bias.as<float>(), cols, op.eps,
          input_activation(op.activation), join_operands(op));
    };
    with_activation_storage(op.out.dtype, [&](auto out_element) {
      using Out = decltype(out_element);
      with_packs_per_thread(forward_packs_per_thread(cols), [&](auto packs_per_thread) {
        constexpr int kPacks = decltype(packs_per_thread)::value;
        if (op.added.present()) {  // an f32 input, made in the pass
          with_activation_storage(op.added.dtype, [&](auto added_element) {
            using Added = decltype(added_element);
            launch(layernorm_forward_packed_kernel<kPacks, true, Out, float, Added>, out_element, float{},
                   packs_per_thread);
          });
          return;
        }
        with_activation_storage(op.in.dtype, [&](auto in_element) {
          using In = decltype(in_element);
          launch(layernorm_forward_packed_kernel<kPacks, false, Out, In>, out_element, in_element, packs_per_thread);
        });
      });
    });
    KOSMOS_GPU_LAUNCHED("layernorm_forward_packed");
    return;
  }
  layernorm_forward_kernel<<<row_blocks(op.in), kThreads, 0, stream>>>(
      op.out.data, op.out.dtype, op.mean.as<float>(), op.rstd.as<float>(), op.in.data, op.in.dtype,
      op.weight.as<float>(), op.bias.as<float>(), op.in.dim(-1), op.eps);
  KOSMOS_GPU_LAUNCHED("layernorm_forward");
}

void gpu_op(GpuContext & ctx, const LayerNormBackward & op, cudaStream_t stream) {
  const int64_t rows = op.in.rows(), cols = op.in.dim(-1);
  if (rows == 0) return;
  // The fused kernels' per-block weight and bias gradient sums, [blocks, parts, cols] (and din's column sums, the
  // packed kernel's third part, where asked for).
  const int64_t blocks = (rows + kFusedRows - 1) / kFusedRows, parts = op.din_column_sums.present() ? 3 : 2;
  float * partials = nullptr;
  if (cols <= kFusedColumns)
    partials = static_cast<float *>(ctx.scratch(kScratchRows, sizeof(float) * parts * blocks * cols, stream));
  // The packed kernel applies an input GELU where the three activations share a dtype, as the model's FFN sub-LN has
  // them (fewer instantiations); other activated rows go through scratch below.
  const bool packed = partials != nullptr &&
                      packed_rows(cols, {op.din.data, op.dout.data, op.in.data, op.weight.data, partials,
                                         op.residual_gradient.data, op.out.data, op.bias.data}) &&
                      (!op.activation || (*op.activation == Activation::kGelu && op.din.dtype == op.in.dtype &&
                                          op.dout.dtype == op.in.dtype));
  // The packed GELU kernels write the forward's output as they go (in in's dtype); elsewhere the forward runs again
  // after the backward, its statistics (the same as the saved ones) to scratch.
  const bool remakes_in_pass = packed && op.activation && op.out.dtype == op.in.dtype;
  if (op.out.present() && !remakes_in_pass) {
    LayerNormBackward plain = op;
    plain.out = plain.bias = TensorView{};
    gpu_op(ctx, plain, stream);
    auto * stats = static_cast<float *>(ctx.scratch(kScratchRemadeStats, sizeof(float) * 2 * rows, stream));
    const TensorView mean = make_view(stats, DType::kF32, {rows}), rstd = make_view(stats + rows, DType::kF32, {rows});
    gpu_op(ctx, LayerNormForward{op.out, mean, rstd, op.in, op.weight, op.bias, op.eps, op.activation}, stream);
    return;
  }
  if (op.din_column_sums.present() && !packed) {  // the other kernels sum no din: din first, then its columns
    LayerNormBackward plain = op;
    plain.din_column_sums = TensorView{};
    gpu_op(ctx, plain, stream);
    gpu_op(ctx, BiasBackward{op.din_column_sums, op.din}, stream);
    return;
  }
  if (op.residual_gradient.present() && !packed) {  // the other kernels take no residual: added after them
    LayerNormBackward plain = op;
    plain.residual_gradient = TensorView{};
    gpu_op(ctx, plain, stream);
    gpu_op(ctx, Add{op.din, op.din, op.residual_gradient}, stream);
    return;
  }
  if (op.activation && !packed) {
    // The LayerNorm's gradient at act(in) into f32 scratch, then din = act'(in) times it.
    LayerNormBackward plain = op;
    plain.in = activated_scratch(ctx, kScratchActivated, op.in, op.activation, stream);
    const size_t bytes = sizeof(float) * static_cast<size_t>(op.in.numel());
    plain.din = make_view(ctx.scratch(kScratchActivatedGrad, bytes, stream), DType::kF32, op.in.ndim, op.in.dims.data());
    plain.activation.reset();
    gpu_op(ctx, plain, stream);
    const TensorView widened = activated_scratch(ctx, kScratchActivated, op.in, std::nullopt, stream);
    gpu_op(ctx, ActivationBackward{plain.din, plain.din, widened, *op.activation}, stream);
    gpu_op(ctx, Cast{op.din, plain.din}, stream);
    return;
  }
  const NormGradOperands operands{op.din.data, op.dout.data, op.in.data, op.din.dtype, op.dout.dtype, op.in.dtype};
  if (partials != nullptr) {
    if (packed) {
      if (op.activation) {
        with_activation_storage(op.in.dtype, [&](auto element) {
          using T = decltype(element);
          if (op.out.present())
            launch_layernorm_backward_packed<true, true, T, T, T>(op, blocks, partials, stream);
          else
            launch_layernorm_backward_packed<true, false, T, T, T>(op, blocks, partials, stream);
        });
      } else {
        with_backward_storage(op, [&](auto din_element, auto dout_element, auto in_element) {
          launch_layernorm_backward_packed<false, false, decltype(din_element), decltype(dout_element),
                                           decltype(in_element)>(op, blocks, partials, stream);
        });
      }
      KOSMOS_GPU_LAUNCHED("layernorm_backward_packed");
    } else {
      with_backward_storage(op, [&](auto din_element, auto dout_element, auto in_element) {
        using DIn = decltype(din_element);
        using DOut = decltype(dout_element);
        using In = decltype(in_element);
        const auto kernel = layernorm_backward_fused_kernel<DIn, DOut, In>;
        kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
            static_cast<DIn *>(op.din.data), static_cast<const DOut *>(op.dout.data),
            static_cast<const In *>(op.in.data), op.weight.as<float>(), op.mean.as<float>(), op.rstd.as<float>(), rows,
            cols, partials);
      });
      KOSMOS_GPU_LAUNCHED("layernorm_backward_fused");
    }
    add_column_sums(ctx, op.dweight.as<float>(), partials, DType::kF32, blocks, cols, parts * cols, stream);
    add_column_sums(ctx, op.dbias.as<float>(), partials + cols, DType::kF32, blocks, cols, parts * cols, stream);
    if (op.din_column_sums.present())
      add_column_sums(ctx, op.din_column_sums.as<float>(), partials + 2 * cols, DType::kF32, blocks, cols,
                      parts * cols, stream);
    return;
  }
  layernorm_backward_kernel<<<row_blocks(op.in), kThreads, 0, stream>>>(operands, op.weight.as<float>(),
                                                                        op.mean.as<float>(), op.rstd.as<float>(), cols);
  KOSMOS_GPU_LAUNCHED("layernorm_backward");
  const unsigned column_blocks = static_cast<unsigned>((cols + kWarp - 1) / kWarp);
  layernorm_parameter_grads_kernel<<<column_blocks, kThreads, 0, stream>>>(
      op.dweight.as<float>(), op.dbias.as<float>(), operands, op.mean.as<float>(), op.rstd.as<float>(), rows, cols);
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
