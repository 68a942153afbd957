// reference.h: the fp64 oracle for every op in backends/ops.h: naive, obviously-correct loops in double, written
// from the formulas (kosmos-spec.md, PyTorch's documented semantics), never from the backends' code. Each backward
// is itself checked against finite differences of its forward (tests/ops/test_ops.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace kosmos::reference {

struct Tensor {
  std::vector<int64_t> dims;
  std::vector<double> v;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape, double fill = 0.0);
  int64_t numel() const { return static_cast<int64_t>(v.size()); }
  int64_t dim(int axis) const { return dims[axis < 0 ? dims.size() + axis : axis]; }
  int64_t rows() const { return dims.empty() ? 1 : numel() / dim(-1); }
};

// C = alpha op(A) op(B) + beta C_old + bias. A [batch?, M, K] (or [.., K, M] when trans_a), B [batch?, K, N] (or
// [.., N, K]); batch 1 or absent broadcasts. Result [batch, M, N] when any operand is batched, else [M, N].
Tensor matmul(const Tensor & a, const Tensor & b, const Tensor * bias, bool trans_a, bool trans_b, double alpha,
              double beta, const Tensor * c_old);
struct MatmulGrads {
  Tensor da, db, dbias;
};
MatmulGrads matmul_backward(const Tensor & dc, const Tensor & a, const Tensor & b, bool trans_a, bool trans_b,
                            double alpha);

struct LayerNormOut {
  Tensor out, mean, rstd;
};
LayerNormOut layernorm(const Tensor & in, const Tensor & weight, const Tensor & bias, double eps);
struct LayerNormGrads {
  Tensor din, dweight, dbias;
};
LayerNormGrads layernorm_backward(const Tensor & dout, const Tensor & in, const Tensor & weight, double eps);

Tensor gelu(const Tensor & in);
Tensor gelu_backward(const Tensor & dout, const Tensor & in);
Tensor quick_gelu(const Tensor & in);
Tensor quick_gelu_backward(const Tensor & dout, const Tensor & in);

struct AttentionConfig {
  double scale = 1.0;
  bool causal = false;
  double dropout_p = 0.0;
  uint64_t seed = 0, first_row = 0;
  int64_t head_start = 0, heads_total = 0;
};
struct AttentionOut {
  Tensor out, lse;
};
// q [B, H, Tq, dh], k and v [B, H, Tk, dh]; full score matrices (the oracle may be slow).
AttentionOut attention(const Tensor & q, const Tensor & k, const Tensor & v, const AttentionConfig & config);
struct AttentionGrads {
  Tensor dq, dk, dv;
};
AttentionGrads attention_backward(const Tensor & dout, const Tensor & q, const Tensor & k, const Tensor & v,
                                  const AttentionConfig & config);

// x [B, H, T, dh]; kosmos-spec section 4.
Tensor xpos(const Tensor & x, int64_t offset, bool downscale, double scale_base);
Tensor xpos_backward(const Tensor & dout, int64_t offset, bool downscale, double scale_base);

Tensor embedding(const std::vector<int32_t> & ids, const Tensor & table, int64_t vocab_start);
Tensor embedding_backward(const Tensor & dout, const std::vector<int32_t> & ids, int64_t table_rows,
                          int64_t vocab_start, int64_t padding_idx);
Tensor sinusoidal_positions(const std::vector<int32_t> & positions, int64_t width, int64_t padding_idx);

struct CrossEntropyOut {
  double loss;
  Tensor lse;
};
CrossEntropyOut cross_entropy(const Tensor & logits, const std::vector<int32_t> & targets, const Tensor & weights,
                              int64_t vocab_start, double loss_scale);
Tensor cross_entropy_backward(const Tensor & logits, const std::vector<int32_t> & targets, const Tensor & weights,
                              int64_t vocab_start, double loss_scale, double dloss);

Tensor dropout(const Tensor & in, double p, uint64_t seed, uint64_t offset);  // the backward is the same map

struct AdamWState {
  Tensor param, m, v;
};
AdamWState adamw_step(const AdamWState & state, const Tensor & grad, double lr, double beta1, double beta2,
                      double eps, double weight_decay, int64_t step, double grad_scale);

double squared_norm(const Tensor & in);

struct L2NormalizeOut {
  Tensor out, norm;
};
L2NormalizeOut l2_normalize(const Tensor & in, double eps);
Tensor l2_normalize_backward(const Tensor & dout, const Tensor & in, double eps);

// The Philox keep decision of dropout element `index` (uniform >= p), from the shared generator.
bool dropout_keeps(uint64_t seed, uint64_t index, double p);
// Attention dropout's factor of `key` (of `keys`) in probability row `row` as ops.h specifies it: byte key % 16 of
// Philox block row * ceil(keys / 16) + key / 16, kept at round(256 p) or above, scaled by 256 / (256 - that).
double attention_keep_factor(uint64_t seed, uint64_t row, int64_t key, int64_t keys, double p);

}  // namespace kosmos::reference
