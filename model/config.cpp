// config.cpp: presets, validation, and the JSON mapping (peer key names) of KosmosConfig.
#include "model/config.h"

#include <nlohmann/json.hpp>

#include <limits>
#include <set>
#include <type_traits>

#include "backends/error.h"

namespace kosmos::model {
namespace {

using Json = nlohmann::json;

const char * positions_name(AbsolutePositions value) {
  switch (value) {
    case AbsolutePositions::kNone: return "none";
    case AbsolutePositions::kSinusoidal: return "sinusoidal";
    case AbsolutePositions::kLearned: return "learned";
  }
  KOSMOS_FAIL("abs_pos: unknown value ", static_cast<int>(value));
}

const char * feature_name(VisionFeature value) {
  switch (value) {
    case VisionFeature::kLastHiddenState: return "last_hidden_state";
    case VisionFeature::kPostLayerNormL2: return "post_layernorm_l2";
  }
  KOSMOS_FAIL("vision.feature: unknown value ", static_cast<int>(value));
}

const char * connector_name(ConnectorKind value) {
  switch (value) {
    case ConnectorKind::kResampler: return "resampler";
    case ConnectorKind::kXConnector: return "xconnector";
  }
  KOSMOS_FAIL("connector.type: unknown value ", static_cast<int>(value));
}

// `value` as a field of type T, or an error naming `what` (where and key): an integer field takes only integers
// in its range (nlohmann's own conversion would cast 2.5 to 2, and a float beyond the range with undefined
// behaviour: the fuzz target found 3.3e22 for vision.trainable_layers).
template <typename T>
T field_value(const Json & value, const std::string & what) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {  // (a non-number fails get<T>() below)
    const bool fits = value.is_number_unsigned()
                          ? value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
                          : value.is_number_integer() && value.get<int64_t>() >= std::numeric_limits<T>::min() &&
                                value.get<int64_t>() <= std::numeric_limits<T>::max();
    KOSMOS_CHECK(fits || !value.is_number(), what, " = ", value.dump(), " is not an integer between ",
                 std::numeric_limits<T>::min(), " and ", std::numeric_limits<T>::max());
  }
  try {
    return value.get<T>();
  } catch (const Json::exception & error) {
    KOSMOS_FAIL(what, " = ", value.dump(), " has the wrong type (", error.what(), ")");
  }
}

// Reads the JSON object's keys into fields; each key is looked up in `known`, so a typo is reported.
class Reader {
 public:
  Reader(const Json & object, std::string where) : object_(object), where_(std::move(where)) {
    KOSMOS_CHECK(object.is_object(), where_, " must be a JSON object, got ", object.type_name());
  }
  template <typename T>
  void read(const char * key, T & field) {
    known_.insert(key);
    if (object_.contains(key)) field = field_value<T>(object_.at(key), where_ + "." + key);
  }
  template <typename Enum>
  void read_choice(const char * key, Enum & field, std::initializer_list<std::pair<const char *, Enum>> choices) {
    std::string text;
    read(key, text);
    if (text.empty()) return;
    std::string names;
    for (const auto & [name, value] : choices) {
      if (text == name) {
        field = value;
        return;
      }
      names += (names.empty() ? "" : ", ") + std::string(name);
    }
    KOSMOS_FAIL(where_, ".", key, " = \"", text, "\" is not one of: ", names);
  }
  void done(std::initializer_list<const char *> nested = {}) const {
    for (const char * key : nested) known_.insert(key);
    std::string unknown;
    for (const auto & item : object_.items())
      if (!known_.count(item.key())) unknown += (unknown.empty() ? "" : ", ") + item.key();
    KOSMOS_CHECK(unknown.empty(), where_, " has unknown keys: ", unknown, " (known: ", known_list(), ")");
  }

 private:
  std::string known_list() const {
    std::string text;
    for (const std::string & key : known_) text += (text.empty() ? "" : ", ") + key;
    return text;
  }
  const Json & object_;
  std::string where_;
  mutable std::set<std::string> known_;
};

void read_decoder(Reader & in, DecoderConfig & d) {
  in.read("vocab_size", d.vocab_size);
  in.read("decoder_layers", d.layers);
  in.read("decoder_embed_dim", d.embed_dim);
  in.read("decoder_ffn_embed_dim", d.ffn_dim);
  in.read("decoder_attention_heads", d.heads);
  in.read("xpos_rel_pos", d.xpos);
  in.read("xpos_scale_base", d.xpos_scale_base);
  bool no_scale = !d.scale_embedding;
  in.read("no_scale_embedding", no_scale);
  d.scale_embedding = !no_scale;
  in.read("share_decoder_input_output_embed", d.tied);
  in.read("layernorm_eps", d.layernorm_eps);
  in.read_choice("abs_pos", d.abs_pos,
                 {{"none", AbsolutePositions::kNone}, {"sinusoidal", AbsolutePositions::kSinusoidal},
                  {"learned", AbsolutePositions::kLearned}});
  in.read("max_target_positions", d.max_positions);
  in.read("dropout", d.dropout);
  in.read("attention_dropout", d.attention_dropout);
}

void read_tokens(Reader & in, SpecialTokens & t) {
  in.read("bos_token_id", t.bos);
  in.read("pad_token_id", t.pad);
  in.read("eos_token_id", t.eos);
  in.read("unk_token_id", t.unk);
  in.read("image_token_id", t.image);
  in.read("image_end_token_id", t.image_end);
}

}  // namespace

KosmosConfig preset(const std::string & name) {
  KosmosConfig config;  // the defaults are the paper's KOSMOS-1 (kosmos-spec section 2.2, recommendation)
  if (name == "kosmos1") return config;
  if (name == "kosmos2") {  // HF microsoft/kosmos-2-patch14-224
    config.decoder.vocab_size = 65037;
    config.decoder.xpos = false;
    config.connector.kind = ConnectorKind::kXConnector;
    config.connector.heads = 32;
    config.connector.depth = 1;
    config.connector.dim_head = 64;
    return config;
  }
  if (name == "small") {  // the CPU comparison config of performance-anchors.md and its PyTorch peer
    DecoderConfig & d = config.decoder;
    d.vocab_size = 8000, d.layers = 4, d.embed_dim = 256, d.ffn_dim = 1024, d.heads = 4;
    d.tied = false, d.abs_pos = AbsolutePositions::kNone;
    VisionConfig & v = config.vision;
    v.hidden_size = 128, v.intermediate_size = 512, v.layers = 2, v.heads = 2, v.image_size = 112;
    ConnectorConfig & c = config.connector;
    c.depth = 2, c.heads = 2, c.dim_head = 64, c.num_latents = 16, c.num_media_embeds = 65;
    config.tokens.image = 7998, config.tokens.image_end = 7999;
    return config;
  }
  if (name == "tiny") {  // tests and quick CPU runs: every path, seconds per hundred steps
    DecoderConfig & d = config.decoder;
    d.vocab_size = 128, d.layers = 2, d.embed_dim = 64, d.ffn_dim = 256, d.heads = 4, d.max_positions = 256;
    VisionConfig & v = config.vision;
    v.hidden_size = 32, v.intermediate_size = 128, v.layers = 2, v.heads = 2, v.image_size = 28;
    ConnectorConfig & c = config.connector;
    c.depth = 1, c.heads = 2, c.dim_head = 16, c.num_latents = 8, c.num_media_embeds = 5;
    config.tokens.image = 126, config.tokens.image_end = 127;
    return config;
  }
  KOSMOS_FAIL("--preset ", name, " is not a preset; choose tiny, small, kosmos1 or kosmos2");
}

void validate(const KosmosConfig & config) {
  const DecoderConfig & d = config.decoder;
  const VisionConfig & v = config.vision;
  const ConnectorConfig & c = config.connector;
  for (const auto & [name, value] :
       {std::pair<const char *, int64_t>{"vocab_size", d.vocab_size}, {"decoder_layers", d.layers},
        {"decoder_embed_dim", d.embed_dim}, {"decoder_ffn_embed_dim", d.ffn_dim},
        {"decoder_attention_heads", d.heads}, {"vision.hidden_size", v.hidden_size},
        {"vision.intermediate_size", v.intermediate_size}, {"vision.num_attention_heads", v.heads},
        {"vision.patch_size", v.patch_size}, {"vision.image_size", v.image_size}, {"connector.heads", c.heads},
        {"connector.num_latents", c.num_latents}})
    KOSMOS_CHECK(value > 0, "model config: ", name, " = ", value, " must be positive");
  KOSMOS_CHECK(d.embed_dim % d.heads == 0, "model config: decoder_embed_dim ", d.embed_dim,
               " is not divisible by decoder_attention_heads ", d.heads, "; pick heads dividing the width");
  KOSMOS_CHECK(!d.xpos || config.head_dim() % 2 == 0, "model config: xPos needs an even head dim, but ",
               d.embed_dim, " / ", d.heads, " = ", config.head_dim());
  KOSMOS_CHECK(v.hidden_size % v.heads == 0, "model config: vision.hidden_size ", v.hidden_size,
               " is not divisible by vision.num_attention_heads ", v.heads);
  KOSMOS_CHECK(v.image_size % v.patch_size == 0, "model config: vision.image_size ", v.image_size,
               " is not a multiple of vision.patch_size ", v.patch_size);
  KOSMOS_CHECK(v.layers >= 0 && v.trainable_layers >= 0 && v.trainable_layers <= v.layers,
               "model config: vision.trainable_layers ", v.trainable_layers, " must be between 0 and ",
               "vision.num_hidden_layers ", v.layers);
  KOSMOS_CHECK(d.layers >= 1, "model config: decoder_layers ", d.layers, " must be >= 1");
  if (c.kind == ConnectorKind::kResampler) {
    KOSMOS_CHECK(c.depth >= 1 && c.dim_head > 0 && c.ff_mult > 0, "model config: connector depth ", c.depth,
                 ", dim_head ", c.dim_head, " and ff_mult ", c.ff_mult, " must be positive");
    KOSMOS_CHECK(c.num_media_embeds >= 1, "model config: connector.num_media_embeds ", c.num_media_embeds,
                 " must be >= 1 (row 0 is added to every image token)");
  } else {
    KOSMOS_CHECK(d.embed_dim % c.heads == 0, "model config: the XConnector attends at decoder_embed_dim ",
                 d.embed_dim, ", which connector.heads ", c.heads, " does not divide");
  }
  for (const auto & [name, id] : {std::pair<const char *, int64_t>{"bos_token_id", config.tokens.bos},
                                  {"pad_token_id", config.tokens.pad}, {"eos_token_id", config.tokens.eos},
                                  {"image_token_id", config.tokens.image},
                                  {"image_end_token_id", config.tokens.image_end}})
    KOSMOS_CHECK(id >= 0 && id < d.vocab_size, "model config: ", name, " = ", id, " is outside the vocabulary [0, ",
                 d.vocab_size, ")");
  KOSMOS_CHECK(d.abs_pos != AbsolutePositions::kLearned || d.max_positions > config.tokens.pad + 1,
               "model config: max_target_positions ", d.max_positions, " leaves no learned position: ids start at ",
               "pad_token_id + 1 = ", config.tokens.pad + 1);
  KOSMOS_CHECK(v.channels > 0 && d.xpos_scale_base > 0 && d.layernorm_eps > 0 && v.layernorm_eps > 0,
               "model config: num_channels ", v.channels, ", xpos_scale_base ", d.xpos_scale_base, ", layernorm_eps ",
               d.layernorm_eps, " and vision.layer_norm_eps ", v.layernorm_eps, " must all be positive");
  KOSMOS_CHECK(d.dropout >= 0 && d.dropout < 1 && d.attention_dropout >= 0 && d.attention_dropout < 1,
               "model config: dropout ", d.dropout, " and attention_dropout ", d.attention_dropout,
               " must be in [0, 1)");
}

KosmosConfig config_from_json(const std::string & json_text, const KosmosConfig & base, const std::string & source) {
  Json document;
  try {
    document = Json::parse(json_text);
  } catch (const Json::exception & error) {  // a syntax error, or a number out of range (1e999)
    KOSMOS_FAIL(source, ": not valid JSON: ", error.what());
  }
  KosmosConfig config = base;
  Reader top(document, source);
  read_decoder(top, config.decoder);
  read_tokens(top, config.tokens);
  if (document.is_object() && document.contains("vision")) {
    Reader in(document.at("vision"), source + ": vision");
    VisionConfig & v = config.vision;
    in.read("hidden_size", v.hidden_size);
    in.read("intermediate_size", v.intermediate_size);
    in.read("num_hidden_layers", v.layers);
    in.read("num_attention_heads", v.heads);
    in.read("patch_size", v.patch_size);
    in.read("image_size", v.image_size);
    in.read("num_channels", v.channels);
    in.read_choice("hidden_act", v.activation, {{"quick_gelu", Activation::kQuickGelu}, {"gelu", Activation::kGelu}});
    in.read("layer_norm_eps", v.layernorm_eps);
    in.read_choice("feature", v.feature,
                   {{"last_hidden_state", VisionFeature::kLastHiddenState},
                    {"post_layernorm_l2", VisionFeature::kPostLayerNormL2}});
    in.read("trainable_layers", v.trainable_layers);
    in.done();
  }
  if (document.is_object() && document.contains("connector")) {
    Reader in(document.at("connector"), source + ": connector");
    ConnectorConfig & c = config.connector;
    in.read_choice("type", c.kind, {{"resampler", ConnectorKind::kResampler}, {"xconnector", ConnectorKind::kXConnector}});
    in.read("depth", c.depth);
    in.read("dim_head", c.dim_head);
    in.read("heads", c.heads);
    in.read("num_latents", c.num_latents);
    in.read("ff_mult", c.ff_mult);
    in.read("num_media_embeds", c.num_media_embeds);
    in.done();
  }
  top.done({"vision", "connector"});
  validate(config);
  return config;
}

KosmosConfig config_from_hf_kosmos2(const std::string & json_text, const std::string & source) {
  Json document;
  try {
    document = Json::parse(json_text);
  } catch (const Json::exception & error) {  // a syntax error, or a number out of range (1e999)
    KOSMOS_FAIL(source, ": not valid JSON: ", error.what());
  }
  KOSMOS_CHECK(document.is_object() && document.contains("text_config") && document.contains("vision_config"), source,
               ": not an HF Kosmos-2 config (no text_config and vision_config); use --model-config for kosmos JSON");
  KosmosConfig config = preset("kosmos2");
  auto get = [&](const Json & object, const char * key, auto & field) {
    if (!object.contains(key) || object.at(key).is_null()) return;
    field = field_value<std::decay_t<decltype(field)>>(object.at(key), source + ": " + key);
  };
  const Json & text = document.at("text_config");
  DecoderConfig & d = config.decoder;
  get(text, "vocab_size", d.vocab_size);
  get(text, "embed_dim", d.embed_dim);
  get(text, "layers", d.layers);
  get(text, "ffn_dim", d.ffn_dim);
  get(text, "attention_heads", d.heads);
  get(text, "scale_embedding", d.scale_embedding);
  get(text, "layer_norm_eps", d.layernorm_eps);
  get(text, "dropout", d.dropout);
  get(text, "attention_dropout", d.attention_dropout);
  get(text, "max_position_embeddings", d.max_positions);
  get(text, "pad_token_id", config.tokens.pad);
  get(text, "bos_token_id", config.tokens.bos);
  get(text, "eos_token_id", config.tokens.eos);
  const Json & vision = document.at("vision_config");
  VisionConfig & v = config.vision;
  get(vision, "hidden_size", v.hidden_size);
  get(vision, "intermediate_size", v.intermediate_size);
  get(vision, "num_hidden_layers", v.layers);
  get(vision, "num_attention_heads", v.heads);
  get(vision, "image_size", v.image_size);
  get(vision, "patch_size", v.patch_size);
  get(vision, "num_channels", v.channels);
  get(vision, "layer_norm_eps", v.layernorm_eps);
  std::string act = "quick_gelu";
  get(vision, "hidden_act", act);
  KOSMOS_CHECK(act == "quick_gelu" || act == "gelu", source, ": vision_config.hidden_act \"", act,
               "\" is not quick_gelu or gelu");
  v.activation = act == "gelu" ? Activation::kGelu : Activation::kQuickGelu;
  get(document, "latent_query_num", config.connector.num_latents);
  config.connector.heads = d.heads;
  const bool full_vocab = d.vocab_size > 64004;
  config.tokens.image = full_vocab ? 64003 : d.vocab_size - 2;
  config.tokens.image_end = full_vocab ? 64004 : d.vocab_size - 1;
  validate(config);
  return config;
}

std::string config_to_json(const KosmosConfig & config) {
  const DecoderConfig & d = config.decoder;
  const VisionConfig & v = config.vision;
  const ConnectorConfig & c = config.connector;
  const SpecialTokens & t = config.tokens;
  Json document = {
      {"vocab_size", d.vocab_size},
      {"decoder_layers", d.layers},
      {"decoder_embed_dim", d.embed_dim},
      {"decoder_ffn_embed_dim", d.ffn_dim},
      {"decoder_attention_heads", d.heads},
      {"xpos_rel_pos", d.xpos},
      {"xpos_scale_base", d.xpos_scale_base},
      {"no_scale_embedding", !d.scale_embedding},
      {"share_decoder_input_output_embed", d.tied},
      {"layernorm_eps", d.layernorm_eps},
      {"abs_pos", positions_name(d.abs_pos)},
      {"max_target_positions", d.max_positions},
      {"dropout", d.dropout},
      {"attention_dropout", d.attention_dropout},
      {"bos_token_id", t.bos},
      {"pad_token_id", t.pad},
      {"eos_token_id", t.eos},
      {"unk_token_id", t.unk},
      {"image_token_id", t.image},
      {"image_end_token_id", t.image_end},
      {"vision",
       {{"hidden_size", v.hidden_size},
        {"intermediate_size", v.intermediate_size},
        {"num_hidden_layers", v.layers},
        {"num_attention_heads", v.heads},
        {"patch_size", v.patch_size},
        {"image_size", v.image_size},
        {"num_channels", v.channels},
        {"hidden_act", v.activation == Activation::kQuickGelu ? "quick_gelu" : "gelu"},
        {"layer_norm_eps", v.layernorm_eps},
        {"feature", feature_name(v.feature)},
        {"trainable_layers", v.trainable_layers}}},
      {"connector",
       {{"type", connector_name(c.kind)},
        {"depth", c.depth},
        {"dim_head", c.dim_head},
        {"heads", c.heads},
        {"num_latents", c.num_latents},
        {"ff_mult", c.ff_mult},
        {"num_media_embeds", c.num_media_embeds}}},
  };
  return document.dump(2);
}

}  // namespace kosmos::model
