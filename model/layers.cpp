// layers.cpp: Linear, LayerNorm and the pre-LN transformer block (CLIP encoder layer, Magneto decoder layer).
#include "model/layers.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/error.h"

namespace kosmos::model {
namespace {

// Columns [first, first + width) of a [rows, cols] view.
TensorView columns(const TensorView & rows, int64_t first, int64_t width) { return slice(rows, 1, first, width); }

// The parts as one dense view stacked on their first axis, when they lie side by side in memory in this order (each
// dense, of one dtype and the same trailing dims); else an absent view.
TensorView side_by_side(const std::vector<TensorView> & parts) {
  const TensorView & first = parts.front();
  int64_t leading = 0;
  for (const TensorView & part : parts) {
    const bool fits = part.present() && part.is_contiguous() && part.dtype == first.dtype &&
                      part.ndim == first.ndim &&
                      std::equal(part.dims.begin() + 1, part.dims.begin() + part.ndim, first.dims.begin() + 1) &&
                      part.data == static_cast<char *>(first.data) + leading * (first.numel() / first.dim(0)) *
                                                                         static_cast<int64_t>(dtype_size(first.dtype));
    if (!fits) return TensorView{};
    leading += part.dim(0);
  }
  TensorView whole = first;
  whole.dims[0] = leading;
  return make_view(whole.data, whole.dtype, whole.ndim, whole.dims.data());
}

// q, k and v as one Linear when all of theirs lie side by side (BlockWeights::qkv).
std::optional<Linear> fused_qkv(const Linear & q, const Linear & k, const Linear & v) {
  if (q.trainable != k.trainable || q.trainable != v.trainable) return std::nullopt;
  Linear qkv;
  qkv.trainable = q.trainable;
  qkv.weight = side_by_side({q.weight, k.weight, v.weight});
  if (!qkv.weight.present()) return std::nullopt;
  if (qkv.trainable) {  // a frozen projection has no gradients to fuse
    qkv.dweight = side_by_side({q.dweight, k.dweight, v.dweight});
    if (!qkv.dweight.present()) return std::nullopt;
  }
  if (q.bias.present() || k.bias.present() || v.bias.present()) {
    qkv.bias = side_by_side({q.bias, k.bias, v.bias});
    if (!qkv.bias.present()) return std::nullopt;
    if (qkv.trainable) {
      qkv.dbias = side_by_side({q.dbias, k.dbias, v.dbias});
      if (!qkv.dbias.present()) return std::nullopt;
    }
  }
  return qkv;
}

}  // namespace

TensorView matmul_operand(Runtime & rt, const TensorView & x, DType dtype) {
  if (x.dtype == dtype) return x;
  const TensorView cast = rt.arena.take(dtype, std::vector<int64_t>(x.dims.begin(), x.dims.begin() + x.ndim));
  rt.run(Cast{cast, x});
  return cast;
}

// A cast operand is needed only by the matmuls that read it: the arena takes it back after them (later work on the
// stream is ordered after theirs), so mixed precision keeps no extra activation memory.
void Linear::forward(Runtime & rt, TensorView y, TensorView x) const {
  const Arena::Mark temporaries = rt.arena.mark();
  rt.run(Matmul{y, matmul_operand(rt, x, weight.dtype), weight, bias, false, true});
  rt.arena.rewind(temporaries);
}

void Linear::backward(Runtime & rt, TensorView dx, TensorView dy, TensorView x, bool accumulate_dx) const {
  const Arena::Mark temporaries = rt.arena.mark();
  const TensorView dy_operand = matmul_operand(rt, dy, weight.dtype);
  input_gradient(rt, dx, dy_operand, accumulate_dx);
  if (!weight_gradients(rt, dy_operand, x)) rt.arena.rewind(temporaries);
}

void Linear::backward_input(Runtime & rt, TensorView dx, TensorView dy, bool accumulate_dx) const {
  const Arena::Mark temporaries = rt.arena.mark();
  input_gradient(rt, dx, matmul_operand(rt, dy, weight.dtype), accumulate_dx);
  rt.arena.rewind(temporaries);
}

void Linear::backward_weight(Runtime & rt, TensorView dy, TensorView x) const {
  const Arena::Mark temporaries = rt.arena.mark();
  if (!weight_gradients(rt, matmul_operand(rt, dy, weight.dtype), x)) rt.arena.rewind(temporaries);
}

void Linear::input_gradient(Runtime & rt, TensorView dx, TensorView dy_operand, bool accumulate_dx) const {
  if (!dx.present()) return;
  matmul_backward(rt.device, MatmulBackward{dx, TensorView{}, TensorView{}, dy_operand, TensorView{}, weight, false,
                                            true, 1.0f, accumulate_dx},
                  rt.stream);
}

bool Linear::weight_gradients(Runtime & rt, TensorView dy_operand, TensorView x) const {
  if (!trainable) return false;
  const TensorView db = bias.present() ? dbias : TensorView{};
  const TensorView x_operand = matmul_operand(rt, x, weight.dtype);
  if (rt.deferred_weight_gradients == nullptr) {
    matmul_backward(rt.device, MatmulBackward{TensorView{}, dweight, db, dy_operand, x_operand, weight, false, true},
                    rt.stream);
    return false;
  }
  // The W pass runs them later; the cast operands stay (the caller does not take them back) until the arena is
  // reset.
  Device & device = rt.device;
  Stream & stream = rt.stream;
  const TensorView dw = dweight, w = weight;
  rt.deferred_weight_gradients->push_back([&device, &stream, dw, db, dy_operand, x_operand, w] {
    matmul_backward(device, MatmulBackward{TensorView{}, dw, db, dy_operand, x_operand, w, false, true}, stream);
  });
  return true;
}

Linear make_linear(const ModelState & state, const std::string & prefix, bool bias) {
  const ParameterSpec & weight = state.table().find(prefix + "weight");
  Linear linear;
  linear.weight = state.compute_value(weight);
  linear.dweight = state.grad(weight);
  linear.trainable = weight.trainable;
  if (bias) {
    linear.bias = state.value(prefix + "bias");
    linear.dbias = state.grad(prefix + "bias");
  }
  return linear;
}

LayerNorm::Saved LayerNorm::forward(Runtime & rt, TensorView y, TensorView x,
                                    std::optional<Activation> activation) const {
  const Saved saved = take_saved(rt, x.rows(), activation);
  forward_into(rt, y, x, saved);
  return saved;
}

LayerNorm::Saved LayerNorm::take_saved(Runtime & rt, int64_t rows, std::optional<Activation> activation) const {
  return Saved{rt.take({rows}), rt.take({rows}), activation};
}

void LayerNorm::forward_into(Runtime & rt, TensorView y, TensorView x, const Saved & saved) const {
  rt.run(LayerNormForward{y, saved.mean, saved.rstd, x, weight, bias, eps, saved.activation});
}

void LayerNorm::forward_joining(Runtime & rt, TensorView y, TensorView x, TensorView added, TensorView residual,
                                const DropoutSite & dropout, const Saved & saved) const {
  KOSMOS_CHECK(!saved.activation, "a LayerNorm that joins its input normalises no activation (internal error)");
  rt.run(LayerNormForward{y, saved.mean, saved.rstd, x, weight, bias, eps, std::nullopt, added, residual,
                          {dropout.p, dropout.seed, dropout.offset}});
}

void LayerNorm::backward(Runtime & rt, TensorView dx, TensorView dy, TensorView x, const Saved & saved,
                         TensorView residual_gradient, TensorView dx_column_sums, TensorView y_again) const {
  // A frozen LayerNorm still passes the gradient through; its parameter gradients go to scratch.
  const TensorView dw = trainable ? dweight : rt.take({weight.dim(0)});
  const TensorView db = trainable ? dbias : rt.take({weight.dim(0)});
  rt.run(LayerNormBackward{dx, dw, db, dy, x, weight, saved.mean, saved.rstd, eps, saved.activation,
                           residual_gradient, dx_column_sums, y_again, y_again.present() ? bias : TensorView{}});
}

LayerNorm make_layernorm(const ModelState & state, const std::string & prefix, double eps) {
  const ParameterSpec & weight = state.table().find(prefix + "weight");
  return LayerNorm{state.value(weight), state.value(prefix + "bias"), state.grad(weight), state.grad(prefix + "bias"),
                   static_cast<float>(eps), weight.trainable};
}

BlockWeights make_clip_block(const ModelState & state, const std::string & prefix, double eps) {
  BlockWeights w{make_layernorm(state, prefix + "layer_norm1.", eps),
                 make_layernorm(state, prefix + "layer_norm2.", eps),
                 std::nullopt,
                 std::nullopt,
                 make_linear(state, prefix + "self_attn.q_proj.", true),
                 make_linear(state, prefix + "self_attn.k_proj.", true),
                 make_linear(state, prefix + "self_attn.v_proj.", true),
                 make_linear(state, prefix + "self_attn.out_proj.", true),
                 make_linear(state, prefix + "mlp.fc1.", true),
                 make_linear(state, prefix + "mlp.fc2.", true)};
  w.qkv = fused_qkv(w.q, w.k, w.v);
  return w;
}

BlockWeights make_magneto_block(const ModelState & state, const std::string & prefix, double eps) {
  BlockWeights w{make_layernorm(state, prefix + "self_attn_layer_norm.", eps),
                 make_layernorm(state, prefix + "final_layer_norm.", eps),
                 make_layernorm(state, prefix + "self_attn.inner_attn_ln.", eps),
                 make_layernorm(state, prefix + "ffn.ffn_layernorm.", eps),
                 make_linear(state, prefix + "self_attn.q_proj.", true),
                 make_linear(state, prefix + "self_attn.k_proj.", true),
                 make_linear(state, prefix + "self_attn.v_proj.", true),
                 make_linear(state, prefix + "self_attn.out_proj.", true),
                 make_linear(state, prefix + "ffn.fc1.", true),
                 make_linear(state, prefix + "ffn.fc2.", true)};
  w.qkv = fused_qkv(w.q, w.k, w.v);
  return w;
}

TensorView heads_view(TensorView rows, int64_t batch, int64_t length, int64_t heads) {
  const int64_t width = rows.dim(1), head_dim = width / heads, row_stride = rows.stride(0);
  TensorView view = rows;
  view.ndim = 4;
  view.dims = {batch, heads, length, head_dim};
  view.strides = {length * row_stride, head_dim, row_stride, 1};
  return view;
}

namespace {

// This rank's `heads` of head_dim each; with tensor parallelism they start at rank * heads among o.heads, which
// keys the dropout mask by global head.
AttentionParams attention_params(const BlockOptions & o, int64_t head_dim, int64_t heads, const parallel::Comm * tp) {
  AttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  params.causal = o.causal;
  params.dropout_p = o.attention_dropout.p;
  params.seed = o.attention_dropout.seed;
  params.first_row = o.attention_dropout.offset;
  params.deterministic = o.deterministic_attention;
  if (tp) params.head_start = tp->rank() * heads, params.heads_total = o.heads;
  return params;
}

// Every tensor-parallel rank's [rows, w] columns, side by side: whole [rows, w * tp]. Its staging buffers are
// given back at the end.
void gather_columns(Runtime & rt, parallel::Comm & tp, TensorView local, TensorView whole) {
  const int64_t rows = local.dim(0), width = local.dim(1), ranks = tp.size();
  const Arena::Mark staging = rt.arena.mark();
  TensorView mine = local;
  if (!local.is_contiguous()) {  // the transfer needs dense rows
    mine = rt.arena.take(local.dtype, {rows, width});
    rt.run(Copy{mine, local});
  }
  const TensorView packed = rt.arena.take(local.dtype, {ranks, rows, width});
  tp.all_gather(make_view(packed.data, local.dtype, {ranks * rows * width}),
                make_view(mine.data, local.dtype, {rows * width}), rt.stream);
  TensorView target = whole;  // [rows, tp * w] seen as [tp, rows, w]
  target.ndim = 3;
  target.dims = {ranks, rows, width, 0};
  target.strides = {width, whole.stride(0), 1, 0};
  rt.run(Copy{target, packed});
  rt.arena.rewind(staging);
}

// This rank's columns of a [rows, w * tp] tensor (a strided view).
TensorView my_columns(TensorView whole, parallel::Comm & tp) {
  const int64_t width = whole.dim(1) / tp.size();
  return slice(whole, 1, tp.rank() * width, width);
}

// Megatron's row-parallel linear (parallel/tensor_parallel.h) through Linear, so that it computes in the weight's
// dtype: y [rows, out] = all-reduce over tp of x_local [rows, in/tp] W_local^T, then the whole bias once.
void row_parallel_forward(Runtime & rt, parallel::Comm & tp, const Linear & shard, TensorView y, TensorView x_local) {
  Linear without_bias = shard;
  without_bias.bias = without_bias.dbias = TensorView{};
  without_bias.forward(rt, y, x_local);
  tp.all_reduce(y, parallel::ReduceOp::kSum, rt.stream);
  if (shard.bias.present()) rt.run(Add{y, y, shard.bias});
}

// Its backward through Linear, so that a zero-bubble schedule can defer the weight gradient: dy is whole on every
// rank; dx_local and dW_local are this rank's, the bias gradient whole.
void row_parallel_backward(Runtime & rt, const Linear & shard, TensorView dx_local, TensorView dy, TensorView x_local) {
  Linear without_bias = shard;
  without_bias.bias = without_bias.dbias = TensorView{};
  without_bias.backward(rt, dx_local, dy, x_local, false);
  if (shard.trainable && shard.bias.present()) rt.run(BiasBackward{shard.dbias, dy});
}

// The end of the attention (out_proj) and of the FFN (fc2) is out [rows, width] = residual +
// dropout(projection(sub_ln(local))), in two parts: sublayer_norm, then sublayer_project. `local` is this rank's
// columns; with `tp` the sub-LN normalises all ranks' columns gathered and the projection is row-parallel. Without a
// sub-LN (CLIP), normed = whole = local. whole and normed have local's dtype. With `activation` the sub-LN
// normalises act(whole) (the FFN's hidden layer through its GELU, in the same pass). Given `stats` (taken before,
// with that activation), the sub-LN's statistics go there.
ProjectionSaved sublayer_norm(Runtime & rt, parallel::Comm * tp, const std::optional<LayerNorm> & sub_ln,
                              TensorView local, std::optional<Activation> activation = std::nullopt,
                              const LayerNorm::Saved * stats = nullptr) {
  KOSMOS_CHECK(sub_ln || !activation, "an activation fused into a sub-LN needs the sub-LN (internal error)");
  const int64_t rows = local.dim(0), ranks = tp ? tp->size() : 1;
  ProjectionSaved saved{local, local, {}};
  if (tp) {
    saved.whole = rt.arena.take(local.dtype, {rows, local.dim(1) * ranks});
    gather_columns(rt, *tp, local, saved.whole);
  }
  saved.normed = saved.whole;
  if (sub_ln) {
    saved.normed = rt.arena.take(local.dtype, {rows, saved.whole.dim(1)});
    KOSMOS_CHECK(!stats || stats->activation == activation, "a sub-LN's statistics taken for another activation "
                 "(internal error)");
    saved.stats = stats ? *stats : sub_ln->take_saved(rt, rows, activation);
    sub_ln->forward_into(rt, saved.normed, saved.whole, saved.stats);
  }
  return saved;
}

// The pre-LN that reads a sub-layer's output next (the FFN's, after the attention), run in the sub-layer's last pass:
// its output and statistics, taken before the sub-layer's temporaries.
struct NextNorm {
  const LayerNorm * ln;
  TensorView y;
  LayerNorm::Saved saved;
};

// The projection's output is a temporary, given back after the residual add (one pass with the dropout, and with
// `next`'s LayerNorm where given), in its input's dtype as PyTorch's autocast leaves a bf16 product's (the add widens
// it: 67 MB less written and read again a projection at the paper step's 16384 x 2048), but f32 under tensor
// parallelism, whose ranks' partial products are summed in it. An absent `out` (a recomputation in the backward,
// which needs what the sub-layer keeps but not its output) skips the projection: every rank alike, so that tensor
// parallelism's all-reduce is skipped on all of them.
void sublayer_project(Runtime & rt, parallel::Comm * tp, const Linear & projection, const DropoutSite & dropout,
                      TensorView out, TensorView residual, const ProjectionSaved & saved,
                      const NextNorm * next = nullptr) {
  KOSMOS_CHECK(out.present() || !next, "a sub-layer's output that is not made has no LayerNorm after it "
               "(internal error)");
  if (!out.present()) return;
  const Arena::Mark temporaries = rt.arena.mark();
  const TensorView y = rt.arena.take(tp ? DType::kF32 : saved.normed.dtype, {out.dim(0), out.dim(1)});
  if (tp)
    row_parallel_forward(rt, *tp, projection, y, my_columns(saved.normed, *tp));
  else
    projection.forward(rt, y, saved.normed);
  if (next)
    next->ln->forward_joining(rt, next->y, out, y, residual, dropout, next->saved);
  else if (dropout.p > 0.0f || y.dtype != out.dtype)  // (p 0: the plain add, widening y)
    rt.run(DropoutForward{out, y, residual, {dropout.p, dropout.seed, dropout.offset}});
  else
    rt.run(Add{out, residual, y});
  rt.arena.rewind(temporaries);
}

// Its backward: d_local [rows, local width] (local's dtype), the gradient at this rank's columns of `local` (before
// the activation, where the sub-LN applied one), from dy [rows, width] f32 (or bf16, the dropout's gradient rounded
// once for the bf16 matmuls). Given d_local_column_sums (without tp, with a sub-LN), the sub-LN's backward also adds
// up d_local's columns into it. Where `saved` holds no normed (the forward gave it back: remakes_ffn_end), the
// projection's input gradient comes first, then the sub-LN's backward, which makes normed again as it goes, then the
// projection's weight gradient from it.
void projection_backward(Runtime & rt, parallel::Comm * tp, const std::optional<LayerNorm> & sub_ln,
                         const Linear & projection, TensorView d_local, TensorView dy, const ProjectionSaved & saved,
                         TensorView d_local_column_sums = TensorView{}) {
  KOSMOS_CHECK(!d_local_column_sums.present() || (!tp && sub_ln), "the sums of a projection's input gradient come "
               "from its sub-LN's backward without tensor parallelism (internal error)");
  const int64_t rows = dy.dim(0);
  const DType dtype = d_local.dtype;
  const TensorView d_normed = !tp && !sub_ln ? d_local : rt.arena.take(dtype, {rows, saved.whole.dim(1)});
  if (!saved.normed.present()) {
    KOSMOS_CHECK(sub_ln && !tp, "only a sub-LN without tensor parallelism makes its output again in its backward "
                 "(internal error)");
    // dy as the matmuls read it, cast once for both halves (a view of dy itself unless the weights are fp16).
    const TensorView dy_operand = matmul_operand(rt, dy, projection.weight.dtype);
    projection.backward_input(rt, d_normed, dy_operand, false);
    const TensorView normed = rt.arena.take(saved.whole.dtype, {rows, saved.whole.dim(1)});
    sub_ln->backward(rt, d_local, d_normed, saved.whole, saved.stats, TensorView{}, d_local_column_sums, normed);
    projection.backward_weight(rt, dy_operand, normed);
    return;
  }
  if (tp) {  // each rank's columns of the gradient from its shard, then gathered for the sub-LN
    const TensorView d_mine = rt.arena.take(dtype, {rows, d_local.dim(1)});
    row_parallel_backward(rt, projection, d_mine, dy, my_columns(saved.normed, *tp));
    gather_columns(rt, *tp, d_mine, d_normed);
  } else {
    projection.backward(rt, d_normed, dy, saved.normed, false);
  }
  if (!sub_ln) return;
  const TensorView d_whole = tp ? rt.arena.take(dtype, {rows, saved.whole.dim(1)}) : d_local;
  sub_ln->backward(rt, d_whole, d_normed, saved.whole, saved.stats, TensorView{}, d_local_column_sums);
  if (tp) rt.run(Copy{d_local, my_columns(d_whole, *tp)});
}

}  // namespace

namespace {

// q | k | v [rows, 3 w] as the attention reads them: themselves (f32 with f32 weights, or bf16 activations), or with
// fp16 weights a bf16 copy in the arena, which a GPU multiplies on tensor cores (bf16, not f16: the attention's
// operands need its range).
DType attention_operand_dtype(const BlockWeights & w) {
  return w.q.weight.dtype == DType::kF32 ? DType::kF32 : DType::kBF16;
}
TensorView attention_operands(Runtime & rt, const BlockWeights & w, const TensorView & qkv) {
  return matmul_operand(rt, qkv, attention_operand_dtype(w));
}

// A [rows, cols] activation inside a sub-layer, in the block's activation dtype.
TensorView take_activation(Runtime & rt, const BlockOptions & o, int64_t rows, int64_t cols) {
  return rt.arena.take(o.activations, {rows, cols});
}

// The gradient at a pre-LN's output (the first projection's input gradient, which the LayerNorm's backward reads):
// in the activation dtype, as PyTorch's autocast leaves a bf16 product's input gradient (halving its write and read,
// 134 MB each at the paper step's 16384 x 2048 rows, twice a layer); f32 under tensor parallelism, whose ranks'
// partial gradients are summed in it.
TensorView take_layernorm_output_gradient(Runtime & rt, const BlockOptions & o, parallel::Comm * tp, int64_t rows,
                                          int64_t cols) {
  return tp ? rt.take({rows, cols}) : take_activation(rt, o, rows, cols);
}

// The attention sub-layer up to the attention core: LayerNorm, then this rank's q | k | v side by side.
void attention_inputs(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView x, BlockSaved & s) {
  const int64_t rows = x.dim(0), width = w.q.out(), model_width = w.q.in();
  s.x = x;
  s.h_attention = take_activation(rt, o, rows, model_width);
  s.ln_attention = w.ln_attention.forward(rt, s.h_attention, x);
  s.qkv = take_activation(rt, o, rows, 3 * width);  // q | k | v side by side (this rank's heads); q, k after xPos
  const Arena::Mark temporaries = rt.arena.mark();
  const TensorView h = matmul_operand(rt, s.h_attention, w.q.weight.dtype);  // cast once for all three
  if (w.qkv) {
    w.qkv->forward(rt, s.qkv, h);
  } else {
    w.q.forward(rt, columns(s.qkv, 0, width), h);
    w.k.forward(rt, columns(s.qkv, width, width), h);
    w.v.forward(rt, columns(s.qkv, 2 * width, width), h);
  }
  rt.arena.rewind(temporaries);
}

// The attention sub-layer after the attention core (s.attention): sub-LN and out_proj, dropout, and the residual
// into x_mid [rows, width], then (where x_mid is made) the FFN's pre-LN in the same pass, into `ffn_norm`.
void attention_finish(Runtime & rt, const BlockWeights & w, const BlockOptions & o, parallel::Comm * tp,
                      TensorView x_mid, BlockSaved & s, const NextNorm * ffn_norm) {
  s.attention_end = sublayer_norm(rt, tp, w.ln_inner_attention, s.attention);
  sublayer_project(rt, tp, w.out, o.output_dropout, x_mid, s.x, s.attention_end, x_mid.present() ? ffn_norm : nullptr);
  s.x_mid = x_mid;
}

// The FFN's input LN_ffn(x_mid), which the attention's last pass makes (attention_finish): its output and statistics
// into s, taken before the attention's temporaries.
NextNorm ffn_input(Runtime & rt, const BlockWeights & w, const BlockOptions & o, int64_t rows, BlockSaved & s) {
  s.h_ffn = take_activation(rt, o, rows, w.q.in());
  s.ln_ffn = w.ln_ffn.take_saved(rt, rows);
  return NextNorm{&w.ln_ffn, s.h_ffn, s.ln_ffn};
}

// The whole attention sub-layer of a training or prompt forward: x_mid = x + dropout(out_proj(sub_LN(attention(
// xPos(q), xPos(k), v)))) with q, k, v from LN(x), and the FFN's LN(x_mid) where ffn_norm is given.
void attention_forward(Runtime & rt, const BlockWeights & w, const BlockOptions & o, parallel::Comm * tp,
                       TensorView x_mid, TensorView x, BlockSaved & s, const NextNorm * ffn_norm = nullptr) {
  const int64_t rows = x.dim(0), width = w.q.out();
  const int64_t heads = tp ? o.heads / tp->size() : o.heads;  // this rank's heads
  attention_inputs(rt, w, o, x, s);
  const TensorView q = columns(s.qkv, 0, width), k = columns(s.qkv, width, width);
  const TensorView q_heads = heads_view(q, o.batch, o.length, heads), k_heads = heads_view(k, o.batch, o.length, heads);
  if (o.xpos) {
    rt.run(XPosForward{q_heads, q_heads, {0, false, o.xpos_scale_base}});
    rt.run(XPosForward{k_heads, k_heads, {0, true, o.xpos_scale_base}});
  }
  s.attention = take_activation(rt, o, rows, width);
  s.lse = rt.take({o.batch, heads, o.length});
  const AttentionParams params = attention_params(o, width / heads, heads, tp);
  auto as_heads = [&](const TensorView & q_k_v, int part) {
    return heads_view(columns(q_k_v, part * width, width), o.batch, o.length, heads);
  };
  const auto op_on = [&](const TensorView & q_k_v) {
    return AttentionForward{heads_view(s.attention, o.batch, o.length, heads), s.lse, as_heads(q_k_v, 0),
                            as_heads(q_k_v, 1), as_heads(q_k_v, 2), params, TensorView{}};
  };
  // The record of the dropout masks that the device keeps for the backward, sized by the operands' shapes and dtype
  // (it reads no data for that) and taken before the mark that gives a cast copy of them back.
  TensorView operands_as_cast = s.qkv;
  operands_as_cast.dtype = attention_operand_dtype(w);
  if (const int64_t words = rt.device.attention_keep_words(op_on(operands_as_cast)); words > 0)
    s.keep = rt.arena.take(DType::kI32, {words});
  const Arena::Mark operands = rt.arena.mark();
  AttentionForward attention = op_on(attention_operands(rt, w, s.qkv));
  attention.keep = s.keep;
  rt.run(attention);
  rt.arena.rewind(operands);
  attention_finish(rt, w, o, tp, x_mid, s, ffn_norm);
}

// The FFN's tail from its hidden layer s.hidden: the activation and the sub-LN (no matmul), into s.ffn_end; with a
// sub-LN in one pass over the hidden layer (its statistics into `stats` where given), else the activation into
// s.activated first.
void ffn_tail(Runtime & rt, const BlockWeights & w, const BlockOptions & o, parallel::Comm * tp, BlockSaved & s,
              const LayerNorm::Saved * stats = nullptr) {
  if (w.ln_inner_ffn) {
    s.ffn_end = sublayer_norm(rt, tp, w.ln_inner_ffn, s.hidden, o.activation, stats);
    return;
  }
  s.activated = take_activation(rt, o, s.hidden.dim(0), s.hidden.dim(1));
  rt.run(ActivationForward{s.activated, s.hidden, o.activation});
  s.ffn_end = sublayer_norm(rt, tp, w.ln_inner_ffn, s.activated);
}

// Whether the backward makes the FFN's tail again (ffn_tail) from the kept hidden layer.
bool recomputes_ffn_tail(Recompute recompute) {
  switch (recompute) {
    case Recompute::kNone: return false;
    case Recompute::kFfn:
    case Recompute::kAttention: return true;
    case Recompute::kLayer: return false;  // the whole forward runs again, keeping everything
  }
  return false;
}

// Whether a block that recomputes the FFN's tail has its sub-LN's backward make the sub-LN's output (fc2's input)
// again (LayerNormBackward::out) instead of running the tail's forward again: the forward keeps the sub-LN's
// statistics only, and the GELU and the normalisation run once more inside the backward's pass, which works them out
// anyway. Not with tensor parallelism, whose sub-LN reads the hidden layer gathered from every rank (the tail's
// recomputation gathers it again), nor without a sub-LN (CLIP keeps no statistics to work from).
bool remakes_ffn_end(const BlockOptions & o, const BlockWeights & w, parallel::Comm * tp) {
  return recomputes_ffn_tail(o.recompute) && w.ln_inner_ffn && !tp;
}

// The FFN sub-layer: out = x_mid + dropout(fc2(sub_LN(act(fc1(LN(x_mid)))))), x_mid and LN(x_mid) (s.h_ffn, made
// with x_mid) from s. Without keep_tail the tail's activations (after the activation, the sub-LN's) are given back
// at the end; the backward makes them again (where remakes_ffn_end, from the sub-LN's statistics, which stay).
void ffn_forward(Runtime & rt, const BlockWeights & w, const BlockOptions & o, parallel::Comm * tp, TensorView out,
                 BlockSaved & s, bool keep_tail) {
  KOSMOS_CHECK(s.h_ffn.present(), "the FFN's input LN(x_mid) comes with x_mid (internal error)");
  const int64_t rows = s.x_mid.dim(0), hidden_width = w.fc1.out();
  s.hidden = take_activation(rt, o, rows, hidden_width);
  w.fc1.forward(rt, s.hidden, s.h_ffn);
  const bool keep_stats = !keep_tail && remakes_ffn_end(o, w, tp);
  const LayerNorm::Saved stats = keep_stats ? w.ln_inner_ffn->take_saved(rt, rows, o.activation) : LayerNorm::Saved{};
  const Arena::Mark tail = rt.arena.mark();
  ffn_tail(rt, w, o, tp, s, keep_stats ? &stats : nullptr);
  sublayer_project(rt, tp, w.fc2, {o.output_dropout.p, o.ffn_dropout_seed, o.output_dropout.offset}, out, s.x_mid,
                   s.ffn_end);
  if (keep_tail) return;
  rt.arena.rewind(tail);
  s.activated = TensorView{};
  s.ffn_end = keep_stats ? ProjectionSaved{s.hidden, TensorView{}, stats} : ProjectionSaved{};
}

// The gradient at a sub-layer's last projection's output (out_proj's, fc2's) from dout, the one at the sub-layer's
// output: dout itself without dropout, else the dropout's backward in the activations' dtype (it feeds only the
// projection's matmuls, so a bf16 run rounds it once here instead of in a cast of an f32 copy). That pass also adds
// up the projection's bias gradient (DropoutBackward::din_column_sums), whose bias `projection` then loses, so that
// its backward does not read the gradient once more for it.
TensorView projection_output_gradient(Runtime & rt, const BlockOptions & o, const DropoutSite & dropout,
                                      TensorView dout, Linear & projection) {
  if (dropout.p <= 0.0f) return dout;
  const TensorView d_projected = take_activation(rt, o, dout.dim(0), dout.dim(1));
  const bool sums_bias = projection.trainable && projection.bias.present();
  rt.run(DropoutBackward{d_projected, dout, {dropout.p, dropout.seed, dropout.offset},
                         sums_bias ? projection.dbias : TensorView{}});
  if (sums_bias) projection.bias = projection.dbias = TensorView{};
  return d_projected;
}

parallel::Comm * split_over(const BlockOptions & o, const BlockWeights & w) {
  parallel::Comm * tp = o.tp && o.tp->size() > 1 ? o.tp : nullptr;
  KOSMOS_CHECK(!tp || (w.ln_inner_attention && w.ln_inner_ffn), "tensor parallelism splits only Magneto blocks");
  return tp;
}

}  // namespace

DType activation_dtype(DType compute_dtype) { return compute_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32; }

const char * recompute_name(Recompute recompute) {
  switch (recompute) {
    case Recompute::kNone: return "none";
    case Recompute::kFfn: return "ffn";
    case Recompute::kAttention: return "attention";
    case Recompute::kLayer: return "layer";
  }
  return "?";
}

std::optional<Recompute> parse_recompute(const std::string & name) {
  for (Recompute recompute : {Recompute::kNone, Recompute::kFfn, Recompute::kAttention, Recompute::kLayer})
    if (name == recompute_name(recompute)) return recompute;
  return std::nullopt;
}

// What is kept decides what is taken where: everything taken after a mark that nothing kept needs is taken back
// at once, so that the arena holds only what the backward reads (and the block's output, taken by the caller).
void block_forward(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView out, TensorView x,
                   BlockSaved * saved) {
  parallel::Comm * tp = split_over(o, w);
  const int64_t rows = x.dim(0), model_width = w.q.in();
  BlockSaved s;
  const Arena::Mark layer = rt.arena.mark();
  const TensorView x_mid = rt.take({rows, model_width});
  const NextNorm ffn_norm = ffn_input(rt, w, o, rows, s);
  const Arena::Mark attention = rt.arena.mark();
  attention_forward(rt, w, o, tp, x_mid, x, s, &ffn_norm);
  if (saved == nullptr || o.recompute == Recompute::kLayer) {  // nothing but the input is kept
    ffn_forward(rt, w, o, tp, out, s, true);
    rt.arena.rewind(layer);
    if (saved) *saved = BlockSaved{}, saved->x = x;
    return;
  }
  if (o.recompute == Recompute::kAttention) {  // the FFN's activations and x_mid are kept, the attention's not
    rt.arena.rewind(attention);
    s = BlockSaved{}, s.x = x, s.x_mid = x_mid, s.h_ffn = ffn_norm.y, s.ln_ffn = ffn_norm.saved;
  }
  ffn_forward(rt, w, o, tp, out, s, !recomputes_ffn_tail(o.recompute));
  *saved = s;
}

TensorView LayerCache::keys_view(int64_t length) const { return slice(keys, 2, 0, length); }
TensorView LayerCache::values_view(int64_t length) const { return slice(values, 2, 0, length); }

void block_decode(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView out, TensorView x,
                  LayerCache & cache, int64_t cached) {
  parallel::Comm * tp = split_over(o, w);
  const int64_t rows = x.dim(0), width = w.q.out(), heads = tp ? o.heads / tp->size() : o.heads;
  const int64_t head_dim = width / heads, total = cached + o.length;
  KOSMOS_CHECK(o.activations == DType::kF32, "incremental decoding keeps f32 activations (its cache is f32), got ",
               dtype_name(o.activations), " (internal error)");
  KOSMOS_CHECK(cached == 0 || o.length == 1, "incremental decoding takes the prompt first, then one position per "
               "row at a time (got ", o.length, " after ", cached, ") (internal error)");
  if (cached == 0) {  // the prompt: a cache for it and the positions to come
    KOSMOS_CHECK(cache.capacity >= total, "decode cache of ", cache.capacity, " positions for a prompt of ", total,
                 " (internal error)");
    for (Buffer * buffer : {&cache.key_buffer, &cache.value_buffer})
      *buffer = rt.device.allocate(sizeof(float) * static_cast<size_t>(o.batch * heads * cache.capacity * head_dim),
                                   BufferUse::kActivations);
    cache.keys = make_view(cache.key_buffer.data(), DType::kF32, {o.batch, heads, cache.capacity, head_dim});
    cache.values = make_view(cache.value_buffer.data(), DType::kF32, {o.batch, heads, cache.capacity, head_dim});
  }
  KOSMOS_CHECK(total <= cache.capacity, "decoding past the cache's ", cache.capacity, " positions (internal error: "
               "the capacity counts the prompt and the new tokens)");
  const Arena::Mark layer = rt.arena.mark();  // everything but the output and the cache is taken back at the end
  BlockSaved s;
  attention_inputs(rt, w, o, x, s);
  const TensorView q = columns(s.qkv, 0, width), k = columns(s.qkv, width, width), v = columns(s.qkv, 2 * width, width);
  // The new raw keys and values join the cache; xPos goes on the whole key sequence again (its centre moves with
  // the length) and on the queries at their place, the last `o.length` of `total` (kosmos-spec 3.5, 4.3).
  rt.run(Copy{slice(cache.keys, 2, cached, o.length), heads_view(k, o.batch, o.length, heads)});
  rt.run(Copy{slice(cache.values, 2, cached, o.length), heads_view(v, o.batch, o.length, heads)});
  TensorView keys = cache.keys_view(total);
  const TensorView q_heads = heads_view(q, o.batch, o.length, heads);
  if (o.xpos) {
    const TensorView rotated = rt.take({o.batch, heads, total, head_dim});
    rt.run(XPosForward{rotated, keys, {0, true, o.xpos_scale_base}});
    keys = rotated;
    rt.run(XPosForward{q_heads, q_heads, {cached, false, o.xpos_scale_base}});
  }
  s.attention = take_activation(rt, o, rows, width);
  s.lse = rt.take({o.batch, heads, o.length});
  AttentionParams params = attention_params(o, head_dim, heads, tp);
  params.causal = cached == 0;  // one new position sees every cached one
  rt.run(AttentionForward{heads_view(s.attention, o.batch, o.length, heads), s.lse, q_heads, keys,
                          cache.values_view(total), params, TensorView{}});
  const TensorView x_mid = rt.take({rows, w.q.in()});
  const NextNorm ffn_norm = ffn_input(rt, w, o, rows, s);
  attention_finish(rt, w, o, tp, x_mid, s, &ffn_norm);
  ffn_forward(rt, w, o, tp, out, s, true);
  rt.arena.rewind(layer);
}

void block_backward(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView dx, TensorView dout,
                    const BlockSaved & saved) {
  const int64_t rows = dout.dim(0), width = w.q.out(), hidden_width = w.fc1.out(), model_width = w.q.in();
  parallel::Comm * tp = split_over(o, w);
  const int64_t heads = tp ? o.heads / tp->size() : o.heads;
  const Arena::Mark layer = rt.arena.mark();  // the block's temporaries, recomputed activations included
  // What the forward did not keep, run again from the kept input: the same ops on the same values with the same
  // dropout keys give the same activations.
  BlockSaved s = saved;
  // The block's output and (kAttention) x_mid are not made again: their last projections (fc2, out_proj) are
  // skipped, whose outputs only the residual stream reads.
  if (o.recompute == Recompute::kLayer) {
    BlockOptions keep_all = o;
    keep_all.recompute = Recompute::kNone;
    block_forward(rt, w, keep_all, TensorView{}, saved.x, &s);
  } else if (o.recompute == Recompute::kAttention) {
    attention_forward(rt, w, o, tp, TensorView{}, saved.x, s);
    s.x_mid = saved.x_mid;
  }
  if (recomputes_ffn_tail(o.recompute) && !remakes_ffn_end(o, w, tp)) ffn_tail(rt, w, o, tp, s);
  // out = x_mid + dropout(fc2(LN_inner_ffn(act(fc1(LN_ffn(x_mid))))))
  Linear fc2 = w.fc2;
  const TensorView d_ffn_out =
      projection_output_gradient(rt, o, {o.output_dropout.p, o.ffn_dropout_seed, o.output_dropout.offset}, dout, fc2);
  const TensorView d_hidden = take_activation(rt, o, rows, hidden_width);
  // fc1's bias gradient: the sums of d_hidden's columns, which the sub-LN's backward adds up as it writes them
  // (without tensor parallelism, whose sub-LN sees every rank's columns), or fc1's backward from d_hidden.
  Linear fc1 = w.fc1;
  const bool sums_from_sub_ln = w.ln_inner_ffn && !tp && fc1.trainable && fc1.bias.present();
  if (w.ln_inner_ffn) {  // the sub-LN's backward goes through the activation too (ffn_tail)
    projection_backward(rt, tp, w.ln_inner_ffn, fc2, d_hidden, d_ffn_out, s.ffn_end,
                        sums_from_sub_ln ? fc1.dbias : TensorView{});
    if (sums_from_sub_ln) fc1.bias = fc1.dbias = TensorView{};
  } else {
    const TensorView d_activated = take_activation(rt, o, rows, hidden_width);
    projection_backward(rt, tp, w.ln_inner_ffn, fc2, d_activated, d_ffn_out, s.ffn_end);
    rt.run(ActivationBackward{d_hidden, d_activated, s.hidden, o.activation});
  }
  const TensorView d_h_ffn = take_layernorm_output_gradient(rt, o, tp, rows, model_width);
  fc1.backward(rt, d_h_ffn, d_hidden, s.h_ffn, false);
  if (tp) tp->all_reduce(d_h_ffn, parallel::ReduceOp::kSum, rt.stream);  // column-parallel: sum the input gradient
  const TensorView d_x_mid = rt.take({rows, model_width});
  w.ln_ffn.backward(rt, d_x_mid, d_h_ffn, s.x_mid, s.ln_ffn, dout);  // dout: the residual path's gradient

  // x_mid = x + dropout(out_proj(LN_inner_attn(attention(xpos(q), xpos(k), v))))
  Linear out_proj = w.out;
  const TensorView d_projected = projection_output_gradient(rt, o, o.output_dropout, d_x_mid, out_proj);
  const TensorView d_attention = take_activation(rt, o, rows, width);
  projection_backward(rt, tp, w.ln_inner_attention, out_proj, d_attention, d_projected, s.attention_end);
  const TensorView dqkv = take_activation(rt, o, rows, 3 * width);
  const TensorView dq = columns(dqkv, 0, width), dk = columns(dqkv, width, width), dv = columns(dqkv, 2 * width, width);
  auto as_heads = [&](TensorView view) { return heads_view(view, o.batch, o.length, heads); };
  const Arena::Mark operands = rt.arena.mark();
  const TensorView qkv = attention_operands(rt, w, s.qkv);
  const TensorView q = columns(qkv, 0, width), k = columns(qkv, width, width), v = columns(qkv, 2 * width, width);
  const AttentionParams params = attention_params(o, width / heads, heads, tp);
  rt.run(AttentionBackward{as_heads(dq), as_heads(dk), as_heads(dv), as_heads(d_attention), as_heads(q), as_heads(k),
                           as_heads(v), as_heads(s.attention), s.lse, params, s.keep});
  rt.arena.rewind(operands);
  if (o.xpos) {
    rt.run(XPosBackward{as_heads(dq), as_heads(dq), {0, false, o.xpos_scale_base}});
    rt.run(XPosBackward{as_heads(dk), as_heads(dk), {0, true, o.xpos_scale_base}});
  }
  // One product writes it where q, k and v sit side by side; three add up into it otherwise, in f32.
  const TensorView d_h_attention = w.qkv ? take_layernorm_output_gradient(rt, o, tp, rows, model_width)
                                         : rt.take({rows, model_width});
  const Arena::Mark temporaries = rt.arena.mark();
  const TensorView h = matmul_operand(rt, s.h_attention, w.q.weight.dtype);  // cast once for all three
  if (w.qkv) {
    w.qkv->backward(rt, d_h_attention, dqkv, h, false);
  } else {
    w.q.backward(rt, d_h_attention, dq, h, false);
    w.k.backward(rt, d_h_attention, dk, h, true);
    w.v.backward(rt, d_h_attention, dv, h, true);
  }
  if (rt.deferred_weight_gradients == nullptr) rt.arena.rewind(temporaries);  // a W pass still reads h
  if (tp) tp->all_reduce(d_h_attention, parallel::ReduceOp::kSum, rt.stream);
  w.ln_attention.backward(rt, dx, d_h_attention, s.x, s.ln_attention, d_x_mid);  // and the residual path's
  if (rt.deferred_weight_gradients == nullptr) rt.arena.rewind(layer);  // else a W pass still reads them
}

}  // namespace kosmos::model
