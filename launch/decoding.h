// decoding.h: what `forward`, `generate` and `eval` share: a model loaded from a checkpoint, safetensors weights or
// an HF folder; prompts made of images and text; and batched decoding (greedy, or sampled with temperature, top-k
// and top-p) with a KV cache; the loss of a forward. Under mpirun the model may be split over pp stages and tp ranks
// (any rank count pp x tp x dp; dp replicas decode the same): every rank takes the same tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/registry.h"
#include "io/tokenizer.h"
#include "model/kosmos.h"
#include "parallel/comm.h"

namespace kosmos {

// Where a model comes from: a checkpoint (its config inside), or a config with safetensors weights, or an HF
// Kosmos-2 folder.
struct ModelSource {
  std::string backend = "cpu";
  int device = 0;
  std::string checkpoint;            // step_N.h5, or a run folder (its newest checkpoint)
  std::string model_config;          // kosmos JSON (peer key names) ...
  std::string preset = "kosmos1";    // ... applied over this preset
  std::string weights;               // safetensors in any peer's names
  std::string hf_dir;                // config.json + model.safetensors
  int pp = 1, tp = 1;                // split over pipeline stages and tensor-parallel ranks (under mpirun)
  std::string precision = "fp32";    // or bf16 or fp16: the matmuls read a 16-bit copy of the weights (ModelState)
};

struct LoadedModel {
  model::KosmosConfig config;
  std::unique_ptr<Device> device;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<model::ParameterTable> table;
  std::unique_ptr<model::ModelState> state;
  std::string description;  // where it came from, for the log
  std::unique_ptr<parallel::ProcessGrid> grid;   // the world as dp x pp x tp
  std::vector<model::StageRange> stages;         // each pipeline stage's decoder layers
  std::unique_ptr<model::KosmosModel> model;     // this rank's part (its tp shards)
  std::unique_ptr<model::Arena> arena;           // the activations of one forward at a time, sized once
};

// Exactly one of checkpoint, weights (with model_config) or hf_dir; each missing or mismatched file is an error
// naming it. `image_token_id` >= 0 overrides the config's <image> id.
LoadedModel load_model(const BackendRegistry & registry, const ModelSource & source, int64_t image_token_id = -1);

// One prompt as the model sees it: <s>, then for each image <image> [slots] </image>, then the text's pieces.
std::vector<int32_t> prompt_tokens(const model::KosmosConfig & config, int64_t images,
                                   const std::vector<int32_t> & text);

struct Sampling {
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: all
  double top_p = 1.0;        // nucleus mass
  uint64_t seed = 1;
  // Ids at or above it are never picked (0: none left out): a tokenizer's count where the model's vocabulary is
  // padded past it (a dataset's, rounded up to 64), whose extra ids no text holds.
  int64_t vocab_limit = 0;
};

// Checks that `tokenizer` (read from `path`) is the one whose ids the model reads: its ids within the model's
// vocabulary and its <image> the model's. An error naming both and the fix otherwise.
void check_tokenizer_matches(const io::Tokenizer & tokenizer, const std::string & path,
                             const model::KosmosConfig & config);

// Continues every row of `prompts` (B rows of one length, with their images and slots) by up to `max_new` tokens,
// stopping a row at </s> unless `ignore_eos`, with a KV cache: the prompt runs once, then one token per row per
// step. Returns each row's new tokens (its </s> included); `step_logits` gets each step's [B, V] logits.
std::vector<std::vector<int32_t>> decode(LoadedModel & loaded, const model::Batch & prompts, int64_t max_new,
                                         const Sampling & sampling, bool ignore_eos,
                                         std::vector<std::vector<float>> * step_logits = nullptr);

// The logits [B*T, V] of one forward of `batch` (one rank, no split).
std::vector<float> forward_logits(LoadedModel & loaded, const model::Batch & batch);
// The summed weighted token loss of one forward of `batch` (its targets and loss weights) over the grid: the stages
// in turn, the vocabulary over tp; on every rank of the pipeline.
double forward_loss(LoadedModel & loaded, const model::Batch & batch);
// One step of incremental decoding over the grid: `batch` is the prompt (the cache empty) or one new token per row;
// returns the logits [B, V] of each row's last position, on every rank.
std::vector<float> decode_logits(LoadedModel & loaded, const model::Batch & batch, model::DecodeCache & cache);

}  // namespace kosmos
