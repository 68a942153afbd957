// attention.cpp: memory-efficient scaled dot-product attention for the CPU (FlashAttention's algorithm on tiles
// of 64 queries x 64 keys). The forward keeps a running max and sum per query row and never holds a Tq x Tk
// matrix; it saves the log-sum-exp. The backward recomputes each score tile from q, k and the log-sum-exp.
// Threads take (batch, head, query tile) tasks forward and (batch, head) tasks backward, so no two threads write
// the same gradient rows. Every tile product is a plain row-major GEMM: k is transposed once per head up front,
// and the backward works on transposed score tiles (keys x queries), so no score tile is ever transposed (only
// dropout's keep factors, drawn per query row, are turned to match them).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/attention_dropout.h"
#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/dropout_mask.h"
#include "backends/cpu/simd.h"

namespace kosmos::cpu {
namespace {

constexpr int64_t kTile = 64;  // queries and keys per tile
constexpr float kNegativeInfinity = -std::numeric_limits<float>::infinity();

// Element (b, h, i, j) of a [B, H, T, dh] view.
struct HeadView {
  const float * base;
  int64_t row_stride;  // between positions
  const float * row(int64_t index) const { return base + index * row_stride; }
};

HeadView head_of(const TensorView & view, int64_t batch, int64_t head) {
  return {view.as<float>() + batch * view.stride(0) + head * view.stride(1), view.stride(2)};
}
float * head_rows(const TensorView & view, int64_t batch, int64_t head) {
  return view.as<float>() + batch * view.stride(0) + head * view.stride(1);
}

// Keys visible to query row i: [0, visible_keys(i)). Causal attention aligns the last query with the last key.
struct Visibility {
  int64_t tq, tk;
  bool causal;
  int64_t keys_for(int64_t query) const {
    if (!causal) return tk;
    return std::clamp<int64_t>(query + 1 + (tk - tq), 0, tk);
  }
};

// The dropout row of (batch, head, query): heads counted among all heads (see ops.h).
uint64_t dropout_row(const AttentionParams & params, int64_t heads, int64_t batch, int64_t head, int64_t query,
                     int64_t tq) {
  const int64_t total_heads = params.heads_total == 0 ? heads : params.heads_total;
  const int64_t global_head = params.head_start + head;
  return params.first_row + static_cast<uint64_t>((batch * total_heads + global_head) * tq + query);
}

// Copies rows [first, first + count) of a head into a dense [count, dh] block, times `factor`.
void gather_rows(const HeadView & source, int64_t first, int64_t count, int64_t head_dim, float factor,
                 float * target) {
  for (int64_t r = 0; r < count; ++r) {
    const float * row = source.row(first + r);
#pragma omp simd
    for (int64_t d = 0; d < head_dim; ++d) target[r * head_dim + d] = row[d] * factor;
  }
}

enum ScratchSlot { kKeysTransposed = 0 };

// k as [B*H, dh, Tk]: the right-hand side of every score tile, made once per call.
float * transpose_keys(CpuContext & ctx, const TensorView & k) {
  const int64_t batch = k.dim(0), heads = k.dim(1), tk = k.dim(2), head_dim = k.dim(3);
  float * transposed = ctx.scratch(kKeysTransposed, static_cast<size_t>(batch * heads * head_dim * tk));
#pragma omp parallel for
  for (int64_t task = 0; task < batch * heads; ++task) {
    const HeadView keys = head_of(k, task / heads, task % heads);
    transpose_block(keys.base, keys.row_stride, tk, head_dim, transposed + task * head_dim * tk, tk);
  }
  return transposed;
}

// One row of a transposed tile (one key, queries i): p = e^(score - lse_i), then with the dropout factors f_i of
// `keep` (1 where keep is null) ds = p (dp f_i - delta_i) and p = p f_i, in place.
void softmax_backward_row(float * p, float * ds, const float * lse, const float * delta, const float * keep,
                          int64_t count) {
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    const Vec prob = exp_vec(vec_load(p + i) - vec_load(lse + i));
    const Vec factor = keep ? vec_load(keep + i) : vec_broadcast(1.0f);
    vec_store(ds + i, prob * (vec_load(ds + i) * factor - vec_load(delta + i)));
    vec_store(p + i, prob * factor);
  }
  for (; i < count; ++i) {
    const float prob = exp_fast(p[i] - lse[i]);
    const float factor = keep ? keep[i] : 1.0f;
    ds[i] = prob * (ds[i] * factor - delta[i]);
    p[i] = prob * factor;
  }
}

}  // namespace

void cpu_op(CpuContext & ctx, const AttentionForward & op) {
  if (any_narrow({op.out, op.q, op.k, op.v})) {  // bf16: widened exactly, the same f32 attention, rounded once
    WidenedOperands wide(ctx);
    cpu_op(ctx, AttentionForward{wide.output(op.out), op.lse, wide.input(op.q), wide.input(op.k), wide.input(op.v),
                                 op.params, op.keep});
    wide.finish();
    return;
  }
  const int64_t batch = op.q.dim(0), heads = op.q.dim(1), tq = op.q.dim(2), head_dim = op.q.dim(3);
  const int64_t tk = op.k.dim(2);
  const Visibility visible{tq, tk, op.params.causal};
  const int64_t query_tiles = (tq + kTile - 1) / kTile;
  const int64_t tasks = batch * heads * query_tiles;
  const AttentionDropout draw = attention_dropout(op.params.seed, op.params.dropout_p, tk);
  const bool dropout = draw.active();
  const float * keys_transposed = transpose_keys(ctx, op.k);

#pragma omp parallel
  {
    std::vector<float> q_tile(kTile * head_dim), scores(kTile * kTile);
    std::vector<float> out_tile(kTile * head_dim), row_max(kTile), row_sum(kTile), keep(kTile);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t tile = task % query_tiles, head = (task / query_tiles) % heads, b = task / (query_tiles * heads);
      const int64_t first_query = tile * kTile, rows = std::min(kTile, tq - first_query);
      const HeadView q = head_of(op.q, b, head), v = head_of(op.v, b, head);
      gather_rows(q, first_query, rows, head_dim, op.params.scale, q_tile.data());
      std::fill(out_tile.begin(), out_tile.end(), 0.0f);
      std::fill(row_max.begin(), row_max.end(), kNegativeInfinity);
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      const int64_t key_end = visible.keys_for(first_query + rows - 1);  // the last row sees the most keys
      for (int64_t first_key = 0; first_key < key_end; first_key += kTile) {
        const int64_t cols = std::min(kTile, key_end - first_key);
        const float * k_tile = keys_transposed + (b * heads + head) * head_dim * tk + first_key;
        tile_gemm(rows, cols, head_dim, q_tile.data(), head_dim, k_tile, tk, scores.data(), kTile, false);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t query = first_query + r;
          const int64_t valid = std::clamp<int64_t>(visible.keys_for(query) - first_key, 0, cols);
          float * score = scores.data() + r * kTile;
          const float tile_max = valid > 0 ? max_of(score, valid) : kNegativeInfinity;
          const float new_max = std::max(row_max[r], tile_max);
          if (new_max == kNegativeInfinity) {  // nothing visible yet for this row
            std::fill(score, score + cols, 0.0f);
            continue;
          }
          const float rescale = row_max[r] == kNegativeInfinity ? 0.0f : exp_fast(row_max[r] - new_max);
          const float sum = exp_shift(score, score, valid, new_max);
          std::fill(score + valid, score + cols, 0.0f);
          row_sum[r] = row_sum[r] * rescale + sum;
          row_max[r] = new_max;
          float * out_row = out_tile.data() + r * head_dim;
#pragma omp simd
          for (int64_t d = 0; d < head_dim; ++d) out_row[d] *= rescale;
          if (dropout) {
            attention_keep_factors(draw, dropout_row(op.params, heads, b, head, query, tq), first_key, valid,
                                   keep.data());
#pragma omp simd
            for (int64_t j = 0; j < valid; ++j) score[j] *= keep[j];
          }
        }
        // out_tile += P V over this key tile; v rows are read in place.
        tile_gemm(rows, head_dim, cols, scores.data(), kTile, v.row(first_key), v.row_stride, out_tile.data(),
                  head_dim, true);
      }
      float * out = head_rows(op.out, b, head);
      float * lse = op.lse.as<float>() + (b * heads + head) * tq;
      for (int64_t r = 0; r < rows; ++r) {
        const bool any = row_sum[r] > 0.0f;
        const float inverse = any ? 1.0f / row_sum[r] : 0.0f;
        float * out_row = out + (first_query + r) * op.out.stride(2);
#pragma omp simd
        for (int64_t d = 0; d < head_dim; ++d) out_row[d] = out_tile[r * head_dim + d] * inverse;
        lse[first_query + r] = any ? row_max[r] + std::log(row_sum[r]) : kNegativeInfinity;
      }
    }
  }
}

void cpu_op(CpuContext & ctx, const AttentionBackward & op) {
  if (any_narrow({op.dq, op.dk, op.dv, op.dout, op.q, op.k, op.v, op.out})) {  // as the forward
    WidenedOperands wide(ctx);
    cpu_op(ctx, AttentionBackward{wide.output(op.dq), wide.output(op.dk), wide.output(op.dv), wide.input(op.dout),
                                  wide.input(op.q), wide.input(op.k), wide.input(op.v), wide.input(op.out), op.lse,
                                  op.params, op.keep});
    wide.finish();
    return;
  }
  const int64_t batch = op.q.dim(0), heads = op.q.dim(1), tq = op.q.dim(2), head_dim = op.q.dim(3);
  const int64_t tk = op.k.dim(2);
  const float scale = op.params.scale;
  const AttentionDropout draw = attention_dropout(op.params.seed, op.params.dropout_p, tk);
  const bool dropout = draw.active();
  const float * keys_transposed = transpose_keys(ctx, op.k);

  // Per head, with S^T = K (scale Q)^T as [keys, queries] tiles:
  //   P^T = exp(S^T - lse), dP^T = V dO^T, dS^T = P^T (dP^T - delta), delta_i = dO_i . O_i
  //   dV += P_dropped^T dO,  dK += dS^T (scale Q),  dQ^T += K^T dS^T  (dQ = scale * dQ^T^T at the end).
#pragma omp parallel
  {
    std::vector<float> q_rows(tq * head_dim), q_columns(head_dim * tq), dout_rows(tq * head_dim);
    std::vector<float> dout_columns(head_dim * tq), dq_columns(head_dim * tq), delta(tq);
    std::vector<float> probs(kTile * kTile), dscores(kTile * kTile), keep_rows(kTile * kTile), keep(kTile * kTile);
    std::vector<float> dk_acc(kTile * head_dim), dv_acc(kTile * head_dim);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < batch * heads; ++task) {
      const int64_t head = task % heads, b = task / heads;
      const HeadView k = head_of(op.k, b, head), v = head_of(op.v, b, head);
      const HeadView out = head_of(op.out, b, head);
      const float * lse = op.lse.as<float>() + (b * heads + head) * tq;
      const float * k_columns = keys_transposed + task * head_dim * tk;
      gather_rows(head_of(op.q, b, head), 0, tq, head_dim, scale, q_rows.data());
      gather_rows(head_of(op.dout, b, head), 0, tq, head_dim, 1.0f, dout_rows.data());
      transpose_block(q_rows.data(), head_dim, tq, head_dim, q_columns.data(), tq);
      transpose_block(dout_rows.data(), head_dim, tq, head_dim, dout_columns.data(), tq);
      std::fill(dq_columns.begin(), dq_columns.end(), 0.0f);
      for (int64_t i = 0; i < tq; ++i) {
        float sum = 0.0f;
        const float * o = out.row(i);
#pragma omp simd reduction(+ : sum)
        for (int64_t d = 0; d < head_dim; ++d) sum += dout_rows[i * head_dim + d] * o[d];
        delta[i] = sum;
      }
      for (int64_t first_key = 0; first_key < tk; first_key += kTile) {
        const int64_t cols = std::min(kTile, tk - first_key);
        std::fill(dk_acc.begin(), dk_acc.end(), 0.0f);
        std::fill(dv_acc.begin(), dv_acc.end(), 0.0f);
        // Query i sees key j when i >= j - (tk - tq); start at the tile holding the first such query.
        const int64_t first_query =
            op.params.causal ? std::clamp<int64_t>(first_key - (tk - tq), 0, tq) / kTile * kTile : 0;
        for (int64_t first_row = first_query; first_row < tq; first_row += kTile) {
          const int64_t rows = std::min(kTile, tq - first_row);
          // probs = S^T tile [cols, rows]; dscores = dP^T tile (before the softmax backward).
          tile_gemm(cols, rows, head_dim, k.row(first_key), k.row_stride, q_columns.data() + first_row, tq,
                    probs.data(), kTile, false);
          tile_gemm(cols, rows, head_dim, v.row(first_key), v.row_stride, dout_columns.data() + first_row, tq,
                    dscores.data(), kTile, false);
          if (dropout) {  // drawn per query row, whose keys share Philox blocks, then as [keys, queries]
            for (int64_t r = 0; r < rows; ++r)
              attention_keep_factors(draw, dropout_row(op.params, heads, b, head, first_row + r, tq), first_key, cols,
                                     keep_rows.data() + r * kTile);
            transpose_block(keep_rows.data(), kTile, rows, cols, keep.data(), kTile);
          }
          for (int64_t j = 0; j < cols; ++j) {
            const int64_t key = first_key + j;
            // Visible queries of this key: i >= key - (tk - tq) when causal.
            const int64_t start = op.params.causal ? std::clamp<int64_t>(key - (tk - tq) - first_row, 0, rows) : 0;
            float * p = probs.data() + j * kTile;
            float * ds = dscores.data() + j * kTile;
            std::fill(p, p + start, 0.0f);
            std::fill(ds, ds + start, 0.0f);
            softmax_backward_row(p + start, ds + start, lse + first_row + start, delta.data() + first_row + start,
                                 dropout ? keep.data() + j * kTile + start : nullptr, rows - start);
          }
          tile_gemm(cols, head_dim, rows, probs.data(), kTile, dout_rows.data() + first_row * head_dim, head_dim,
                    dv_acc.data(), head_dim, true);
          tile_gemm(cols, head_dim, rows, dscores.data(), kTile, q_rows.data() + first_row * head_dim, head_dim,
                    dk_acc.data(), head_dim, true);
          tile_gemm(head_dim, rows, cols, k_columns + first_key, tk, dscores.data(), kTile,
                    dq_columns.data() + first_row, tq, true);
        }
        float * dk = head_rows(op.dk, b, head);
        float * dv = head_rows(op.dv, b, head);
        for (int64_t j = 0; j < cols; ++j) {
          float * dk_row = dk + (first_key + j) * op.dk.stride(2);
          float * dv_row = dv + (first_key + j) * op.dv.stride(2);
#pragma omp simd
          for (int64_t d = 0; d < head_dim; ++d) {
            dk_row[d] = dk_acc[j * head_dim + d];
            dv_row[d] = dv_acc[j * head_dim + d];
          }
        }
      }
#pragma omp simd
      for (int64_t i = 0; i < head_dim * tq; ++i) dq_columns[i] *= scale;
      transpose_block(dq_columns.data(), tq, head_dim, tq, head_rows(op.dq, b, head), op.dq.stride(2));
    }
  }
}

}  // namespace kosmos::cpu
