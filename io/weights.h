// weights.h: loading safetensors weights into a model, whatever peer wrote them: the seed composition
// (clip_model.*, perceive.*, image_proj.weight, decoder.* as torchscale names them, embed.* and output_projection.*
// duplicates allowed), the HF CLIP vision tower alone (vision_model.*), or a whole HF Kosmos-2 checkpoint
// (text_model.*, vision_model.model.*, image_to_text_projection.*). Buffers the peers save (xPos scales, position
// ids) are skipped. Missing and unexpected names are reported together in one error.
#pragma once

#include <string>
#include <vector>

#include "backends/device.h"
#include "io/safetensors.h"
#include "model/parameters.h"

namespace kosmos::io {

struct WeightsReport {
  int64_t loaded = 0;         // tensors copied into the model
  int64_t skipped = 0;        // buffers and tied duplicates
  bool vision_only = false;   // a CLIP tower file: only clip_model.* was required
};

// Our parameter name for a name in a peer's file; "" for a buffer to skip; "?" when unknown.
std::string parameter_name_for(const std::string & file_name, const model::ParameterTable & table);

WeightsReport load_weights(model::ModelState & state, const SafetensorsFile & file, Stream & stream);

// The names a weights file is written with, each a peer's own so that PyTorch loads it: the seed composition's
// (the torchscale decoder, with the tied output_projection beside embed_tokens as its state_dict has it; the HF
// CLIP tower as clip_model.*; the flamingo-pytorch resampler as perceive.*), or HF Kosmos-2's (text_model.model.*,
// vision_model.model.*, image_to_text_projection.*; a tied lm_head is left out, as save_pretrained does).
enum class WeightNames : uint8_t { kSeed, kHfKosmos2 };
// "seed" or "hf-kosmos2"; anything else is an error listing both.
WeightNames weight_names_from(const std::string & text);
// The names parameter `name` is written under (two for a tied seed embedding; none for a tied HF head).
std::vector<std::string> peer_names_for(const std::string & name, const model::ParameterTable & table,
                                        WeightNames names);

// Writes every parameter of the model, f32, under the peer's names: from a state that holds them all, or from
// their host values in table order (Trainer::collect_parameters gathers them from the pipeline stages). With
// `model_config` (model::config_to_json) the file's metadata keeps it as kModelConfigKey, so that the file alone
// says which model it is (a dataset's vocabulary and special ids, which no preset has).
void save_weights(const model::ModelState & state, const std::string & path, Stream & stream,
                  WeightNames names = WeightNames::kSeed, const std::string & model_config = "");
void save_weights(const model::ParameterTable & table, std::vector<std::vector<float>> values, const std::string & path,
                  WeightNames names = WeightNames::kSeed, const std::string & model_config = "");
constexpr const char * kModelConfigKey = "kosmos_model_config";

}  // namespace kosmos::io
