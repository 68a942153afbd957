// kosmos.cpp: the sequence side of KOSMOS (embeddings, image splice, positions, decoder, head, loss) and the
// micro-batch forward/backward that ties it to the image path.
#include "model/kosmos.h"

#include <algorithm>
#include <cmath>

#include "backends/error.h"
#include "backends/splitmix.h"

namespace kosmos::model {
namespace {

enum DropoutSiteId : uint64_t { kEmbedding = 1, kAttention = 2, kAttentionOutput = 3, kFfnOutput = 4, kConnector = 5 };

// A Philox key for one dropout site of one step (splitmix64 of the parts): independent streams per site and step.
uint64_t site_key(uint64_t seed, int64_t step, uint64_t site, int64_t layer) {
  return splitmix64_mix(seed ^ (static_cast<uint64_t>(step) * kSplitmixStep) ^ (site << 56) ^
                        (static_cast<uint64_t>(layer) * 0xD1B54A32D192ED03ull));
}

template <typename T>
TensorView upload(Runtime & rt, const std::vector<T> & host, DType dtype, std::initializer_list<int64_t> dims) {
  const TensorView view = rt.arena.take(dtype, dims);
  TensorView source = view;
  source.data = const_cast<T *>(host.data());
  rt.device.copy(view, source, rt.stream);
  return view;
}

// The logits' dtype where the head multiplies in `matmul_dtype`: bf16 where the head multiplies in bf16 (as
// PyTorch's autocast leaves them; the loss widens them and works in f32), else f32 (an f16 head's too: its range is
// too narrow for the logits).
DType head_logits_dtype(DType matmul_dtype) { return matmul_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32; }

// Logits [rows, vocab] (or their gradient) in `dtype`, in a buffer whose rows are padded as the device's GEMM
// library wants (Device::matmul_row_alignment): each is the C or an operand of a head product, and on a GPU the
// fastest kernels (Hopper's, which load through the TMA unit) need every leading dimension a multiple of 16 bytes,
// which an odd vocabulary (64007 elements) is not. No op reads or writes the padding.
TensorView take_logits(Runtime & rt, DType dtype, int64_t rows, int64_t vocab) {
  const int64_t pitch = KosmosModel::head_row_pitch(vocab, dtype, rt.device.matmul_row_alignment());
  return slice(rt.arena.take(dtype, {rows, pitch}), 1, 0, vocab);
}

// Copies take_logits' f32 or bf16 rows to `host` [rows, vocab] as f32, dense (padded or bf16 rows through a staging
// copy of them whole).
void download_logits(Runtime & rt, const TensorView & logits, float * host) {
  const int64_t rows = logits.dim(0), vocab = logits.dim(1), pitch = rows > 1 ? logits.stride(0) : vocab;
  if (pitch == vocab && logits.dtype == DType::kF32) {
    rt.device.copy(make_view(host, DType::kF32, {rows, vocab}), make_view(logits.data, DType::kF32, {rows, vocab}),
                   rt.stream);
    return;
  }
  std::vector<unsigned char> staged(static_cast<size_t>(rows * pitch) * dtype_size(logits.dtype));
  rt.device.copy(make_view(staged.data(), logits.dtype, {rows, pitch}),
                 make_view(logits.data, logits.dtype, {rows, pitch}), rt.stream);
  const auto * staged_f32 = reinterpret_cast<const float *>(staged.data());
  for (int64_t r = 0; r < rows; ++r) {
    if (logits.dtype == DType::kF32) {
      std::copy_n(staged_f32 + r * pitch, vocab, host + r * vocab);
      continue;
    }
    for (int64_t v = 0; v < vocab; ++v) host[r * vocab + v] = load_as_float(staged.data(), logits.dtype, r * pitch + v);
  }
}

// fairseq / HF positions: padding-aware, counting from padding_idx + 1; pads get padding_idx (a zero row).
// fairseq's position ids: pad + the count of real tokens so far (each row's `preceding` ones first), pad for pads.
std::vector<int32_t> position_ids(const Batch & batch, int64_t pad, const std::vector<int64_t> * preceding = nullptr) {
  std::vector<int32_t> ids(batch.tokens.size());
  for (int64_t b = 0; b < batch.batch; ++b) {
    int64_t count = preceding ? (*preceding)[static_cast<size_t>(b)] : 0;
    for (int64_t t = 0; t < batch.length; ++t) {
      const size_t i = static_cast<size_t>(b * batch.length + t);
      const bool real = batch.tokens[i] != pad;
      count += real ? 1 : 0;
      ids[i] = static_cast<int32_t>(real ? count + pad : pad);
    }
  }
  return ids;
}

// Padding must be on the right: attention masks future keys but not pad keys, so a real token after a pad would
// attend to it (torchscale and HF mask pads as keys; kosmos does not yet).
void check_padding(const Batch & batch, int64_t pad) {
  for (int64_t b = 0; b < batch.batch; ++b) {
    bool padded = false;
    for (int64_t t = 0; t < batch.length; ++t) {
      const bool is_pad = batch.tokens[static_cast<size_t>(b * batch.length + t)] == pad;
      KOSMOS_CHECK(!padded || is_pad, "sequence ", b, " has a real token at position ", t, " after padding (pad id ",
                   pad, "); pad sequences on the right only");
      padded = padded || is_pad;
    }
  }
}

}  // namespace

std::vector<int64_t> find_image_slots(const std::vector<int32_t> & tokens, int64_t batch, int64_t length,
                                      const KosmosConfig & config) {
  std::vector<int64_t> slots;
  const int64_t latents = config.image_slots();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < length; ++t)
      if (tokens[static_cast<size_t>(b * length + t)] == config.tokens.image) {
        KOSMOS_CHECK(t + latents < length, "sequence ", b, ": the <image> token (id ", config.tokens.image,
                     ") at position ", t, " needs ", latents, " image slots after it but the sequence has ",
                     length, " positions; move the image earlier or lengthen the sequence");
        slots.push_back(b * length + t + 1);
        t += latents;  // the slots may hold any placeholder id, even the image token
      }
  return slots;
}

KosmosModel::KosmosModel(const KosmosConfig & config, ModelState & state, parallel::Comm * tensor_parallel)
    : config_(config),
      state_(state),
      image_path_(config, state),
      tensor_parallel_(tensor_parallel && tensor_parallel->size() > 1 ? tensor_parallel : nullptr) {
  const TensorParallelRank & held = state_.table().tensor_parallel();
  const int rank = tensor_parallel ? tensor_parallel->rank() : 0, ranks = tensor_parallel ? tensor_parallel->size() : 1;
  KOSMOS_CHECK(held.rank == rank && held.ranks == ranks, "the model runs as tensor-parallel rank ", rank, " of ", ranks,
               " but its parameter table holds the shards of rank ", held.rank, " of ", held.ranks,
               " (internal error: make the table with the tp group's rank and size)");
  const DecoderConfig & dc = config.decoder;
  for (int64_t layer = 0; layer < dc.layers; ++layer) {  // views of the state's buffers, which never move
    const std::string prefix = "decoder.layers." + std::to_string(layer) + ".";
    const bool stage_runs = state_.table().find(prefix + "self_attn_layer_norm.weight").held;
    decoder_blocks_.push_back(stage_runs ? make_magneto_block(state_, prefix, dc.layernorm_eps) : BlockWeights{});
  }
  // The backward finishes the gradients from the end of the trainable part down: the head and final LayerNorm, the
  // layers last to first, then the embeddings and the image path, whose trainable parameters must all lie below the
  // first layer held here (the frozen ones have no gradient and lie above the trainable part).
  const auto starts_with = [](const std::string & name, const std::string & prefix) { return name.rfind(prefix, 0) == 0; };
  const std::vector<ParameterSpec> & specs = state_.table().specs();
  decoder_layer_offsets_.assign(static_cast<size_t>(dc.layers), state_.table().trainable_end());
  final_norm_offset_ = state_.table().trainable_end();
  for (const ParameterSpec & spec : specs) {
    if (!spec.held) continue;
    for (int64_t layer = 0; layer < dc.layers; ++layer)
      if (starts_with(spec.name, "decoder.layers." + std::to_string(layer) + "."))
        decoder_layer_offsets_[static_cast<size_t>(layer)] =
            std::min(decoder_layer_offsets_[static_cast<size_t>(layer)], spec.offset);
    if (starts_with(spec.name, "decoder.layer_norm.")) final_norm_offset_ = std::min(final_norm_offset_, spec.offset);
  }
  int64_t decoder_start = final_norm_offset_;
  for (const int64_t offset : decoder_layer_offsets_) decoder_start = std::min(decoder_start, offset);
  for (const ParameterSpec & spec : specs) {
    if (!spec.trainable || !spec.held) continue;
    const bool after = starts_with(spec.name, "decoder.layers.") || starts_with(spec.name, "decoder.layer_norm.") ||
                       starts_with(spec.name, "decoder.output_projection.");
    KOSMOS_CHECK((spec.offset >= decoder_start) == after, "parameter table: ", spec.name, " at offset ", spec.offset,
                 " breaks the order the backward finishes gradients in (embeddings and image path, then the decoder "
                 "layers from ", decoder_start, ", the final LayerNorm, the head); keep that order in parameters.cpp");
  }
}

int64_t KosmosModel::vocab_start() const {
  return split() ? tensor_parallel_->rank() * vocab_local() : 0;
}

int64_t KosmosModel::vocab_local() const {
  return config_.decoder.vocab_size / (split() ? tensor_parallel_->size() : 1);
}

int64_t KosmosModel::head_row_pitch(int64_t vocab, DType dtype, size_t alignment) {
  const int64_t elements = std::max<int64_t>(1, static_cast<int64_t>(alignment / dtype_size(dtype)));
  return (vocab + elements - 1) / elements * elements;
}

Linear KosmosModel::head() const {
  const ParameterSpec & spec = state_.table().find(output_name());
  Linear projection;
  projection.weight = state_.compute_value(spec);  // this rank's vocabulary rows under tensor parallelism
  projection.dweight = state_.grad(spec);
  projection.trainable = spec.trainable;
  return projection;
}

double KosmosModel::vocab_parallel_correction(Runtime & rt, const float * weights, float loss_scale,
                                              TensorView lse) const {
  // Rank r computed lse_r over its slice and loss_r = scale * sum_n w_n (lse_r,n - its share of the target logit).
  // The whole vocabulary's lse_n = max_n + log sum_r exp(lse_r,n - max_n); the loss swaps every rank's lse_r,n
  // for it (added once, by rank 0).
  const int64_t rows = lse.dim(0);
  std::vector<float> local(static_cast<size_t>(rows)), high, sum(static_cast<size_t>(rows));
  TensorView host = make_view(local.data(), DType::kF32, {rows});
  rt.device.copy(host, lse, rt.stream);
  rt.stream.synchronize();
  high = local;
  tensor_parallel_->all_reduce(make_view(high.data(), DType::kF32, {rows}), parallel::ReduceOp::kMax, rt.stream);
  for (size_t n = 0; n < sum.size(); ++n) sum[n] = std::exp(local[n] - high[n]);
  tensor_parallel_->all_reduce(make_view(sum.data(), DType::kF32, {rows}), parallel::ReduceOp::kSum, rt.stream);
  std::vector<float> whole(static_cast<size_t>(rows));
  double correction = 0.0;
  for (size_t n = 0; n < whole.size(); ++n) {
    whole[n] = high[n] + std::log(sum[n]);
    const double weight = static_cast<double>(weights[n]) * loss_scale;
    correction -= weight * local[n];
    if (tensor_parallel_->rank() == 0) correction += weight * whole[n];
  }
  host.data = whole.data();
  rt.device.copy(lse, host, rt.stream);  // `whole` may go out of scope: the copy has taken it
  return correction;
}

double KosmosModel::run(Runtime & rt, const Batch & batch, float loss_scale, const StepRandomness & randomness,
                        bool backward, std::vector<float> * logits_out) {
  MicroState state;
  const StageRange whole;
  const double loss =
      stage_forward(rt, whole, batch, TensorView{}, TensorView{}, loss_scale, randomness, backward, state, logits_out);
  if (backward) stage_backward(rt, whole, batch, TensorView{}, TensorView{}, state);
  return loss;
}

TensorView KosmosModel::embed(Runtime & rt, const Batch & batch, const StepRandomness & randomness, bool keep,
                              MicroState & s, const std::vector<int64_t> * preceding) {
  const DecoderConfig & dc = config_.decoder;
  const int64_t rows = batch.batch * batch.length, d = dc.embed_dim, latents = config_.image_slots();
  const float p = randomness.training ? static_cast<float>(dc.dropout) : 0.0f;
  const uint64_t row_offset = static_cast<uint64_t>(batch.first_sample * batch.length * d);
  const uint64_t seed = randomness.seed;
  const int64_t step = randomness.step;
  KOSMOS_CHECK(static_cast<int64_t>(batch.image_slots.size()) == batch.image_count, "micro-batch: ",
               batch.image_slots.size(), " <image> tokens but ", batch.image_count,
               " images; each image needs one <image> token followed by ", latents, " slots");
  s.ids = upload(rt, batch.tokens, DType::kI32, {rows});
  const std::vector<int32_t> positions_host = position_ids(batch, config_.tokens.pad, preceding);
  check_padding(batch, config_.tokens.pad);
  if (dc.abs_pos == AbsolutePositions::kLearned) {
    const int32_t highest = *std::max_element(positions_host.begin(), positions_host.end());
    KOSMOS_CHECK(highest < dc.max_positions, "sequences of ", batch.length, " positions need learned position id ",
                 highest, " but max_target_positions is ", dc.max_positions, " (ids start at pad + 1 = ",
                 config_.tokens.pad + 1, "); shorten the sequences or enlarge the table");
  }
  s.positions = upload(rt, positions_host, DType::kI32, {rows});
  // Token embeddings, image slots overwritten by the image path, times the embedding scale, plus positions.
  const TensorView embedded = rt.take({rows, d});
  // Vocab-parallel: each rank's rows of the table, the others' ids read as zeros, summed over the ranks.
  const std::string table = "decoder.embed_tokens.weight";
  rt.run(EmbeddingForward{embedded, s.ids, state_.value(table), vocab_start(), config_.tokens.pad});
  if (split()) tensor_parallel_->all_reduce(embedded, parallel::ReduceOp::kSum, rt.stream);
  if (batch.image_count > 0) {
    const VisionConfig & v = config_.vision;
    const TensorView images =
        upload(rt, batch.images, DType::kF32, {batch.image_count, v.channels, v.image_size, v.image_size});
    const TensorView image_embeddings = rt.take({batch.image_count * latents, d});
    image_path_.forward(rt, image_embeddings, images, image_keys(batch, randomness), s.vision, s.connector, keep);
    for (int64_t i = 0; i < batch.image_count; ++i)
      rt.run(Copy{slice(embedded, 0, batch.image_slots[static_cast<size_t>(i)], latents),
                  slice(image_embeddings, 0, i * latents, latents)});
  }
  const TensorView x = rt.take({rows, d});
  rt.run(Scale{x, embedded, embed_scale()});
  if (dc.abs_pos != AbsolutePositions::kNone) {
    const TensorView position_rows = rt.take({rows, d});
    if (dc.abs_pos == AbsolutePositions::kSinusoidal)
      rt.run(SinusoidalPositions{position_rows, s.positions, config_.tokens.pad});
    else
      rt.run(EmbeddingForward{position_rows, s.positions, state_.value("decoder.embed_positions.weight"), 0,
                              config_.tokens.pad});
    rt.run(Add{x, x, position_rows});
  }
  if (p > 0.0f) rt.run(DropoutForward{x, x, TensorView{}, {p, site_key(seed, step, kEmbedding, 0), row_offset}});
  return x;
}

double KosmosModel::stage_forward(Runtime & rt, const StageRange & range, const Batch & batch, TensorView input,
                                  TensorView output, float loss_scale, const StepRandomness & randomness, bool keep,
                                  MicroState & s, std::vector<float> * logits_out) {
  const DecoderConfig & dc = config_.decoder;
  const int64_t rows = batch.batch * batch.length, d = dc.embed_dim;
  const uint64_t seed = randomness.seed;
  const int64_t step = randomness.step;
  const float p = randomness.training ? static_cast<float>(dc.dropout) : 0.0f;
  const float p_attention = randomness.training ? static_cast<float>(dc.attention_dropout) : 0.0f;
  const uint64_t row_offset = static_cast<uint64_t>(batch.first_sample * batch.length * d);
  s.randomness = randomness;
  s.loss_scale = loss_scale;

  TensorView x = range.first ? embed(rt, batch, randomness, keep, s, nullptr) : input;

  // This stage's decoder layers.
  const int64_t first_layer = range.layer_begin, last_layer = layer_end(range);
  s.blocks.assign(static_cast<size_t>(last_layer - first_layer), {});
  s.options.assign(static_cast<size_t>(last_layer - first_layer), {});
  for (int64_t l = first_layer; l < last_layer; ++l) {
    BlockOptions & o = s.options[static_cast<size_t>(l - first_layer)];
    o.batch = batch.batch, o.length = batch.length, o.heads = dc.heads, o.causal = true, o.xpos = dc.xpos;
    o.xpos_scale_base = static_cast<float>(dc.xpos_scale_base);
    o.activation = Activation::kGelu;
    o.attention_dropout = {p_attention, site_key(seed, step, kAttention, l),
                           static_cast<uint64_t>(batch.first_sample * dc.heads * batch.length)};
    o.output_dropout = {p, site_key(seed, step, kAttentionOutput, l), row_offset};
    o.ffn_dropout_seed = site_key(seed, step, kFfnOutput, l);
    o.tp = tensor_parallel_;
    o.recompute = recompute_;
    o.deterministic_attention = deterministic_attention_;
    o.activations = activation_dtype(state_.compute_dtype());
    const TensorView out = !range.last && l + 1 == last_layer ? output : rt.take({rows, d});
    block_forward(rt, decoder_blocks_[static_cast<size_t>(l)], o, out, x,
                  &s.blocks[static_cast<size_t>(l - first_layer)]);
    x = out;
  }
  if (!range.last) {
    if (first_layer == last_layer) rt.run(Copy{output, x});  // a stage without decoder layers passes x on
    return 0.0;
  }

  // The head and the loss.
  s.targets = upload(rt, batch.targets, DType::kI32, {rows});
  s.weights = upload(rt, batch.loss_weights, DType::kF32, {rows});
  s.last_hidden = x;
  s.normed = rt.take({rows, d});
  s.final_stats = make_layernorm(state_, "decoder.layer_norm.", dc.layernorm_eps).forward(rt, s.normed, x);
  return head_loss_in_chunks(rt, batch, keep, s, logits_out);
}

void KosmosModel::stage_decode(Runtime & rt, const StageRange & range, const Batch & batch, TensorView input,
                               TensorView output, DecodeCache & cache, std::vector<float> * logits_out) {
  const DecoderConfig & dc = config_.decoder;
  const int64_t rows = batch.batch * batch.length, d = dc.embed_dim;
  const int64_t first_layer = range.layer_begin, last_layer = layer_end(range);
  if (cache.length == 0) {
    cache.layers.clear();
    cache.layers.resize(static_cast<size_t>(last_layer - first_layer));
    for (LayerCache & layer : cache.layers) layer.capacity = cache.capacity;
    cache.real_tokens.assign(static_cast<size_t>(batch.batch), 0);
  }
  MicroState s;
  TensorView x = range.first ? embed(rt, batch, {0, 0, false}, false, s, &cache.real_tokens) : input;
  for (int64_t l = first_layer; l < last_layer; ++l) {
    BlockOptions o;
    o.batch = batch.batch, o.length = batch.length, o.heads = dc.heads, o.causal = true, o.xpos = dc.xpos;
    o.xpos_scale_base = static_cast<float>(dc.xpos_scale_base);
    o.activation = Activation::kGelu;
    o.tp = tensor_parallel_;
    const TensorView out = !range.last && l + 1 == last_layer ? output : rt.take({rows, d});
    block_decode(rt, decoder_blocks_[static_cast<size_t>(l)], o, out, x,
                 cache.layers[static_cast<size_t>(l - first_layer)], cache.length);
    x = out;
  }
  cache.length += batch.length;
  for (int64_t b = 0; b < batch.batch; ++b)
    for (int64_t t = 0; t < batch.length; ++t)
      cache.real_tokens[static_cast<size_t>(b)] += batch.tokens[static_cast<size_t>(b * batch.length + t)] != config_.tokens.pad;
  if (!range.last) {
    if (first_layer == last_layer) rt.run(Copy{output, x});  // a stage without decoder layers passes x on
    return;
  }
  const TensorView normed = rt.take({rows, d});
  make_layernorm(state_, "decoder.layer_norm.", dc.layernorm_eps).forward(rt, normed, x);
  const TensorView logits = take_logits(rt, DType::kF32, rows, vocab_local());
  head().forward(rt, logits, normed);
  logits_out->resize(static_cast<size_t>(rows * vocab_local()));
  download_logits(rt, logits, logits_out->data());
}

void KosmosModel::stage_backward(Runtime & rt, const StageRange & range, const Batch & batch, TensorView d_output,
                                 TensorView d_input, MicroState & s) {
  const DecoderConfig & dc = config_.decoder;
  const int64_t rows = batch.batch * batch.length, d = dc.embed_dim, latents = config_.image_slots();
  // Everything this backward takes from the arena is taken back at its end, unless a zero-bubble W pass still
  // reads some of it (the weight gradients' operands, which include the layers' output gradients).
  const bool deferring = rt.deferred_weight_gradients != nullptr;
  const Arena::Mark backward_start = rt.arena.mark();
  TensorView dx = d_output;
  if (range.last) {  // the head's own backward ran with the loss in the forward; the final LayerNorm's runs here
    KOSMOS_CHECK(s.d_normed.present(), "stage_backward of a forward that did not keep its state (internal error)");
    dx = rt.take({rows, d});
    make_layernorm(state_, "decoder.layer_norm.", dc.layernorm_eps)
        .backward(rt, dx, s.d_normed, s.last_hidden, s.final_stats);
    rt.report_gradients_final_from(final_norm_offset_);
  }
  const int64_t first_layer = range.layer_begin, last_layer = layer_end(range);
  TensorView alternate[2];  // [B*T, d] f32 x 2: the layers' input gradients take turns in them (when not deferring)
  for (int64_t l = last_layer - 1; l >= first_layer; --l) {
    TensorView d_in = d_input;  // the previous stage's, for this stage's first layer
    if (range.first || l != first_layer) {
      TensorView & turn = alternate[l % 2];
      if (!turn.present() || deferring) turn = rt.take({rows, d});
      d_in = turn;
    }
    const size_t index = static_cast<size_t>(l - first_layer);
    block_backward(rt, decoder_blocks_[static_cast<size_t>(l)], s.options[index], d_in, dx, s.blocks[index]);
    rt.report_gradients_final_from(decoder_layer_offsets_[static_cast<size_t>(l)]);
    dx = d_in;
  }
  if (!range.first) {
    if (first_layer == last_layer) rt.run(Copy{d_input, dx});
    if (!deferring) rt.arena.rewind(backward_start);
    rt.stream.synchronize();
    return;
  }
  // Embeddings and the image path.
  const float p = s.randomness.training ? static_cast<float>(dc.dropout) : 0.0f;
  if (p > 0.0f)
    rt.run(DropoutBackward{dx, dx, {p, site_key(s.randomness.seed, s.randomness.step, kEmbedding, 0),
                                    static_cast<uint64_t>(batch.first_sample * batch.length * d)}});
  if (dc.abs_pos == AbsolutePositions::kLearned)
    rt.run(EmbeddingBackward{state_.grad("decoder.embed_positions.weight"), dx, s.positions, 0, config_.tokens.pad});
  const TensorView d_embedded = rt.take({rows, d});
  rt.run(Scale{d_embedded, dx, embed_scale()});
  // Image slot rows send their gradient to the image path, not to the token table: their ids are masked out of
  // range for the scatter-add.
  std::vector<int32_t> token_ids = batch.tokens;
  for (int64_t slot : batch.image_slots)
    for (int64_t r = slot; r < slot + latents; ++r) token_ids[static_cast<size_t>(r)] = static_cast<int32_t>(dc.vocab_size);
  const TensorView masked_ids = upload(rt, token_ids, DType::kI32, {rows});
  const std::string table = "decoder.embed_tokens.weight";
  rt.run(EmbeddingBackward{state_.grad(table), d_embedded, masked_ids, vocab_start(), config_.tokens.pad});
  if (batch.image_count > 0) {
    const TensorView d_image_embeddings = rt.take({batch.image_count * latents, d});
    for (int64_t i = 0; i < batch.image_count; ++i)
      rt.run(Copy{slice(d_image_embeddings, 0, i * latents, latents),
                  slice(d_embedded, 0, batch.image_slots[static_cast<size_t>(i)], latents)});
    image_path_.backward(rt, d_image_embeddings, image_keys(batch, s.randomness), s.vision, s.connector);
  }
  rt.report_gradients_final_from(0);
  if (!deferring) rt.arena.rewind(backward_start);
  rt.stream.synchronize();
}

int64_t KosmosModel::default_head_chunk_rows(int64_t vocab_local, int64_t bytes_per_logit) {
  const int64_t fitting = std::max<int64_t>(1, kHeadChunkBytes / (vocab_local * bytes_per_logit));
  return fitting >= kHeadChunkRowMultiple ? fitting / kHeadChunkRowMultiple * kHeadChunkRowMultiple : fitting;
}

int64_t KosmosModel::head_bytes_per_logit(DType matmul_dtype) {
  const DType logits = head_logits_dtype(matmul_dtype);
  return static_cast<int64_t>(dtype_size(logits) + (logits == matmul_dtype ? 0 : dtype_size(matmul_dtype)));
}

double KosmosModel::head_loss_in_chunks(Runtime & rt, const Batch & batch, bool backward, MicroState & s,
                                        std::vector<float> * logits_out) const {
  const int64_t rows = s.normed.dim(0), width = s.normed.dim(1), vocab = vocab_local();
  const Linear projection = head();
  const int64_t default_rows = default_head_chunk_rows(vocab, head_bytes_per_logit(projection.weight.dtype));
  const int64_t chunk = std::min(rows, head_chunk_rows_ > 0 ? head_chunk_rows_ : default_rows);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  if (backward) s.d_normed = rt.take({rows, width});
  const Arena::Mark temporaries = rt.arena.mark();
  // The logits in head_logits_dtype; their gradient in the head's matmul dtype (rounded once by the loss's backward,
  // with no cast, which would lay it out in dense rows): over the logits themselves where the two dtypes agree (bf16
  // or f32).
  const DType logits_dtype = head_logits_dtype(projection.weight.dtype);
  const TensorView logits = take_logits(rt, logits_dtype, chunk, vocab), lse = rt.take({chunk});
  const TensorView losses = rt.take({chunks});
  TensorView d_logits;
  if (backward)
    d_logits =
        projection.weight.dtype == logits_dtype ? logits : take_logits(rt, projection.weight.dtype, chunk, vocab);
  const int64_t vocab_total = split() ? config_.decoder.vocab_size : 0;
  Runtime now = rt;  // the head's weight gradient is not deferred to a zero-bubble W pass
  now.deferred_weight_gradients = nullptr;
  double corrections = 0.0;  // vocabulary-parallel: the chunks' loss corrections to the whole vocabulary's lse
  if (logits_out) logits_out->resize(static_cast<size_t>(rows * vocab));
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t first = c * chunk, n = std::min(chunk, rows - first);
    const TensorView logits_n = slice(logits, 0, 0, n), lse_n = slice(lse, 0, 0, n), loss_n = slice(losses, 0, c, 1);
    const TensorView normed_n = slice(s.normed, 0, first, n);
    const TensorView targets_n = slice(s.targets, 0, first, n), weights_n = slice(s.weights, 0, first, n);
    projection.forward(rt, logits_n, normed_n);
    // With a vocabulary-parallel head, this rank's columns of the vocabulary only.
    if (logits_out) download_logits(rt, logits_n, logits_out->data() + first * vocab);
    rt.run(CrossEntropyForward{loss_n, lse_n, logits_n, targets_n, weights_n, vocab_start(), vocab_total,
                               s.loss_scale});
    if (split())  // this rank's slice's lse becomes the whole vocabulary's, which the backward needs
      corrections += vocab_parallel_correction(rt, batch.loss_weights.data() + first, s.loss_scale, lse_n);
    if (!backward) continue;
    const TensorView d_logits_n = slice(d_logits, 0, 0, n);
    rt.run(CrossEntropyBackward{d_logits_n, logits_n, targets_n, weights_n, lse_n, vocab_start(), vocab_total,
                                s.loss_scale, 1.0f});
    projection.backward(now, slice(s.d_normed, 0, first, n), d_logits_n, normed_n, false);
  }
  // Vocabulary-parallel: each rank's rows of the head give part of the input gradient.
  if (backward && split()) tensor_parallel_->all_reduce(s.d_normed, parallel::ReduceOp::kSum, rt.stream);
  std::vector<float> host(static_cast<size_t>(chunks));
  TensorView target = losses;
  target.data = host.data();
  rt.device.copy(target, losses, rt.stream);  // waits for the copy: the host reads it next
  rt.arena.rewind(temporaries);
  double loss = corrections;
  for (float part : host) loss += part;
  if (!split()) return loss;
  float total = static_cast<float>(loss);  // every rank's slice of the vocabulary: the whole loss
  tensor_parallel_->all_reduce(make_view(&total, DType::kF32, {1}), parallel::ReduceOp::kSum, rt.stream);
  return total;
}

void KosmosModel::stage_backward_input(Runtime & rt, const StageRange & range, const Batch & batch,
                                       TensorView d_output, TensorView d_input, MicroState & state) {
  Runtime deferring = rt;
  deferring.deferred_weight_gradients = &state.weight_gradients;
  // A report joins the deferred work: the gradients it names are final once the W pass has run what precedes it.
  std::function<void(int64_t)> defer_report = [&state](int64_t offset) {
    state.weight_gradients.push_back([&state, offset] {
      if (state.weight_pass_listener != nullptr) (*state.weight_pass_listener)(offset);
    });
  };
  deferring.gradients_final_from = &defer_report;
  stage_backward(deferring, range, batch, d_output, d_input, state);
}

void KosmosModel::stage_backward_weights(Runtime & rt, MicroState & state) {
  state.weight_pass_listener = rt.gradients_final_from;
  for (const std::function<void()> & work : state.weight_gradients) work();
  state.weight_gradients.clear();
  state.weight_pass_listener = nullptr;
}

float KosmosModel::embed_scale() const {
  return config_.decoder.scale_embedding ? std::sqrt(static_cast<float>(config_.decoder.embed_dim)) : 1.0f;
}

std::string KosmosModel::output_name() const {
  return config_.decoder.tied ? "decoder.embed_tokens.weight" : "decoder.output_projection.weight";
}

ImagePathKeys KosmosModel::image_keys(const Batch & batch, const StepRandomness & randomness) const {
  // XConnector attention probability rows: [images, heads, latents], numbered globally.
  const int64_t latents = config_.image_slots();
  const uint64_t per_image = static_cast<uint64_t>(config_.connector.heads * latents);
  return ImagePathKeys{{randomness.training ? static_cast<float>(config_.decoder.attention_dropout) : 0.0f,
                        site_key(randomness.seed, randomness.step, kConnector, 0),
                        static_cast<uint64_t>(batch.first_image) * per_image}};
}

}  // namespace kosmos::model
