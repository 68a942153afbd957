// ops.h: the op set every backend implements, as plain descriptor structs (views + scalars) in one variant.
// Forward/backward pairs mirror each other: outputs first, then inputs, then what the forward saved, then scalars.
// Parameter gradients accumulate (+=); activation gradients overwrite. op_run() validates a descriptor once,
// with an error naming the op, the shapes and what was expected, before any backend sees it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "backends/tensor.h"

namespace kosmos {

class Device;
class Stream;

// C = alpha * op(A) op(B) + beta * C + bias.  op(X) is X or its transpose (the last two dims swap).
// A: [M, K] or [batch, M, K] (trans_a: [.., K, M]); B: [K, N] or [batch, K, N] (trans_b: [.., N, K]); a 2-D B is
// shared by every batch. C: [M, N] or [batch, M, N]. A 3-D A with a 2-D B and 2-D C is read as [batch*M, K].
// A and B share a dtype (f32, bf16 or f16); C is f32 or that dtype; bias [N] is f32 or C's dtype. Rows may be strided;
// the last dim of every operand must be dense.
struct Matmul {
  TensorView c;     // [batch?, M, N] f32|bf16|f16, output
  TensorView a;     // [batch?, M, K] (or [.., K, M] when trans_a)
  TensorView b;     // [batch?, K, N] (or [.., N, K] when trans_b)
  TensorView bias;  // [N] or absent
  bool trans_a = false;
  bool trans_b = false;
  float alpha = 1.0f;
  float beta = 0.0f;
};

// dbias[n] += sum over all rows of dout[.., n]: the bias part of a linear layer's backward.
struct BiasBackward {
  TensorView dbias;  // [N] f32, accumulated
  TensorView dout;   // [rows, N] f32|bf16|f16, rows may be strided (a column slice of a wider gradient)
};

// The dropout of a site (DropoutForward below, and the join a LayerNormForward may make first).
struct DropoutParams {
  float p = 0.0f;
  uint64_t seed = 0;
  uint64_t offset = 0;
};

enum class Activation : uint8_t {
  kGelu,       // x * Phi(x) with the exact erf (PyTorch F.gelu default)
  kQuickGelu,  // x * sigmoid(1.702 x) (OpenAI CLIP)
};
const char * activation_name(Activation kind);

// y = (x - mean) * rstd * weight + bias over the last dim; mean and rstd = 1/sqrt(var + eps) are saved per row.
// The activations (in, out, din, dout) are f32 or bf16, each on its own (an f32 residual stream normalised into a
// bf16 matmul operand); the statistics, the parameters and the arithmetic are f32.
// With `activation`, x = act(in) computed in f32 and not stored or rounded (Magneto's FFN sub-LN over its GELU in
// one pass), and the backward's din is the gradient at `in`: act'(in) times the LayerNorm's. The backward may add
// `residual_gradient` to din in the same pass: the gradient of a residual path that joins the LayerNorm's input (a
// pre-LN block's x + sublayer(LN(x))), din then f32 like it and apart from every operand. With `din_column_sums` it
// also adds up din's columns as din holds them (rounded to its dtype): the bias gradient of the linear layer whose
// output `in` is (fc1 before the FFN's sub-LN), without another pass over din. With `out` (and the forward's `bias`)
// it writes the forward's output again, the same values LayerNormForward wrote from these operands and statistics:
// a model that did not keep the output (the input of the product after it, fc2's) has it back for that product's
// weight gradient from the pass that reads the input anyway, instead of running the forward again.
// With `added` the forward makes its input first, in = residual + dropout(added) (f32, written: DropoutForward's
// values), a sub-layer's end joining the residual stream, and normalises that: the pre-LN after it (the FFN's, after
// the attention) in the same pass, which saves reading the sum back.
struct LayerNormForward {
  TensorView out;     // [.., C] f32|bf16
  TensorView mean;    // [rows] f32, saved for backward
  TensorView rstd;    // [rows] f32, saved for backward
  TensorView in;      // [.., C] f32|bf16 (f32, and written, where added is given)
  TensorView weight;  // [C] f32
  TensorView bias;    // [C] f32
  float eps = 1e-5f;
  std::optional<Activation> activation = std::nullopt;
  TensorView added = TensorView{};     // [.., C] f32|bf16 or absent: in is residual + dropout(added), written
  TensorView residual = TensorView{};  // [.., C] f32, where added is given (else absent)
  DropoutParams dropout = {};          // added's dropout (p 0: none)
};
struct LayerNormBackward {
  TensorView din;      // [.., C] f32|bf16, overwritten
  TensorView dweight;  // [C] f32, accumulated
  TensorView dbias;    // [C] f32, accumulated
  TensorView dout;     // [.., C] f32|bf16
  TensorView in;       // [.., C] f32|bf16
  TensorView weight;   // [C] f32
  TensorView mean;     // [rows] f32 from the forward
  TensorView rstd;     // [rows] f32 from the forward
  float eps = 1e-5f;
  std::optional<Activation> activation = std::nullopt;
  TensorView residual_gradient = TensorView{};  // [.., C] f32 or absent, added to din
  TensorView din_column_sums = TensorView{};    // [C] f32 or absent, accumulated: the sums of din's columns
  TensorView out = TensorView{};   // [.., C] f32|bf16 or absent, overwritten: the forward's output made again
  TensorView bias = TensorView{};  // [C] f32, the forward's bias, where out is given (else absent)
};

// Computed in f32 on f32 or bf16 tensors (all of one op's tensors in one dtype).
struct ActivationForward {
  TensorView out;  // [...] f32|bf16
  TensorView in;   // [...] like out, same shape
  Activation kind = Activation::kGelu;
};
struct ActivationBackward {
  TensorView din;   // [...] f32|bf16, overwritten
  TensorView dout;  // [...] like din
  TensorView in;    // [...] like din, the forward's input
  Activation kind = Activation::kGelu;
};

// out = a + b elementwise (out may alias a, or b when b has a's shape: the residual add). b may also be a's
// trailing dims only, and is then added to every leading index (a position table added to each sequence).
struct Add {
  TensorView out;  // [...] f32|bf16
  TensorView a;    // [...] same dtype and shape
  TensorView b;    // [...] same dtype; a's shape or its trailing dims
};
// out = alpha * in (out may alias in).
struct Scale {
  TensorView out;  // [...] f32|bf16
  TensorView in;   // [...] same dtype and shape
  float alpha = 1.0f;
};
// out = in converted to out's dtype (f32, bf16, f16), round to nearest even, for any strides of either (a column
// window of activations cast into a dense bf16 matmul operand). The views must not overlap.
struct Cast {
  TensorView out;  // [...] f32|bf16|f16, any strides
  TensorView in;   // [...] f32|bf16|f16, same shape, any strides
};
// out = in, element by element, for any strides of either (views into a concatenation, a slice of rows, a
// transposed copy). The views must not overlap.
struct Copy {
  TensorView out;  // [...] any dtype
  TensorView in;   // [...] same dtype and shape
};
// Non-overlapping p x p patches of images as rows: out[n, i*(W/p) + j, (c*p + y)*p + x] = images[n, c, i*p+y, j*p+x],
// the order in which a [D, C, p, p] conv weight flattens, so the patch embedding is a matmul with that weight.
struct Patchify {
  TensorView out;     // [N, (H/p)*(W/p), C*p*p] f32
  TensorView images;  // [N, C, H, W] f32, H and W multiples of p
  int64_t patch = 14;
};
// out = value everywhere.
struct Fill {
  TensorView out;  // [...] f32|bf16|f16|i32
  float value = 0.0f;
};

// Scaled dot-product attention over [batch, heads, length, head_dim] views (strides free, head_dim dense), so
// q, k, v and out may be strided windows onto [B, T, H*dh] activations. Causal masking aligns the last query with
// the last key: query i sees keys j <= i + (Tk - Tq). Tiled: no Tq x Tk matrix is kept; the backward recomputes
// it from the saved log-sum-exp. Dropout on the probabilities keeps (b, head_start + h, i, j) as
// backends/attention_dropout.h draws it for row first_row + (b * heads_total + head_start + h) * Tq + i of the
// [B, heads_total, Tq] probability rows, so the mask does not depend on how samples or heads are split across
// ranks; p acts as the nearest multiple of 1/256.
struct AttentionParams {
  float scale = 1.0f;
  bool causal = false;
  float dropout_p = 0.0f;
  uint64_t seed = 0;
  uint64_t first_row = 0;   // the probability row of (b 0, head 0, query 0) among all [B, heads_total, Tq] rows
  int64_t head_start = 0;   // index of this view's first head among all heads
  int64_t heads_total = 0;  // 0: this view holds all heads
  // The backward's gradients the same bits run after run (the CPU's always are). false lets a GPU's bf16 backward
  // make one pass over the key blocks that adds dq up in f32 by atomics (five products where two passes make seven;
  // dq's last bits vary between runs, as the blocks' order does); true keeps it to the two passes.
  bool deterministic = true;
};
// q, k and v share a dtype: f32, or bf16 (mixed precision), where a GPU multiplies on tensor cores with f32
// accumulation and rounds the probabilities (and in the backward the score gradients) to bf16 for the second
// product; the CPU widens the operands exactly and computes in f32. out is f32 or bf16, and so are the gradients
// dout, dq, dk and dv (one dtype for the four); rounded once from f32. lse is f32.
struct AttentionForward {
  TensorView out;  // [B, H, Tq, dh] f32|bf16
  TensorView lse;  // [B, H, Tq] f32, log-sum-exp of the scaled scores, saved for backward
  TensorView q;    // [B, H, Tq, dh] f32|bf16
  TensorView k;    // [B, H, Tk, dh] like q
  TensorView v;    // [B, H, Tk, dh] like q
  AttentionParams params;
  // [Device::attention_keep_words(op)] i32, or absent: where the device records the dropout masks it drew for the
  // backward (opaque: a GPU's mma.sync kernels keep one bit a probability), so that the backward reads them instead
  // of drawing them again.
  TensorView keep;
};
struct AttentionBackward {
  TensorView dq;    // [B, H, Tq, dh] f32|bf16, overwritten
  TensorView dk;    // [B, H, Tk, dh] like dq, overwritten
  TensorView dv;    // [B, H, Tk, dh] like dq, overwritten
  TensorView dout;  // [B, H, Tq, dh] f32|bf16
  TensorView q;     // [B, H, Tq, dh] f32|bf16
  TensorView k;     // [B, H, Tk, dh] like q
  TensorView v;     // [B, H, Tk, dh] like q
  TensorView out;   // [B, H, Tq, dh] f32|bf16 from the forward
  TensorView lse;   // [B, H, Tq] f32 from the forward
  AttentionParams params;
  TensorView keep;  // the forward's AttentionForward::keep as it wrote it, or absent (the masks are drawn again)
};

// xPos (torchscale XPOS, kosmos-spec section 4) on [B, H, T, dh] views, head_dim even: rotates interleaved pairs
// (2i, 2i+1) by angle p*theta_i at absolute position p = offset + t and scales them by zeta_i^(c/scale_base) with
// centred c = p + floor(-(T + offset) / 2); downscale (for keys) uses the reciprocal scale. out may alias in.
// f32 or bf16 (in and out alike), computed in f32.
struct XPosParams {
  int64_t offset = 0;
  bool downscale = false;
  float scale_base = 512.0f;
};
struct XPosForward {
  TensorView out;  // [B, H, T, dh] f32|bf16
  TensorView in;   // [B, H, T, dh] like out
  XPosParams params;
};
struct XPosBackward {
  TensorView din;   // [B, H, T, dh] f32|bf16, overwritten
  TensorView dout;  // [B, H, T, dh] like din
  XPosParams params;
};

// out[n] = table[ids[n] - vocab_start] for ids inside this table's rows, zeros otherwise (the vocab-parallel
// embedding sums the partial rows over ranks). The backward scatter-adds into the table, skipping padding_idx.
struct EmbeddingForward {
  TensorView out;    // [N, d] f32
  TensorView ids;    // [N] i32
  TensorView table;  // [V_local, d] f32
  int64_t vocab_start = 0;
  int64_t padding_idx = -1;  // -1: none
};
struct EmbeddingBackward {
  TensorView dtable;  // [V_local, d] f32, accumulated
  TensorView dout;    // [N, d] f32
  TensorView ids;     // [N] i32
  int64_t vocab_start = 0;
  int64_t padding_idx = -1;
};

// fairseq sinusoidal positions: half = d/2, w_j = exp(-j ln(10000)/(half-1)),
// out[n] = [sin(p w_0..), cos(p w_0..)] with p = positions[n]; the row is zero when p == padding_idx.
struct SinusoidalPositions {
  TensorView out;        // [N, d] f32, d even
  TensorView positions;  // [N] i32
  int64_t padding_idx = -1;
};

// Fused softmax + cross-entropy over the vocab dim: loss = loss_scale * sum_n w_n (lse_n - logits[n, t_n]).
// Rows with weight 0 carry no loss. logits may be a vocab slice starting at vocab_start: targets outside it
// contribute only through lse (the vocab-parallel version adds its all-reduces between the row passes). logits and
// dlogits have dense rows at any row stride >= V_local (a caller pads them as the GEMMs that write and read them
// want: Device::matmul_row_alignment). bf16 logits (a bf16 head's product, as PyTorch's autocast leaves them) are
// widened as they are read: every sum, the lse and the gradient are f32 either way.
struct CrossEntropyForward {
  TensorView loss;     // [1] f32
  TensorView lse;      // [N] f32, saved for backward
  TensorView logits;   // [N, V_local] f32|bf16, rows dense
  TensorView targets;  // [N] i32
  TensorView weights;  // [N] f32 loss mask / weights
  int64_t vocab_start = 0;
  int64_t vocab_total = 0;  // 0: V_local (no vocab split)
  float loss_scale = 1.0f;  // e.g. 1 / number of counted tokens
};
struct CrossEntropyBackward {
  TensorView dlogits;  // [N, V_local] f32|bf16|f16 (rounded once, for a 16-bit head), rows dense, overwritten:
                       // dloss * loss_scale * w_n * (softmax - onehot); may be logits itself (same dtype and stride)
  TensorView logits;   // [N, V_local] f32|bf16, rows dense
  TensorView targets;  // [N] i32
  TensorView weights;  // [N] f32
  TensorView lse;      // [N] f32 from the forward
  int64_t vocab_start = 0;
  int64_t vocab_total = 0;
  float loss_scale = 1.0f;
  float dloss = 1.0f;
};

// Inverted dropout (DropoutParams, above): element n (linear index of the dense tensor) is kept when Philox(seed,
// offset + n) gives a uniform >= p, and scaled by 1/(1-p). The forward may add a residual in the same pass, out =
// residual + dropout(in) (the end of a sub-layer; the residual's gradient is dout itself); out may alias in or
// residual. The backward regenerates the same mask; its din may be bf16, rounded once, when it feeds a bf16 matmul.
// With `din_column_sums` the backward also adds up din's columns (over its last dim) as din holds them: the bias
// gradient of the projection whose output was dropped (out_proj, fc2), without another pass over din.
struct DropoutForward {
  TensorView out;       // [...] f32
  TensorView in;        // [...] f32, or bf16 with a residual (a bf16 projection's output joining the residual stream)
  TensorView residual;  // [...] f32, or absent
  DropoutParams params;
};
struct DropoutBackward {
  TensorView din;   // [..., C] f32|bf16, overwritten
  TensorView dout;  // [..., C] f32
  DropoutParams params;
  TensorView din_column_sums = TensorView{};  // [C] f32 or absent, accumulated: the sums of din's columns
};

// One AdamW step (PyTorch form, decoupled weight decay, bias correction with 1-based `step`):
// g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr wd p;
// p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps).
// With `compute_param`, the updated p is also written there rounded to its dtype (to nearest even): the
// mixed-precision compute copy of the weights, kept current without a second pass over the f32 values.
struct AdamWStep {
  TensorView param;  // [...] f32 (master weights)
  TensorView m;      // [...] f32 first moment
  TensorView v;      // [...] f32 second moment
  TensorView grad;   // [...] f32
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;
  float grad_scale = 1.0f;  // global-norm clipping coefficient, or 1/loss_scale
  TensorView compute_param = TensorView{};  // [...] bf16|f16 like param, or absent: the updated p, rounded
};

// out[0] += sum(in^2), accumulated in double inside a call: one term of a global gradient norm.
struct SquaredNorm {
  TensorView out;  // [1] f32, accumulated
  TensorView in;   // [...] f32
};

// y = x / max(||x||_2, eps) over the last dim (the Kosmos-2 image features); norm = ||x|| is saved.
struct L2NormalizeForward {
  TensorView out;   // [.., C] f32
  TensorView norm;  // [rows] f32, saved for backward
  TensorView in;    // [.., C] f32
  float eps = 1e-12f;
};
struct L2NormalizeBackward {
  TensorView din;   // [.., C] f32, overwritten: (dy - y (y . dy)) / ||x||  (dy / eps where clamped)
  TensorView dout;  // [.., C] f32
  TensorView out;   // [.., C] f32 from the forward
  TensorView norm;  // [rows] f32 from the forward
  float eps = 1e-12f;
};

using OpDesc = std::variant<Matmul, BiasBackward, LayerNormForward, LayerNormBackward, ActivationForward,
                            ActivationBackward, Add, Scale, Cast, Copy, Patchify, Fill, AttentionForward,
                            AttentionBackward, XPosForward, XPosBackward, EmbeddingForward, EmbeddingBackward, SinusoidalPositions,
                            CrossEntropyForward, CrossEntropyBackward, DropoutForward, DropoutBackward, AdamWStep,
                            SquaredNorm, L2NormalizeForward, L2NormalizeBackward>;

// "matmul", "layernorm_forward", ... : the name used in errors, tests and benchmarks.
const char * op_name(const OpDesc & op);

// Throws kosmos::Error naming the op, the offending shapes or dtypes and what was expected.
void validate(const OpDesc & op);

// Validates, asks the device whether it implements this case, and runs it on the stream.
void op_run(Device & device, const OpDesc & op, Stream & stream);

// The backward of Matmul as the two matmuls and the bias reduction it consists of, for any backend:
// dA (=, or += when accumulate_da) = dC op(B)^T-ish, dB += ..., dbias += sum rows of dC. Absent outputs are skipped.
struct MatmulBackward {
  TensorView da;     // like a, overwritten unless accumulate_da
  TensorView db;     // like b, accumulated
  TensorView dbias;  // [N] f32, accumulated, or absent
  TensorView dc;     // like c
  TensorView a;
  TensorView b;
  bool trans_a = false;
  bool trans_b = false;
  float alpha = 1.0f;
  bool accumulate_da = false;
};
void matmul_backward(Device & device, const MatmulBackward & op, Stream & stream);

}  // namespace kosmos
