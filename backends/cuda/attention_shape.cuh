// attention_shape.cuh: what both GPU attention implementations (the f32 kernels of kernels_attention.cu and the
// bf16 tensor-core ones of kernels_attention_tc.cu) read an attention op as: its [B, H, T, dh] operands as strided
// rows, and its shape, masking and dropout rows (the CPU's).
#pragma once

#include "backends/attention_dropout.h"
#include "backends/cuda/gpu_common.cuh"
#include "backends/ops.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {

// One [B, H, T, dh] operand of element type T: base pointer and the strides of its first three dims (dh is dense).
template <typename T>
struct HeadRowsOf {
  T * base;
  int64_t batch_stride, head_stride, row_stride;
  __device__ T * row(int64_t b, int64_t h, int64_t t) const { return base + offset(b, h, t); }
  // The same as an element offset from base (which may be stepped past the end, where a pointer may not point).
  __device__ int64_t offset(int64_t b, int64_t h, int64_t t) const {
    return b * batch_stride + h * head_stride + t * row_stride;
  }
};
using HeadRows = HeadRowsOf<float>;

template <typename T>
HeadRowsOf<T> head_rows_of(const TensorView & view) {
  return {static_cast<T *>(view.data), view.stride(0), view.stride(1), view.stride(2)};
}
inline HeadRows head_rows(const TensorView & view) { return head_rows_of<float>(view); }

struct AttentionShape {
  int64_t batch, heads, tq, tk, head_dim;
  float scale;
  bool causal;
  AttentionDropout dropout;  // active() where the op drops probabilities
  uint64_t first_row;
  int64_t head_start, heads_total;

  // Keys visible to query i: [0, keys_for(i)); causal attention aligns the last query with the last key.
  __device__ int64_t keys_for(int64_t query) const {
    if (!causal) return tk;
    const int64_t keys = query + 1 + (tk - tq);
    return keys < 0 ? 0 : (keys > tk ? tk : keys);
  }
  // Whether each of queries [query, query + queries) sees each of keys [key, key + keys): a block with no mask inside
  // (keys_for never falls as the query grows, and is at most tk).
  __device__ bool sees_all(int64_t query, int64_t queries, int64_t key, int64_t keys) const {
    return query + queries <= tq && key + keys <= keys_for(query);
  }
  // Queries that see key j: [queries_from(j), tq).
  __device__ int64_t queries_from(int64_t key) const {
    if (!causal) return 0;
    const int64_t first = key - (tk - tq);
    return first < 0 ? 0 : first;
  }
  // The dropout row of (b, h, query), heads counted among all heads (backends/attention_dropout.h).
  __device__ uint64_t dropout_row(int64_t b, int64_t h, int64_t query) const {
    return first_row + static_cast<uint64_t>((b * heads_total + head_start + h) * tq + query);
  }
};

inline AttentionShape shape_of(const TensorView & q, const TensorView & k, const AttentionParams & params) {
  AttentionShape shape{};
  shape.batch = q.dim(0);
  shape.heads = q.dim(1);
  shape.tq = q.dim(2);
  shape.tk = k.dim(2);
  shape.head_dim = q.dim(3);
  shape.scale = params.scale;
  shape.causal = params.causal;
  shape.dropout = attention_dropout(params.seed, params.dropout_p, shape.tk);
  shape.first_row = params.first_row;
  shape.head_start = params.head_start;
  shape.heads_total = params.heads_total == 0 ? shape.heads : params.heads_total;
  return shape;
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
