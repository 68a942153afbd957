// ops_validate.cpp: validate(op) for every op in ops.h. Each failure names the op, the offending operand with
// its dtype and shape, and what was expected, so a wrong call is fixed from the message alone.
#include <cmath>
#include <initializer_list>
#include <sstream>
#include <tuple>
#include <vector>

#include "backends/error.h"
#include "backends/ops.h"

namespace kosmos {
namespace {

std::string dtypes_text(std::initializer_list<DType> allowed) {
  std::string text;
  for (DType dtype : allowed) text += (text.empty() ? "" : " or ") + std::string(dtype_name(dtype));
  return text;
}

// The checks below all name the op, so one call site message reads "op: operand ... expected ...".
struct Checker {
  const char * op;

  void present(const char * name, const TensorView & view) const {
    KOSMOS_CHECK(view.present(), op, ": ", name, " is absent; this operand is required");
  }
  void dtype(const char * name, const TensorView & view, std::initializer_list<DType> allowed) const {
    present(name, view);
    for (DType dtype : allowed)
      if (view.dtype == dtype) return;
    KOSMOS_FAIL(op, ": ", name, " is ", describe(view), "; expected dtype ", dtypes_text(allowed));
  }
  void ndim(const char * name, const TensorView & view, int low, int high) const {
    KOSMOS_CHECK(view.ndim >= low && view.ndim <= high, op, ": ", name, " is ", describe(view), "; expected ",
                 low == high ? std::to_string(low) : std::to_string(low) + " to " + std::to_string(high),
                 " dimensions");
  }
  void dims(const char * name, const TensorView & view, const std::vector<int64_t> & expected,
            const std::string & why) const {
    bool match = view.ndim == static_cast<int>(expected.size());
    for (int axis = 0; match && axis < view.ndim; ++axis) match = view.dims[axis] == expected[axis];
    KOSMOS_CHECK(match, op, ": ", name, " is ", describe(view), "; expected shape ", describe_dims(expected), " (", why,
                 ")");
  }
  void same_shape(const char * name, const TensorView & view, const char * ref_name, const TensorView & ref) const {
    KOSMOS_CHECK(same_dims(view, ref), op, ": ", name, " is ", describe(view), " but ", ref_name, " is ",
                 describe(ref), "; expected the same shape");
  }
  void same_dtype(const char * name, const TensorView & view, const char * ref_name, const TensorView & ref) const {
    KOSMOS_CHECK(view.dtype == ref.dtype, op, ": ", name, " is ", describe(view), " but ", ref_name, " is ",
                 describe(ref), "; expected the same dtype");
  }
  void dense(const char * name, const TensorView & view) const {
    KOSMOS_CHECK(view.is_contiguous(), op, ": ", name, " is ", describe(view),
                 "; this op needs a dense row-major tensor (copy it into one first)");
  }
  void inner_dense(const char * name, const TensorView & view) const {
    KOSMOS_CHECK(view.ndim == 0 || view.dim(-1) <= 1 || view.stride(-1) == 1, op, ": ", name, " is ",
                 describe(view), "; its last dimension must be dense (stride 1)");
  }
  // A 2-D view of dense rows that do not overlap: stride 1 along a row, at least a row's width between rows.
  void dense_rows(const char * name, const TensorView & view) const {
    inner_dense(name, view);
    KOSMOS_CHECK(view.dim(0) <= 1 || view.stride(0) >= view.dim(1), op, ": ", name, " is ", describe(view),
                 "; its rows overlap (row stride below the row's width): lay them at least ", view.dim(1),
                 " elements apart");
  }
  void scalar_range(const char * name, double value, double low, double high, const char * meaning) const {
    KOSMOS_CHECK(value >= low && value <= high, op, ": ", name, " = ", value, " is outside [", low, ", ", high,
                 "] (", meaning, ")");
  }
  // The per-row statistics of a [.., C] tensor: a dense f32 vector with one entry per row.
  void row_stats(const char * name, const TensorView & view, const TensorView & data) const {
    dtype(name, view, {DType::kF32});
    dense(name, view);
    KOSMOS_CHECK(view.numel() == data.rows(), op, ": ", name, " is ", describe(view), "; expected ", data.rows(),
                 " values, one per row of ", describe(data));
  }
};

// The [rows, cols] of op(view): the last two dims, swapped when transposed.
void matmul_operand_dims(const TensorView & view, bool transposed, int64_t * rows, int64_t * cols) {
  const int64_t outer = view.dim(-2), inner = view.dim(-1);
  *rows = transposed ? inner : outer;
  *cols = transposed ? outer : inner;
}

// The byte ranges [first, last element] of two views intersect (a conservative test for strided views).
bool views_overlap(const TensorView & a, const TensorView & b) {
  auto range = [](const TensorView & view) {
    int64_t last = 0;
    for (int axis = 0; axis < view.ndim; ++axis) last += (view.dims[axis] - 1) * view.strides[axis];
    const char * start = static_cast<const char *>(view.data);
    return std::pair<const char *, const char *>{start, start + (last + 1) * static_cast<int64_t>(dtype_size(view.dtype))};
  };
  if (a.numel() == 0 || b.numel() == 0) return false;
  const auto [a_start, a_end] = range(a);
  const auto [b_start, b_end] = range(b);
  return a_start < b_end && b_start < a_end;
}

void validate_op(const Matmul & op) {
  const Checker check{"matmul"};
  check.dtype("a", op.a, {DType::kF32, DType::kBF16, DType::kF16});
  check.dtype("b", op.b, {DType::kF32, DType::kBF16, DType::kF16});
  check.same_dtype("b", op.b, "a", op.a);
  check.dtype("c", op.c, {DType::kF32, DType::kBF16, DType::kF16});
  if (op.c.dtype != DType::kF32)
    KOSMOS_CHECK(op.a.dtype == op.c.dtype, "matmul: c is ", describe(op.c), " but a is ", describe(op.a),
                 "; a ", dtype_name(op.c.dtype), " output needs ", dtype_name(op.c.dtype), " inputs");
  check.ndim("a", op.a, 2, 3);
  check.ndim("b", op.b, 2, 3);
  check.ndim("c", op.c, 2, 3);
  for (const auto & [name, view] : {std::pair<const char *, TensorView>{"a", op.a}, {"b", op.b}, {"c", op.c}})
    check.inner_dense(name, view);
  int64_t m, k, k_b, n;
  matmul_operand_dims(op.a, op.trans_a, &m, &k);
  matmul_operand_dims(op.b, op.trans_b, &k_b, &n);
  const std::string shapes = std::string("a ") + describe(op.a) + (op.trans_a ? " (transposed)" : "") + ", b " +
                             describe(op.b) + (op.trans_b ? " (transposed)" : "") + ", c " + describe(op.c);
  KOSMOS_CHECK(k == k_b, "matmul: inner dimensions differ: ", shapes, "; op(a) is [", m, ", ", k, "] and op(b) is [",
               k_b, ", ", n, "]");
  const int64_t batch_a = op.a.ndim == 3 ? op.a.dim(0) : 1;
  const int64_t batch_b = op.b.ndim == 3 ? op.b.dim(0) : 1;
  const int64_t batch = batch_a > batch_b ? batch_a : batch_b;
  KOSMOS_CHECK((batch_a == 1 || batch_a == batch) && (batch_b == 1 || batch_b == batch),
               "matmul: batch sizes differ: ", shapes, "; each batch must be ", batch, " or 1 (broadcast)");
  if (op.c.ndim == 3) {
    check.dims("c", op.c, {batch, m, n}, "batch, rows of op(a), columns of op(b): " + shapes);
  } else if (batch > 1) {
    KOSMOS_CHECK(op.a.ndim == 3 && batch_b == 1 && !op.trans_a && op.a.stride(0) == op.a.dim(1) * op.a.stride(1),
                 "matmul: ", shapes, "; a 2-D c with a batched product needs an untransposed 3-D a with dense batch "
                 "rows and a shared b; otherwise give c 3 dimensions");
    check.dims("c", op.c, {batch * m, n}, "batch*rows of a, columns of op(b): " + shapes);
  } else {
    check.dims("c", op.c, {m, n}, "rows of op(a), columns of op(b): " + shapes);
  }
  if (op.bias.present()) {
    check.dtype("bias", op.bias, {DType::kF32, op.c.dtype});
    check.dims("bias", op.bias, {n}, "one value per column of c");
    check.dense("bias", op.bias);
  }
}

void validate_op(const BiasBackward & op) {
  const Checker check{"bias_backward"};
  check.dtype("dout", op.dout, {DType::kF32, DType::kBF16, DType::kF16});
  check.ndim("dout", op.dout, 1, 2);
  check.inner_dense("dout", op.dout);
  check.dtype("dbias", op.dbias, {DType::kF32});
  check.dims("dbias", op.dbias, {op.dout.dim(-1)}, "one value per column of dout");
  check.dense("dbias", op.dbias);
}

void validate_layernorm_operands(const Checker & check, const TensorView & in,
                                 std::initializer_list<std::pair<const char *, TensorView>> per_feature,
                                 const TensorView & mean, const TensorView & rstd, float eps) {
  check.dtype("in", in, {DType::kF32, DType::kBF16});
  check.ndim("in", in, 1, kMaxDims);
  check.dense("in", in);
  for (const auto & [name, view] : per_feature) {
    check.dtype(name, view, {DType::kF32});
    check.dims(name, view, {in.dim(-1)}, "one value per feature of in " + describe(in));
    check.dense(name, view);
  }
  check.row_stats("mean", mean, in);
  check.row_stats("rstd", rstd, in);
  check.scalar_range("eps", eps, 0.0, 1.0, "the variance epsilon");
}

void validate_op(const LayerNormForward & op) {
  const Checker check{"layernorm_forward"};
  validate_layernorm_operands(check, op.in, {{"weight", op.weight}, {"bias", op.bias}}, op.mean, op.rstd, op.eps);
  check.dtype("out", op.out, {DType::kF32, DType::kBF16});
  check.same_shape("out", op.out, "in", op.in);
  check.dense("out", op.out);
  KOSMOS_CHECK(op.added.present() == op.residual.present(), "layernorm_forward: added ", describe(op.added),
               " and residual ", describe(op.residual), "; expected both (in = residual + dropout(added)) or neither");
  if (!op.added.present()) {
    KOSMOS_CHECK(op.dropout.p == 0.0f && op.dropout.seed == 0 && op.dropout.offset == 0, "layernorm_forward: dropout "
                 "p = ", op.dropout.p, ", seed ", op.dropout.seed, ", offset ", op.dropout.offset, " without added; "
                 "expected the dropout of a join only with its added and residual (else leave it at its defaults)");
    return;
  }
  KOSMOS_CHECK(!op.activation, "layernorm_forward: an activation (", activation_name(*op.activation),
               ") with added ", describe(op.added), "; expected one or the other (a join makes an f32 input)");
  for (const auto & [name, view] :
       {std::pair<const char *, TensorView>{"in", op.in}, {"added", op.added}, {"residual", op.residual}}) {
    check.dtype(name, view, {DType::kF32, DType::kBF16});
    check.same_shape(name, view, "in", op.in);
    check.dense(name, view);
  }
  check.dtype("in", op.in, {DType::kF32});  // the join's sum, as residual
  check.dtype("residual", op.residual, {DType::kF32});
  check.scalar_range("dropout.p", op.dropout.p, 0.0, 0.999, "the probability of dropping an element of added");
  for (const auto & [name, view] :
       {std::pair<const char *, TensorView>{"out", op.out}, {"mean", op.mean}, {"rstd", op.rstd},
        {"weight", op.weight}, {"bias", op.bias}})
    KOSMOS_CHECK(!views_overlap(op.in, view), "layernorm_forward: in ", describe(op.in), " overlaps ", name, " ",
                 describe(view), "; expected the joined input (written) apart from the normalisation's operands");
  for (const auto & [name, view] :
       {std::pair<const char *, TensorView>{"added", op.added}, {"residual", op.residual}}) {
    // in may be the very view it is made from (in place, element by element), never part of it; the outputs are
    // written while other rows still read the join's operands.
    const bool same = view.data == op.in.data && view.dtype == op.in.dtype;  // same shape, both dense: checked
    KOSMOS_CHECK(same || !views_overlap(op.in, view), "layernorm_forward: in ", describe(op.in), " overlaps ", name,
                 " ", describe(view), "; expected the joined input apart from it or the same view (in place)");
    for (const auto & [output, written] :
         {std::pair<const char *, TensorView>{"out", op.out}, {"mean", op.mean}, {"rstd", op.rstd}})
      KOSMOS_CHECK(!views_overlap(written, view), "layernorm_forward: ", output, " ", describe(written), " overlaps ",
                   name, " ", describe(view), "; expected the outputs apart from what the join reads");
  }
}

void validate_op(const LayerNormBackward & op) {
  const Checker check{"layernorm_backward"};
  validate_layernorm_operands(check, op.in, {{"weight", op.weight}, {"dweight", op.dweight}, {"dbias", op.dbias}},
                              op.mean, op.rstd, op.eps);
  for (const auto & [name, view] : {std::pair<const char *, TensorView>{"din", op.din}, {"dout", op.dout}}) {
    check.dtype(name, view, {DType::kF32, DType::kBF16});
    check.same_shape(name, view, "in", op.in);
    check.dense(name, view);
  }
  for (const auto & [name, view] : {std::pair<const char *, TensorView>{"dout", op.dout}, {"in", op.in}})
    KOSMOS_CHECK(!views_overlap(op.din, view), "layernorm_backward: din ", describe(op.din), " overlaps ", name, " ",
                 describe(view), "; expected separate views (the weight and bias gradients read ", name,
                 " after din is written)");
  if (op.din_column_sums.present()) {
    check.dtype("din_column_sums", op.din_column_sums, {DType::kF32});
    KOSMOS_CHECK(op.din_column_sums.ndim == 1 && op.din_column_sums.dim(0) == op.in.dim(-1), "layernorm_backward: "
                 "din_column_sums ", describe(op.din_column_sums), " for in ", describe(op.in), "; expected [",
                 op.in.dim(-1), "] (a sum per column)");
    check.dense("din_column_sums", op.din_column_sums);
    for (const auto & [name, view] :
         {std::pair<const char *, TensorView>{"din", op.din}, {"dout", op.dout}, {"in", op.in}, {"weight", op.weight},
          {"dweight", op.dweight}, {"dbias", op.dbias}, {"residual_gradient", op.residual_gradient}})
      KOSMOS_CHECK(!views_overlap(op.din_column_sums, view), "layernorm_backward: din_column_sums ",
                   describe(op.din_column_sums), " overlaps ", name, " ", describe(view), "; expected a [",
                   op.in.dim(-1), "] f32 vector apart from every operand");
  }
  KOSMOS_CHECK(op.out.present() == op.bias.present(), "layernorm_backward: out ", describe(op.out), " and bias ",
               describe(op.bias), "; expected both (the forward's output made again needs its bias) or neither");
  if (op.out.present()) {
    check.dtype("bias", op.bias, {DType::kF32});
    check.dims("bias", op.bias, {op.in.dim(-1)}, "one value per feature of in " + describe(op.in));
    check.dense("bias", op.bias);
    check.dtype("out", op.out, {DType::kF32, DType::kBF16});
    check.same_shape("out", op.out, "in", op.in);
    check.dense("out", op.out);
    for (const auto & [name, view] :
         {std::pair<const char *, TensorView>{"din", op.din}, {"dout", op.dout}, {"in", op.in}, {"weight", op.weight},
          {"bias", op.bias}, {"dweight", op.dweight}, {"dbias", op.dbias}, {"mean", op.mean}, {"rstd", op.rstd},
          {"residual_gradient", op.residual_gradient}, {"din_column_sums", op.din_column_sums}})
      KOSMOS_CHECK(!views_overlap(op.out, view), "layernorm_backward: out ", describe(op.out), " overlaps ", name, " ",
                   describe(view), "; expected the forward's output made again apart from every operand");
    for (const auto & [name, view] : {std::pair<const char *, TensorView>{"din", op.din}, {"dweight", op.dweight},
                                      {"dbias", op.dbias}, {"din_column_sums", op.din_column_sums}})
      KOSMOS_CHECK(!views_overlap(op.bias, view), "layernorm_backward: bias ", describe(op.bias), " overlaps ", name,
                   " ", describe(view), "; expected the forward's bias apart from the gradients the op writes");
  }
  if (!op.residual_gradient.present()) return;
  check.dtype("residual_gradient", op.residual_gradient, {DType::kF32});
  check.same_shape("residual_gradient", op.residual_gradient, "in", op.in);
  check.dense("residual_gradient", op.residual_gradient);
  KOSMOS_CHECK(op.din.dtype == DType::kF32, "layernorm_backward: din ", describe(op.din), " with a residual_gradient; "
               "expected f32 din (the sum of two f32 gradients)");
  KOSMOS_CHECK(!views_overlap(op.din, op.residual_gradient), "layernorm_backward: din ", describe(op.din),
               " overlaps residual_gradient ", describe(op.residual_gradient), "; expected separate views");
}

// Elementwise ops: every operand dense, same shape; dtypes as given.
void validate_elementwise(const Checker & check, std::initializer_list<std::pair<const char *, TensorView>> operands,
                          std::initializer_list<DType> allowed) {
  const auto & [first_name, first] = *operands.begin();
  for (const auto & [name, view] : operands) {
    check.dtype(name, view, allowed);
    check.dense(name, view);
    check.same_shape(name, view, first_name, first);
  }
}

void validate_op(const ActivationForward & op) {
  const Checker check{"activation_forward"};
  validate_elementwise(check, {{"in", op.in}, {"out", op.out}}, {DType::kF32, DType::kBF16});
  check.same_dtype("out", op.out, "in", op.in);
}
void validate_op(const ActivationBackward & op) {
  const Checker check{"activation_backward"};
  validate_elementwise(check, {{"in", op.in}, {"dout", op.dout}, {"din", op.din}}, {DType::kF32, DType::kBF16});
  check.same_dtype("dout", op.dout, "in", op.in);
  check.same_dtype("din", op.din, "in", op.in);
}
void validate_op(const Add & op) {
  const Checker check{"add"};
  validate_elementwise(check, {{"a", op.a}, {"out", op.out}}, {DType::kF32, DType::kBF16});
  check.dtype("b", op.b, {DType::kF32, DType::kBF16});
  check.dense("b", op.b);
  check.same_dtype("b", op.b, "a", op.a);
  check.same_dtype("out", op.out, "a", op.a);
  bool trailing = op.b.ndim <= op.a.ndim;
  for (int axis = 1; trailing && axis <= op.b.ndim; ++axis) trailing = op.b.dim(-axis) == op.a.dim(-axis);
  KOSMOS_CHECK(trailing, "add: b is ", describe(op.b), " but a is ", describe(op.a),
               "; expected b to have a's shape or its trailing dims (broadcast over the leading ones)");
  KOSMOS_CHECK(op.b.numel() == op.a.numel() || !views_overlap(op.out, op.b), "add: out ", describe(op.out),
               " overlaps the broadcast b ", describe(op.b), "; expected out to alias a only");
}
void validate_op(const Scale & op) {
  const Checker check{"scale"};
  validate_elementwise(check, {{"in", op.in}, {"out", op.out}}, {DType::kF32, DType::kBF16});
  check.same_dtype("out", op.out, "in", op.in);
}
void validate_op(const Cast & op) {
  const Checker check{"cast"};
  for (const auto & [name, view] : {std::pair<const char *, TensorView>{"in", op.in}, {"out", op.out}}) {
    check.present(name, view);
    check.dtype(name, view, {DType::kF32, DType::kBF16, DType::kF16});
  }
  check.same_shape("out", op.out, "in", op.in);
  KOSMOS_CHECK(!views_overlap(op.out, op.in), "cast: out ", describe(op.out), " and in ", describe(op.in),
               " overlap in memory; expected separate views (cast into a new buffer)");
}
void validate_op(const Copy & op) {
  const Checker check{"copy"};
  check.present("in", op.in);
  check.present("out", op.out);
  check.same_dtype("out", op.out, "in", op.in);
  check.same_shape("out", op.out, "in", op.in);
  KOSMOS_CHECK(!views_overlap(op.out, op.in), "copy: out ", describe(op.out), " and in ", describe(op.in),
               " overlap in memory; expected separate views (copy through a temporary)");
}

void validate_op(const Patchify & op) {
  const Checker check{"patchify"};
  check.dtype("images", op.images, {DType::kF32});
  check.ndim("images", op.images, 4, 4);
  check.dense("images", op.images);
  KOSMOS_CHECK(op.patch > 0 && op.images.dim(2) % op.patch == 0 && op.images.dim(3) % op.patch == 0,
               "patchify: images ", describe(op.images), " must be [N, C, H, W] with H and W multiples of the patch "
               "size ", op.patch, "; expected e.g. 224 x 224 for patch 14 (resize or crop the images)");
  const int64_t patches = (op.images.dim(2) / op.patch) * (op.images.dim(3) / op.patch);
  check.dtype("out", op.out, {DType::kF32});
  check.dense("out", op.out);
  check.dims("out", op.out, {op.images.dim(0), patches, op.images.dim(1) * op.patch * op.patch},
             "[images, patches, channels*patch*patch] for images " + describe(op.images));
}

void validate_op(const Fill & op) {
  const Checker check{"fill"};
  check.present("out", op.out);
  check.dense("out", op.out);
}

void validate_attention_params(const Checker & check, const AttentionParams & params, int64_t heads) {
  check.scalar_range("dropout_p", params.dropout_p, 0.0, 0.999, "the probability of dropping an attention weight");
  // Normal, not only positive: a GPU's kernels take the scores' max before scaling and flush subnormals to 0.
  KOSMOS_CHECK(params.scale > 0.0f && std::isnormal(params.scale), check.op, ": scale = ", params.scale,
               " must be a positive normal number (usually head_dim^-0.5)");
  const int64_t total = params.heads_total == 0 ? heads : params.heads_total;
  KOSMOS_CHECK(params.head_start >= 0 && params.head_start + heads <= total, check.op, ": heads [",
               params.head_start, ", ", params.head_start + heads, ") do not fit in heads_total = ", total);
}

// q [B, H, Tq, dh], k and v [B, H, Tk, dh]; returns Tk.
void validate_attention_operands(const Checker & check, const TensorView & q, const TensorView & k,
                                 const TensorView & v, const TensorView & out, const TensorView & lse) {
  for (const auto & [name, view] :
       {std::pair<const char *, TensorView>{"q", q}, {"k", k}, {"v", v}, {"out", out}}) {
    check.present(name, view);
    check.ndim(name, view, 4, 4);
    check.inner_dense(name, view);
  }
  check.dtype("q", q, {DType::kF32, DType::kBF16});  // bf16 operands: their values' attention, with f32 softmax
  check.same_dtype("k", k, "q", q);
  check.same_dtype("v", v, "q", q);
  check.dtype("out", out, {DType::kF32, DType::kBF16});
  const int64_t batch = q.dim(0), heads = q.dim(1), tq = q.dim(2), head_dim = q.dim(3), tk = k.dim(2);
  const std::string why = "[batch, heads, length, head_dim] with q " + describe(q);
  check.dims("k", k, {batch, heads, tk, head_dim}, why);
  check.dims("v", v, {batch, heads, tk, head_dim}, why + " and k " + describe(k));
  check.dims("out", out, {batch, heads, tq, head_dim}, why);
  check.dtype("lse", lse, {DType::kF32});
  check.dense("lse", lse);
  check.dims("lse", lse, {batch, heads, tq}, "one log-sum-exp per query row of q " + describe(q));
  KOSMOS_CHECK(tk > 0 || tq == 0, check.op, ": k ", describe(k), " has no keys for ", tq, " queries");
}

// The dropout masks' record, where given: dense i32 words (their count is the device's, checked where it writes).
void validate_attention_keep(const Checker & check, const TensorView & keep) {
  if (!keep.present()) return;
  check.dtype("keep", keep, {DType::kI32});
  check.ndim("keep", keep, 1, 1);
  check.dense("keep", keep);
}

void validate_op(const AttentionForward & op) {
  const Checker check{"attention_forward"};
  validate_attention_operands(check, op.q, op.k, op.v, op.out, op.lse);
  validate_attention_params(check, op.params, op.q.dim(1));
  validate_attention_keep(check, op.keep);
}

void validate_op(const AttentionBackward & op) {
  const Checker check{"attention_backward"};
  validate_attention_operands(check, op.q, op.k, op.v, op.out, op.lse);
  validate_attention_params(check, op.params, op.q.dim(1));
  validate_attention_keep(check, op.keep);
  for (const auto & [name, view, ref_name, ref] :
       {std::tuple<const char *, TensorView, const char *, TensorView>{"dq", op.dq, "q", op.q},
        {"dk", op.dk, "k", op.k}, {"dv", op.dv, "v", op.v}, {"dout", op.dout, "out", op.out}}) {
    check.dtype(name, view, {DType::kF32, DType::kBF16});
    check.same_shape(name, view, ref_name, ref);
    check.inner_dense(name, view);
  }
  check.same_dtype("dk", op.dk, "dq", op.dq);
  check.same_dtype("dv", op.dv, "dq", op.dq);
  check.same_dtype("dout", op.dout, "dq", op.dq);
}

void validate_xpos(const Checker & check, const TensorView & out, const TensorView & in, const XPosParams & params) {
  for (const auto & [name, view] : {std::pair<const char *, TensorView>{"in", in}, {"out", out}}) {
    check.dtype(name, view, {DType::kF32, DType::kBF16});
    check.ndim(name, view, 4, 4);
    check.inner_dense(name, view);
    check.same_shape(name, view, "in", in);
  }
  check.same_dtype("out", out, "in", in);
  KOSMOS_CHECK(in.dim(-1) % 2 == 0, check.op, ": head_dim of ", describe(in),
               " is odd; xPos rotates pairs of features and needs an even head_dim");
  KOSMOS_CHECK(params.offset >= 0, check.op, ": offset = ", params.offset, " must be >= 0");
  KOSMOS_CHECK(params.scale_base > 0.0f, check.op, ": scale_base = ", params.scale_base, " must be > 0 (512)");
}

void validate_op(const XPosForward & op) { validate_xpos(Checker{"xpos_forward"}, op.out, op.in, op.params); }
void validate_op(const XPosBackward & op) { validate_xpos(Checker{"xpos_backward"}, op.din, op.dout, op.params); }

void validate_embedding(const Checker & check, const TensorView & rows, const TensorView & ids,
                        const TensorView & table, int64_t padding_idx) {
  check.dtype("ids", ids, {DType::kI32});
  check.ndim("ids", ids, 1, 1);
  check.dense("ids", ids);
  check.dtype("table", table, {DType::kF32});
  check.ndim("table", table, 2, 2);
  check.dense("table", table);
  check.dtype("rows", rows, {DType::kF32});
  check.dense("rows", rows);
  check.dims("rows", rows, {ids.dim(0), table.dim(1)}, "one row of width " + std::to_string(table.dim(1)) +
                                                           " per id of " + describe(ids));
  KOSMOS_CHECK(padding_idx >= -1, check.op, ": padding_idx = ", padding_idx, " must be -1 (none) or an id");
}

void validate_op(const EmbeddingForward & op) {
  validate_embedding(Checker{"embedding_forward"}, op.out, op.ids, op.table, op.padding_idx);
}
void validate_op(const EmbeddingBackward & op) {
  validate_embedding(Checker{"embedding_backward"}, op.dout, op.ids, op.dtable, op.padding_idx);
}

void validate_op(const SinusoidalPositions & op) {
  const Checker check{"sinusoidal_positions"};
  check.dtype("positions", op.positions, {DType::kI32});
  check.ndim("positions", op.positions, 1, 1);
  check.dense("positions", op.positions);
  check.dtype("out", op.out, {DType::kF32});
  check.ndim("out", op.out, 2, 2);
  check.dense("out", op.out);
  check.dims("out", op.out, {op.positions.dim(0), op.out.dim(1)}, "one row per position of " + describe(op.positions));
  KOSMOS_CHECK(op.out.dim(1) % 2 == 0 && op.out.dim(1) >= 4, "sinusoidal_positions: width of ", describe(op.out),
               " must be even and >= 4 (sin and cos halves)");
}

void validate_cross_entropy(const Checker & check, const TensorView & logits, const TensorView & targets,
                            const TensorView & weights, const TensorView & lse, int64_t vocab_start,
                            int64_t vocab_total) {
  check.dtype("logits", logits, {DType::kF32, DType::kBF16});
  check.ndim("logits", logits, 2, 2);
  check.dense_rows("logits", logits);
  const int64_t rows = logits.dim(0);
  check.dtype("targets", targets, {DType::kI32});
  check.dense("targets", targets);
  check.dims("targets", targets, {rows}, "one target per row of logits " + describe(logits));
  check.dtype("weights", weights, {DType::kF32});
  check.dense("weights", weights);
  check.dims("weights", weights, {rows}, "one loss weight per row of logits " + describe(logits));
  check.row_stats("lse", lse, logits);
  const int64_t total = vocab_total == 0 ? logits.dim(1) : vocab_total;
  KOSMOS_CHECK(vocab_start >= 0 && vocab_start + logits.dim(1) <= total, check.op, ": the vocab slice [",
               vocab_start, ", ", vocab_start + logits.dim(1), ") of logits ", describe(logits),
               " does not fit in vocab_total = ", total);
}

void validate_op(const CrossEntropyForward & op) {
  const Checker check{"cross_entropy_forward"};
  validate_cross_entropy(check, op.logits, op.targets, op.weights, op.lse, op.vocab_start, op.vocab_total);
  check.dtype("loss", op.loss, {DType::kF32});
  check.dims("loss", op.loss, {1}, "a single summed loss");
}

void validate_op(const CrossEntropyBackward & op) {
  const Checker check{"cross_entropy_backward"};
  validate_cross_entropy(check, op.logits, op.targets, op.weights, op.lse, op.vocab_start, op.vocab_total);
  check.dtype("dlogits", op.dlogits, {DType::kF32, DType::kBF16, DType::kF16});
  check.dense_rows("dlogits", op.dlogits);
  check.same_shape("dlogits", op.dlogits, "logits", op.logits);
  const bool in_place = op.dlogits.data == op.logits.data && op.dlogits.dtype == op.logits.dtype &&
                        op.dlogits.stride(0) == op.logits.stride(0);
  KOSMOS_CHECK(in_place || !views_overlap(op.dlogits, op.logits), "cross_entropy_backward: dlogits ",
               describe(op.dlogits), " overlaps logits ", describe(op.logits),
               "; give separate buffers, or the same one in the same dtype and row stride (in place)");
}

void validate_op(const DropoutForward & op) {
  const Checker check{"dropout_forward"};
  if (op.residual.present()) {
    validate_elementwise(check, {{"out", op.out}, {"residual", op.residual}}, {DType::kF32});
    validate_elementwise(check, {{"out", op.out}, {"in", op.in}}, {DType::kF32, DType::kBF16});
    KOSMOS_CHECK(op.in.dtype == op.out.dtype || !views_overlap(op.in, op.out), "dropout_forward: in ",
                 describe(op.in), " overlaps out ", describe(op.out), "; in place works only in one dtype");
  } else
    validate_elementwise(check, {{"in", op.in}, {"out", op.out}}, {DType::kF32});
  check.scalar_range("p", op.params.p, 0.0, 0.999, "the probability of dropping an element");
}
void validate_op(const DropoutBackward & op) {
  const Checker check{"dropout_backward"};
  validate_elementwise(check, {{"dout", op.dout}}, {DType::kF32});
  validate_elementwise(check, {{"dout", op.dout}, {"din", op.din}}, {DType::kF32, DType::kBF16});
  KOSMOS_CHECK(op.din.dtype == op.dout.dtype || !views_overlap(op.din, op.dout), "dropout_backward: din ",
               describe(op.din), " overlaps dout ", describe(op.dout), "; in place works only in one dtype");
  check.scalar_range("p", op.params.p, 0.0, 0.999, "the probability of dropping an element");
  if (!op.din_column_sums.present()) return;
  const int64_t cols = op.din.ndim > 0 ? op.din.dim(-1) : 1;
  check.dtype("din_column_sums", op.din_column_sums, {DType::kF32});
  KOSMOS_CHECK(op.din.ndim > 0 && op.din_column_sums.ndim == 1 && op.din_column_sums.dim(0) == cols,
               "dropout_backward: din_column_sums ", describe(op.din_column_sums), " for din ", describe(op.din),
               "; expected [", cols, "] (a sum per column of din's last dim)");
  check.dense("din_column_sums", op.din_column_sums);
  for (const auto & [name, view] : {std::pair<const char *, TensorView>{"din", op.din}, {"dout", op.dout}})
    KOSMOS_CHECK(!views_overlap(op.din_column_sums, view), "dropout_backward: din_column_sums ",
                 describe(op.din_column_sums), " overlaps ", name, " ", describe(view), "; expected a [", cols,
                 "] f32 vector apart from din and dout");
}

void validate_op(const AdamWStep & op) {
  const Checker check{"adamw_step"};
  validate_elementwise(check, {{"param", op.param}, {"m", op.m}, {"v", op.v}, {"grad", op.grad}}, {DType::kF32});
  check.scalar_range("beta1", op.beta1, 0.0, 0.999999, "the first-moment decay");
  check.scalar_range("beta2", op.beta2, 0.0, 0.999999999, "the second-moment decay");
  KOSMOS_CHECK(op.eps > 0.0f, "adamw_step: eps = ", op.eps, " must be > 0 (1e-8, or 1e-6 as KOSMOS-1)");
  KOSMOS_CHECK(op.lr >= 0.0f, "adamw_step: lr = ", op.lr, " must be >= 0");
  KOSMOS_CHECK(op.weight_decay >= 0.0f, "adamw_step: weight_decay = ", op.weight_decay, " must be >= 0");
  KOSMOS_CHECK(op.step >= 1, "adamw_step: step = ", op.step, " must be >= 1 (bias correction counts from 1)");
  if (!op.compute_param.present()) return;
  validate_elementwise(check, {{"param", op.param}, {"compute_param", op.compute_param}},
                       {DType::kF32, DType::kBF16, DType::kF16});
  KOSMOS_CHECK(op.compute_param.dtype != DType::kF32, "adamw_step: compute_param ", describe(op.compute_param),
               " is f32; the compute copy is bf16 or f16 (in f32 the matmuls read param itself: leave it absent)");
}

void validate_op(const SquaredNorm & op) {
  const Checker check{"squared_norm"};
  check.dtype("in", op.in, {DType::kF32});
  check.dense("in", op.in);
  check.dtype("out", op.out, {DType::kF32});
  check.dims("out", op.out, {1}, "a single accumulated sum of squares");
}

void validate_l2_normalize(const Checker & check, std::initializer_list<std::pair<const char *, TensorView>> data,
                           const TensorView & norm, float eps) {
  validate_elementwise(check, data, {DType::kF32});
  check.ndim(data.begin()->first, data.begin()->second, 1, kMaxDims);
  check.row_stats("norm", norm, data.begin()->second);
  KOSMOS_CHECK(eps > 0.0f, check.op, ": eps = ", eps, " must be > 0 (1e-12)");
}
void validate_op(const L2NormalizeForward & op) {
  validate_l2_normalize(Checker{"l2_normalize_forward"}, {{"in", op.in}, {"out", op.out}}, op.norm, op.eps);
}
void validate_op(const L2NormalizeBackward & op) {
  validate_l2_normalize(Checker{"l2_normalize_backward"}, {{"out", op.out}, {"dout", op.dout}, {"din", op.din}},
                        op.norm, op.eps);
}

}  // namespace

void validate(const OpDesc & op) {
  std::visit([](const auto & concrete) { validate_op(concrete); }, op);
}

}  // namespace kosmos
