// weights.cpp: name mapping from the peers' checkpoints onto the parameter table, with shape checks.
#include "io/weights.h"

#include <map>
#include <set>
#include <utility>

#include "backends/error.h"
#include "backends/tensor.h"

namespace kosmos::io {
namespace {

bool starts_with(const std::string & text, const std::string & prefix) { return text.rfind(prefix, 0) == 0; }
bool ends_with(const std::string & text, const std::string & suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string parameter_name_for(const std::string & file_name, const model::ParameterTable & table) {
  // Buffers some peers save with the weights: constants, recomputed here.
  for (const char * buffer : {".xpos.scale", "position_ids", "._float_tensor", "embed_positions.weights",
                              "self_attn_sope.scale"})
    if (ends_with(file_name, buffer)) return "";
  std::string name = file_name;
  if (starts_with(name, "text_model.model.")) name = "decoder." + name.substr(17);           // HF Kosmos-2
  else if (name == "text_model.lm_head.weight") name = "decoder.output_projection.weight";
  else if (starts_with(name, "vision_model.model.")) name = "clip_model." + name.substr(19);
  else if (starts_with(name, "vision_model.")) name = "clip_model." + name.substr(13);       // HF CLIP tower
  else if (name == "embed.weight") name = "decoder.embed_tokens.weight";                     // seed duplicates
  else if (name == "output_projection.weight") name = "decoder.output_projection.weight";
  if (name == "decoder.output_projection.weight" && !table.contains(name)) return "decoder.embed_tokens.weight";
  return table.contains(name) ? name : "?";
}

WeightsReport load_weights(model::ModelState & state, const SafetensorsFile & file, Stream & stream) {
  const model::ParameterTable & table = state.table();
  WeightsReport report;
  std::map<std::string, std::string> source_of;  // our name -> the file name it came from
  std::vector<std::string> unexpected;
  for (const auto & [file_name, entry] : file.entries()) {
    const std::string name = parameter_name_for(file_name, table);
    if (name.empty()) {
      ++report.skipped;
      continue;
    }
    if (name == "?") {
      unexpected.push_back(file_name);
      continue;
    }
    const model::ParameterSpec & spec = table.find(name);
    KOSMOS_CHECK(entry.shape == spec.shape, file.path(), ": tensor '", file_name, "' has shape ",
                 describe_dims(entry.shape), " but the model's ", name, " is ", describe_dims(spec.shape),
                 "; the model config does not match this checkpoint (compare its sizes with --model-config)");
    const auto previous = source_of.find(name);
    if (!spec.held) {  // another pipeline stage's parameter: that stage loads it and compares its duplicates
      ++(previous == source_of.end() ? report.loaded : report.skipped);
      source_of.emplace(name, file_name);
      continue;
    }
    std::vector<float> values = file.read_f32(file_name);
    if (previous != source_of.end()) {  // a tied or duplicated tensor: both copies must agree
      const std::vector<float> first = file.read_f32(previous->second);
      KOSMOS_CHECK(first == values, file.path(), ": '", previous->second, "' and '", file_name,
                   "' are the same parameter (", name, ") but hold different values");
      ++report.skipped;
      continue;
    }
    source_of.emplace(name, file_name);
    values = model::local_values(spec, std::move(values));  // a tensor-parallel rank's rows or columns
    TensorView source = state.value(spec);
    source.data = values.data();
    state.device().copy(state.value(spec), source, stream);
    stream.synchronize();
    ++report.loaded;
  }
  // A file of only vision_model.* tensors is the CLIP tower alone: the rest keeps its initialisation.
  report.vision_only = !source_of.empty();
  for (const auto & [name, from] : source_of) report.vision_only = report.vision_only && starts_with(name, "clip_model.");
  std::vector<std::string> missing;
  for (const model::ParameterSpec & spec : table.specs())
    if (!source_of.count(spec.name) && (!report.vision_only || starts_with(spec.name, "clip_model.")))
      missing.push_back(spec.name);
  if (!missing.empty() || !unexpected.empty()) {
    std::string text;
    for (size_t i = 0; i < missing.size() && i < 40; ++i) text += (i ? ", " : "") + missing[i];
    std::string extra;
    for (size_t i = 0; i < unexpected.size() && i < 40; ++i) extra += (i ? ", " : "") + unexpected[i];
    KOSMOS_FAIL(file.path(), ": does not match the model: ", missing.size(), " parameters missing",
                missing.empty() ? "" : " (" + text + (missing.size() > 40 ? ", ..." : "") + ")", " and ",
                unexpected.size(), " unexpected tensors",
                unexpected.empty() ? "" : " (" + extra + (unexpected.size() > 40 ? ", ..." : "") + ")",
                "; check the model config (preset, connector type, layer counts) against the checkpoint");
  }
  return report;
}

WeightNames weight_names_from(const std::string & text) {
  if (text == "seed") return WeightNames::kSeed;
  if (text == "hf-kosmos2") return WeightNames::kHfKosmos2;
  KOSMOS_FAIL("weight names '", text, "' are not known; use seed (torchscale decoder, HF CLIP, flamingo-pytorch) or "
              "hf-kosmos2");
}

std::vector<std::string> peer_names_for(const std::string & name, const model::ParameterTable & table,
                                        WeightNames names) {
  const bool tied_embedding = name == "decoder.embed_tokens.weight" && !table.contains("decoder.output_projection.weight");
  switch (names) {
    case WeightNames::kSeed:
      if (tied_embedding) return {name, "decoder.output_projection.weight"};
      return {name};
    case WeightNames::kHfKosmos2:
      if (starts_with(name, "decoder.output_projection.")) return {"text_model.lm_head.weight"};
      if (starts_with(name, "decoder.")) return {"text_model.model." + name.substr(8)};
      if (starts_with(name, "clip_model.")) return {"vision_model.model." + name.substr(11)};
      return {name};
  }
  KOSMOS_FAIL("peer_names_for: unknown weight names ", static_cast<int>(names), " (known: seed, hf-kosmos2)");
}

void save_weights(const model::ModelState & state, const std::string & path, Stream & stream, WeightNames names,
                  const std::string & model_config) {
  KOSMOS_CHECK(state.table().holds_whole_model(), "save_weights: this rank holds only its pipeline stage's or "
               "tensor-parallel rank's part of the parameters; save them through Trainer::collect_parameters (internal "
               "error)");
  std::vector<std::vector<float>> values;
  for (const model::ParameterSpec & spec : state.table().specs()) {
    values.emplace_back(static_cast<size_t>(spec.numel));
    TensorView target = state.value(spec);
    target.data = values.back().data();
    state.device().copy(target, state.value(spec), stream);
    stream.synchronize();
  }
  save_weights(state.table(), std::move(values), path, names, model_config);
}

void save_weights(const model::ParameterTable & table, std::vector<std::vector<float>> values, const std::string & path,
                  WeightNames names, const std::string & model_config) {
  const std::vector<model::ParameterSpec> & specs = table.specs();
  KOSMOS_CHECK(values.size() == specs.size(), "save_weights: ", values.size(), " tensors for ", specs.size(),
               " parameters (internal error)");
  std::map<std::string, SafetensorsTensor> tensors;
  for (size_t i = 0; i < specs.size(); ++i) {
    KOSMOS_CHECK(static_cast<int64_t>(values[i].size()) == specs[i].numel, "save_weights: ", values[i].size(),
                 " values for ", specs[i].name, " of ", specs[i].numel, " (internal error)");
    const std::vector<std::string> peer_names = peer_names_for(specs[i].name, table, names);
    for (size_t n = 0; n < peer_names.size(); ++n)  // the last name takes the values, the others a copy
      tensors[peer_names[n]] = {specs[i].shape, n + 1 < peer_names.size() ? values[i] : std::move(values[i])};
  }
  std::map<std::string, std::string> metadata;
  if (!model_config.empty()) metadata[kModelConfigKey] = model_config;
  write_safetensors(path, tensors, metadata);
}

}  // namespace kosmos::io
