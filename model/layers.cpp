// layers.cpp: Linear, LayerNorm and the pre-LN transformer block (CLIP encoder layer, Magneto decoder layer).
#include "model/layers.h"

#include <cmath>

namespace kosmos::model {
namespace {

// Columns [first, first + width) of a [rows, cols] view.
TensorView columns(const TensorView & rows, int64_t first, int64_t width) { return slice(rows, 1, first, width); }

void dropout_forward(Runtime & rt, TensorView x, const DropoutSite & site) {
  if (site.p > 0.0f) rt.run(DropoutForward{x, x, {site.p, site.seed, site.offset}});
}

}  // namespace

void Linear::forward(Runtime & rt, TensorView y, TensorView x) const {
  rt.run(Matmul{y, x, weight, bias, false, true});
}

void Linear::backward(Runtime & rt, TensorView dx, TensorView dy, TensorView x, bool accumulate_dx) const {
  const TensorView dw = trainable ? dweight : TensorView{}, db = trainable && bias.present() ? dbias : TensorView{};
  if (rt.deferred_weight_gradients == nullptr || !trainable) {
    matmul_backward(rt.device, MatmulBackward{dx, dw, db, dy, x, weight, false, true, 1.0f, accumulate_dx}, rt.stream);
    return;
  }
  // Input gradient now; the weight and bias gradients when the W pass asks for them.
  matmul_backward(rt.device, MatmulBackward{dx, TensorView{}, TensorView{}, dy, x, weight, false, true, 1.0f, accumulate_dx},
                  rt.stream);
  Device & device = rt.device;
  Stream & stream = rt.stream;
  const TensorView w = weight;
  rt.deferred_weight_gradients->push_back([&device, &stream, dw, db, dy, x, w] {
    matmul_backward(device, MatmulBackward{TensorView{}, dw, db, dy, x, w, false, true}, stream);
  });
}

Linear make_linear(const ModelState & state, const std::string & prefix, bool bias) {
  const ParameterSpec & weight = state.table().find(prefix + "weight");
  Linear linear;
  linear.weight = state.value(weight);
  linear.dweight = state.grad(weight);
  linear.trainable = weight.trainable;
  if (bias) {
    linear.bias = state.value(prefix + "bias");
    linear.dbias = state.grad(prefix + "bias");
  }
  return linear;
}

LayerNorm::Saved LayerNorm::forward(Runtime & rt, TensorView y, TensorView x) const {
  Saved saved{rt.take({x.rows()}), rt.take({x.rows()})};
  rt.run(LayerNormForward{y, saved.mean, saved.rstd, x, weight, bias, eps});
  return saved;
}

void LayerNorm::backward(Runtime & rt, TensorView dx, TensorView dy, TensorView x, const Saved & saved) const {
  // A frozen LayerNorm still passes the gradient through; its parameter gradients go to scratch.
  const TensorView dw = trainable ? dweight : rt.take({weight.dim(0)});
  const TensorView db = trainable ? dbias : rt.take({weight.dim(0)});
  rt.run(LayerNormBackward{dx, dw, db, dy, x, weight, saved.mean, saved.rstd, eps});
}

LayerNorm make_layernorm(const ModelState & state, const std::string & prefix, double eps) {
  const ParameterSpec & weight = state.table().find(prefix + "weight");
  return LayerNorm{state.value(weight), state.value(prefix + "bias"), state.grad(weight), state.grad(prefix + "bias"),
                   static_cast<float>(eps), weight.trainable};
}

BlockWeights make_clip_block(const ModelState & state, const std::string & prefix, double eps) {
  return BlockWeights{make_layernorm(state, prefix + "layer_norm1.", eps),
                      make_layernorm(state, prefix + "layer_norm2.", eps),
                      std::nullopt,
                      std::nullopt,
                      make_linear(state, prefix + "self_attn.q_proj.", true),
                      make_linear(state, prefix + "self_attn.k_proj.", true),
                      make_linear(state, prefix + "self_attn.v_proj.", true),
                      make_linear(state, prefix + "self_attn.out_proj.", true),
                      make_linear(state, prefix + "mlp.fc1.", true),
                      make_linear(state, prefix + "mlp.fc2.", true)};
}

BlockWeights make_magneto_block(const ModelState & state, const std::string & prefix, double eps) {
  return BlockWeights{make_layernorm(state, prefix + "self_attn_layer_norm.", eps),
                      make_layernorm(state, prefix + "final_layer_norm.", eps),
                      make_layernorm(state, prefix + "self_attn.inner_attn_ln.", eps),
                      make_layernorm(state, prefix + "ffn.ffn_layernorm.", eps),
                      make_linear(state, prefix + "self_attn.q_proj.", true),
                      make_linear(state, prefix + "self_attn.k_proj.", true),
                      make_linear(state, prefix + "self_attn.v_proj.", true),
                      make_linear(state, prefix + "self_attn.out_proj.", true),
                      make_linear(state, prefix + "ffn.fc1.", true),
                      make_linear(state, prefix + "ffn.fc2.", true)};
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

AttentionParams attention_params(const BlockOptions & o, int64_t head_dim) {
  AttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  params.causal = o.causal;
  params.dropout_p = o.attention_dropout.p;
  params.seed = o.attention_dropout.seed;
  params.offset = o.attention_dropout.offset;
  return params;
}

}  // namespace

void block_forward(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView out, TensorView x,
                   BlockSaved * saved) {
  const int64_t rows = x.dim(0), width = w.q.in(), hidden_width = w.fc1.out();
  BlockSaved s;
  s.x = x;
  s.h_attention = rt.take({rows, width});
  s.ln_attention = w.ln_attention.forward(rt, s.h_attention, x);
  s.qkv = rt.take({rows, 3 * width});  // q | k | v side by side; q and k after xPos
  const TensorView q = columns(s.qkv, 0, width), k = columns(s.qkv, width, width), v = columns(s.qkv, 2 * width, width);
  w.q.forward(rt, q, s.h_attention);
  w.k.forward(rt, k, s.h_attention);
  w.v.forward(rt, v, s.h_attention);
  const TensorView q_heads = heads_view(q, o.batch, o.length, o.heads), k_heads = heads_view(k, o.batch, o.length, o.heads);
  if (o.xpos) {
    rt.run(XPosForward{q_heads, q_heads, {0, false, o.xpos_scale_base}});
    rt.run(XPosForward{k_heads, k_heads, {0, true, o.xpos_scale_base}});
  }
  s.attention = rt.take({rows, width});
  s.lse = rt.take({o.batch, o.heads, o.length});
  rt.run(AttentionForward{heads_view(s.attention, o.batch, o.length, o.heads), s.lse, q_heads, k_heads,
                          heads_view(v, o.batch, o.length, o.heads), attention_params(o, width / o.heads)});
  s.attention_normed = s.attention;
  if (w.ln_inner_attention) {
    s.attention_normed = rt.take({rows, width});
    s.ln_inner_attention = w.ln_inner_attention->forward(rt, s.attention_normed, s.attention);
  }
  const TensorView projected = rt.take({rows, width});
  w.out.forward(rt, projected, s.attention_normed);
  dropout_forward(rt, projected, o.output_dropout);
  s.x_mid = rt.take({rows, width});
  rt.run(Add{s.x_mid, x, projected});

  s.h_ffn = rt.take({rows, width});
  s.ln_ffn = w.ln_ffn.forward(rt, s.h_ffn, s.x_mid);
  s.hidden = rt.take({rows, hidden_width});
  w.fc1.forward(rt, s.hidden, s.h_ffn);
  s.activated = rt.take({rows, hidden_width});
  rt.run(ActivationForward{s.activated, s.hidden, o.activation});
  s.activated_normed = s.activated;
  if (w.ln_inner_ffn) {
    s.activated_normed = rt.take({rows, hidden_width});
    s.ln_inner_ffn = w.ln_inner_ffn->forward(rt, s.activated_normed, s.activated);
  }
  const TensorView ffn_out = rt.take({rows, width});
  w.fc2.forward(rt, ffn_out, s.activated_normed);
  dropout_forward(rt, ffn_out, {o.output_dropout.p, o.ffn_dropout_seed, o.output_dropout.offset});
  rt.run(Add{out, s.x_mid, ffn_out});
  if (saved) *saved = s;
}

void block_backward(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView dx, TensorView dout,
                    const BlockSaved & s) {
  const int64_t rows = dout.dim(0), width = w.q.in(), hidden_width = w.fc1.out();
  // out = x_mid + dropout(fc2(LN_inner_ffn(act(fc1(LN_ffn(x_mid))))))
  TensorView d_ffn_out = dout;
  if (o.output_dropout.p > 0.0f) {
    d_ffn_out = rt.take({rows, width});
    rt.run(DropoutBackward{d_ffn_out, dout, {o.output_dropout.p, o.ffn_dropout_seed, o.output_dropout.offset}});
  }
  const TensorView d_activated_normed = rt.take({rows, hidden_width});
  w.fc2.backward(rt, d_activated_normed, d_ffn_out, s.activated_normed, false);
  TensorView d_activated = d_activated_normed;
  if (w.ln_inner_ffn) {
    d_activated = rt.take({rows, hidden_width});
    w.ln_inner_ffn->backward(rt, d_activated, d_activated_normed, s.activated, s.ln_inner_ffn);
  }
  const TensorView d_hidden = rt.take({rows, hidden_width});
  rt.run(ActivationBackward{d_hidden, d_activated, s.hidden, o.activation});
  const TensorView d_h_ffn = rt.take({rows, width});
  w.fc1.backward(rt, d_h_ffn, d_hidden, s.h_ffn, false);
  const TensorView d_x_mid = rt.take({rows, width});
  w.ln_ffn.backward(rt, d_x_mid, d_h_ffn, s.x_mid, s.ln_ffn);
  rt.run(Add{d_x_mid, d_x_mid, dout});  // the residual path

  // x_mid = x + dropout(out_proj(LN_inner_attn(attention(xpos(q), xpos(k), v))))
  TensorView d_projected = d_x_mid;
  if (o.output_dropout.p > 0.0f) {
    d_projected = rt.take({rows, width});
    rt.run(DropoutBackward{d_projected, d_x_mid, {o.output_dropout.p, o.output_dropout.seed, o.output_dropout.offset}});
  }
  const TensorView d_attention_normed = rt.take({rows, width});
  w.out.backward(rt, d_attention_normed, d_projected, s.attention_normed, false);
  TensorView d_attention = d_attention_normed;
  if (w.ln_inner_attention) {
    d_attention = rt.take({rows, width});
    w.ln_inner_attention->backward(rt, d_attention, d_attention_normed, s.attention, s.ln_inner_attention);
  }
  const TensorView dqkv = rt.take({rows, 3 * width});
  const TensorView dq = columns(dqkv, 0, width), dk = columns(dqkv, width, width), dv = columns(dqkv, 2 * width, width);
  auto heads = [&](TensorView view) { return heads_view(view, o.batch, o.length, o.heads); };
  const TensorView q = columns(s.qkv, 0, width), k = columns(s.qkv, width, width), v = columns(s.qkv, 2 * width, width);
  rt.run(AttentionBackward{heads(dq), heads(dk), heads(dv), heads(d_attention), heads(q), heads(k), heads(v),
                           heads(s.attention), s.lse, attention_params(o, width / o.heads)});
  if (o.xpos) {
    rt.run(XPosBackward{heads(dq), heads(dq), {0, false, o.xpos_scale_base}});
    rt.run(XPosBackward{heads(dk), heads(dk), {0, true, o.xpos_scale_base}});
  }
  const TensorView d_h_attention = rt.take({rows, width});
  w.q.backward(rt, d_h_attention, dq, s.h_attention, false);
  w.k.backward(rt, d_h_attention, dk, s.h_attention, true);
  w.v.backward(rt, d_h_attention, dv, s.h_attention, true);
  w.ln_attention.backward(rt, dx, d_h_attention, s.x, s.ln_attention);
  rt.run(Add{dx, dx, d_x_mid});
}

}  // namespace kosmos::model
