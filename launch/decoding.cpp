// decoding.cpp: model loading for inference and batched decoding (decoding.h).
#include "launch/decoding.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>

#include "backends/error.h"
#include "backends/philox.h"
#include "io/checkpoint.h"
#include "io/checkpoint_dir.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "launch/files.h"
#include "launch/launch.h"
#include "model/partition.h"

namespace kosmos {

LoadedModel load_model(const BackendRegistry & registry, const ModelSource & source, int64_t image_token_id) {
  const int given = !source.checkpoint.empty() + !source.weights.empty() + !source.hf_dir.empty();
  KOSMOS_CHECK(given == 1, "give one model: --checkpoint FILE.h5 (or a run folder), --model-config FILE with "
               "--weights FILE.safetensors, or --hf DIR");
  KOSMOS_CHECK(source.model_config.empty() || !source.weights.empty(), "--model-config ", source.model_config,
               " goes with --weights only: ", source.checkpoint.empty() ? "--hf's config.json" : "the checkpoint's own",
               " record says what the model is; leave --model-config out");
  LoadedModel loaded;
  // A checkpoint file, or a run folder's checkpoints newest first: a damaged one falls back to the one before it, as
  // `train --resume auto` does (the model config from the first whose record reads, the values from the first whose
  // data read on every rank).
  std::vector<std::string> checkpoints;
  if (!source.checkpoint.empty()) {
    const std::vector<std::string> candidates = io::resume_candidates(source.checkpoint, "", "--checkpoint");
    std::string first_error;
    for (size_t i = 0; i < candidates.size() && checkpoints.empty(); ++i) {
      try {
        loaded.config = model::config_from_json(io::read_checkpoint_info(candidates[i]).model_config,
                                                model::preset(source.preset), candidates[i] + " (/meta model_config)");
        checkpoints.assign(candidates.begin() + static_cast<std::ptrdiff_t>(i), candidates.end());
      } catch (const Error & error) {
        if (first_error.empty()) first_error = error.what();
      }
    }
    KOSMOS_CHECK(!checkpoints.empty(), first_error, candidates.size() > 1 ? " (and every older checkpoint too)" : "");
    loaded.description = checkpoints.front();
  } else if (!source.hf_dir.empty()) {
    loaded.config = model::config_from_hf_kosmos2(read_text_file(source.hf_dir + "/config.json"),
                                                  source.hf_dir + "/config.json");
    loaded.description = source.hf_dir;
  } else {
    // --model-config, else the one our own safetensors files keep in their metadata (io::save_weights).
    const std::string kept =
        source.model_config.empty() ? io::SafetensorsFile(source.weights).metadata(io::kModelConfigKey) : "";
    KOSMOS_CHECK(!source.model_config.empty() || !kept.empty(), "--weights ", source.weights, " needs --model-config "
                 "(the model the weights belong to): the file does not say (a peer's file, or ours from before the "
                 "model config went into its metadata)");
    loaded.config = source.model_config.empty()
                        ? model::config_from_json(kept, model::preset(source.preset),
                                                  source.weights + " (__metadata__ " + io::kModelConfigKey + ")")
                        : model::config_from_json(read_text_file(source.model_config), model::preset(source.preset),
                                                  source.model_config);
    loaded.description = source.weights;
  }
  if (image_token_id >= 0) loaded.config.tokens.image = image_token_id;
  model::validate(loaded.config);
  loaded.device = registry.create(source.backend, source.device);
  loaded.stream = loaded.device->create_stream();
  std::unique_ptr<parallel::Comm> world = world_for(*loaded.device);
  const parallel::GridShape shape = parallel::grid_for(world->size(), 0, source.pp, source.tp);
  loaded.grid = std::make_unique<parallel::ProcessGrid>(shape, std::move(world));
  // Stage cuts for a prompt of one sequence, about 64 positions and one image: they only balance the stages.
  loaded.stages = model::partition_stages(loaded.config, shape.pp, model::stage_costs(loaded.config, 1, 64, 1), {});
  // Each rank holds its tp shards of its stage's parameters.
  loaded.table = std::make_unique<model::ParameterTable>(
      loaded.config, model::stage_holding(loaded.grid->coord().pp, loaded.stages, shape.pp, loaded.config.decoder),
      model::TensorParallelRank{loaded.grid->coord().tp, shape.tp});
  loaded.state = std::make_unique<model::ModelState>(*loaded.device, *loaded.table,
                                                     precision_dtype(source.precision));
  if (!checkpoints.empty()) {
    std::vector<std::string> warnings;
    loaded.description = io::read_newest_checkpoint(checkpoints, *loaded.state, false, loaded.grid->world(),
                                                    *loaded.stream, warnings).first;
    if (loaded.grid->world().rank() == 0)
      for (const std::string & warning : warnings) std::cerr << "warning: " << warning << "\n";
  } else {
    const std::string weights = source.hf_dir.empty() ? source.weights : source.hf_dir + "/model.safetensors";
    const io::WeightsReport report = io::load_weights(*loaded.state, io::SafetensorsFile(weights), *loaded.stream);
    KOSMOS_CHECK(!report.vision_only, weights, " holds only a CLIP vision tower; inference needs a whole "
                 "checkpoint (seed composition or HF Kosmos-2)");
  }
  loaded.state->refresh_compute_values(*loaded.stream);  // the loaded values, in the matmuls' dtype
  loaded.arena = std::make_unique<model::Arena>(*loaded.device);
  loaded.model = std::make_unique<model::KosmosModel>(
      loaded.config, *loaded.state, shape.tp > 1 ? &loaded.grid->group(parallel::Axis::kTensor) : nullptr);
  return loaded;
}

std::vector<int32_t> prompt_tokens(const model::KosmosConfig & config, int64_t images,
                                   const std::vector<int32_t> & text) {
  std::vector<int32_t> tokens{static_cast<int32_t>(config.tokens.bos)};
  for (int64_t i = 0; i < images; ++i) {
    tokens.insert(tokens.end(), static_cast<size_t>(config.image_slots() + 1), static_cast<int32_t>(config.tokens.image));
    tokens.push_back(static_cast<int32_t>(config.tokens.image_end));
  }
  tokens.insert(tokens.end(), text.begin(), text.end());
  return tokens;
}

namespace {

// The batch with no targets: inference computes no loss worth keeping.
model::Batch without_targets(const model::Batch & batch) {
  model::Batch input = batch;
  input.targets.assign(input.tokens.size(), 0);
  input.loss_weights.assign(input.tokens.size(), 0.0f);
  return input;
}

// The next token from one row's logits: the largest, or a draw from the tempered, top-k and top-p cut softmax.
int32_t pick(const float * logits, int64_t vocab, const Sampling & sampling, uint64_t draw_index) {
  if (sampling.temperature <= 0.0) return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const int64_t keep = sampling.top_k > 0 ? std::min(sampling.top_k, vocab) : vocab;
  std::vector<double> weights;
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    weights.push_back(std::exp((logits[order[static_cast<size_t>(i)]] - logits[order[0]]) / sampling.temperature));
    total += weights.back();
  }
  double mass = 0.0;  // the smallest prefix holding top_p of the mass
  size_t kept = 0;
  while (kept < weights.size() && (kept == 0 || mass < sampling.top_p * total)) mass += weights[kept++];
  const double u = philox_uniform(sampling.seed, draw_index) * mass;
  double running = 0.0;
  for (size_t i = 0; i < kept; ++i)
    if ((running += weights[i]) > u) return order[i];
  return order[kept - 1];
}

}  // namespace

std::vector<float> forward_logits(LoadedModel & loaded, const model::Batch & batch) {
  KOSMOS_CHECK(loaded.grid->shape().world() == 1, "kosmos forward writes the whole logits from one rank; run it "
               "without mpirun (generate and eval split the model with --pp and --tp)");
  loaded.arena->reset();  // the previous forward's views are done with
  model::Runtime rt{*loaded.device, *loaded.stream, *loaded.arena};
  std::vector<float> logits;
  loaded.model->run(rt, without_targets(batch), 1.0f, {0, 0, false}, false, &logits);
  return logits;
}

// One micro-batch of `rows` positions through the pipeline: this stage receives the previous stage's activations
// [rows, d] (but the first), runs `run_stage(range, received, sent)` with a buffer for its own (but the last) and
// sends them on.
template <typename RunStage>
void through_pipeline(LoadedModel & loaded, model::Runtime & rt, int64_t rows, RunStage && run_stage) {
  const int stage = loaded.grid->coord().pp, stages = loaded.grid->shape().pp;
  const int64_t d = loaded.config.decoder.embed_dim;
  parallel::Comm & pipeline = loaded.grid->group(parallel::Axis::kPipeline);
  const bool first = stage == 0, last = stage == stages - 1;
  const TensorView received = first ? TensorView{} : rt.take({rows, d});  // [rows, d] f32
  const TensorView sent = last ? TensorView{} : rt.take({rows, d});       // [rows, d] f32
  if (!first) pipeline.recv(received, stage - 1, rt.stream);
  run_stage(loaded.stages[static_cast<size_t>(stage)], received, sent);
  if (!last) pipeline.send(sent, stage + 1, rt.stream);
}

double forward_loss(LoadedModel & loaded, const model::Batch & batch) {
  loaded.arena->reset();  // the previous forward's views are done with
  model::Runtime rt{*loaded.device, *loaded.stream, *loaded.arena};
  double loss = 0.0;  // the last stage's
  through_pipeline(loaded, rt, batch.batch * batch.length,
                   [&](const model::StageRange & range, TensorView received, TensorView sent) {
                     model::MicroState state;
                     loss = loaded.model->stage_forward(rt, range, batch, received, sent, 1.0f, {0, 0, false}, false,
                                                        state);
                   });
  static_assert(sizeof loss == 2 * sizeof(int32_t), "the loss travels as two i32 words, bit for bit");
  loaded.grid->group(parallel::Axis::kPipeline)
      .broadcast(make_view(&loss, DType::kI32, {2}), loaded.grid->shape().pp - 1, rt.stream);
  return loss;
}

std::vector<float> decode_logits(LoadedModel & loaded, const model::Batch & batch, model::DecodeCache & cache) {
  const parallel::GridShape & shape = loaded.grid->shape();
  const int vocab = static_cast<int>(loaded.config.decoder.vocab_size);
  const int64_t rows = batch.batch, local = vocab / shape.tp;
  const bool last = loaded.grid->coord().pp == shape.pp - 1;
  loaded.arena->reset();  // the previous forward's views are done with
  model::Runtime rt{*loaded.device, *loaded.stream, *loaded.arena};
  std::vector<float> slice;  // [B*n, V/tp] on the last stage
  through_pipeline(loaded, rt, rows * batch.length,
                   [&](const model::StageRange & range, TensorView received, TensorView sent) {
                     loaded.model->stage_decode(rt, range, batch, received, sent, cache, last ? &slice : nullptr);
                   });
  // The last positions' rows of this rank's vocabulary slice, gathered over tp, sent from the last stage to all.
  std::vector<float> mine(static_cast<size_t>(rows * local)), gathered(static_cast<size_t>(shape.tp * rows * local));
  if (last)
    for (int64_t b = 0; b < rows; ++b)
      std::copy_n(slice.begin() + ((b + 1) * batch.length - 1) * local, local, mine.begin() + b * local);
  loaded.grid->group(parallel::Axis::kTensor)
      .all_gather(make_view(gathered.data(), DType::kF32, {static_cast<int64_t>(gathered.size())}),
                  make_view(mine.data(), DType::kF32, {static_cast<int64_t>(mine.size())}), rt.stream);
  std::vector<float> logits(static_cast<size_t>(rows * vocab));  // [B, V] from [tp, B, V/tp]
  for (int r = 0; r < shape.tp; ++r)
    for (int64_t b = 0; b < rows; ++b)
      std::copy_n(gathered.begin() + (r * rows + b) * local, local, logits.begin() + b * vocab + r * local);
  loaded.grid->group(parallel::Axis::kPipeline)
      .broadcast(make_view(logits.data(), DType::kF32, {static_cast<int64_t>(logits.size())}), shape.pp - 1,
                 rt.stream);
  return logits;
}

void check_tokenizer_matches(const io::Tokenizer & tokenizer, const std::string & path,
                             const model::KosmosConfig & config) {
  KOSMOS_CHECK(tokenizer.vocab_size() <= config.decoder.vocab_size && tokenizer.image() == config.tokens.image,
               "--tokenizer ", path, " has ", tokenizer.vocab_size(), " ids (<image> ", tokenizer.image(),
               ") but the model ", config.decoder.vocab_size, " (<image> ", config.tokens.image,
               "); give the tokenizer the model was trained with");
}

std::vector<std::vector<int32_t>> decode(LoadedModel & loaded, const model::Batch & prompts, int64_t max_new,
                                         const Sampling & sampling, bool ignore_eos,
                                         std::vector<std::vector<float>> * step_logits) {
  const int64_t rows = prompts.batch, vocab = loaded.config.decoder.vocab_size;
  const int64_t choices = sampling.vocab_limit > 0 ? std::min(sampling.vocab_limit, vocab) : vocab;
  // Learned absolute positions end with their table (position ids start at pad + 1): as many new tokens as it has
  // room for after the prompt (the last new token is never read back), said by rank 0 where that is fewer than
  // asked (by each call: eval's once per batch of prompts).
  const model::DecoderConfig & dc = loaded.config.decoder;
  if (dc.abs_pos == model::AbsolutePositions::kLearned) {
    const int64_t room = dc.max_positions - loaded.config.tokens.pad - prompts.length;
    KOSMOS_CHECK(room > 0, "the prompt's ", prompts.length, " positions fill the learned position table (",
                 "max_target_positions ", dc.max_positions, ", ids from pad + 1 = ", loaded.config.tokens.pad + 1,
                 "); shorten the prompt");
    if (max_new > room) {
      if (loaded.grid->world().rank() == 0)
        std::cerr << "note: generating at most " << room << " new tokens, not " << max_new
                  << ": the learned position table (max_target_positions " << dc.max_positions
                  << ") ends there after the prompt's " << prompts.length << " positions\n";
      max_new = room;
    }
  }
  std::vector<std::vector<int32_t>> generated(static_cast<size_t>(rows));
  std::vector<bool> done(static_cast<size_t>(rows), false);
  // The prompt once (its images through the image path), then one token per row per step against the cache.
  model::DecodeCache cache;
  cache.capacity = prompts.length + max_new;
  model::Batch batch = prompts;
  for (int64_t step = 0; step < max_new; ++step) {
    const std::vector<float> logits = decode_logits(loaded, batch, cache);  // [B, V], the same on every rank
    if (step_logits) step_logits->push_back(logits);
    bool all_done = true;
    model::Batch next;
    next.batch = rows, next.length = 1;
    for (int64_t b = 0; b < rows; ++b) {
      const int32_t token = done[static_cast<size_t>(b)]
                                ? static_cast<int32_t>(loaded.config.tokens.pad)
                                : pick(logits.data() + b * vocab, choices, sampling,
                                       static_cast<uint64_t>(step * rows + b));
      next.tokens.push_back(token);
      if (!done[static_cast<size_t>(b)]) generated[static_cast<size_t>(b)].push_back(token);
      if (!ignore_eos && token == loaded.config.tokens.eos) done[static_cast<size_t>(b)] = true;
      all_done = all_done && done[static_cast<size_t>(b)];
    }
    if (all_done) break;
    batch = std::move(next);
  }
  return generated;
}

}  // namespace kosmos
