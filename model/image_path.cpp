// image_path.cpp: the CLIP tower and the connectors (resampler + image_proj, or XConnector), forward and backward.
#include "model/image_path.h"

#include <cmath>

#include "backends/error.h"

namespace kosmos::model {
namespace {

// A [rows, width] view as [images, per_image, width], and a window of it along the middle axis.
TensorView per_image(TensorView rows, int64_t images) {
  TensorView view = rows;
  view.ndim = 3;
  view.dims = {images, rows.dim(0) / images, rows.dim(1), 0};
  view.strides = {view.dims[1] * rows.stride(0), rows.stride(0), 1, 0};
  return view;
}
TensorView tokens_window(TensorView rows, int64_t images, int64_t first, int64_t count) {
  return slice(per_image(rows, images), 1, first, count);
}
// A [count, width] parameter repeated for every image: [images, count, width] with batch stride 0.
TensorView repeated(TensorView table, int64_t images) {
  TensorView view = table;
  view.ndim = 3;
  view.dims = {images, table.dim(0), table.dim(1), 0};
  view.strides = {0, table.dim(1), 1, 0};
  return view;
}
// Latent queries attending over a span per image, both connectors' cross-attention: q and out [count*latents, w],
// kv [count*span, 2w] holding k | v side by side, lse [count, heads, latents], all f32.
struct LatentAttention {
  int64_t count, latents, span, heads;
  TensorView queries(TensorView rows) const { return heads_view(rows, count, latents, heads); }
  TensorView keys(TensorView kv) const { return heads_view(slice(kv, 1, 0, kv.dim(1) / 2), count, span, heads); }
  TensorView values(TensorView kv) const {
    return heads_view(slice(kv, 1, kv.dim(1) / 2, kv.dim(1) / 2), count, span, heads);
  }
  void forward(Runtime & rt, TensorView out, TensorView lse, TensorView q, TensorView kv,
               const AttentionParams & params) const {
    rt.run(AttentionForward{queries(out), lse, queries(q), keys(kv), values(kv), params, TensorView{}});
  }
  void backward(Runtime & rt, TensorView dq, TensorView dkv, TensorView dout, TensorView q, TensorView kv,
                TensorView out, TensorView lse, const AttentionParams & params) const {
    rt.run(AttentionBackward{queries(dq), keys(dkv), values(dkv), queries(dout), queries(q), keys(kv), values(kv),
                             queries(out), lse, params, TensorView{}});
  }
};

TensorView flat_rows(TensorView view) {  // [images, n, width] dense -> [images*n, width]
  return make_view(view.data, view.dtype, {view.dim(0) * view.dim(1), view.dim(2)});
}

}  // namespace

ImagePath::ImagePath(const KosmosConfig & config, const ModelState & state) : config_(config), state_(state) {}

void ImagePath::vision_forward(Runtime & rt, TensorView images, VisionSaved & saved, bool keep) {
  const VisionConfig & v = config_.vision;
  const int64_t count = images.dim(0), patches = v.patches(), tokens = v.tokens(), dv = v.hidden_size;
  const int64_t patch_width = v.channels * v.patch_size * v.patch_size;
  // The frozen part keeps nothing but its output: two buffers take turns as its layers' input and output, and the
  // patches and embeddings go once the pre-LayerNorm has read them.
  const TensorView turns[2] = {rt.take({count * tokens, dv}), rt.take({count * tokens, dv})};
  int turn = 0;
  const Arena::Mark embedding = rt.arena.mark();
  const TensorView patch_rows = rt.take({count, patches, patch_width});
  rt.run(Patchify{patch_rows, images, v.patch_size});
  const TensorView embedded = rt.take({count * patches, dv});
  Linear patch_embedding;  // the frozen [dv, C, p, p] convolution as a [dv, C*p*p] matmul
  patch_embedding.weight =
      reshape(state_.compute_value("clip_model.embeddings.patch_embedding.weight"), {dv, patch_width});
  patch_embedding.trainable = false;
  patch_embedding.forward(rt, embedded, flat_rows(patch_rows));
  // [class token; patch embeddings] + positions, then the pre-LayerNorm.
  const TensorView sequence = rt.take({count * tokens, dv});
  const TensorView class_embedding = reshape(state_.value("clip_model.embeddings.class_embedding"), {1, dv});
  rt.run(Copy{tokens_window(sequence, count, 0, 1), repeated(class_embedding, count)});
  rt.run(Copy{tokens_window(sequence, count, 1, patches), per_image(embedded, count)});
  const TensorView with_positions = make_view(sequence.data, DType::kF32, {count, tokens, dv});
  rt.run(Add{with_positions, with_positions, state_.value("clip_model.embeddings.position_embedding.weight")});
  TensorView x = turns[turn];
  make_layernorm(state_, "clip_model.pre_layrnorm.", v.layernorm_eps).forward(rt, x, sequence);
  rt.arena.rewind(embedding);

  BlockOptions options;
  options.batch = count, options.length = tokens, options.heads = v.heads, options.activation = v.activation;
  options.activations = activation_dtype(state_.compute_dtype());
  const int64_t first_trainable = v.layers - v.trainable_layers;
  saved.trainable_layers.clear();
  for (int64_t j = 0; j < v.layers; ++j) {
    const BlockWeights weights = make_clip_block(state_, "clip_model.encoder.layers." + std::to_string(j) + ".",
                                                 v.layernorm_eps);
    if (keep && j >= first_trainable) {  // its input and output stay for the backward
      const TensorView out = rt.take({count * tokens, dv});
      saved.trainable_layers.emplace_back();
      block_forward(rt, weights, options, out, x, &saved.trainable_layers.back());
      x = out;
    } else {  // forward only: the layer's temporaries are released at once, its input at the next layer
      turn = 1 - turn;
      block_forward(rt, weights, options, turns[turn], x, nullptr);
      x = turns[turn];
    }
  }
  saved.encoded = x;
  saved.feature = x;
  if (v.feature == VisionFeature::kPostLayerNormL2) {
    saved.post_ln = rt.take({count * tokens, dv});
    saved.post_ln_stats =
        make_layernorm(state_, "clip_model.post_layernorm.", v.layernorm_eps).forward(rt, saved.post_ln, x);
    saved.feature = rt.take({count * tokens, dv});
    saved.feature_norm = rt.take({count * tokens});
    rt.run(L2NormalizeForward{saved.feature, saved.feature_norm, saved.post_ln, 1e-12f});
  }
}

void ImagePath::vision_backward(Runtime & rt, TensorView d_feature, const VisionSaved & saved) {
  const VisionConfig & v = config_.vision;
  if (v.trainable_layers == 0) return;
  const int64_t rows = d_feature.dim(0), dv = v.hidden_size;
  TensorView d_x = d_feature;
  if (v.feature == VisionFeature::kPostLayerNormL2) {  // through the frozen post LayerNorm and the L2 norm
    const TensorView d_post = rt.take({rows, dv});
    rt.run(L2NormalizeBackward{d_post, d_feature, saved.feature, saved.feature_norm, 1e-12f});
    d_x = rt.take({rows, dv});
    make_layernorm(state_, "clip_model.post_layernorm.", v.layernorm_eps)
        .backward(rt, d_x, d_post, saved.encoded, saved.post_ln_stats);
  }
  BlockOptions options;
  options.batch = images_, options.length = v.tokens(), options.heads = v.heads, options.activation = v.activation;
  options.activations = activation_dtype(state_.compute_dtype());
  const int64_t first_trainable = v.layers - v.trainable_layers;
  for (int64_t j = v.layers - 1; j >= first_trainable; --j) {
    const BlockWeights weights = make_clip_block(state_, "clip_model.encoder.layers." + std::to_string(j) + ".",
                                                 v.layernorm_eps);
    const TensorView d_in = rt.take({rows, dv});
    block_backward(rt, weights, options, d_in, d_x, saved.trainable_layers[static_cast<size_t>(j - first_trainable)]);
    d_x = d_in;  // the frozen layer below takes no gradient: stop at the first trainable one
  }
}

void ImagePath::resampler_forward(Runtime & rt, TensorView out, TensorView feature, ConnectorSaved & s) {
  const ConnectorConfig & c = config_.connector;
  const int64_t count = images_, tokens = config_.vision.tokens(), dv = config_.vision.hidden_size;
  const int64_t latents = c.num_latents, inner = c.heads * c.dim_head, span = tokens + latents;
  const double eps = 1e-5;
  // flamingo-pytorch adds media_pos_emb[0] (one vector per media item) to every token of the image.
  const TensorView media_position = make_view(state_.value("perceive.media_pos_emb").data, DType::kF32, {dv});
  s.media = rt.take({count * tokens, dv});
  rt.run(Add{s.media, feature, media_position});
  TensorView latents_rows = rt.take({count * latents, dv});
  rt.run(Copy{per_image(latents_rows, count), repeated(state_.value("perceive.latents"), count)});
  s.layers.assign(static_cast<size_t>(c.depth), {});
  for (int64_t k = 0; k < c.depth; ++k) {
    const std::string p = "perceive.layers." + std::to_string(k) + ".";
    ConnectorSaved::Layer & l = s.layers[static_cast<size_t>(k)];
    l.latents_in = latents_rows;
    l.x_normed = rt.take({count * tokens, dv});
    l.ln_media = make_layernorm(state_, p + "0.norm_media.", eps).forward(rt, l.x_normed, s.media);
    l.latents_normed = rt.take({count * latents, dv});
    l.ln_latents = make_layernorm(state_, p + "0.norm_latents.", eps).forward(rt, l.latents_normed, latents_rows);
    l.q = rt.take({count * latents, inner});
    make_linear(state_, p + "0.to_q.", false).forward(rt, l.q, l.latents_normed);
    l.kv_in = rt.take({count * span, dv});  // [normed media; normed latents] per image
    rt.run(Copy{tokens_window(l.kv_in, count, 0, tokens), per_image(l.x_normed, count)});
    rt.run(Copy{tokens_window(l.kv_in, count, tokens, latents), per_image(l.latents_normed, count)});
    l.kv = rt.take({count * span, 2 * inner});
    make_linear(state_, p + "0.to_kv.", false).forward(rt, l.kv, l.kv_in);
    l.attention = rt.take({count * latents, inner});
    l.lse = rt.take({count, c.heads, latents});
    AttentionParams params;
    params.scale = 1.0f / std::sqrt(static_cast<float>(c.dim_head));
    LatentAttention{count, latents, span, c.heads}.forward(rt, l.attention, l.lse, l.q, l.kv, params);
    l.latents_mid = rt.take({count * latents, dv});
    make_linear(state_, p + "0.to_out.", false).forward(rt, l.latents_mid, l.attention);
    rt.run(Add{l.latents_mid, l.latents_mid, latents_rows});
    l.ff_in = rt.take({count * latents, dv});
    l.ln_ff = make_layernorm(state_, p + "1.0.", eps).forward(rt, l.ff_in, l.latents_mid);
    l.ff_hidden = rt.take({count * latents, c.ff_mult * dv});
    make_linear(state_, p + "1.1.", false).forward(rt, l.ff_hidden, l.ff_in);
    l.ff_activated = rt.take({count * latents, c.ff_mult * dv});
    rt.run(ActivationForward{l.ff_activated, l.ff_hidden, Activation::kGelu});
    const TensorView next = rt.take({count * latents, dv});
    make_linear(state_, p + "1.3.", false).forward(rt, next, l.ff_activated);
    rt.run(Add{next, next, l.latents_mid});
    latents_rows = next;
  }
  s.latents_out = latents_rows;
  s.normed = rt.take({count * latents, dv});
  s.ln_out = make_layernorm(state_, "perceive.norm.", eps).forward(rt, s.normed, latents_rows);
  make_linear(state_, "image_proj.", false).forward(rt, out, s.normed);
}

TensorView ImagePath::resampler_backward(Runtime & rt, TensorView d_out, const ConnectorSaved & s) {
  const ConnectorConfig & c = config_.connector;
  const int64_t count = images_, tokens = config_.vision.tokens(), dv = config_.vision.hidden_size;
  const int64_t latents = c.num_latents, inner = c.heads * c.dim_head, span = tokens + latents;
  const double eps = 1e-5;
  const TensorView d_normed = rt.take({count * latents, dv});
  make_linear(state_, "image_proj.", false).backward(rt, d_normed, d_out, s.normed, false);
  TensorView d_latents = rt.take({count * latents, dv});
  make_layernorm(state_, "perceive.norm.", eps).backward(rt, d_latents, d_normed, s.latents_out, s.ln_out);
  const TensorView d_media = rt.take({count * tokens, dv});
  rt.run(Fill{d_media, 0.0f});
  for (int64_t k = c.depth - 1; k >= 0; --k) {
    const std::string p = "perceive.layers." + std::to_string(k) + ".";
    const ConnectorSaved::Layer & l = s.layers[static_cast<size_t>(k)];
    // latents_out = latents_mid + fc2(gelu(fc1(LN(latents_mid))))
    const TensorView d_activated = rt.take({count * latents, c.ff_mult * dv});
    make_linear(state_, p + "1.3.", false).backward(rt, d_activated, d_latents, l.ff_activated, false);
    const TensorView d_hidden = rt.take({count * latents, c.ff_mult * dv});
    rt.run(ActivationBackward{d_hidden, d_activated, l.ff_hidden, Activation::kGelu});
    const TensorView d_ff_in = rt.take({count * latents, dv});
    make_linear(state_, p + "1.1.", false).backward(rt, d_ff_in, d_hidden, l.ff_in, false);
    const TensorView d_mid = rt.take({count * latents, dv});
    make_layernorm(state_, p + "1.0.", eps).backward(rt, d_mid, d_ff_in, l.latents_mid, l.ln_ff);
    rt.run(Add{d_mid, d_mid, d_latents});
    // latents_mid = latents_in + to_out(attention(to_q(LN_l), to_kv([LN_m; LN_l])))
    const TensorView d_attention = rt.take({count * latents, inner});
    make_linear(state_, p + "0.to_out.", false).backward(rt, d_attention, d_mid, l.attention, false);
    const TensorView d_q = rt.take({count * latents, inner}), d_kv = rt.take({count * span, 2 * inner});
    AttentionParams params;
    params.scale = 1.0f / std::sqrt(static_cast<float>(c.dim_head));
    LatentAttention{count, latents, span, c.heads}.backward(rt, d_q, d_kv, d_attention, l.q, l.kv, l.attention, l.lse,
                                                            params);
    const TensorView d_kv_in = rt.take({count * span, dv});
    make_linear(state_, p + "0.to_kv.", false).backward(rt, d_kv_in, d_kv, l.kv_in, false);
    const TensorView d_latents_normed = rt.take({count * latents, dv});
    make_linear(state_, p + "0.to_q.", false).backward(rt, d_latents_normed, d_q, l.latents_normed, false);
    const TensorView d_from_kv = rt.take({count * latents, dv});  // the latents' half of [media; latents]
    rt.run(Copy{per_image(d_from_kv, count), tokens_window(d_kv_in, count, tokens, latents)});
    rt.run(Add{d_latents_normed, d_latents_normed, d_from_kv});
    const TensorView d_x_normed = rt.take({count * tokens, dv});
    rt.run(Copy{per_image(d_x_normed, count), tokens_window(d_kv_in, count, 0, tokens)});
    const TensorView d_media_layer = rt.take({count * tokens, dv});
    make_layernorm(state_, p + "0.norm_media.", eps).backward(rt, d_media_layer, d_x_normed, s.media, l.ln_media);
    rt.run(Add{d_media, d_media, d_media_layer});
    d_latents = rt.take({count * latents, dv});
    make_layernorm(state_, p + "0.norm_latents.", eps).backward(rt, d_latents, d_latents_normed, l.latents_in, l.ln_latents);
    rt.run(Add{d_latents, d_latents, d_mid});
  }
  // The latents are shared by every image; media_pos_emb[0] is added to every token.
  const TensorView latents_grad = state_.grad("perceive.latents");
  for (int64_t i = 0; i < count; ++i)
    rt.run(Add{latents_grad, latents_grad, slice(d_latents, 0, i * latents, latents)});
  rt.run(BiasBackward{make_view(state_.grad("perceive.media_pos_emb").data, DType::kF32, {dv}), d_media});
  return d_media;  // the gradient of the vision feature (media = feature + position)
}

void ImagePath::xconnector_forward(Runtime & rt, TensorView out, TensorView feature, const ImagePathKeys & keys,
                                   ConnectorSaved & s) {
  const ConnectorConfig & c = config_.connector;
  const int64_t count = images_, tokens = config_.vision.tokens(), d = config_.decoder.embed_dim;
  const int64_t latents = c.num_latents, span = tokens + latents;
  const std::string p = "image_to_text_projection.";
  s.media = rt.take({count * tokens, d});
  make_linear(state_, p + "dense.", true).forward(rt, s.media, feature);
  s.query_in = rt.take({count * latents, d});
  rt.run(Copy{per_image(s.query_in, count), repeated(state_.value(p + "latent_query"), count)});
  s.layers.assign(1, {});
  ConnectorSaved::Layer & l = s.layers[0];
  l.kv_in = rt.take({count * span, d});  // [dense(features); latent queries]
  rt.run(Copy{tokens_window(l.kv_in, count, 0, tokens), per_image(s.media, count)});
  rt.run(Copy{tokens_window(l.kv_in, count, tokens, latents), per_image(s.query_in, count)});
  l.q = rt.take({count * latents, d});
  make_linear(state_, p + "x_attn.q_proj.", true).forward(rt, l.q, s.query_in);
  l.kv = rt.take({count * span, 2 * d});
  make_linear(state_, p + "x_attn.k_proj.", true).forward(rt, slice(l.kv, 1, 0, d), l.kv_in);
  make_linear(state_, p + "x_attn.v_proj.", true).forward(rt, slice(l.kv, 1, d, d), l.kv_in);
  l.attention = rt.take({count * latents, d});
  l.lse = rt.take({count, c.heads, latents});
  AttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(d / c.heads));
  params.dropout_p = keys.connector_attention.p, params.seed = keys.connector_attention.seed;
  params.first_row = keys.connector_attention.offset;
  LatentAttention{count, latents, span, c.heads}.forward(rt, l.attention, l.lse, l.q, l.kv, params);
  make_linear(state_, p + "x_attn.out_proj.", true).forward(rt, out, l.attention);
}

TensorView ImagePath::xconnector_backward(Runtime & rt, TensorView d_out, const ImagePathKeys & keys,
                                          const ConnectorSaved & s) {
  const ConnectorConfig & c = config_.connector;
  const int64_t count = images_, tokens = config_.vision.tokens(), d = config_.decoder.embed_dim;
  const int64_t latents = c.num_latents, span = tokens + latents, dv = config_.vision.hidden_size;
  const std::string p = "image_to_text_projection.";
  const ConnectorSaved::Layer & l = s.layers[0];
  const TensorView d_attention = rt.take({count * latents, d});
  make_linear(state_, p + "x_attn.out_proj.", true).backward(rt, d_attention, d_out, l.attention, false);
  const TensorView d_q = rt.take({count * latents, d}), d_kv = rt.take({count * span, 2 * d});
  AttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(d / c.heads));
  params.dropout_p = keys.connector_attention.p, params.seed = keys.connector_attention.seed;
  params.first_row = keys.connector_attention.offset;
  LatentAttention{count, latents, span, c.heads}.backward(rt, d_q, d_kv, d_attention, l.q, l.kv, l.attention, l.lse,
                                                          params);
  const TensorView d_kv_in = rt.take({count * span, d});
  make_linear(state_, p + "x_attn.k_proj.", true).backward(rt, d_kv_in, slice(d_kv, 1, 0, d), l.kv_in, false);
  make_linear(state_, p + "x_attn.v_proj.", true).backward(rt, d_kv_in, slice(d_kv, 1, d, d), l.kv_in, true);
  const TensorView d_query = rt.take({count * latents, d});
  make_linear(state_, p + "x_attn.q_proj.", true).backward(rt, d_query, d_q, s.query_in, false);
  const TensorView d_query_kv = rt.take({count * latents, d});
  rt.run(Copy{per_image(d_query_kv, count), tokens_window(d_kv_in, count, tokens, latents)});
  rt.run(Add{d_query, d_query, d_query_kv});
  const TensorView query_grad = state_.grad(p + "latent_query");
  for (int64_t i = 0; i < count; ++i) rt.run(Add{query_grad, query_grad, slice(d_query, 0, i * latents, latents)});
  const TensorView d_media = rt.take({count * tokens, d});
  rt.run(Copy{per_image(d_media, count), tokens_window(d_kv_in, count, 0, tokens)});
  const TensorView d_feature = rt.take({count * tokens, dv});
  make_linear(state_, p + "dense.", true).backward(rt, d_feature, d_media, s.feature, false);
  return d_feature;
}

void ImagePath::forward(Runtime & rt, TensorView image_embeddings, TensorView images, const ImagePathKeys & keys,
                        VisionSaved & vision, ConnectorSaved & connector, bool keep_for_backward) {
  images_ = images.dim(0);
  connector.images = images_;
  vision_forward(rt, images, vision, keep_for_backward && config_.vision.trainable_layers > 0);
  connector.feature = vision.feature;
  if (config_.connector.kind == ConnectorKind::kResampler) resampler_forward(rt, image_embeddings, vision.feature, connector);
  else xconnector_forward(rt, image_embeddings, vision.feature, keys, connector);
}

void ImagePath::backward(Runtime & rt, TensorView d_image_embeddings, const ImagePathKeys & keys,
                         const VisionSaved & vision, const ConnectorSaved & connector) {
  images_ = connector.images;
  const TensorView d_feature = config_.connector.kind == ConnectorKind::kResampler
                                   ? resampler_backward(rt, d_image_embeddings, connector)
                                   : xconnector_backward(rt, d_image_embeddings, keys, connector);
  vision_backward(rt, d_feature, vision);
}

}  // namespace kosmos::model
