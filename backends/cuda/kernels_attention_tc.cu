// kernels_attention_tc.cu: attention with bf16 q, k, v on NVIDIA tensor cores (compute capability 8.0 or newer;
// WMMA 16x16x16 bf16 products accumulating in f32), in FlashAttention-2's manner: a block owns 64 rows of one
// (batch, head), queries for the forward and dq, keys for dk and dv, four warps of 16 rows each, and streams the
// other side through shared memory in tiles of 64; no two blocks write the same gradient row, so nothing needs
// atomics. The scores, softmax statistics, and every sum stay f32; the probabilities (and in the backward the score
// gradients and dout) are rounded to bf16 for the second product. Causal masking and dropout as in
// attention_shape.cuh, each lane drawing 16 probabilities' dropout bits from one Philox block. The output, and the
// gradients dout, dq, dk and dv, are f32 or bf16 (kernels templated over them; written rounded once). Head sizes
// 32, 64 and 128; kernels_attention.cu widens the others to f32. CUDA only: the ROCm build does not compile this file.
#include <cuda_bf16.h>
#include <mma.h>

#include <cstdint>

#include "backends/cuda/attention_tiles.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

using namespace attention_tiles;
using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, bf16, nvcuda::wmma::row_major>;
using FragBRows = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, bf16, nvcuda::wmma::row_major>;
using FragBColumns = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, bf16, nvcuda::wmma::col_major>;
using FragAcc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;

// Columns 2l and 2l + 1 of an f32 row in shared memory for lane l, in one 8-byte load (two loads of a float each
// would put lanes l and l + 16 on one bank). The row starts on 8 bytes: every row length used is even.
__device__ inline float2 column_pair(const float * row) {
  return reinterpret_cast<const float2 *>(row)[threadIdx.x % kLanes];
}

// The softmax and the dq step give lane l row l / 2 of the warp's 16 and two of a step's four groups of 16 keys,
// lane_group(0) and lane_group(1): its half's, (l % 2) and (l % 2) + 2, each one Philox block of dropout bits. Read
// from the f32 products in 16-byte vectors, a quarter-warp's four rows and two halves touch eight distinct bank
// quads.
constexpr int kLaneGroups = 2;
constexpr unsigned kFullMask = 0xFFFFFFFFu;
__device__ inline int lane_group(int g) { return static_cast<int>(threadIdx.x % 2) + 2 * g; }

// N f32 (a multiple of 4) from shared memory, 16-byte aligned (every row length and group start used is a
// multiple of 4).
template <int N>
__device__ inline void load_floats(float (&values)[N], const float * source) {
#pragma unroll
  for (int v = 0; v < N / 4; ++v) {
    const float4 x = reinterpret_cast<const float4 *>(source)[v];
    values[4 * v] = x.x, values[4 * v + 1] = x.y, values[4 * v + 2] = x.z, values[4 * v + 3] = x.w;
  }
}
// N values (a multiple of 8) rounded to bf16 into shared memory, 16-byte aligned (bf16 rows are multiples of 8
// elements).
template <int N>
__device__ inline void store_bf16(bf16 * target, const float (&values)[N]) {
#pragma unroll
  for (int v = 0; v < N / 8; ++v) {
    const float * eight = values + 8 * v;
    reinterpret_cast<uint4 *>(target)[v] = make_uint4(pack_bf16(eight[0], eight[1]), pack_bf16(eight[2], eight[3]),
                                                      pack_bf16(eight[4], eight[5]), pack_bf16(eight[6], eight[7]));
  }
}

// out[16, 16 n] (f32, row length `ldc`) = a[16, K] (bf16 rows of length lda) times b[K, 16 n] given as `columns`
// (b's column j is row j of the tile: a product with a transposed tile) or as rows.
template <int K, int N, bool kColumns>
__device__ void warp_product(float * out, int ldc, const bf16 * a, int lda, const bf16 * b, int ldb) {
#pragma unroll
  for (int n = 0; n < N / 16; ++n) {
    FragAcc acc;
    nvcuda::wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int k = 0; k < K / 16; ++k) {
      FragA left;
      nvcuda::wmma::load_matrix_sync(left, a + k * 16, lda);
      if constexpr (kColumns) {
        FragBColumns right;
        nvcuda::wmma::load_matrix_sync(right, b + n * 16 * ldb + k * 16, ldb);
        nvcuda::wmma::mma_sync(acc, left, right, acc);
      } else {
        FragBRows right;
        nvcuda::wmma::load_matrix_sync(right, b + k * 16 * ldb + n * 16, ldb);
        nvcuda::wmma::mma_sync(acc, left, right, acc);
      }
    }
    nvcuda::wmma::store_matrix_sync(out + n * 16, acc, ldc, nvcuda::wmma::mem_row_major);
  }
}

// acc[D/16] += a[16, 64] (bf16) times b[64, D] (bf16 rows): the gradient sums that persist over the steps.
template <int D>
__device__ void warp_accumulate(FragAcc (&acc)[D / 16], const bf16 * a, int lda, const bf16 * b) {
#pragma unroll
  for (int n = 0; n < D / 16; ++n)
#pragma unroll
    for (int k = 0; k < kStepRows / 16; ++k) {
      FragA left;
      FragBRows right;
      nvcuda::wmma::load_matrix_sync(left, a + k * 16, lda);
      nvcuda::wmma::load_matrix_sync(right, b + k * 16 * TileLayout<D>::half_row + n * 16, TileLayout<D>::half_row);
      nvcuda::wmma::mma_sync(acc[n], left, right, acc[n]);
    }
}

// A warp's [16, D] gradient rows (row0 + r of (b, h), up to `limit`) times `factor` into `target` (f32 or bf16),
// through its rows of the f32 `staging` tile.
template <int D, typename G>
__device__ void warp_store_rows(const HeadRowsOf<G> & target, int64_t b, int64_t h, int64_t row0, int64_t limit,
                                FragAcc (&acc)[D / 16], float * staging, float factor) {
  constexpr int ld = TileLayout<D>::score_row;
#pragma unroll
  for (int n = 0; n < D / 16; ++n)
    nvcuda::wmma::store_matrix_sync(staging + n * 16, acc[n], ld, nvcuda::wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % kLanes;
  for (int index = lane; index < 16 * D; index += kLanes) {
    const int r = index / D, c = index % D;
    if (row0 + r < limit) store_as(target.row(b, h, row0 + r)[c], staging[r * ld + c] * factor);
  }
}

template <int D, typename O>
__global__ void __launch_bounds__(kBlockThreads)
    tc_attention_forward_kernel(HeadRowsOf<O> out, float * lse, HeadRowsOf<const bf16> q, HeadRowsOf<const bf16> k,
                                HeadRowsOf<const bf16> v, AttentionShape s) {
#if __CUDA_ARCH__ >= 800
  using L = TileLayout<D>;
  extern __shared__ __align__(128) unsigned char shared[];
  bf16 * q_tile = reinterpret_cast<bf16 *>(shared);
  bf16 * k_tile = reinterpret_cast<bf16 *>(shared + L::half_tile);
  bf16 * v_tile = reinterpret_cast<bf16 *>(shared + 2 * L::half_tile);
  float * scores = reinterpret_cast<float *>(shared + 3 * L::half_tile);  // S, then P V, per warp rows
  bf16 * probs = reinterpret_cast<bf16 *>(shared + 3 * L::half_tile + L::score_tile);
  float * rescales = reinterpret_cast<float *>(shared + 3 * L::half_tile + L::score_tile + L::step_tile);

  const int warp = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const BlockRows place = block_rows(s, true);
  const int64_t head_index = place.head_index, b = place.b, h = place.h, first_query = place.first;
  const int64_t warp_query = first_query + warp * 16;
  float * warp_scores = scores + warp * 16 * L::score_row;
  bf16 * warp_probs = probs + warp * 16 * L::step_row;
  load_tile<D>(q_tile, q, b, h, first_query, s.tq);

  constexpr int kPerLane = 16 * D / kLanes;  // the lane's share of the warp's [16, D] output
  float acc[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) acc[e] = 0.0f;
  // Lane l keeps the statistics of its row l / 2 (the row's two lanes hold the same).
  const int row = lane / 2;
  const int64_t query = warp_query + row;
  const uint64_t dropout_row = s.dropout_row(b, h, query);
  float row_max = -INFINITY, row_sum = 0.0f;

  const int64_t last_query = (first_query + kBlockRows < s.tq ? first_query + kBlockRows : s.tq) - 1;
  const int64_t key_end = s.keys_for(last_query);  // the block's last row sees the most keys
  for (int64_t first_key = 0; first_key < key_end; first_key += kStepRows) {
    __syncthreads();  // every warp is done with the previous tiles
    load_tile<D>(k_tile, k, b, h, first_key, s.tk);
    load_tile<D>(v_tile, v, b, h, first_key, s.tk);
    __syncthreads();
    warp_product<D, kStepRows, true>(warp_scores, L::score_row, q_tile + warp * 16 * L::half_row, L::half_row,
                                     k_tile, L::half_row);
    __syncwarp();
    // The online softmax: lane l takes row l / 2 and two of the step's four groups of 16 keys (its half's).
    const int64_t visible = query < s.tq ? s.keys_for(query) - first_key : 0;
    float p[kLaneGroups][16];
    float tile_max = -INFINITY;
#pragma unroll
    for (int g = 0; g < kLaneGroups; ++g) {
      const int column0 = 16 * lane_group(g);
      load_floats(p[g], warp_scores + row * L::score_row + column0);
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        p[g][i] = column0 + i < visible ? p[g][i] * s.scale : -INFINITY;
        tile_max = fmaxf(tile_max, p[g][i]);
      }
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    const float new_max = fmaxf(row_max, tile_max);
    float rescale = 1.0f;  // of the row's output so far
    if (new_max != -INFINITY) rescale = row_max == -INFINITY ? 0.0f : __expf(row_max - new_max);
    float sum = 0.0f;
#pragma unroll
    for (int g = 0; g < kLaneGroups; ++g)
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        p[g][i] = p[g][i] == -INFINITY ? 0.0f : __expf(p[g][i] - new_max);
        sum += p[g][i];
      }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    if (new_max != -INFINITY) {
      row_sum = row_sum * rescale + sum;
      row_max = new_max;
    }
    // The probabilities as kept (the sum above is before dropout), into the warp's bf16 step tile.
#pragma unroll
    for (int g = 0; g < kLaneGroups; ++g) {
      const int column0 = 16 * lane_group(g);
      if (s.dropout.active() && column0 < visible) {
        const PhiloxBlock bits = s.dropout.group(dropout_row, first_key + column0);
#pragma unroll
        for (int i = 0; i < 16; ++i) p[g][i] *= s.dropout.factor_at(bits, i);
      }
      store_bf16(warp_probs + row * L::step_row + column0, p[g]);
    }
    if (lane % 2 == 0) rescales[warp * 16 + row] = rescale;
    __syncwarp();
    warp_product<kStepRows, D, false>(warp_scores, L::score_row, warp_probs, L::step_row, v_tile, L::half_row);
    __syncwarp();
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int index = lane + e * kLanes, r = index / D, c = index % D;
      acc[e] = acc[e] * rescales[warp * 16 + r] + warp_scores[r * L::score_row + c];
    }
  }
  // Each row's 1 / sum through the rescale slots to the lanes that hold its outputs; its lse from its even lane.
  __syncwarp();
  if (lane % 2 == 0) {
    rescales[warp * 16 + row] = row_sum > 0.0f ? 1.0f / row_sum : 0.0f;
    if (query < s.tq) lse[head_index * s.tq + query] = row_sum > 0.0f ? row_max + logf(row_sum) : -INFINITY;
  }
  __syncwarp();
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int index = lane + e * kLanes, r = index / D, c = index % D;
    if (warp_query + r < s.tq) store_as(out.row(b, h, warp_query + r)[c], acc[e] * rescales[warp * 16 + r]);
  }
#endif
}

// One dq step over the warp's [16 queries, 64 keys] f32 scores and dout . v products (`dps`, row length ld): the
// score gradients into `ds` (bf16, row length ld_out). Lane l takes query row l / 2 and two of the step's four
// groups of 16 keys (one Philox block each); lse_values and delta_values are the warp's 16 rows'.
__device__ void query_row_gradients(const float * scores, const float * dps, int ld, const float * lse_values,
                                    const float * delta_values, bf16 * ds, int ld_out, const AttentionShape & s,
                                    int64_t b, int64_t h, int64_t warp_query, int64_t first_key) {
  const int lane = threadIdx.x % kLanes, row = lane / 2;
  const int64_t query = warp_query + row;
  const float lse = lse_values[row], delta = delta_values[row];
  const int64_t visible = query < s.tq && lse != -INFINITY ? s.keys_for(query) - first_key : 0;
#pragma unroll
  for (int g = 0; g < kLaneGroups; ++g) {
    const int column0 = 16 * lane_group(g);
    const bool dropout = s.dropout.active() && column0 < visible;
    const PhiloxBlock bits = dropout ? s.dropout.group(s.dropout_row(b, h, query), first_key + column0) : PhiloxBlock{};
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // eight at a time: fewer registers live
      const int column = column0 + 8 * half;
      float score[8], dp[8], gradient[8];
      load_floats(score, scores + row * ld + column);
      load_floats(dp, dps + row * ld + column);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float f = dropout ? s.dropout.factor_at(bits, 8 * half + i) : 1.0f;
        gradient[i] = score_gradient(score[i], dp[i], lse, delta, f, column + i < visible, s.scale).ds;
      }
      store_bf16(ds + row * ld_out + column, gradient);
    }
  }
}

// One dk, dv step over the warp's [16 keys, 64 queries] f32 products S^T and dP^T (row length ld): the
// probabilities as kept into `kept` and the score gradients into `ds` (bf16, row length ld_out). Lane l takes
// queries 2l and 2l + 1 of every row: the warp's 16 keys are one group, so each query's dropout bits for all of
// them are one Philox block. lse_values and delta_values are the step's 64 queries'.
__device__ void key_row_gradients(const float * scores, const float * dps, int ld, const float * lse_values,
                                  const float * delta_values, bf16 * kept, bf16 * ds, int ld_out,
                                  const AttentionShape & s, int64_t b, int64_t h, int64_t warp_key,
                                  int64_t first_query) {
  const int lane = threadIdx.x % kLanes;
  const float2 lse = column_pair(lse_values), delta = column_pair(delta_values);
  PhiloxBlock bits[2] = {};
  int64_t keys_seen[2];  // by each of the lane's queries
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int64_t query = first_query + 2 * lane + e;
    keys_seen[e] = query < s.tq && (e == 0 ? lse.x : lse.y) != -INFINITY ? s.keys_for(query) : 0;
    if (s.dropout.active() && warp_key < keys_seen[e]) bits[e] = s.dropout.group(s.dropout_row(b, h, query), warp_key);
  }
#pragma unroll
  for (int r = 0; r < 16; ++r) {
    const float2 score_pair = column_pair(scores + r * ld), dp_pair = column_pair(dps + r * ld);
    ScoreGradient g[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const bool visible = warp_key + r < keys_seen[e];
      const float f = s.dropout.active() && visible ? s.dropout.factor_at(bits[e], r) : 1.0f;
      g[e] = score_gradient(e == 0 ? score_pair.x : score_pair.y, e == 0 ? dp_pair.x : dp_pair.y,
                            e == 0 ? lse.x : lse.y, e == 0 ? delta.x : delta.y, f, visible, s.scale);
    }
    reinterpret_cast<__nv_bfloat162 *>(kept + r * ld_out)[lane] = __floats2bfloat162_rn(g[0].kept, g[1].kept);
    reinterpret_cast<__nv_bfloat162 *>(ds + r * ld_out)[lane] = __floats2bfloat162_rn(g[0].ds, g[1].ds);
  }
}

// What a backward block works in: shared memory laid out as the block's own two [64, D] bf16 tiles (q and dout for
// dq; k and v for dk and dv), the two streamed through it, two f32 [64, 64] products (the scores and dout . v), two
// bf16 [64, 64] steps (the kept probabilities and the score gradients), and the step's 64 lse and delta values;
// this warp's rows of the products and steps; and the block's (batch, head) and first row (block_rows), with its
// lse and delta rows.
template <int D>
struct BackwardBlock {
  bf16 * own[2];
  bf16 * streamed[2];
  float *lse_values, *delta_values;
  float *warp_scores, *warp_dps;
  bf16 *warp_kept, *warp_ds;
  int warp;
  int64_t b, h, first;  // the block's (batch, head) and first row (of queries or keys)
  const float *head_lse, *head_delta;

  __device__ BackwardBlock(unsigned char * shared, const AttentionShape & s, const float * lse, const float * delta,
                           bool query_tiles) {
    using L = TileLayout<D>;
    for (int t = 0; t < 2; ++t) {
      own[t] = reinterpret_cast<bf16 *>(shared + t * L::half_tile);
      streamed[t] = reinterpret_cast<bf16 *>(shared + (2 + t) * L::half_tile);
    }
    unsigned char * products = shared + 4 * L::half_tile;
    unsigned char * steps = products + 2 * L::score_tile;
    warp = threadIdx.x / kLanes;
    warp_scores = reinterpret_cast<float *>(products) + warp * 16 * L::score_row;
    warp_dps = reinterpret_cast<float *>(products + L::score_tile) + warp * 16 * L::score_row;
    warp_kept = reinterpret_cast<bf16 *>(steps) + warp * 16 * L::step_row;
    warp_ds = reinterpret_cast<bf16 *>(steps + L::step_tile) + warp * 16 * L::step_row;
    lse_values = reinterpret_cast<float *>(steps + 2 * L::step_tile);
    delta_values = lse_values + kStepRows;
    const BlockRows place = block_rows(s, query_tiles);
    b = place.b;
    h = place.h;
    first = place.first;
    head_lse = lse + place.head_index * s.tq;
    head_delta = delta + place.head_index * s.tq;
  }
};

template <int D, typename G>
__global__ void __launch_bounds__(kBlockThreads)
    tc_attention_dq_kernel(HeadRowsOf<G> dq, HeadRowsOf<const G> dout, HeadRowsOf<const bf16> q,
                           HeadRowsOf<const bf16> k, HeadRowsOf<const bf16> v, const float * lse, const float * delta,
                           AttentionShape s) {
#if __CUDA_ARCH__ >= 800
  using L = TileLayout<D>;
  extern __shared__ __align__(128) unsigned char shared[];
  const BackwardBlock<D> m(shared, s, lse, delta, true);
  bf16 *q_tile = m.own[0], *dout_tile = m.own[1], *k_tile = m.streamed[0], *v_tile = m.streamed[1];
  const int64_t first_query = m.first, warp_query = first_query + m.warp * 16;
  load_tile<D>(q_tile, q, m.b, m.h, first_query, s.tq);
  load_tile<D>(dout_tile, dout, m.b, m.h, first_query, s.tq);
  load_row_values(m.lse_values, m.head_lse, first_query, s.tq, -INFINITY);
  load_row_values(m.delta_values, m.head_delta, first_query, s.tq, 0.0f);
  FragAcc acc[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) nvcuda::wmma::fill_fragment(acc[n], 0.0f);
  const int64_t b = m.b, h = m.h;

  const int64_t last_query = (first_query + kBlockRows < s.tq ? first_query + kBlockRows : s.tq) - 1;
  const int64_t key_end = s.keys_for(last_query);
  for (int64_t first_key = 0; first_key < key_end; first_key += kStepRows) {
    __syncthreads();
    load_tile<D>(k_tile, k, b, h, first_key, s.tk);
    load_tile<D>(v_tile, v, b, h, first_key, s.tk);
    __syncthreads();
    warp_product<D, kStepRows, true>(m.warp_scores, L::score_row, q_tile + m.warp * 16 * L::half_row, L::half_row,
                                     k_tile, L::half_row);  // S = Q K^T
    warp_product<D, kStepRows, true>(m.warp_dps, L::score_row, dout_tile + m.warp * 16 * L::half_row, L::half_row,
                                     v_tile, L::half_row);  // dP = dO V^T
    __syncwarp();
    query_row_gradients(m.warp_scores, m.warp_dps, L::score_row, m.lse_values + m.warp * 16,
                        m.delta_values + m.warp * 16, m.warp_ds, L::step_row, s, b, h, warp_query, first_key);
    __syncwarp();
    warp_accumulate<D>(acc, m.warp_ds, L::step_row, k_tile);  // dQ += dS K
  }
  warp_store_rows<D>(dq, b, h, warp_query, s.tq, acc, m.warp_scores, s.scale);
#endif
}

template <int D, typename G>
__global__ void __launch_bounds__(kBlockThreads)
    tc_attention_dkdv_kernel(HeadRowsOf<G> dk, HeadRowsOf<G> dv, HeadRowsOf<const G> dout, HeadRowsOf<const bf16> q,
                             HeadRowsOf<const bf16> k, HeadRowsOf<const bf16> v, const float * lse,
                             const float * delta, AttentionShape s) {
#if __CUDA_ARCH__ >= 800
  using L = TileLayout<D>;
  extern __shared__ __align__(128) unsigned char shared[];
  const BackwardBlock<D> m(shared, s, lse, delta, false);  // its f32 products are S^T and dP^T: keys x queries
  bf16 *k_tile = m.own[0], *v_tile = m.own[1], *q_tile = m.streamed[0], *dout_tile = m.streamed[1];
  const int64_t first_key = m.first, warp_key = first_key + m.warp * 16;
  const int64_t b = m.b, h = m.h;
  load_tile<D>(k_tile, k, b, h, first_key, s.tk);
  load_tile<D>(v_tile, v, b, h, first_key, s.tk);
  FragAcc dk_acc[D / 16], dv_acc[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    nvcuda::wmma::fill_fragment(dk_acc[n], 0.0f);
    nvcuda::wmma::fill_fragment(dv_acc[n], 0.0f);
  }

  for (int64_t first_query = s.queries_from(first_key); first_query < s.tq; first_query += kStepRows) {
    __syncthreads();
    load_tile<D>(q_tile, q, b, h, first_query, s.tq);
    load_tile<D>(dout_tile, dout, b, h, first_query, s.tq);
    load_row_values(m.lse_values, m.head_lse, first_query, s.tq, -INFINITY);
    load_row_values(m.delta_values, m.head_delta, first_query, s.tq, 0.0f);
    __syncthreads();
    warp_product<D, kStepRows, true>(m.warp_scores, L::score_row, k_tile + m.warp * 16 * L::half_row, L::half_row,
                                     q_tile, L::half_row);  // S^T = K Q^T
    warp_product<D, kStepRows, true>(m.warp_dps, L::score_row, v_tile + m.warp * 16 * L::half_row, L::half_row,
                                     dout_tile, L::half_row);  // dP^T = V dO^T
    __syncwarp();
    key_row_gradients(m.warp_scores, m.warp_dps, L::score_row, m.lse_values, m.delta_values, m.warp_kept, m.warp_ds,
                      L::step_row, s, b, h, warp_key, first_query);
    __syncwarp();
    warp_accumulate<D>(dv_acc, m.warp_kept, L::step_row, dout_tile);  // dV += (P f)^T dO
    warp_accumulate<D>(dk_acc, m.warp_ds, L::step_row, q_tile);       // dK += dS^T Q
  }
  warp_store_rows<D>(dk, b, h, warp_key, s.tk, dk_acc, m.warp_scores, s.scale);
  __syncwarp();
  warp_store_rows<D>(dv, b, h, warp_key, s.tk, dv_acc, m.warp_scores, 1.0f);
#endif
}

// Dynamic shared memory per block: the forward's q, k, v tiles, scores, probabilities and rescales; the backward's
// four tiles, two f32 products, two bf16 steps, lse and delta (dq uses one bf16 step of the two).
template <int D>
constexpr size_t forward_shared() {
  return 3 * TileLayout<D>::half_tile + TileLayout<D>::score_tile + TileLayout<D>::step_tile + sizeof(float) * kBlockRows;
}
template <int D>
constexpr size_t backward_shared() {
  return 4 * TileLayout<D>::half_tile + 2 * TileLayout<D>::score_tile + 2 * TileLayout<D>::step_tile +
         2 * sizeof(float) * kBlockRows;
}

}  // namespace

bool tensor_core_attention_takes(int64_t head_dim) {
  if (head_dim != 32 && head_dim != 64 && head_dim != 128) return false;
  int device = 0, major = 0, shared = 0;
  KOSMOS_GPU_CHECK(cudaGetDevice(&device));
  KOSMOS_GPU_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  KOSMOS_GPU_CHECK(cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t needed = head_dim == 128 ? backward_shared<128>() : head_dim == 64 ? backward_shared<64>()
                                                                                  : backward_shared<32>();
  return major >= 8 && static_cast<size_t>(shared) >= needed;
}

void tensor_core_attention_forward(const AttentionForward & op, cudaStream_t stream) {
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  if (s.batch * s.heads * s.tq == 0) return;
  for_head_dim<32, 64, 128>(s.head_dim, op.out.dtype == DType::kF32, "WMMA attention", [&](auto d, auto t) {
    constexpr int D = decltype(d)::value;
    using T = decltype(t);
    launch_forward<T>(tc_attention_forward_kernel<D, T>, forward_shared<D>(), "tc_attention_forward", op, s, stream,
                      kBlockRows);
  });
}

void tensor_core_attention_backward(const AttentionBackward & op, const float * delta, cudaStream_t stream) {
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  if (s.batch * s.heads * s.tq == 0 || s.tk == 0) return;
  // dout's dtype is dq's (validated)
  for_head_dim<32, 64, 128>(s.head_dim, op.dq.dtype == DType::kF32, "WMMA attention", [&](auto d, auto t) {
    constexpr int D = decltype(d)::value;
    using T = decltype(t);
    launch_query_blocks<T>(tc_attention_dq_kernel<D, T>, backward_shared<D>(), "tc_attention_dq", op, delta, s, stream);
    launch_key_blocks<T>(tc_attention_dkdv_kernel<D, T>, backward_shared<D>(), "tc_attention_dkdv", op, delta, s,
                         stream);
  });
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
