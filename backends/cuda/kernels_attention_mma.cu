// kernels_attention_mma.cu: attention with bf16 q, k, v on NVIDIA tensor cores through mma.sync (m16n8k16, bf16
// products accumulating in f32; compute capability 8.0 or newer), in FlashAttention-2's register-resident form: blocks
// and steps as in attention_tiles.cuh, each warp taking its 16 own rows as A fragments, computing a step's [16, 64]
// scores (and in the backward dout . v) into accumulator fragments, taking the softmax (or the score gradients) there,
// and feeding them, rounded to bf16, straight back as the A fragments of the second product; no score goes through
// shared memory. The streamed tiles are double-buffered, the next step's copied by cp.async while this one computes,
// and read by ldmatrix (transposed where the tile's rows are the product's depth). Dropout bytes
// (backends/attention_dropout.h) are staged per warp in shared memory: each lane makes two Philox blocks per step and
// reads the bytes of the elements it holds. The elementwise work between the products competes with them for issue
// slots (by count, a lane's 32 probabilities of a step take more instructions than the step's mma and ldmatrix), so
// it is kept small: exponents in base 2 (the scale times log2(e) folded into the scores, one ex2 per probability, a row
// that sees no key given lse +inf so its probabilities come out 0 without a test), and the mask applied only on the
// steps the causal diagonal or the end of the rows cuts (AttentionShape::sees_all, the same for a whole warp). Same
// results as the WMMA kernels of kernels_attention_tc.cu up to f32 rounding; head sizes 32 and 64 (128 would need more
// than 255 registers in the backward). CUDA only.
#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/attention_tiles.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

using namespace attention_tiles;

// Fragments of mma.m16n8k16 over a warp's lanes (PTX ISA), with g = lane / 4 and t = lane % 4; each 32-bit
// register of A and B holds two bf16, the lower column (A) or row (B) in the low half:
//   A [16 x 16]: a0 = (g, 2t..2t+1), a1 = (g + 8, 2t..2t+1), a2 = (g, 2t+8..2t+9), a3 = (g + 8, 2t+8..2t+9);
//   B [16 x 8]:  b0 = (2t..2t+1, g), b1 = (2t+8..2t+9, g);
//   C [16 x 8]:  c0, c1 = (g, 2t), (g, 2t + 1); c2, c3 = (g + 8, 2t), (g + 8, 2t + 1).
// So the C fragments of columns [16 k, 16 k + 16) are, packed to bf16, the A fragment of depth slice k.
struct FragmentA {
  uint32_t x[4];
};
struct FragmentC {
  float x[4];
};

#if defined(KOSMOS_GPU_EMULATION)  // the instructions on the host (backends/emulated/warp_matrices.h)
__device__ inline void mma(FragmentC & c, const FragmentA & a, uint32_t b0, uint32_t b1) {
  kosmos_emulation::mma_m16n8k16_bf16(c.x, a.x, b0, b1);
}
__device__ inline void load_matrices(uint32_t (&r)[4], const bf16 * row) { kosmos_emulation::ldmatrix_x4(r, row, false); }
__device__ inline void load_matrices_transposed(uint32_t (&r)[4], const bf16 * row) {
  kosmos_emulation::ldmatrix_x4(r, row, true);
}
#else
__device__ inline void mma(FragmentC & c, const FragmentA & a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c.x[0]), "+f"(c.x[1]), "+f"(c.x[2]), "+f"(c.x[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b0), "r"(b1));
}

// ldmatrix .x4: lanes 8m to 8m + 7 give the addresses of the eight 16-byte rows of matrix m, and register m of
// lane l receives that matrix's (l / 4, 2 (l % 4) .. +1); transposed, its (2 (l % 4) .. +1, l / 4).
__device__ inline void load_matrices(uint32_t (&r)[4], const bf16 * row) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ inline void load_matrices_transposed(uint32_t (&r)[4], const bf16 * row) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
#endif

__device__ inline int lane_index() { return static_cast<int>(threadIdx.x % kLanes); }

// The warp's rows [row0, row0 + 16) of a [64, D] tile as A fragments, one per 16 columns.
template <int D>
__device__ void load_rows_as_a(FragmentA (&a)[D / 16], const bf16 * tile, int row0) {
  const int lane = lane_index();
#pragma unroll
  for (int k = 0; k < D / 16; ++k) {
    uint32_t r[4];  // matrices: rows 0-7 and 8-15 of columns 16k + 0-7, then of 16k + 8-15
    load_matrices(r, tile + (row0 + lane % 16) * TileLayout<D>::half_row + 16 * k + (lane / 16) * 8);
    a[k] = FragmentA{{r[0], r[1], r[2], r[3]}};
  }
}

// s[16, 64] = a[16, D] times tile[64, D]^T: the tile's rows are the columns of s (8 C fragments of 8 columns).
template <int D>
__device__ void product_with_rows(FragmentC (&s)[8], const FragmentA (&a)[D / 16], const bf16 * tile) {
  const int lane = lane_index();
#pragma unroll
  for (int j = 0; j < 8; ++j) s[j] = FragmentC{{0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
  for (int k = 0; k < D / 16; ++k)
#pragma unroll
    for (int pair = 0; pair < 4; ++pair) {  // columns 16 pair .. +15: C fragments 2 pair and 2 pair + 1
      uint32_t r[4];  // matrices: tile rows 16 pair + 0-7 at columns 16k + 0-7, then 16k + 8-15; rows + 8 likewise
      load_matrices(r, tile + (16 * pair + (lane / 16) * 8 + lane % 8) * TileLayout<D>::half_row + 16 * k +
                           ((lane / 8) % 2) * 8);
      mma(s[2 * pair], a[k], r[0], r[1]);
      mma(s[2 * pair + 1], a[k], r[2], r[3]);
    }
}

// acc[16, D] (D / 8 C fragments) += p[16, 64] (C fragments, rounded to bf16) times tile[64, D]: the tile's rows
// are the product's depth, read transposed.
template <int D>
__device__ void accumulate_product(FragmentC (&acc)[D / 8], const FragmentC (&p)[8], const bf16 * tile) {
  const int lane = lane_index();
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const FragmentA a{{pack_bf16(p[2 * k].x[0], p[2 * k].x[1]), pack_bf16(p[2 * k].x[2], p[2 * k].x[3]),
                       pack_bf16(p[2 * k + 1].x[0], p[2 * k + 1].x[1]),
                       pack_bf16(p[2 * k + 1].x[2], p[2 * k + 1].x[3])}};
#pragma unroll
    for (int pair = 0; pair < D / 16; ++pair) {  // output columns 16 pair .. +15
      uint32_t r[4];  // matrices: tile rows 16k + 0-7 and 16k + 8-15 at columns 16 pair + 0-7, then + 8-15
      load_matrices_transposed(r, tile + (16 * k + ((lane / 8) % 2) * 8 + lane % 8) * TileLayout<D>::half_row +
                                      16 * pair + (lane / 16) * 8);
      mma(acc[2 * pair], a, r[0], r[1]);
      mma(acc[2 * pair + 1], a, r[2], r[3]);
    }
  }
}

template <int N>
__device__ inline void clear(FragmentC (&fragments)[N]) {
#pragma unroll
  for (int n = 0; n < N; ++n) fragments[n] = FragmentC{{0.0f, 0.0f, 0.0f, 0.0f}};
}

// A warp's dropout bytes for one step, in shared memory. Query rows (forward, dq): [16 rows][64 keys], rows
// kQueryRowBytes apart (68: the reads of a lane group's eight rows land on distinct banks), staged by lane l for
// row l / 2 and the key groups (l % 2) and (l % 2) + 2. Key rows (dk, dv): [64 queries][16 keys] (the warp's 16
// keys are one group), staged by lane l for queries 2l and 2l + 1.
constexpr int kQueryRowBytes = kStepRows + 4;
constexpr int kWarpDropoutBytes = 16 * kQueryRowBytes;  // >= 64 * 16, and a multiple of 16
static_assert(kWarpDropoutBytes >= kStepRows * 16 && kWarpDropoutBytes % 16 == 0, "dropout byte tile");

__device__ void stage_query_rows(unsigned char * bytes, const AttentionShape & s, int64_t b, int64_t h,
                                 int64_t warp_query, int64_t first_key) {
  __syncwarp();  // the warp is done reading the previous step's bytes
  const int lane = lane_index(), row = lane / 2;
  const int64_t query = warp_query + row;
  if (query >= s.tq) return;  // rows past the end are never read
#pragma unroll
  for (int g = 0; g < 2; ++g) {
    const int group = lane % 2 + 2 * g;
    if (first_key + 16 * group >= s.tk) continue;
    const PhiloxBlock bits = s.dropout.group(s.dropout_row(b, h, query), first_key + 16 * group);
    auto * target = reinterpret_cast<uint32_t *>(bytes + row * kQueryRowBytes + 16 * group);
#pragma unroll
    for (int w = 0; w < 4; ++w) target[w] = bits.lane[w];  // little-endian: key 4w + i is byte i of lane w
  }
}
__device__ inline float query_row_factor(const unsigned char * bytes, const AttentionShape & s, int row, int column) {
  return s.dropout.factor_of_byte(bytes[row * kQueryRowBytes + column]);
}

__device__ void stage_key_rows(unsigned char * bytes, const AttentionShape & s, int64_t b, int64_t h, int64_t warp_key,
                               int64_t first_query) {
  __syncwarp();  // the warp is done reading the previous step's bytes
  const int lane = lane_index();
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int64_t query = first_query + 2 * lane + e;
    if (query >= s.tq || warp_key >= s.tk) continue;
    const PhiloxBlock bits = s.dropout.group(s.dropout_row(b, h, query), warp_key);
    *reinterpret_cast<uint4 *>(bytes + (2 * lane + e) * 16) = make_uint4(bits.lane[0], bits.lane[1], bits.lane[2],
                                                                         bits.lane[3]);
  }
}
__device__ inline float key_row_factor(const unsigned char * bytes, const AttentionShape & s, int key, int query) {
  return s.dropout.factor_of_byte(bytes[query * 16 + key]);
}

// The rows of the fragments a lane holds: g and g + 8 of the warp's 16 (`half` 0 and 1), and its columns
// 8j + 2t + e of a step's 64.
__device__ inline int lane_row(int half) { return lane_index() / 4 + 8 * half; }
__device__ inline int lane_column(int j, int e) { return 8 * j + 2 * (lane_index() % 4) + e; }

// Max and sum over the four lanes that hold a row.
__device__ inline float row_max_of(float value) {
  value = fmaxf(value, __shfl_xor_sync(0xFFFFFFFFu, value, 1));
  return fmaxf(value, __shfl_xor_sync(0xFFFFFFFFu, value, 2));
}
__device__ inline float row_sum_of(float value) {
  value += __shfl_xor_sync(0xFFFFFFFFu, value, 1);
  return value + __shfl_xor_sync(0xFFFFFFFFu, value, 2);
}

// A step's scores of the warp's 16 query rows (the lane's fragments) in base 2, times scale2 = log2(e) scale, and
// -inf at the keys a row does not see (those from keys_seen[half] on), which only a `masked` step has.
__device__ inline void query_scores_base2(FragmentC (&scores)[8], float scale2, bool masked, int64_t first_key,
                                          const int64_t (&keys_seen)[2]) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int x = 0; x < 4; ++x) scores[j].x[x] *= scale2;
  if (!masked) return;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (first_key + lane_column(j, e) >= keys_seen[half]) scores[j].x[2 * half + e] = -INFINITY;
}

// A warp's [16, D] result rows (row0 + lane_row, up to `limit`) times `factor` into `target` (f32 or bf16); each
// row's own factor where `row_factors` is given.
template <int D, typename T>
__device__ void store_rows(const HeadRowsOf<T> & target, int64_t b, int64_t h, int64_t row0, int64_t limit,
                           const FragmentC (&acc)[D / 8], const float (&row_factors)[2]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t row = row0 + lane_row(half);
    if (row >= limit) continue;
    T * out = target.row(b, h, row);
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) store_as(out[lane_column(n, e)], acc[n].x[2 * half + e] * row_factors[half]);
  }
}

// Steps over rows [first, end) of the streamed side, 64 at a time, its two operands (k and v, or q and dout)
// double-buffered in `buffers` (four [64, D] tiles): the copies for step i + 1 are issued by cp.async right after
// step i's barrier and land while step i computes. Before the barrier, prepare(row, buffer) writes what the step
// needs besides (dropout bytes, lse and delta); then compute(row, a_tile, b_tile, buffer).
template <int D, typename A, typename B, typename Prepare, typename Compute>
__device__ __forceinline__ void stream_steps(unsigned char * buffers, const HeadRowsOf<const A> & a,
                                             const HeadRowsOf<const B> & b_rows, int64_t b, int64_t h, int64_t first,
                                             int64_t end, int64_t limit, Prepare prepare, Compute compute) {
  const auto tile = [&](int buffer, int which) {
    return reinterpret_cast<bf16 *>(buffers + (2 * buffer + which) * TileLayout<D>::half_tile);
  };
  const auto issue = [&](int buffer, int64_t row) {
    load_tile<D, A, true>(tile(buffer, 0), a, b, h, row, limit);
    load_tile<D, B, true>(tile(buffer, 1), b_rows, b, h, row, limit);
    commit_async_copies();
  };
  if (first < end) issue(0, first);
  int buffer = 0;
  for (int64_t row = first; row < end; row += kStepRows, buffer ^= 1) {
    wait_async_copies();
    prepare(row, buffer);
    __syncthreads();  // the step's tiles in place for every thread; every warp done with the previous step
    if (row + kStepRows < end) issue(buffer ^ 1, row + kStepRows);
    compute(row, tile(buffer, 0), tile(buffer, 1), buffer);
  }
}

// The lse of queries [first, first + 64) in base 2 (base2_lse: +inf past `limit`), for score_gradient_base2.
__device__ inline void load_base2_lse(float * target, const float * lse, int64_t first, int64_t limit) {
  for (int r = threadIdx.x; r < kStepRows; r += kBlockThreads)
    target[r] = base2_lse(first + r < limit ? lse[first + r] : -INFINITY);
}

// Shared memory: the own tiles (one forward, two backward), the four streamed ones, the warps' dropout bytes, and
// backward two buffers of the step's 64 lse and delta values.
template <int D>
constexpr size_t forward_shared() {
  return 5 * TileLayout<D>::half_tile + kWarps * kWarpDropoutBytes;
}
template <int D>
constexpr size_t backward_shared() {
  return 6 * TileLayout<D>::half_tile + kWarps * kWarpDropoutBytes + 4 * sizeof(float) * kStepRows;
}

// A backward block's shared memory as backward_shared<D>() lays it out, and this warp's dropout bytes.
template <int D>
struct BackwardShared {
  bf16 * own[2];            // q and dout (dq), k and v (dk, dv)
  unsigned char * streamed;  // the other two, twice
  unsigned char * dropout_bytes;
  float * step_values;  // [2 buffers][lse (base 2), delta][64] (dk, dv)
  __device__ explicit BackwardShared(unsigned char * shared) {
    constexpr size_t tile = TileLayout<D>::half_tile;
    own[0] = reinterpret_cast<bf16 *>(shared);
    own[1] = reinterpret_cast<bf16 *>(shared + tile);
    streamed = shared + 2 * tile;
    dropout_bytes = shared + 6 * tile + (threadIdx.x / kLanes) * kWarpDropoutBytes;
    step_values = reinterpret_cast<float *>(shared + 6 * tile + kWarps * kWarpDropoutBytes);
  }
};

template <int D, typename O>
__global__ void __launch_bounds__(kBlockThreads)
    mma_attention_forward_kernel(HeadRowsOf<O> out, float * lse, HeadRowsOf<const bf16> q, HeadRowsOf<const bf16> k,
                                 HeadRowsOf<const bf16> v, AttentionShape s) {
#if __CUDA_ARCH__ >= 800
  using L = TileLayout<D>;
  extern __shared__ __align__(128) unsigned char shared[];
  bf16 * q_tile = reinterpret_cast<bf16 *>(shared);
  unsigned char * streamed = shared + L::half_tile;  // k and v, twice
  const int warp = static_cast<int>(threadIdx.x) / kLanes;
  unsigned char * dropout_bytes = shared + 5 * L::half_tile + warp * kWarpDropoutBytes;

  const BlockRows place = block_rows(s, true);
  const int64_t head_index = place.head_index, b = place.b, h = place.h;
  const int64_t first_query = place.first, warp_query = first_query + 16 * warp;
  load_tile<D>(q_tile, q, b, h, first_query, s.tq);
  __syncthreads();
  FragmentA q_rows[D / 16];
  load_rows_as_a<D>(q_rows, q_tile, 16 * warp);

  FragmentC acc[D / 8];
  clear(acc);
  // The online softmax in base 2: scores times log2(e) scale, so that each probability is one exp2_approx.
  const float scale2 = s.scale * kLog2e;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};  // row_max in base 2
  int64_t keys_seen[2];  // by the lane's two rows
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t query = warp_query + lane_row(half);
    keys_seen[half] = query < s.tq ? s.keys_for(query) : 0;
  }

  const int64_t last_query = (first_query + kBlockRows < s.tq ? first_query + kBlockRows : s.tq) - 1;
  const int64_t key_end = s.keys_for(last_query);  // the block's last row sees the most keys
  const auto prepare = [&](int64_t first_key, int) {
    if (s.dropout.active()) stage_query_rows(dropout_bytes, s, b, h, warp_query, first_key);
  };
  const auto compute = [&](int64_t first_key, const bf16 * k_tile, const bf16 * v_tile, int) {
    FragmentC p[8];
    product_with_rows<D>(p, q_rows, k_tile);
    // Only a step the causal diagonal or the end of the rows cuts needs the mask (the same for the whole warp).
    query_scores_base2(p, scale2, !s.sees_all(warp_query, 16, first_key, kStepRows), first_key, keys_seen);
    // The online softmax of the lane's two rows; the sums are taken before dropout.
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) tile_max = fmaxf(tile_max, p[j].x[2 * half + e]);
      const float new_max = fmaxf(row_max[half], row_max_of(tile_max));
      // A row that has seen no key yet keeps max -inf; 0 in its place gives its probabilities and rescale 2^-inf = 0.
      const float max_used = new_max == -INFINITY ? 0.0f : new_max;
      const float rescale = exp2_approx(row_max[half] - max_used);  // of the row's output so far
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float & value = p[j].x[2 * half + e];
          value = exp2_approx(value - max_used);
          sum += value;
          if (s.dropout.active()) value *= query_row_factor(dropout_bytes, s, lane_row(half), lane_column(j, e));
        }
      row_sum[half] = row_sum[half] * rescale + row_sum_of(sum);
      row_max[half] = new_max;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) acc[n].x[2 * half] *= rescale, acc[n].x[2 * half + 1] *= rescale;
    }
    accumulate_product<D>(acc, p, v_tile);
  };
  stream_steps<D, bf16, bf16>(streamed, k, v, b, h, 0, key_end, s.tk, prepare, compute);
  float inverse_sums[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    inverse_sums[half] = row_sum[half] > 0.0f ? 1.0f / row_sum[half] : 0.0f;
    const int64_t query = warp_query + lane_row(half);
    if (lane_index() % 4 == 0 && query < s.tq)  // back to base e: lse = ln(2) max2 + ln(sum)
      lse[head_index * s.tq + query] =
          row_sum[half] > 0.0f ? row_max[half] * (1.0f / kLog2e) + logf(row_sum[half]) : -INFINITY;
  }
  store_rows<D>(out, b, h, warp_query, s.tq, acc, inverse_sums);
#endif
}

template <int D, typename G>
__global__ void __launch_bounds__(kBlockThreads)
    mma_attention_dq_kernel(HeadRowsOf<G> dq, HeadRowsOf<const G> dout, HeadRowsOf<const bf16> q,
                            HeadRowsOf<const bf16> k, HeadRowsOf<const bf16> v, const float * lse, const float * delta,
                            AttentionShape s) {
#if __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) unsigned char shared[];
  const BackwardShared<D> m(shared);
  bf16 *q_tile = m.own[0], *dout_tile = m.own[1];
  const int warp = static_cast<int>(threadIdx.x) / kLanes;

  const BlockRows place = block_rows(s, true);
  const int64_t head_index = place.head_index, b = place.b, h = place.h;
  const int64_t first_query = place.first, warp_query = first_query + 16 * warp;
  load_tile<D>(q_tile, q, b, h, first_query, s.tq);
  load_tile<D>(dout_tile, dout, b, h, first_query, s.tq);
  __syncthreads();
  FragmentA q_rows[D / 16], dout_rows[D / 16];
  load_rows_as_a<D>(q_rows, q_tile, 16 * warp);
  load_rows_as_a<D>(dout_rows, dout_tile, 16 * warp);

  const float scale2 = s.scale * kLog2e;  // scores and lse in base 2 (score_gradient_base2)
  float row_lse2[2], row_delta[2];
  int64_t keys_seen[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t query = warp_query + lane_row(half);
    row_lse2[half] = base2_lse(query < s.tq ? lse[head_index * s.tq + query] : -INFINITY);
    row_delta[half] = query < s.tq ? delta[head_index * s.tq + query] : 0.0f;
    keys_seen[half] = query < s.tq ? s.keys_for(query) : 0;
  }
  FragmentC acc[D / 8];
  clear(acc);

  const int64_t last_query = (first_query + kBlockRows < s.tq ? first_query + kBlockRows : s.tq) - 1;
  const int64_t key_end = s.keys_for(last_query);
  const auto prepare = [&](int64_t first_key, int) {
    if (s.dropout.active()) stage_query_rows(m.dropout_bytes, s, b, h, warp_query, first_key);
  };
  const auto compute = [&](int64_t first_key, const bf16 * k_tile, const bf16 * v_tile, int) {
    FragmentC scores[8], dps[8];
    product_with_rows<D>(scores, q_rows, k_tile);  // S = Q K^T
    product_with_rows<D>(dps, dout_rows, v_tile);  // dP = dO V^T
    query_scores_base2(scores, scale2, !s.sees_all(warp_query, 16, first_key, kStepRows), first_key, keys_seen);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float f =
              s.dropout.active() ? query_row_factor(m.dropout_bytes, s, lane_row(half), lane_column(j, e)) : 1.0f;
          float & value = scores[j].x[2 * half + e];
          value = score_gradient_base2(value, dps[j].x[2 * half + e], row_lse2[half], row_delta[half], f).ds;
        }
    __syncwarp();  // the lanes together before mma.sync and ldmatrix
    accumulate_product<D>(acc, scores, k_tile);  // dQ += dS K
  };
  stream_steps<D, bf16, bf16>(m.streamed, k, v, b, h, 0, key_end, s.tk, prepare, compute);
  const float scales[2] = {s.scale, s.scale};
  store_rows<D>(dq, b, h, warp_query, s.tq, acc, scales);
#endif
}

template <int D, typename G>
__global__ void __launch_bounds__(kBlockThreads)
    mma_attention_dkdv_kernel(HeadRowsOf<G> dk, HeadRowsOf<G> dv, HeadRowsOf<const G> dout, HeadRowsOf<const bf16> q,
                              HeadRowsOf<const bf16> k, HeadRowsOf<const bf16> v, const float * lse,
                              const float * delta, AttentionShape s) {
#if __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) unsigned char shared[];
  const BackwardShared<D> m(shared);
  bf16 *k_tile = m.own[0], *v_tile = m.own[1];
  const int warp = static_cast<int>(threadIdx.x) / kLanes;

  const BlockRows place = block_rows(s, false);
  const int64_t head_index = place.head_index, b = place.b, h = place.h;
  const int64_t first_key = place.first, warp_key = first_key + 16 * warp;
  load_tile<D>(k_tile, k, b, h, first_key, s.tk);
  load_tile<D>(v_tile, v, b, h, first_key, s.tk);
  __syncthreads();
  FragmentC dk_acc[D / 8], dv_acc[D / 8];
  clear(dk_acc);
  clear(dv_acc);
  const float * head_lse = lse + head_index * s.tq;
  const float * head_delta = delta + head_index * s.tq;
  const float scale2 = s.scale * kLog2e;  // scores and lse in base 2 (score_gradient_base2)

  const auto prepare = [&](int64_t first_query, int buffer) {
    load_base2_lse(m.step_values + 2 * kStepRows * buffer, head_lse, first_query, s.tq);
    load_row_values(m.step_values + 2 * kStepRows * buffer + kStepRows, head_delta, first_query, s.tq, 0.0f);
    if (s.dropout.active()) stage_key_rows(m.dropout_bytes, s, b, h, warp_key, first_query);
  };
  const auto compute = [&](int64_t first_query, const bf16 * q_tile, const bf16 * dout_tile, int buffer) {
    const float * lse2_values = m.step_values + 2 * kStepRows * buffer;
    const float * delta_values = lse2_values + kStepRows;
    FragmentC scores[8], dps[8];  // transposed: keys x queries
    {
      // The warp's k and v rows are read from their tiles each step rather than held: with both gradients'
      // accumulators live, holding them would spill registers.
      FragmentA own_rows[D / 16];
      load_rows_as_a<D>(own_rows, k_tile, 16 * warp);
      product_with_rows<D>(scores, own_rows, q_tile);  // S^T = K Q^T
      load_rows_as_a<D>(own_rows, v_tile, 16 * warp);
      product_with_rows<D>(dps, own_rows, dout_tile);  // dP^T = V dO^T
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int x = 0; x < 4; ++x) scores[j].x[x] *= scale2;
    if (!s.sees_all(first_query, kStepRows, warp_key, 16)) {  // the diagonal or the end cuts the step: mask it
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t query = first_query + lane_column(j, e);
          const int64_t keys_seen = query < s.tq ? s.keys_for(query) : 0;
#pragma unroll
          for (int half = 0; half < 2; ++half)
            if (warp_key + lane_row(half) >= keys_seen) scores[j].x[2 * half + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int column = lane_column(j, e);
        const float query_lse2 = lse2_values[column], query_delta = delta_values[column];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int key = lane_row(half);
          const float f = s.dropout.active() ? key_row_factor(m.dropout_bytes, s, key, column) : 1.0f;
          const ScoreGradient g = score_gradient_base2(scores[j].x[2 * half + e], dps[j].x[2 * half + e], query_lse2,
                                                       query_delta, f);
          scores[j].x[2 * half + e] = g.kept;
          dps[j].x[2 * half + e] = g.ds;
        }
      }
    __syncwarp();  // the lanes together again after their dropout branches, for mma.sync and ldmatrix
    accumulate_product<D>(dv_acc, scores, dout_tile);  // dV += (P f)^T dO
    accumulate_product<D>(dk_acc, dps, q_tile);        // dK += dS^T Q
  };
  stream_steps<D, bf16, G>(m.streamed, q, dout, b, h, s.queries_from(first_key), s.tq, s.tq, prepare, compute);
  const float dk_scales[2] = {s.scale, s.scale}, ones[2] = {1.0f, 1.0f};
  store_rows<D>(dk, b, h, warp_key, s.tk, dk_acc, dk_scales);
  store_rows<D>(dv, b, h, warp_key, s.tk, dv_acc, ones);
#endif
}

}  // namespace

void mma_attention_forward(const AttentionForward & op, cudaStream_t stream) {
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  if (s.batch * s.heads * s.tq == 0) return;
  for_head_dim<32, 64>(s.head_dim, op.out.dtype == DType::kF32, "mma attention", [&](auto d, auto t) {
    constexpr int D = decltype(d)::value;
    using T = decltype(t);
    launch_forward<T>(mma_attention_forward_kernel<D, T>, forward_shared<D>(), "mma_attention_forward", op, s, stream);
  });
}

void mma_attention_backward(const AttentionBackward & op, const float * delta, cudaStream_t stream) {
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  if (s.batch * s.heads * s.tq == 0 || s.tk == 0) return;
  // dout's dtype is dq's (validated)
  for_head_dim<32, 64>(s.head_dim, op.dq.dtype == DType::kF32, "mma attention", [&](auto d, auto t) {
    constexpr int D = decltype(d)::value;
    using T = decltype(t);
    launch_backward<T>(mma_attention_dq_kernel<D, T>, mma_attention_dkdv_kernel<D, T>, backward_shared<D>(),
                       "mma_attention_dq", "mma_attention_dkdv", op, delta, s, stream);
  });
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
