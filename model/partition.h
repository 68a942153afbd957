// partition.h: where the pipeline cuts the model. A cost model counts each virtual stage's FLOPs per micro-batch:
// decoder layers (forward + backward), the image path on the first (the frozen CLIP layers run forward only, the
// trainable ones forward and backward, plus the connector), the head and loss on the last; the cuts minimise the
// most expensive stage. The user may give the layer counts instead (--stage-layers). And which stage owns, and which
// holds, each parameter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/kosmos.h"

namespace kosmos::model {

struct StageCosts {
  double layer = 0.0;       // one decoder layer, forward + backward
  double image_path = 0.0;  // vision tower + connector (first stage)
  double head = 0.0;        // final LayerNorm, output projection, loss (last stage)
};
// FLOPs per micro-batch of `sequences` x `length` tokens holding `images` images.
StageCosts stage_costs(const KosmosConfig & config, int64_t sequences, int64_t length, int64_t images);

// The model FLOPs of one training step over `sequences` x `length` tokens holding `images` images (forward and
// backward, frozen CLIP layers forward only), counting attention over the causal half of T x T or, with
// `full_attention`, over all of it (the usual MFU convention; report both).
double step_flops(const KosmosConfig & config, int64_t sequences, int64_t length, int64_t images, bool full_attention);

// The layer range of each of `stages` virtual stages, in order. `layers_per_stage` (from --stage-layers) overrides
// the cost model; it must have one positive entry per stage summing to the decoder's layers.
std::vector<StageRange> partition_stages(const KosmosConfig & config, int stages, const StageCosts & costs,
                                         const std::vector<int64_t> & layers_per_stage = {});

// The pipeline stage of `stages` (cut into `virtual_stages` as partition_stages gives them: chunk c of stage s is
// c * stages + s) that owns parameter `name`: a decoder layer's stage; the last for the final LayerNorm and an
// untied head; the first for the rest (the image path and the embeddings, a tied embedding included).
int owning_stage(const std::string & name, const std::vector<StageRange> & virtual_stages, int stages,
                 const DecoderConfig & decoder);
// Whether stage `stage` holds parameter `name` (keeps its value, and for a trainable one computes its gradient and
// updates it): the parameters it owns, and on the last stage a tied embedding, which is its head.
bool stage_holds(const std::string & name, int stage, const std::vector<StageRange> & virtual_stages, int stages,
                 const DecoderConfig & decoder);
// stage_holds for stage `stage`, as a ParameterTable takes it.
HoldsParameter stage_holding(int stage, const std::vector<StageRange> & virtual_stages, int stages,
                             const DecoderConfig & decoder);

// The cost of each stage under a partition (for logs and tests).
std::vector<double> partition_costs(const std::vector<StageRange> & stages, const StageCosts & costs);

}  // namespace kosmos::model
