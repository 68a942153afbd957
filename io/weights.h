// weights.h: loading safetensors weights into a model, whatever peer wrote them: the seed composition
// (clip_model.*, perceive.*, image_proj.weight, decoder.* as torchscale names them, embed.* and output_projection.*
// duplicates allowed), the HF CLIP vision tower alone (vision_model.*), or a whole HF Kosmos-2 checkpoint
// (text_model.*, vision_model.model.*, image_to_text_projection.*). Buffers the peers save (xPos scales, position
// ids) are skipped. Missing and unexpected names are reported together in one error.
#pragma once

#include <string>

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

// Writes every parameter of the model under its (seed-composition) name, f32.
void save_weights(const model::ModelState & state, const std::string & path, Stream & stream);

}  // namespace kosmos::io
