// config.h: every hyper-parameter of a KOSMOS model, the four presets (tiny, small, kosmos1, kosmos2), and the
// JSON form whose keys are the peers' own names (torchscale DecoderConfig at the top level, HF CLIPVisionConfig
// under "vision", flamingo-pytorch PerceiverResampler under "connector"), so a PyTorch config ports by copying.
#pragma once

#include <cstdint>
#include <string>

#include "backends/ops.h"

namespace kosmos::model {

enum class AbsolutePositions : uint8_t { kNone, kSinusoidal, kLearned };
enum class VisionFeature : uint8_t {
  kLastHiddenState,   // the seed: CLIP's last_hidden_state, no post LayerNorm
  kPostLayerNormL2,   // Microsoft / Kosmos-2: post_layernorm on all tokens, then L2-normalised
};
enum class ConnectorKind : uint8_t {
  kResampler,   // flamingo-pytorch PerceiverResampler + a bias-free image projection (the paper, the seed)
  kXConnector,  // Kosmos-2: dense + one cross-attention from latent queries over [features; queries]
};

struct DecoderConfig {                  // torchscale DecoderConfig key in brackets
  int64_t vocab_size = 64007;           // [vocab_size]
  int64_t layers = 24;                  // [decoder_layers]
  int64_t embed_dim = 2048;             // [decoder_embed_dim]
  int64_t ffn_dim = 8192;               // [decoder_ffn_embed_dim]
  int64_t heads = 32;                   // [decoder_attention_heads]
  bool xpos = true;                     // [xpos_rel_pos]
  double xpos_scale_base = 512.0;       // [xpos_scale_base]
  bool scale_embedding = true;          // ![no_scale_embedding]: multiply token (and image) embeddings by sqrt(d)
  bool tied = true;                     // [share_decoder_input_output_embed]
  double layernorm_eps = 1e-5;          // [layernorm_eps]
  AbsolutePositions abs_pos = AbsolutePositions::kSinusoidal;  // [abs_pos]: none, sinusoidal, learned
  int64_t max_positions = 2048;         // [max_target_positions]: rows of the learned table (positions from 2)
  double dropout = 0.1;                 // [dropout]: embeddings, attention output, FFN output
  double attention_dropout = 0.1;       // [attention_dropout]
};

struct VisionConfig {                   // HF CLIPVisionConfig key in brackets
  int64_t hidden_size = 1024;           // [hidden_size]
  int64_t intermediate_size = 4096;     // [intermediate_size]
  int64_t layers = 24;                  // [num_hidden_layers]
  int64_t heads = 16;                   // [num_attention_heads]
  int64_t patch_size = 14;              // [patch_size]
  int64_t image_size = 224;             // [image_size]
  int64_t channels = 3;                 // [num_channels]
  Activation activation = Activation::kQuickGelu;  // [hidden_act]: quick_gelu or gelu
  double layernorm_eps = 1e-5;          // [layer_norm_eps]
  VisionFeature feature = VisionFeature::kPostLayerNormL2;  // [feature]: last_hidden_state, post_layernorm_l2
  int64_t trainable_layers = 1;         // [trainable_layers]: the last N encoder layers train, the rest is frozen

  int64_t patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t tokens() const { return patches() + 1; }  // with the class token
};

struct ConnectorConfig {                // flamingo-pytorch PerceiverResampler argument in brackets
  ConnectorKind kind = ConnectorKind::kResampler;  // [type]: resampler or xconnector
  int64_t depth = 2;                    // [depth]
  int64_t dim_head = 64;                // [dim_head]
  int64_t heads = 8;                    // [heads] (XConnector: the decoder's heads)
  int64_t num_latents = 64;             // [num_latents]: image slots per image in the sequence
  int64_t ff_mult = 4;                  // [ff_mult]
  int64_t num_media_embeds = 257;       // [num_media_embeds]: rows of media_pos_emb (only row 0 is used)
};

struct SpecialTokens {                  // ids, as in the Kosmos-2 tokenizer layout
  int64_t bos = 0, pad = 1, eos = 2, unk = 3;
  int64_t image = 64003;                // [image_token_id]: <image>
  int64_t image_end = 64004;            // [image_end_token_id]: </image>
};

struct KosmosConfig {
  DecoderConfig decoder;
  VisionConfig vision;
  ConnectorConfig connector;
  SpecialTokens tokens;

  int64_t image_slots() const { return connector.num_latents; }
  int64_t head_dim() const { return decoder.embed_dim / decoder.heads; }
};

// "tiny", "small", "kosmos1", "kosmos2"; an unknown name is an error listing these.
KosmosConfig preset(const std::string & name);
// Applies the keys of a JSON document onto `base` (unknown keys are an error naming them), then validates.
KosmosConfig config_from_json(const std::string & json_text, const KosmosConfig & base, const std::string & source);
std::string config_to_json(const KosmosConfig & config);
// The config.json of an HF Kosmos-2 folder (as save_pretrained writes it): text_config, vision_config and
// latent_query_num mapped onto the kosmos2 preset. HF marks image slots by a mask, not a token: <image> and
// </image> default to 64003/64004 (the Kosmos-2 tokenizer) when the vocabulary holds them, else to its last two ids.
KosmosConfig config_from_hf_kosmos2(const std::string & json_text, const std::string & source);
// Every constraint between hyper-parameters, each failure naming both numbers and a fix.
void validate(const KosmosConfig & config);

}  // namespace kosmos::model
