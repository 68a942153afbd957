// partition.cpp: the stage cost model, the min-max contiguous split of the decoder layers over the stages, and each
// parameter's owning and holding stages.
#include "model/partition.h"

#include <algorithm>
#include <limits>

#include "backends/error.h"

namespace kosmos::model {

int owning_stage(const std::string & name, const std::vector<StageRange> & virtual_stages, int stages,
                 const DecoderConfig & decoder) {
  if (stages == 1) return 0;
  const std::string layers = "decoder.layers.";
  if (name.rfind(layers, 0) == 0) {
    const int64_t layer = std::stoll(name.substr(layers.size()));
    for (size_t virtual_stage = 0; virtual_stage < virtual_stages.size(); ++virtual_stage) {
      const StageRange & range = virtual_stages[virtual_stage];
      const int64_t end = range.layer_end < 0 ? decoder.layers : range.layer_end;
      if (layer >= range.layer_begin && layer < end) return static_cast<int>(virtual_stage) % stages;
    }
    KOSMOS_FAIL("decoder layer ", layer, " is in no pipeline stage (internal error)");
  }
  if (name.rfind("decoder.layer_norm.", 0) == 0 || name == "decoder.output_projection.weight") return stages - 1;
  return 0;
}

bool stage_holds(const std::string & name, int stage, const std::vector<StageRange> & virtual_stages, int stages,
                 const DecoderConfig & decoder) {
  const bool tied_head = stage == stages - 1 && decoder.tied && name == "decoder.embed_tokens.weight";
  return tied_head || owning_stage(name, virtual_stages, stages, decoder) == stage;
}

HoldsParameter stage_holding(int stage, const std::vector<StageRange> & virtual_stages, int stages,
                             const DecoderConfig & decoder) {
  return [=](const std::string & name) { return stage_holds(name, stage, virtual_stages, stages, decoder); };
}

StageCosts stage_costs(const KosmosConfig & config, int64_t sequences, int64_t length, int64_t images) {
  const DecoderConfig & d = config.decoder;
  const VisionConfig & v = config.vision;
  const ConnectorConfig & c = config.connector;
  const double tokens = static_cast<double>(sequences * length);
  StageCosts costs;
  // A matmul costs 2 FLOPs per multiply-add forward and twice that backward; causal attention half of T x T.
  const double layer_weights = 4.0 * d.embed_dim * d.embed_dim + 2.0 * d.embed_dim * d.ffn_dim;
  costs.layer = 6.0 * layer_weights * tokens + 6.0 * d.embed_dim * static_cast<double>(length) * tokens;
  costs.head = 6.0 * static_cast<double>(d.embed_dim) * d.vocab_size * tokens;
  const double vision_tokens = static_cast<double>(images * v.tokens());
  const double vision_layer = (4.0 * v.hidden_size * v.hidden_size + 2.0 * v.hidden_size * v.intermediate_size) *
                                  vision_tokens +
                              2.0 * v.hidden_size * v.tokens() * vision_tokens;
  const double frozen = static_cast<double>(v.layers - v.trainable_layers), trained = static_cast<double>(v.trainable_layers);
  const double connector_width = c.kind == ConnectorKind::kResampler ? static_cast<double>(v.hidden_size)
                                                                     : static_cast<double>(d.embed_dim);
  const double connector = 6.0 * static_cast<double>(images * c.num_latents) *
                           (4.0 * connector_width * connector_width * std::max<int64_t>(1, c.depth));
  costs.image_path = 2.0 * vision_layer * frozen + 6.0 * vision_layer * trained + connector;
  return costs;
}

double step_flops(const KosmosConfig & config, int64_t sequences, int64_t length, int64_t images, bool full_attention) {
  const StageCosts costs = stage_costs(config, sequences, length, images);
  const double tokens = static_cast<double>(sequences * length);
  const double other_half = full_attention ? 6.0 * config.decoder.embed_dim * static_cast<double>(length) * tokens : 0.0;
  return static_cast<double>(config.decoder.layers) * (costs.layer + other_half) + costs.image_path + costs.head;
}

std::vector<double> partition_costs(const std::vector<StageRange> & stages, const StageCosts & costs) {
  std::vector<double> result;
  for (const StageRange & s : stages)
    result.push_back(static_cast<double>(s.layer_end - s.layer_begin) * costs.layer + (s.first ? costs.image_path : 0.0) +
                     (s.last ? costs.head : 0.0));
  return result;
}

std::vector<StageRange> partition_stages(const KosmosConfig & config, int stages, const StageCosts & costs,
                                         const std::vector<int64_t> & layers_per_stage) {
  const int64_t layers = config.decoder.layers;
  KOSMOS_CHECK(stages >= 1 && layers >= stages, stages, " pipeline (virtual) stages but the decoder has ", layers,
               " layers; every stage needs at least one layer (lower --pp or --chunks)");
  std::vector<int64_t> counts = layers_per_stage;
  if (!counts.empty()) {
    int64_t total = 0;
    for (int64_t count : counts) total += count;
    KOSMOS_CHECK(static_cast<int>(counts.size()) == stages && total == layers &&
                     std::all_of(counts.begin(), counts.end(), [](int64_t n) { return n >= 1; }),
                 "--stage-layers gives ", counts.size(), " stages holding ", total, " layers; the pipeline has ",
                 stages, " (virtual) stages and the decoder ", layers, " layers, each stage at least one");
  } else {
    // best[s][l]: the least possible maximum stage cost when stages 0..s hold the first l layers.
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<std::vector<double>> best(stages, std::vector<double>(layers + 1, inf));
    std::vector<std::vector<int64_t>> cut(stages, std::vector<int64_t>(layers + 1, 0));
    auto cost_of = [&](int s, int64_t count) {
      return static_cast<double>(count) * costs.layer + (s == 0 ? costs.image_path : 0.0) +
             (s == stages - 1 ? costs.head : 0.0);
    };
    for (int64_t l = 1; l <= layers; ++l) best[0][l] = cost_of(0, l);
    for (int s = 1; s < stages; ++s)
      for (int64_t l = s + 1; l <= layers; ++l)
        for (int64_t first = s; first < l; ++first) {  // stage s holds layers [first, l)
          const double worst = std::max(best[s - 1][first], cost_of(s, l - first));
          if (worst < best[s][l]) best[s][l] = worst, cut[s][l] = first;
        }
    counts.assign(static_cast<size_t>(stages), 0);
    int64_t end = layers;
    for (int s = stages - 1; s > 0; --s) {
      counts[static_cast<size_t>(s)] = end - cut[s][end];
      end = cut[s][end];
    }
    counts[0] = end;
  }
  std::vector<StageRange> ranges;
  int64_t begin = 0;
  for (int s = 0; s < stages; ++s) {
    ranges.push_back(StageRange{s == 0, s == stages - 1, begin, begin + counts[static_cast<size_t>(s)]});
    begin += counts[static_cast<size_t>(s)];
  }
  return ranges;
}

}  // namespace kosmos::model
