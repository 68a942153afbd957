// parameters.cpp: the table of every KOSMOS parameter (names, shapes, initialisation, trainable or frozen) and its
// device memory. Initialisation follows the peers: PyTorch defaults, torchscale's Magneto scaling of v_proj,
// out_proj, fc1, fc2 (weights and biases) by sqrt(log 2N), fairseq's N(0, d^-1/2) token embedding with a zero
// padding row, N(0, d^-1/2) output and image projections, N(0, 1) latents (flamingo-pytorch).
#include "model/parameters.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "backends/error.h"
#include "backends/philox.h"
#include "backends/tensor.h"

namespace kosmos::model {
namespace {

std::string layer_prefix(const std::string & base, int64_t index) { return base + std::to_string(index) + "."; }

// A 64-bit key for a parameter name (FNV-1a), mixed with the seed.
uint64_t name_key(uint64_t seed, const std::string & name) {
  uint64_t hash = 1469598103934665603ull ^ seed;
  for (unsigned char c : name) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

}  // namespace

ParameterPart ParameterPart::whole(const ParameterSpec & spec) {
  const int64_t rows = spec.shape.empty() ? 1 : spec.shape[0];
  return {0, rows, 0, rows > 0 ? spec.numel / rows : 0, 0, spec.numel};
}

ParameterPart ParameterPart::of_rank(const ParameterSpec & spec, TensorParallelRank tp) {
  ParameterPart part = whole(spec);
  if (spec.split == TensorParallelSplit::kReplicated || tp.ranks == 1) return part;
  const bool rows = spec.split == TensorParallelSplit::kRows;
  int64_t & begin = rows ? part.row_begin : part.column_begin;
  int64_t & end = rows ? part.row_end : part.column_end;
  KOSMOS_CHECK(end % tp.ranks == 0, "tensor parallelism over ", tp.ranks, " ranks splits ", spec.name, " (",
               describe_dims(spec.shape), ") by ", rows ? "rows" : "columns", ", but its ", end, " ",
               rows ? "rows" : "columns", " do not divide by ", tp.ranks,
               "; choose a --tp that divides the decoder's heads, FFN width and vocabulary (or pad vocab_size)");
  const int64_t share = end / tp.ranks;
  begin = share * tp.rank;
  end = begin + share;
  part.flat_begin = part.whole_element(0, spec.columns());
  part.flat_end = part.whole_element((part.row_end - part.row_begin) * (part.column_end - part.column_begin) - 1,
                                     spec.columns()) + 1;
  return part;
}

std::vector<float> local_values(const ParameterSpec & spec, std::vector<float> whole) {
  KOSMOS_CHECK(static_cast<int64_t>(whole.size()) == spec.numel, "local_values: ", whole.size(), " values for ",
               spec.name, " of ", spec.numel, " (internal error)");
  if (spec.local_numel == spec.numel) return whole;
  std::vector<float> part(static_cast<size_t>(spec.local_numel));
  for (int64_t i = 0; i < spec.local_numel; ++i)
    part[static_cast<size_t>(i)] = whole[static_cast<size_t>(spec.local.whole_element(i, spec.columns()))];
  return part;
}

TensorParallelSplit tensor_parallel_split(const std::string & name) {
  if (name == "decoder.embed_tokens.weight" || name == "decoder.output_projection.weight")
    return TensorParallelSplit::kRows;  // vocabulary rows
  if (name.rfind("decoder.layers.", 0) != 0) return TensorParallelSplit::kReplicated;
  for (const char * column_parallel : {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.", "ffn.fc1."})
    if (name.find(column_parallel) != std::string::npos) return TensorParallelSplit::kRows;  // weight and bias
  for (const char * row_parallel : {"self_attn.out_proj.weight", "ffn.fc2.weight"})
    if (name.find(row_parallel) != std::string::npos) return TensorParallelSplit::kColumns;
  return TensorParallelSplit::kReplicated;
}

void ParameterTable::add(const std::string & name, std::vector<int64_t> shape, Init init, double init_arg,
                         bool trainable, double gain, bool aligned_end) {
  ParameterSpec spec;
  spec.name = name;
  spec.shape = std::move(shape);
  spec.init = init;
  spec.init_arg = init_arg;
  spec.gain = gain;
  spec.trainable = trainable;
  spec.aligned_end = aligned_end;
  spec.numel = 1;
  for (int64_t size : spec.shape) spec.numel *= size;
  index_.emplace(name, specs_.size());
  specs_.push_back(std::move(spec));
}

void ParameterTable::add_linear(const std::string & prefix, int64_t in, int64_t out, bool bias, bool trainable,
                                double gain) {
  add(prefix + "weight", {out, in}, Init::kUniformFanIn, static_cast<double>(in), trainable, gain);
  if (bias) add(prefix + "bias", {out}, Init::kUniformFanIn, static_cast<double>(in), trainable, gain);
}

void ParameterTable::add_qkv(const std::string & prefix, int64_t width, bool trainable, double v_gain) {
  const char * const projections[] = {"q_proj.", "k_proj.", "v_proj."};
  const double gains[] = {1.0, 1.0, v_gain};
  const std::pair<const char *, std::vector<int64_t>> parts[] = {{"weight", {width, width}}, {"bias", {width}}};
  for (const auto & [part, shape] : parts)
    for (int i = 0; i < 3; ++i)  // no gap inside the three, whatever the width
      add(prefix + projections[i] + part, shape, Init::kUniformFanIn, static_cast<double>(width), trainable, gains[i],
          i == 2);
}

void ParameterTable::add_layernorm(const std::string & prefix, int64_t width, bool trainable) {
  add(prefix + "weight", {width}, Init::kOnes, 0.0, trainable);
  add(prefix + "bias", {width}, Init::kZeros, 0.0, trainable);
}

ParameterTable::ParameterTable(const KosmosConfig & config, const HoldsParameter & holds, TensorParallelRank tp)
    : tp_(tp) {
  validate(config);
  const VisionConfig & v = config.vision;
  const DecoderConfig & d = config.decoder;
  const ConnectorConfig & c = config.connector;
  KOSMOS_CHECK(tp.ranks >= 1 && tp.rank >= 0 && tp.rank < tp.ranks, "parameter table: tensor-parallel rank ",
               tp.rank, " of ", tp.ranks, " (internal error)");
  KOSMOS_CHECK(d.heads % tp.ranks == 0 && d.ffn_dim % tp.ranks == 0 && d.vocab_size % tp.ranks == 0,
               "tensor parallelism over ", tp.ranks, " ranks splits the decoder's ", d.heads, " heads, FFN width ",
               d.ffn_dim, " and vocabulary of ", d.vocab_size,
               " evenly, but they do not divide; choose a --tp that divides all three (or pad vocab_size)");

  // CLIP vision tower (HF CLIPVisionTransformer names): frozen but for its last `trainable_layers` layers.
  const int64_t dv = v.hidden_size;
  add("clip_model.embeddings.class_embedding", {dv}, Init::kNormal, std::pow(dv, -0.5), false);
  add("clip_model.embeddings.patch_embedding.weight", {dv, v.channels, v.patch_size, v.patch_size},
      Init::kUniformFanIn, static_cast<double>(v.channels * v.patch_size * v.patch_size), false);
  add("clip_model.embeddings.position_embedding.weight", {v.tokens(), dv}, Init::kNormal, 0.02, false);
  add_layernorm("clip_model.pre_layrnorm.", dv, false);  // "layrnorm" sic, as HF spells it
  for (int64_t j = 0; j < v.layers; ++j) {
    const std::string p = layer_prefix("clip_model.encoder.layers.", j);
    const bool trains = j >= v.layers - v.trainable_layers;
    add_qkv(p + "self_attn.", dv, trains, 1.0);
    add_linear(p + "self_attn.out_proj.", dv, dv, true, trains);
    add_layernorm(p + "layer_norm1.", dv, trains);
    add_linear(p + "mlp.fc1.", dv, v.intermediate_size, true, trains);
    add_linear(p + "mlp.fc2.", v.intermediate_size, dv, true, trains);
    add_layernorm(p + "layer_norm2.", dv, trains);
  }
  add_layernorm("clip_model.post_layernorm.", dv, false);

  if (c.kind == ConnectorKind::kResampler) {  // flamingo-pytorch PerceiverResampler names, then image_proj
    const int64_t inner = c.heads * c.dim_head;
    add("perceive.latents", {c.num_latents, dv}, Init::kNormal, 1.0, true);
    add("perceive.media_pos_emb", {c.num_media_embeds, 1, dv}, Init::kNormal, 1.0, true);
    for (int64_t k = 0; k < c.depth; ++k) {
      const std::string p = layer_prefix("perceive.layers.", k);
      add_layernorm(p + "0.norm_media.", dv, true);
      add_layernorm(p + "0.norm_latents.", dv, true);
      add_linear(p + "0.to_q.", dv, inner, false, true);
      add_linear(p + "0.to_kv.", dv, 2 * inner, false, true);
      add_linear(p + "0.to_out.", inner, dv, false, true);
      add_layernorm(p + "1.0.", dv, true);
      add_linear(p + "1.1.", dv, c.ff_mult * dv, false, true);
      add_linear(p + "1.3.", c.ff_mult * dv, dv, false, true);
    }
    add_layernorm("perceive.norm.", dv, true);
    add("image_proj.weight", {d.embed_dim, dv}, Init::kNormal, std::pow(d.embed_dim, -0.5), true);
  } else {  // HF Kosmos-2 Kosmos2ImageToTextProjection names
    add_linear("image_to_text_projection.dense.", dv, d.embed_dim, true, true);
    add("image_to_text_projection.latent_query", {c.num_latents, d.embed_dim}, Init::kNormal, 1.0, true);
    for (const char * projection : {"q_proj.", "k_proj.", "v_proj.", "out_proj."})
      add_linear(std::string("image_to_text_projection.x_attn.") + projection, d.embed_dim, d.embed_dim, true, true);
  }

  // Magneto (sub-LN) decoder, torchscale names. gamma = sqrt(log(2N)) on v_proj, out_proj, fc1, fc2.
  const double gamma = std::sqrt(std::log(2.0 * static_cast<double>(d.layers)));
  add("decoder.embed_tokens.weight", {d.vocab_size, d.embed_dim}, Init::kNormal, std::pow(d.embed_dim, -0.5), true);
  specs_.back().zero_row = config.tokens.pad;
  if (d.abs_pos == AbsolutePositions::kLearned) {
    add("decoder.embed_positions.weight", {d.max_positions, d.embed_dim}, Init::kNormal, 1.0, true);
    specs_.back().zero_row = config.tokens.pad;  // pads' position, as nn.Embedding(padding_idx) leaves it
  }
  for (int64_t i = 0; i < d.layers; ++i) {
    const std::string p = layer_prefix("decoder.layers.", i);
    add_layernorm(p + "self_attn_layer_norm.", d.embed_dim, true);
    add_qkv(p + "self_attn.", d.embed_dim, true, gamma);
    add_layernorm(p + "self_attn.inner_attn_ln.", d.embed_dim, true);
    add_linear(p + "self_attn.out_proj.", d.embed_dim, d.embed_dim, true, true, gamma);
    add_layernorm(p + "final_layer_norm.", d.embed_dim, true);
    add_linear(p + "ffn.fc1.", d.embed_dim, d.ffn_dim, true, true, gamma);
    add_layernorm(p + "ffn.ffn_layernorm.", d.ffn_dim, true);
    add_linear(p + "ffn.fc2.", d.ffn_dim, d.embed_dim, true, true, gamma);
  }
  add_layernorm("decoder.layer_norm.", d.embed_dim, true);
  if (!d.tied)
    add("decoder.output_projection.weight", {d.vocab_size, d.embed_dim}, Init::kNormal, std::pow(d.embed_dim, -0.5),
        true);
  for (ParameterSpec & spec : specs_) {
    spec.held = !holds || holds(spec.name);
    holds_all_ = holds_all_ && spec.held;
    spec.split = tensor_parallel_split(spec.name);
    spec.local = ParameterPart::of_rank(spec, tp);
    spec.local_shape = spec.shape;
    if (spec.split == TensorParallelSplit::kRows) spec.local_shape[0] = spec.local.row_end - spec.local.row_begin;
    if (spec.split == TensorParallelSplit::kColumns)
      spec.local_shape[1] = spec.local.column_end - spec.local.column_begin;
    spec.local_numel = 1;
    for (const int64_t size : spec.local_shape) spec.local_numel *= size;
  }
  lay_out();
}

void ParameterTable::lay_out() {
  int64_t next = 0;
  for (const bool trainable : {true, false}) {  // the trainable part, the slack, then the frozen part
    if (!trainable) {
      trainable_end_ = next;
      next += kShardSlack;
    }
    for (size_t i = 0; i < specs_.size(); ++i) {
      ParameterSpec & spec = specs_[i];
      if (spec.trainable != trainable || !spec.held) continue;
      KOSMOS_CHECK(spec.aligned_end || (i + 1 < specs_.size() && specs_[i + 1].trainable == trainable &&
                                        specs_[i + 1].held),
                   "parameter table: ", spec.name, " must be followed with no gap by a parameter that is as "
                   "trainable and as held as it is (internal error)");
      spec.offset = next;
      next += spec.local_numel;
      if (spec.aligned_end) next = (next + 15) / 16 * 16;  // the next parameter starts on 64 bytes
    }
  }
  total_ = next;
}

const ParameterSpec & ParameterTable::find(const std::string & name) const {
  const auto found = index_.find(name);
  if (found != index_.end()) return specs_[found->second];
  const std::string stem = name.substr(0, name.rfind('.') == std::string::npos ? 0 : name.rfind('.'));
  std::string near;
  for (const ParameterSpec & spec : specs_)
    if (!stem.empty() && spec.name.rfind(stem, 0) == 0 && near.size() < 300) near += " " + spec.name;
  KOSMOS_FAIL("model has no parameter named '", name, "'", near.empty() ? "" : "; similar:" + near);
}

int64_t ParameterTable::count() const {
  int64_t elements = 0;
  for (const ParameterSpec & spec : specs_) elements += spec.numel;
  return elements;
}

int64_t ParameterTable::trainable_count() const {
  int64_t elements = 0;
  for (const ParameterSpec & spec : specs_)
    if (spec.trainable) elements += spec.numel;
  return elements;
}

ModelState::ModelState(Device & device, const ParameterTable & table, DType compute_dtype, Zero1Shard shard)
    : device_(device), table_(table), compute_dtype_(compute_dtype), shard_(shard) {
  KOSMOS_CHECK(dtype_is_float(compute_dtype), "model state: compute dtype ", dtype_name(compute_dtype),
               " is not supported; use f32, bf16 or f16");
  KOSMOS_CHECK(shard.ranks >= 1 && shard.rank >= 0 && shard.rank < shard.ranks, "model state: ZeRO-1 rank ",
               shard.rank, " of ", shard.ranks, " (internal error)");
  KOSMOS_CHECK(shard.ranks - 1 <= ParameterTable::kShardSlack, "ZeRO-1 over ", shard.ranks,
               " ranks needs more than the ", ParameterTable::kShardSlack,
               " spare elements of the parameter buffers; use fewer data-parallel ranks per group");
  values_ = device.allocate(static_cast<size_t>(table_.total()) * sizeof(float), BufferUse::kWeights);
  grads_ = device.allocate(static_cast<size_t>(gradient_elements()) * sizeof(float), BufferUse::kWeights);
  moment1_ = device.allocate(static_cast<size_t>(slice_elements()) * sizeof(float), BufferUse::kWeights);
  moment2_ = device.allocate(static_cast<size_t>(slice_elements()) * sizeof(float), BufferUse::kWeights);
  std::unique_ptr<Stream> stream = device.create_stream();
  for (const Slot slot : {Slot::kValues, Slot::kGrads, Slot::kMoment1, Slot::kMoment2})  // gaps and slack stay zero
    op_run(device, Fill{flat(slot), 0.0f}, *stream);
  if (compute_dtype != DType::kF32)
    compute_values_ = device.allocate(static_cast<size_t>(table_.total()) * dtype_size(compute_dtype), BufferUse::kWeights);
  stream->synchronize();
}

TensorView ModelState::view(const Buffer & buffer, const ParameterSpec & spec, DType dtype) const {
  if (!spec.held) return TensorView{};
  return make_view(static_cast<char *>(buffer.data()) + static_cast<size_t>(spec.offset) * dtype_size(dtype), dtype,
                   static_cast<int>(spec.local_shape.size()), spec.local_shape.data());
}

TensorView ModelState::compute_value(const ParameterSpec & spec) const {
  return compute_dtype_ == DType::kF32 ? value(spec) : view(compute_values_, spec, compute_dtype_);
}

void ModelState::refresh_compute_values(Stream & stream) {
  if (compute_dtype_ == DType::kF32) return;
  op_run(device_, Cast{compute_values(), make_view(values_.data(), DType::kF32, {table_.total()})}, stream);
}

TensorView ModelState::compute_values() const {
  return compute_dtype_ == DType::kF32 ? TensorView{}
                                       : make_view(compute_values_.data(), compute_dtype_, {table_.total()});
}

ModelState::Bytes ModelState::bytes() const {
  return {values_.bytes(), compute_values_.bytes(), grads_.bytes(), moment1_.bytes() + moment2_.bytes()};
}

int64_t ModelState::slice_elements() const {
  return (table_.trainable_end() + shard_.ranks - 1) / shard_.ranks;
}

std::pair<int64_t, int64_t> ModelState::moment_range() const {
  const int64_t begin = slice_elements() * shard_.rank;
  return {begin, std::min(table_.trainable_end(), begin + slice_elements())};
}

TensorView ModelState::flat(Slot slot) const {
  switch (slot) {
    case Slot::kValues: return make_view(values_.data(), DType::kF32, {table_.total()});
    case Slot::kGrads: return make_view(grads_.data(), DType::kF32, {gradient_elements()});
    case Slot::kMoment1: return make_view(moment1_.data(), DType::kF32, {slice_elements()});
    case Slot::kMoment2: return make_view(moment2_.data(), DType::kF32, {slice_elements()});
  }
  KOSMOS_FAIL("model state: unknown slot ", static_cast<int>(slot), " (internal error)");
}

int64_t ModelState::position(Slot slot, int64_t offset) const {
  switch (slot) {
    case Slot::kValues: return offset;
    case Slot::kGrads:
      KOSMOS_CHECK(offset <= gradient_elements(), "model state: offset ", offset,
                   " lies past the gradients, which end at ", gradient_elements(), " (internal error)");
      return offset;
    case Slot::kMoment1:
    case Slot::kMoment2: return offset - moment_range().first;  // outside [0, slice_elements()): not held here
  }
  KOSMOS_FAIL("model state: unknown slot ", static_cast<int>(slot), " (internal error)");
}

TensorView ModelState::moment_view(const Buffer & buffer, const ParameterSpec & spec) const {
  const auto [begin, end] = moment_range();
  if (!spec.trainable || !spec.held || spec.offset < begin || spec.offset + spec.local_numel > end) return TensorView{};
  return make_view(static_cast<float *>(buffer.data()) + (spec.offset - begin), DType::kF32,
                   static_cast<int>(spec.local_shape.size()), spec.local_shape.data());
}

TensorView ModelState::all_grads() const { return make_view(grads_.data(), DType::kF32, {table_.trainable_end()}); }

void ModelState::initialise(uint64_t seed, Stream & stream) {
  std::vector<float> host;
  for (const ParameterSpec & spec : table_.specs()) {
    if (!spec.held) continue;
    // This rank's elements (its tp rows or columns), each drawn by its index in the whole parameter, so that every
    // layout starts from the same values.
    host.assign(static_cast<size_t>(spec.local_numel), 0.0f);
    const uint64_t key = name_key(seed, spec.name);
    const int64_t columns = spec.columns();
    // Over the host's cores, each element its own draws: on one core this took about 48 ns an element (a normal
    // draw, on the build machine), 80 s for kosmos1's 1.67 B parameters, and most of the 45 s that every paper-size
    // run on the GPU machine spent before its first step. Element w draws the stream's elements 2w and 2w + 1,
    // which lie in Philox block w / 2 (lanes 2 (w mod 2) and the next): each thread keeps the block it made last,
    // which its next element (w + 1, in a run of consecutive elements) usually needs too. A one-step run of a
    // 169 M-parameter model on one core of the build machine (user time, least of five): 8.94 s with two blocks made
    // per element, 8.26 with one, 7.57 with the block kept; the values are the same bit for bit.
#pragma omp parallel
    {
      uint64_t kept_index = ~uint64_t{0};
      PhiloxBlock kept{};
      const auto block_of = [&](int64_t whole) -> const PhiloxBlock & {
        const uint64_t index = static_cast<uint64_t>(whole) >> 1;
        if (index != kept_index) {
          kept = philox_block(key, index);
          kept_index = index;
        }
        return kept;
      };
      const auto draw = [](const PhiloxBlock & block, uint32_t lane) {  // in (0, 1)
        return (philox_lane(block, lane) + 0.5) / 4294967296.0;
      };
#pragma omp for schedule(static)
      for (int64_t i = 0; i < spec.local_numel; ++i) {
        const int64_t whole = spec.local.whole_element(i, columns);
        if (whole / columns == spec.zero_row) continue;  // the padding row stays zero
        const uint32_t lane = 2 * static_cast<uint32_t>(whole & 1);
        double value = 0.0;
        switch (spec.init) {
          case Init::kZeros: break;
          case Init::kOnes: value = 1.0; break;
          case Init::kUniformFanIn: value = (2.0 * draw(block_of(whole), lane) - 1.0) / std::sqrt(spec.init_arg); break;
          case Init::kNormal: {  // Box-Muller on two draws
            const PhiloxBlock & block = block_of(whole);
            const double u1 = draw(block, lane), u2 = draw(block, lane + 1);
            value = spec.init_arg * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
            break;
          }
        }
        host[static_cast<size_t>(i)] = static_cast<float>(value * spec.gain);
      }
    }
    TensorView source = value(spec);
    source.data = host.data();
    device_.copy(value(spec), source, stream);
    stream.synchronize();
  }
  refresh_compute_values(stream);
}

void ModelState::zero_grads(Stream & stream) {
  op_run(device_, Fill{all_grads(), 0.0f}, stream);
}

void ModelState::zero_moments(Stream & stream) {
  for (const Slot slot : {Slot::kMoment1, Slot::kMoment2}) op_run(device_, Fill{flat(slot), 0.0f}, stream);
}

}  // namespace kosmos::model
