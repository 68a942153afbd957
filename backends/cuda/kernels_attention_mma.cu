// kernels_attention_mma.cu: attention with bf16 q, k, v on NVIDIA tensor cores through mma.sync (m16n8k16, bf16
// products accumulating in f32; compute capability 8.0 or newer), in FlashAttention-2's register-resident form: blocks
// and steps as in attention_tiles.cuh, each warp taking its 16 own rows (of each of the forward's two query tiles) as A
// fragments, computing a step's [16, 64] scores (and in the backward dout . v) into accumulator fragments, taking the
// softmax (or the score gradients) there, and feeding them, rounded to bf16, straight back as the A fragments of the
// second product; no score goes through shared memory (but the one-pass backward's score gradients, for dq). The
// streamed tiles are double-buffered, the next step's copied by cp.async while this one computes, and read by ldmatrix
// (transposed where the tile's rows are the product's depth). Dropout (backends/attention_dropout.h) is staged per warp
// in shared memory as keep bits in the forward, each lane making two Philox blocks per step (and query tile), and
// written to the keep record (one bit a probability) that the backward reads instead of drawing them again: each
// step's bits come into shared memory with its tiles, and a lane widens a word of them per row and key group (dq) or
// per C fragment (dk, dv) (attention_mma.cuh). The elementwise work
// between the products competes with them for issue slots, so it is kept small (bench/attention_sass_counts.sh counts a
// step's instructions): exponents in base 2 (one fma and one ex2 per probability, the scale times log2(e) folded into
// the fma; a row that sees no key given lse +inf so its probabilities come out 0 without a test), the dropped
// probabilities zeroed by masks and the keep scale applied to the sums, kernels compiled with and without dropout, and
// the mask applied only on the steps the causal diagonal or the end of the rows cuts (AttentionShape::sees_all, the
// same for a whole warp). Same results as the WMMA kernels of kernels_attention_tc.cu up to f32 rounding; head sizes 32
// and 64 (128 would need more than 255 registers in the backward). The backward makes two passes (dq over the query
// blocks, dk and dv over the key blocks), or where the op allows a varying order (AttentionParams::deterministic false)
// one over the key blocks that adds dq up by atomics. The warp-level pieces are attention_mma.cuh's. CUDA only.
#include "backends/cuda/attention_mma.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

using namespace attention_mma;

// The forward's blocks own M query tiles of 64 rows, each warp 16 rows of each tile: every K and V fragment a warp
// reads from shared memory then feeds M row tiles' products. Two where the queries fill more than one tile (a
// decoder's), one where they fit in one (the resampler's 64 latents, decoding), whose second would compute nothing.
constexpr int kForwardTiles = 2;
static_assert(kKeepRecordRows == kForwardTiles * kBlockRows, "the keep record's rows come in the forward's blocks");

template <int D, typename O, int M, bool kDropout>
__global__ void __launch_bounds__(kBlockThreads)
    mma_attention_forward_kernel(HeadRowsOf<O> out, float * lse, HeadRowsOf<const bf16> q, HeadRowsOf<const bf16> k,
                                 HeadRowsOf<const bf16> v, KeepRecord record, AttentionShape s) {
#if __CUDA_ARCH__ >= 800
  using L = TileLayout<D>;
  constexpr int kBlockQueries = M * kBlockRows;
  extern __shared__ __align__(128) unsigned char shared[];
  bf16 * q_tiles = reinterpret_cast<bf16 *>(shared);  // M [64, D] tiles, one after the other
  unsigned char * streamed = shared + M * L::half_tile;  // k and v, twice
  const int warp = static_cast<int>(threadIdx.x) / kLanes;
  unsigned char * keep_area = shared + (M + 4) * L::half_tile + M * warp * kWarpKeepBytes;  // M tiles' keep bits

  const BlockRows place = block_rows(s, true, kBlockQueries);
  const int64_t head_index = place.head_index, b = place.b, h = place.h, first_query = place.first;
  int64_t warp_query[M];  // the first of the warp's 16 rows of each tile
#pragma unroll
  for (int m = 0; m < M; ++m) {
    warp_query[m] = first_query + kBlockRows * m + 16 * warp;
    load_tile<D>(q_tiles + m * kBlockRows * L::half_row, q, b, h, first_query + kBlockRows * m, s.tq);
  }
  __syncthreads();
  // The warp's q rows are read from their tiles each step, a depth slice at a time, rather than held: with two row
  // tiles' scores and outputs live, holding them would spill registers.
  const auto q_slice = [&](int m, int slice) {
    return load_row_slice_as_a<D>(q_tiles + m * kBlockRows * L::half_row, 16 * warp, slice);
  };

  FragmentC acc[M][D / 8];
#pragma unroll
  for (int m = 0; m < M; ++m) clear(acc[m]);
  // The online softmax in base 2: each probability one fma (the score times log2(e) scale, less the max) and one ex2.
  const float scale2 = s.scale * kLog2e;
  // Of the lane's two rows of each tile: the max in base 2, and the lane's part of the sum (its 16 of each step's 64
  // keys; the rescales are the row's, the same in its four lanes, so the parts are added up once at the end).
  float row_max[M][2], row_sum[M][2];
  int64_t keys_seen[M][2];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      row_max[m][half] = -INFINITY, row_sum[m][half] = 0.0f;
      const int64_t query = warp_query[m] + lane_row(half);
      keys_seen[m][half] = query < s.tq ? s.keys_for(query) : 0;
    }

  const int64_t last_query = (first_query + kBlockQueries < s.tq ? first_query + kBlockQueries : s.tq) - 1;
  const int64_t key_end = s.keys_for(last_query);  // the block's last row sees the most keys
  uint64_t row_starts[M];     // of the rows the lane stages (kDropout)
  uint16_t * entries[M] = {};  // and their record entries
#pragma unroll
  for (int m = 0; m < M; ++m) {
    if constexpr (kDropout) {
      row_starts[m] = staged_row_start(s, b, h, warp_query[m]);
      entries[m] = lane_entries(record, head_index, warp_query[m]);
    }
  }
  const auto prepare = [&](int64_t first_key, int) {
    if constexpr (kDropout) {
#pragma unroll
      for (int m = 0; m < M; ++m)
        stage_query_rows(keep_area + m * kWarpKeepBytes, entries[m], record.rows, s, row_starts[m], warp_query[m],
                         first_key);
    }
  };
  const auto compute = [&](int64_t first_key, const bf16 * k_tile, const bf16 * v_tile, int) {
    FragmentC p[M][8];
    products_with_rows<D, M>([&](int m, int j) -> FragmentC & { return p[m][j]; }, q_slice, k_tile);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      // Only a step the causal diagonal or the end of the rows cuts needs the mask (the same for the whole warp).
      if (!s.sees_all(warp_query[m], 16, first_key, kStepRows)) hide_unseen_keys(p[m], first_key, keys_seen[m]);
      // The online softmax of the lane's two rows, on the raw scores (scale2 > 0 keeps their max the max); the sums
      // are taken before dropout.
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) tile_max = fmaxf(tile_max, p[m][j].x[2 * half + e]);
        const float new_max = fmaxf(row_max[m][half], row_max_of(tile_max) * scale2);
        // A row that has seen no key yet keeps max -inf; 0 in its place gives its probabilities and rescale 0.
        const float max_used = new_max == -INFINITY ? 0.0f : new_max;
        const float rescale = exp2_approx(row_max[m][half] - max_used);  // of the row's output so far
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float & value = p[m][j].x[2 * half + e];
            value = probability_base2(value, scale2, max_used);
            sum += value;
          }
        row_sum[m][half] = row_sum[m][half] * rescale + sum;
        row_max[m][half] = new_max;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) acc[m][n].x[2 * half] *= rescale, acc[m][n].x[2 * half + 1] *= rescale;
      }
    }
    // Dropout zeroes the probabilities it drops as they become bf16 pairs; the keep scale comes at the end.
    const auto kept_slice = [&](int m, int kk) {
      const FragmentA a = fragments_as_a(p[m], kk);
      if constexpr (kDropout) {
        const unsigned char * area = keep_area + m * kWarpKeepBytes;
        return kept_query_pairs(a, query_keep_word(area, lane_row(0), kk), query_keep_word(area, lane_row(1), kk));
      }
      return a;
    };
    accumulate_rows_with<D, M>([&](int m, int n) -> FragmentC & { return acc[m][n]; }, kept_slice, v_tile);
  };
  stream_steps<D, bf16, bf16>(streamed, k, v, b, h, 0, key_end, s.tk, [](int64_t, int) {}, prepare, compute);
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float inverse_sums[2];  // times the keep scale under dropout
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float sum = row_sum_of(row_sum[m][half]);
      inverse_sums[half] = sum > 0.0f ? (kDropout ? s.dropout.keep_scale : 1.0f) / sum : 0.0f;
      const int64_t query = warp_query[m] + lane_row(half);
      if (lane_index() % 4 == 0 && query < s.tq)  // back to base e: lse = ln(2) max2 + ln(sum)
        lse[head_index * s.tq + query] = sum > 0.0f ? row_max[m][half] * (1.0f / kLog2e) + logf(sum) : -INFINITY;
    }
    store_rows<D>(out, b, h, warp_query[m], s.tq, acc[m], inverse_sums);
  }
#endif
}

template <int D, typename G, bool kDropout>
__global__ void __launch_bounds__(kBlockThreads)
    mma_attention_dq_kernel(HeadRowsOf<G> dq, HeadRowsOf<const G> dout, HeadRowsOf<const bf16> q,
                            HeadRowsOf<const bf16> k, HeadRowsOf<const bf16> v, const float * lse, const float * delta,
                            KeepRecord record, AttentionShape s) {
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

  const float scale2 = s.scale * kLog2e;  // probability_base2's: the scores stay raw, the lse is in base 2
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
  const auto copy_keep = [&](int64_t first_key, int buffer) {  // the step's groups of the block's rows
    if constexpr (kDropout) copy_step_keep(m.keep_of(buffer), record, head_index, first_key / 16, first_query, s.tq);
  };
  const int t = lane_index() % 4;
  const auto compute = [&](int64_t first_key, const bf16 * k_tile, const bf16 * v_tile, int buffer) {
    FragmentC scores[8], dps[8];
    product_with_rows<D>(scores, q_rows, k_tile);  // S = Q K^T
    product_with_rows<D>(dps, dout_rows, v_tile);  // dP = dO V^T
    if (!s.sees_all(warp_query, 16, first_key, kStepRows)) hide_unseen_keys(scores, first_key, keys_seen);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint32_t keep = kDropout ? step_query_keep_word(m.keep_of(buffer), 16 * warp + lane_row(half), j / 2, t)
                                       : 0u;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float dp = dps[j].x[2 * half + e];
          float & value = scores[j].x[2 * half + e];
          value = score_gradient_of<kDropout>(probability_base2(value, scale2, row_lse2[half]),
                                              kDropout ? kept_value(dp, keep, query_keep_byte(j, e)) : dp,
                                              row_delta[half], s.dropout.keep_scale);
        }
      }
    __syncwarp();  // the lanes together before mma.sync and ldmatrix
    accumulate_product<D>(acc, scores, k_tile);  // dQ += dS K
  };
  stream_steps<D, bf16, bf16>(m.streamed, k, v, b, h, 0, key_end, s.tk, copy_keep, [](int64_t, int) {}, compute);
  const float scales[2] = {s.scale, s.scale};
  store_rows<D>(dq, b, h, warp_query, s.tq, acc, scales);
#endif
}

// dk and dv over a block of 64 keys; with kAddsDq also dq, added into dq_sums ([B*H*Tq, D] f32, zeroed
// before) by atomics: each step's score gradients go through shared memory, where each warp takes 16 of the step's
// queries for dQ += dS K. Without, dq is mma_attention_dq_kernel's (two more products: S and dP again).
template <int D, typename G, bool kAddsDq, bool kDropout>
__global__ void __launch_bounds__(kBlockThreads)
    mma_attention_dkdv_kernel(HeadRowsOf<G> dk, HeadRowsOf<G> dv, HeadRowsOf<const G> dout, HeadRowsOf<const bf16> q,
                              HeadRowsOf<const bf16> k, HeadRowsOf<const bf16> v, const float * lse,
                              const float * delta, float * dq_sums, KeepRecord record, AttentionShape s) {
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
  const float scale2 = s.scale * kLog2e;  // probability_base2's: the scores stay raw, the lse is in base 2

  const auto copy_keep = [&](int64_t first_query, int buffer) {  // the block's groups of the step's rows
    if constexpr (kDropout) copy_step_keep(m.keep_of(buffer), record, head_index, first_key / 16, first_query, s.tq);
  };
  const auto prepare = [&](int64_t first_query, int buffer) {
    load_step_values(m.step_values + 2 * kStepRows * buffer, head_lse, head_delta, first_query, s.tq);
  };
  const int keep_shift = key_keep_shift(lane_index() / 4);  // of the lane's keys g and g + 8 in an entry
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
    uint32_t keep[8];  // of C fragment j (kDropout)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      keep[j] = kDropout ? step_key_keep_word(m.keep_of(buffer), warp, j, keep_shift) : 0u;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int column = lane_column(j, e);
        const float query_lse2 = lse2_values[column], query_delta = delta_values[column];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float p = probability_base2(scores[j].x[2 * half + e], scale2, query_lse2);
          const float dp = dps[j].x[2 * half + e];
          scores[j].x[2 * half + e] = p;  // dropped as it becomes bf16 for dV
          dps[j].x[2 * half + e] = score_gradient_of<kDropout>(
              p, kDropout ? kept_value(dp, keep[j], key_keep_byte(half, e)) : dp, query_delta, s.dropout.keep_scale);
        }
      }
    }
    // dS^T to shared memory for dq first, so that the stores complete behind the two products.
    if constexpr (kAddsDq) store_fragments<D>(m.score_gradients, 16 * warp, dps);
    __syncwarp();  // the lanes together again after the mask branch, for mma.sync and ldmatrix
    const auto kept_slice = [&](int k) {
      const FragmentA a = fragments_as_a(scores, k);
      if constexpr (kDropout) return kept_key_pairs(a, keep[2 * k], keep[2 * k + 1]);
      return a;
    };
    accumulate_with<D>(dv_acc, kept_slice, dout_tile);  // dV += (P kept)^T dO, times the keep scale at the end
    accumulate_product<D>(dk_acc, dps, q_tile);        // dK += dS^T Q
    if constexpr (kAddsDq) {
      __syncthreads();  // the step's [64 keys, 64 queries] dS^T whole; rewritten only after the next step's barrier
      FragmentC dq_acc[D / 8];
      clear(dq_acc);
      const auto ds_rows = [&](int slice) { return load_transposed_as_a<D>(m.score_gradients, 16 * warp, slice); };
      accumulate_with<D>(dq_acc, ds_rows, k_tile);  // dQ += dS K for the warp's 16 queries
      add_rows_atomically<D>(dq_sums + head_index * s.tq * D, first_query + 16 * warp, s.tq, dq_acc, s.scale);
    }
  };
  stream_steps<D, bf16, G>(m.streamed, q, dout, b, h, s.queries_from(first_key), s.tq, s.tq, copy_keep, prepare,
                           compute);
  const float keep_scale = kDropout ? s.dropout.keep_scale : 1.0f;
  const float dk_scales[2] = {s.scale, s.scale}, dv_scales[2] = {keep_scale, keep_scale};
  store_rows<D>(dk, b, h, warp_key, s.tk, dk_acc, dk_scales);
  store_rows<D>(dv, b, h, warp_key, s.tk, dv_acc, dv_scales);
#endif
}

// The keep record of a backward given none (AttentionBackward::keep absent), drawn as the forward draws it: an entry
// a thread, zero past the last row and key and beyond the keys that the rows' 64-row block sees (the backward's
// steps read no further there).
__global__ void keep_record_kernel(KeepRecord record, AttentionShape s, int64_t entries) {
  KOSMOS_GRID_LOOP(index, entries) {
    const int64_t row = index % record.rows, group = (index / record.rows) % record.groups;
    const int64_t head_index = index / (record.rows * record.groups);
    const int64_t b = head_index / s.heads, h = head_index % s.heads;
    const int64_t block_last = (row | (kBlockRows - 1)) < s.tq - 1 ? (row | (kBlockRows - 1)) : s.tq - 1;
    uint16_t entry = 0u;
    if (row < s.tq && 16 * group < s.tk && (group / 4) * kStepRows < s.keys_for(block_last))
      entry = keep_record_entry(query_keep_words(s.dropout.group(s.dropout_row(b, h, row), 16 * group),
                                                 s.dropout.threshold));
    record.bits[index] = entry;
  }
}

// The keep record that the kernels write (forward) or read (backward) under dropout: the op's where it gives one
// (checked against the words they need), else scratch, and `given` says which; none without dropout.
struct OpKeepRecord {
  KeepRecord record;
  bool given;
};
template <typename Op>
OpKeepRecord keep_record_for(GpuContext & ctx, const Op & op, const AttentionShape & s, const char * what,
                             cudaStream_t stream) {
  if (!s.dropout.active()) return {KeepRecord{nullptr, 0, 0}, false};
  const int64_t words = keep_record_words(s);
  if (!op.keep.present())
    return {keep_record_of(ctx.scratch(kScratchAttentionKeep, sizeof(int32_t) * static_cast<size_t>(words), stream), s),
            false};
  KOSMOS_CHECK(op.keep.numel() >= words, what, ": keep holds ", op.keep.numel(), " words where the dropout masks of q ",
               describe(op.q), " and k ", describe(op.k), " need ", words,
               " (internal error: size it by Device::attention_keep_words)");
  KOSMOS_CHECK(reinterpret_cast<uintptr_t>(op.keep.data) % 16 == 0, what, ": keep ", describe(op.keep),
               " does not start on 16 bytes, which the kernels copy it in (internal error: give it a buffer of its own "
               "or an arena's take)");
  return {keep_record_of(op.keep.data, s), true};
}

// Calls run(std::bool_constant<kDropout>{}) for kDropout = whether the op drops probabilities: the kernels without
// dropout carry none of its work.
template <typename Run>
void for_dropout(const AttentionShape & s, Run run) {
  if (s.dropout.active()) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
  }
}

}  // namespace

int64_t mma_attention_keep_words(const AttentionForward & op) {
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  return s.dropout.active() && s.batch * s.heads * s.tq > 0 ? keep_record_words(s) : 0;
}

void mma_attention_forward(GpuContext & ctx, const AttentionForward & op, cudaStream_t stream) {
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  if (s.batch * s.heads * s.tq == 0) return;
  const KeepRecord record = keep_record_for(ctx, op, s, "attention_forward", stream).record;
  for_head_dim<32, 64>(s.head_dim, op.out.dtype == DType::kF32, "mma attention", [&](auto d, auto t) {
    for_dropout(s, [&](auto dropout) {
      constexpr int D = decltype(d)::value;
      constexpr bool kDropout = decltype(dropout)::value;
      using T = decltype(t);
      const auto run = [&](auto kernel, int tiles) {
        launch_forward<T>(kernel, forward_shared<D>(tiles), "mma_attention_forward", op, s, stream, tiles * kBlockRows,
                          record);
      };
      if (s.tq <= kBlockRows) return run(mma_attention_forward_kernel<D, T, 1, kDropout>, 1);
      run(mma_attention_forward_kernel<D, T, kForwardTiles, kDropout>, kForwardTiles);
    });
  });
}

void mma_attention_backward(GpuContext & ctx, const AttentionBackward & op, const float * delta, float * dq_sums,
                            cudaStream_t stream) {
  const AttentionShape s = shape_of(op.q, op.k, op.params);
  if (s.batch * s.heads * s.tq == 0 || s.tk == 0) return;
  const OpKeepRecord keep = keep_record_for(ctx, op, s, "attention_backward", stream);
  const KeepRecord record = keep.record;
  if (s.dropout.active() && !keep.given) {  // none kept: drawn here
    const int64_t entries = s.batch * s.heads * record.groups * record.rows;
    keep_record_kernel<<<blocks_for(entries), kThreads, 0, stream>>>(record, s, entries);
    KOSMOS_GPU_LAUNCHED("attention_keep_record");
  }
  // dout's dtype is dq's (validated)
  for_head_dim<32, 64>(s.head_dim, op.dq.dtype == DType::kF32, "mma attention", [&](auto d, auto t) {
    for_dropout(s, [&](auto dropout) {
      constexpr int D = decltype(d)::value;
      constexpr bool kDropout = decltype(dropout)::value;
      using T = decltype(t);
      if (dq_sums == nullptr) {
        launch_query_blocks<T>(mma_attention_dq_kernel<D, T, kDropout>, backward_shared<D>(), "mma_attention_dq", op,
                               delta, s, stream, record);
        return launch_key_blocks<T>(mma_attention_dkdv_kernel<D, T, false, kDropout>, backward_shared<D>(),
                                    "mma_attention_dkdv", op, delta, s, stream, static_cast<float *>(nullptr), record);
      }
      const size_t sums = static_cast<size_t>(s.batch * s.heads * s.tq * D);
      KOSMOS_GPU_CHECK(cudaMemsetAsync(dq_sums, 0, sizeof(float) * sums, stream));
      launch_key_blocks<T>(mma_attention_dkdv_kernel<D, T, true, kDropout>, backward_shared<D>(true),
                           "mma_attention_dkdv_dq", op, delta, s, stream, dq_sums, record);
    });
  });
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
