// train.cpp: `kosmos train` on one rank: model from a preset (and an optional JSON config), the built-in synthetic
// image-caption set, AdamW with warm-up and decay, a step line every --log-every steps and --metrics JSON lines.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <sys/resource.h>

#include "backends/error.h"
#include "io/checkpoint.h"
#include "io/checkpoint_dir.h"
#include "io/loader.h"
#include "io/metrics_file.h"
#include "io/synthetic.h"
#include "io/weights.h"
#include "launch/files.h"
#include "launch/launch.h"
#include "launch/profile_table.h"
#include "model/partition.h"
#include "model/trainer.h"
#include "parallel/watchdog.h"
#include "parallel/comm.h"

namespace kosmos {
namespace {

// Bytes as "12.3 MiB" or "4.56 GiB", for the run's header.
std::string memory_text(size_t bytes) {
  std::ostringstream text;
  const double mib = static_cast<double>(bytes) / (1 << 20);
  text << std::fixed << std::setprecision(mib < 1024 ? 1 : 2) << (mib < 1024 ? mib : mib / 1024)
       << (mib < 1024 ? " MiB" : " GiB");
  return text.str();
}

// What a --recompute setting runs again in the backward, for the run's header.
const char * recompute_what(model::Recompute recompute) {
  switch (recompute) {
    case model::Recompute::kNone: return "nothing";
    case model::Recompute::kFfn: return "the layers' FFN tails (GELU and sub-LN)";
    case model::Recompute::kAttention: return "the layers' attention sub-layers and FFN tails";
    case model::Recompute::kLayer: return "the layers' whole forwards";
  }
  return "?";
}

nlohmann::json optimizer_json(const model::OptimizerConfig & optimizer) {
  return {{"peak_lr", optimizer.peak_lr},       {"warmup_steps", optimizer.warmup_steps},
          {"total_steps", optimizer.total_steps}, {"beta1", optimizer.beta1},
          {"beta2", optimizer.beta2},           {"eps", optimizer.eps},
          {"weight_decay", optimizer.weight_decay}, {"clip_norm", optimizer.clip_norm}};
}

// This process's peak resident memory in GiB (Linux reports kilobytes).
double peak_memory_gib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);
}

// The keys where two JSON objects differ ("decoder.dropout"), for a warning on resume.
std::string differing_keys(const std::string & stored, const nlohmann::json & current) {
  std::string keys;
  for (const nlohmann::json & change : nlohmann::json::diff(nlohmann::json::parse(stored), current))
    keys += (keys.empty() ? "" : ", ") + change.at("path").get<std::string>().substr(1);
  return keys;
}

}  // namespace

DType precision_dtype(const std::string & precision) {
  if (precision == "fp32") return DType::kF32;
  if (precision == "bf16") return DType::kBF16;
  KOSMOS_CHECK(precision == "fp16", "--precision ", precision, ": use fp32, bf16 or fp16");
  return DType::kF16;
}

int run_train(std::ostream & out, const BackendRegistry & registry, const TrainOptions & options, RankLabel & label,
              const StopRequest & stop) {
  model::KosmosConfig config = model::preset(options.preset);
  if (!options.model_config.empty())
    config = model::config_from_json(read_text_file(options.model_config), config, options.model_config);
  // A prepared dataset brings its vocabulary, special ids and sequence length; else the built-in synthetic batches.
  std::unique_ptr<io::DatasetManifest> dataset;
  if (!options.data.empty()) {
    dataset = std::make_unique<io::DatasetManifest>(io::DatasetManifest::read(options.data));
    config = io::DataLoader::adapt_config(config, *dataset);
    KOSMOS_CHECK(options.length == 0 || options.length == dataset->length, "--length ", options.length,
                 " differs from the sequences of ", options.data, " (", dataset->length,
                 "); leave --length out or prepare the data with --length ", options.length);
    KOSMOS_CHECK(!options.one_image_per_sequence, "--one-image-per-sequence shapes the built-in synthetic batches, ",
                 "and ", options.data, " brings its own; leave one of the two out");
  }
  model::validate(config);
  KOSMOS_CHECK(options.stop_at == 0 || !options.save_dir.empty(), "--stop-at ", options.stop_at,
               " stops the run early, and without --save-dir its state would be lost; add --save-dir DIR");
  const int64_t images_per_sample = 1;
  const int64_t minimum_length = 2 + images_per_sample * (config.image_slots() + 7);
  const int64_t length = dataset ? dataset->length : options.length > 0 ? options.length : minimum_length;

  std::unique_ptr<Device> device = options.device >= 0 ? registry.create(options.backend, options.device)
                                                       : registry.create_for_local_rank(options.backend, options.local_rank);
  device->set_gemm_tuning(options.gemm_tuning);  // before any product: plans made earlier are not tuned again
  // The process grid: data, pipeline and tensor parallelism.
  std::unique_ptr<parallel::Comm> transport = world_for(*device);
  parallel::Watchdog watchdog(parallel::WatchdogOptions{
      options.watchdog_timeout, options.watchdog_dir.empty() ? default_watchdog_dir() : options.watchdog_dir,
      transport->rank(), transport->size()});
  std::unique_ptr<parallel::Comm> world = parallel::watched_comm(std::move(transport), watchdog);
  const parallel::GridShape shape = parallel::grid_for(world->size(), options.dp, options.pp, options.tp);
  KOSMOS_CHECK(options.gemm_tuning <= 1 || shape.tp == 1, "--gemm-tuning ", options.gemm_tuning, " with --tp ",
               shape.tp, ": each tensor-parallel rank would time its products on its own clock and could keep other "
               "algorithms than its peers, and the activations the ranks replicate would then differ in their last "
               "bits; use --gemm-tuning 0 with --tp > 1");
  const parallel::ScheduleKind schedule = parallel::schedule_from_name(options.schedule);
  const int chunks = parallel::model_chunks(schedule, options.chunks);
  if (shape.pp > 1 && schedule == parallel::ScheduleKind::kInterleaved)
    KOSMOS_CHECK(options.micro_batches % shape.pp == 0, "--schedule interleaved needs --micro-batches a multiple of ",
                 "--pp ", shape.pp, "; got ", options.micro_batches);
  parallel::ProcessGrid grid(shape, std::move(world));
  label.coordinates = "pp " + std::to_string(grid.coord().pp) + " tp " + std::to_string(grid.coord().tp) + " dp " +
                      std::to_string(grid.coord().dp);
  const int dp_rank = grid.coord().dp;
  const bool leader = grid.world().rank() == 0;
  const int64_t global_batch =
      options.global_batch > 0 ? options.global_batch : options.batch * options.micro_batches * shape.dp;
  KOSMOS_CHECK(global_batch % (shape.dp * options.micro_batches) == 0, "--global-batch ", global_batch,
               " does not split into --dp ", shape.dp, " x --micro-batches ", options.micro_batches,
               " equal micro-batches; make it a multiple of ", shape.dp * options.micro_batches);
  const int64_t micro_batch = global_batch / (shape.dp * options.micro_batches);
  if (leader && options.batch_given && options.global_batch > 0 && options.batch != micro_batch)
    out << "note: --global-batch " << options.global_batch << " makes micro-batches of " << micro_batch
        << " sequences (over --dp " << shape.dp << " x --micro-batches " << options.micro_batches << "); --batch "
        << options.batch << " is not used\n";
  // Pipeline cuts from the cost model (about one image per sequence), unless --stage-layers gives them.
  const std::vector<model::StageRange> stages = model::partition_stages(
      config, shape.pp * chunks, model::stage_costs(config, micro_batch, length, micro_batch), options.stage_layers);
  std::ostringstream silent;
  std::ostream & log = leader ? out : silent;  // only world rank 0 reports

  std::unique_ptr<Stream> stream = device->create_stream();
  // A pipeline stage keeps the parameters it runs: its layers (every chunk's), and on the first the image path
  // and the embeddings, on the last the final LayerNorm and the head; a tp rank its shards of them.
  const model::ParameterTable table(
      config, model::stage_holding(grid.coord().pp, stages, shape.pp, config.decoder),
      model::TensorParallelRank{grid.coord().tp, shape.tp});
  const DType compute_dtype = precision_dtype(options.precision);
  const bool zero1 = options.zero1 && shape.dp > 1;  // then this rank holds the AdamW moments of its slice alone
  model::ModelState state(*device, table, compute_dtype,
                          zero1 ? model::Zero1Shard{dp_rank, shape.dp} : model::Zero1Shard{});
  state.initialise(options.seed, *stream);
  state.zero_moments(*stream);
  parallel::Comm * tensor_parallel = shape.tp > 1 ? &grid.group(parallel::Axis::kTensor) : nullptr;
  model::KosmosModel kosmos_model(config, state, tensor_parallel);
  const std::optional<model::Recompute> recompute = model::parse_recompute(options.recompute);
  KOSMOS_CHECK(recompute.has_value(), "--recompute ", options.recompute, ": use none, ffn, attention or layer");
  kosmos_model.set_recompute(*recompute);
  kosmos_model.set_head_chunk_rows(options.head_chunk_rows);
  KOSMOS_CHECK(options.attention_backward == "deterministic" || options.attention_backward == "atomic",
               "--attention-backward ", options.attention_backward, ": use deterministic or atomic");
  kosmos_model.set_deterministic_attention(options.attention_backward == "deterministic");
  if (device->backend() == "cuda-cudnn" && options.attention_backward == "deterministic")
    log << "warning: --backend cuda-cudnn runs the decoder's attention on cuDNN only with --attention-backward atomic "
           "(cuDNN adds dq up in any order and draws its own dropout masks); with deterministic the mma.sync kernels "
           "run it\n";
  model::OptimizerConfig optimizer;
  optimizer.peak_lr = options.lr;
  optimizer.warmup_steps = std::min(options.warmup, options.steps);
  optimizer.total_steps = options.steps;
  optimizer.clip_norm = options.clip;
  optimizer.weight_decay = options.weight_decay;
  using NonFinite = model::OptimizerConfig::NonFinite;
  // fp16's products overflow where bf16's and f32's do not: it needs dynamic loss scaling unless told otherwise.
  const std::string non_finite =
      options.non_finite != "auto" ? options.non_finite : compute_dtype == DType::kF16 ? "reduce-scale" : "skip";
  optimizer.non_finite = non_finite == "stop"           ? NonFinite::kStop
                         : non_finite == "reduce-scale" ? NonFinite::kReduceScale
                                                        : NonFinite::kSkip;
  const bool dynamic_scale = optimizer.non_finite == NonFinite::kReduceScale;
  optimizer.loss_scale = options.loss_scale > 0 ? options.loss_scale : dynamic_scale ? 65536.0 : 1.0;
  optimizer.loss_scale_window = options.loss_scale_window;
  KOSMOS_CHECK(model::is_power_of_two(optimizer.loss_scale), "--loss-scale ", options.loss_scale,
               " is not a power of two; use 1, 2, 4, ... (65536 is the usual start for fp16)");
  optimizer.poison_gradients_at_step = grid.world().rank() == 0 ? options.poison_step : 0;
  model::Trainer trainer(kosmos_model, state, optimizer,
                         model::DataParallel{shape.dp > 1 ? &grid.group(parallel::Axis::kData) : nullptr,
                                             zero1,
                                             std::max<int64_t>(1, static_cast<int64_t>(options.reduce_bucket_mib *
                                                                                       (1 << 20) / sizeof(float))),
                                             options.overlap_reduce},
                         model::PipelineParallel{shape.pp > 1 ? &grid.group(parallel::Axis::kPipeline) : nullptr,
                                                 schedule, chunks, stages},
                         model::TensorParallel{tensor_parallel});
  model::Arena arena(*device);
  model::Runtime rt{*device, *stream, arena};

  // Rank 0 makes --save-dir, then checks where --save-weights and --metrics go (they may lie in it), before any
  // step; every rank says so where it cannot.
  parallel::check_together(grid.world(), *stream, [&] {
    if (!leader) return;
    if (!options.save_dir.empty()) {
      std::error_code error;
      std::filesystem::create_directories(options.save_dir, error);
      KOSMOS_CHECK(!error, "--save-dir ", options.save_dir, ": cannot create it (", error.message(),
                   "); choose a writable folder");
    }
    check_output_path("--save-weights", options.save_weights);
    check_output_path("--metrics", options.metrics);
  });
  // Resume: values, AdamW moments, step, seed and data position from a checkpoint of any layout.
  int64_t first_step = 1;
  int64_t next_sample = 0;  // the synthetic set's next global sample index
  const int synthetic_images = options.one_image_per_sequence ? 1 : 2;  // its images per sample at most
  std::string data_position;  // the checkpoint's, for the dataset loader
  uint64_t seed = options.seed;
  std::ostringstream resumed;  // reported after the run's description
  const std::vector<std::string> candidates = io::resume_candidates(options.resume, options.save_dir);
  if (!candidates.empty()) {
    std::vector<std::string> warnings;
    const auto [resume_from, info] =
        io::read_newest_checkpoint(candidates, state, true, grid.world(), *stream, warnings);
    for (const std::string & warning : warnings) resumed << "warning: " << warning << "\n";
    first_step = info.step + 1;
    seed = info.seed;
    if (dynamic_scale && options.loss_scale == 0)  // the dynamic scale goes on where it was
      trainer.set_loss_scale({info.loss_scale, info.loss_scale_finite_steps});
    if (dataset) {
      data_position = info.data_position;
    } else {
      const nlohmann::json position = nlohmann::json::parse(info.data_position);
      KOSMOS_CHECK(position.contains("synthetic"), "checkpoint ", resume_from, " was trained on a dataset (",
                   info.data_position.substr(0, 120), "); resume it with the same --data");
      next_sample = position.at("synthetic").at("next_sample").get<int64_t>();
      // Checkpoints from before --one-image-per-sequence carry no count: theirs was 2.
      const int saved_images = position.at("synthetic").value("max_images", 2);
      KOSMOS_CHECK(saved_images == synthetic_images, "checkpoint ", resume_from,
                   " was trained on synthetic batches of ",
                   saved_images == 1 ? "one image per sequence" : "one or two images per sequence", ", so resume it ",
                   saved_images == 1 ? "with" : "without", " --one-image-per-sequence");
    }
    resumed << "resumed from " << resume_from << ": step " << info.step << ", seed " << seed
            << ", written by kosmos " << info.version << " on " << info.layout << "\n";
    const std::string model_changes =
        differing_keys(info.model_config, nlohmann::json::parse(model::config_to_json(config)));
    if (!model_changes.empty())
      resumed << "warning: the model config differs from the checkpoint's in: " << model_changes << "\n";
    const std::string optimizer_changes = differing_keys(info.optimizer, optimizer_json(optimizer));
    if (!optimizer_changes.empty())
      resumed << "warning: the optimizer settings differ from the checkpoint's in: " << optimizer_changes << "\n";
  }
  std::unique_ptr<io::DataLoader> loader;  // keyed by the run's seed (the checkpoint's on resume)
  if (dataset) {
    loader = std::make_unique<io::DataLoader>(options.data, config, seed);
    if (!data_position.empty()) loader->restore(data_position);
  }
  const std::string layout = parallel::describe(shape) + (zero1 ? ", ZeRO-1" : "");
  // Every rank writes its own part of one file; rank 0 publishes it once all have closed it.
  const auto save_checkpoint = [&](int64_t step) {
    const auto begin = std::chrono::steady_clock::now();
    const std::string final_path = io::checkpoint_path(options.save_dir, step);
    const io::CheckpointInfo info{step,
                                  seed,
                                  trainer.loss_scale().scale,
                                  trainer.loss_scale().finite_steps,
                                  loader ? loader->position_json()
                                         : nlohmann::json{{"synthetic",
                                                           {{"next_sample", next_sample},
                                                            {"max_images", synthetic_images}}}}
                                               .dump(),
                                  model::config_to_json(config),
                                  layout,
                                  optimizer_json(optimizer).dump(),
                                  KOSMOS_VERSION,
                                  options.run_config};
    io::write_checkpoint(io::partial_path(final_path), state, trainer.checkpoint_parts(), info, grid.world(), *stream);
    grid.world().barrier();
    if (leader) io::publish_checkpoint(options.save_dir, final_path, options.keep);
    grid.world().barrier();
    log << "saved " << final_path << " in " << std::fixed << std::setprecision(2)
        << std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() << " s\n";
  };

  // Rank 0 writes it: a resumed run keeps the lines of the steps up to its checkpoint's (io/metrics_file.h).
  std::ofstream metrics;
  int64_t metrics_kept = 0;
  parallel::check_together(grid.world(), *stream, [&] {
    if (!options.metrics.empty() && leader) metrics = io::open_metrics(options.metrics, first_step - 1, &metrics_kept);
  });
  if (metrics_kept > 0)
    resumed << "--metrics " << options.metrics << ": appending after its " << metrics_kept << " lines of steps up to "
            << first_step - 1 << "\n";
  log << "kosmos train: preset " << options.preset << ", " << table.count() << " parameters ("
      << table.trainable_count() << " trainable), device " << device->name() << " (" << device->description()
      << ")\n";
  {  // what the parameters take on each rank's device, before any activation
    const model::ModelState::Bytes state_bytes = state.bytes();
    log << "parameter state per rank: " << memory_text(state_bytes.total()) << " (values "
        << memory_text(state_bytes.values);
    if (state_bytes.compute_copy > 0)
      log << ", " << options.precision << " copy " << memory_text(state_bytes.compute_copy);
    log << ", gradients " << memory_text(state_bytes.gradients) << ", AdamW moments "
        << memory_text(state_bytes.moments) << (zero1 ? " of this rank's ZeRO-1 slice" : "") << ")\n";
  }
  if (compute_dtype != DType::kF32) {
    log << "precision: " << options.precision
        << " matmuls (f32 accumulation), f32 master weights, gradients and optimizer";
    if (dynamic_scale) log << ", dynamic loss scaling from " << trainer.loss_scale().scale;
    log << "\n";
  }
  if (*recompute != model::Recompute::kNone)
    log << "recompute: " << options.recompute << " (" << recompute_what(*recompute) << " run again in the backward)\n";
  log << "grid: " << layout << (shape.pp > 1 ? std::string(", schedule ") + options.schedule : std::string()) << "\n";
  if (shape.pp > 1) {
    log << "stages (decoder layers):";
    for (const model::StageRange & range : stages) log << " [" << range.layer_begin << ", " << range.layer_end << ")";
    log << "\n";
  }
  if (dataset) {
    log << "data: " << options.data << ", streams";
    for (const io::StreamInfo & stream : dataset->streams)
      log << " " << stream.name << " (" << stream.sequences << " sequences, weight " << stream.weight << ")";
    log << "; vocabulary " << dataset->vocab_size << " from " << dataset->tokenizer << "\n";
  }
  log << "data: "
      << (dataset                           ? "the dataset's"
          : options.one_image_per_sequence ? "built-in synthetic image-caption set (one image per sequence),"
                                           : "built-in synthetic image-caption set,")
      << " " << global_batch
      << " sequences of " << length << " positions per step (" << options.micro_batches << " micro-batches of "
      << micro_batch << " per dp rank), seed " << seed << "\n";
  log << resumed.str();
  const auto start = std::chrono::steady_clock::now();
  auto profile_start = start;  // when --profile began timing (after --profile-after steps)
  double first_loss = 0.0, last_loss = 0.0;
  int64_t tokens = 0;
  int64_t skipped_steps = 0;  // updates skipped for a NaN or infinite loss or gradient norm
  int64_t last_step = options.stop_at > 0 ? std::min(options.stop_at, options.steps) : options.steps;
  if (last_step < first_step) {
    const char * limit = options.stop_at > 0 && options.stop_at < options.steps ? "--stop-at" : "--steps";
    log << "nothing to train: the checkpoint is at step " << first_step - 1 << " and " << limit << " is "
        << last_step << "; raise " << limit << " to train on\n";
  }
  for (int64_t step = first_step; step <= last_step; ++step) {
    // This dp rank's share of the step's global batch, in micro-batches, by global sample index.
    std::vector<model::Batch> micro;
    const int64_t share_start = next_sample + dp_rank * (global_batch / shape.dp);
    if (loader) {
      micro = loader->next_step(global_batch, dp_rank, shape.dp, options.micro_batches);
    } else {
      for (int64_t m = 0; m < options.micro_batches; ++m)
        micro.push_back(
            io::synthetic_batch(config, micro_batch, length, share_start + m * micro_batch, seed, synthetic_images));
    }
    if (step == options.stall_step && grid.world().rank() == options.stall_rank)  // the test hook
      watchdog.stall_next_call(options.stall_seconds);
    if (options.profile && step == first_step + options.profile_after) {
      device->set_profiling(true);
      profile_start = std::chrono::steady_clock::now();
    }
    device->reset_peak();  // each step's own peak (the first includes sizing the arena)
    const model::StepStats stats = trainer.step(rt, micro, step, seed);
    next_sample += global_batch;
    if (stats.skipped) {  // every rank decided alike (the loss and norm are global); say it whatever --log-every
      ++skipped_steps;
      log << "step " << step << ": the loss (" << std::defaultfloat << std::setprecision(6) << stats.loss
          << ") or gradient norm (" << stats.grad_norm
          << ") is not finite: the update was skipped (" << skipped_steps << " so far; ";
      if (dynamic_scale)
        log << "the loss scale is now " << std::setprecision(17) << trainer.loss_scale().scale << ")\n";
      else
        log << "--non-finite stop ends the run instead)\n";
    }
    // Model FLOPs of the whole step (every dp rank's images counted), per second, and of the ranks' peak.
    int32_t images = 0;
    for (const model::Batch & batch : micro) images += static_cast<int32_t>(batch.image_count);
    if (shape.dp > 1)
      grid.group(parallel::Axis::kData).all_reduce(make_view(&images, DType::kI32, {1}), parallel::ReduceOp::kSum,
                                                   *stream);
    double tflops[2];  // causal, full attention
    for (int full = 0; full < 2; ++full)
      tflops[full] = model::step_flops(config, global_batch, length, images, full == 1) / stats.seconds / 1e12;
    const double peak = options.peak_tflops * grid.world().size();
    const double memory = peak_memory_gib();
    // The most device memory any rank's buffers held at once during this step (parameters, optimizer, activations).
    float device_memory = static_cast<float>(static_cast<double>(device->memory().peak) / (1 << 30));
    grid.world().all_reduce(make_view(&device_memory, DType::kF32, {1}), parallel::ReduceOp::kMax, *stream);
    tokens += stats.tokens;
    if (step == first_step) first_loss = stats.loss;
    last_loss = stats.loss;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (metrics.is_open()) {
      metrics << nlohmann::json{{"step", step},         {"loss", stats.loss},
                                {"lr", stats.lr},       {"grad_norm", stats.grad_norm},
                                {"tokens", stats.tokens}, {"tokens_per_s", stats.tokens / stats.seconds},
                                {"step_seconds", stats.seconds}, {"elapsed_seconds", elapsed},
                                {"bubble", stats.bubble}, {"tflops_causal", tflops[0]},
                                {"tflops_full", tflops[1]}, {"mfu_causal", peak > 0 ? tflops[0] / peak : 0.0},
                                {"mfu_full", peak > 0 ? tflops[1] / peak : 0.0}, {"peak_memory_gib", memory},
                                {"device_peak_gib", device_memory},
                                {"sequences", global_batch}, {"images", images}, {"dp", shape.dp},
                                {"skipped", stats.skipped}, {"skipped_steps", skipped_steps},
                                {"loss_scale", stats.loss_scale}, {"reduce_overlap", stats.reduce_overlap}}
                     .dump()
              << "\n";
      metrics.flush();
    }
    if (step == first_step || step % options.log_every == 0 || step == last_step) {
      const double eta =
          elapsed / static_cast<double>(step - first_step + 1) * static_cast<double>(last_step - step);
      log << "step " << std::setw(6) << step << "/" << options.steps << "  loss " << std::fixed << std::setprecision(4)
          << stats.loss << "  lr " << std::scientific << std::setprecision(2) << stats.lr << "  grad norm "
          << std::fixed << std::setprecision(3) << stats.grad_norm << "  " << std::setprecision(0)
          << stats.tokens / stats.seconds << " tokens/s  " << std::setprecision(3) << tflops[0] << " TFLOP/s";
      if (peak > 0)
        log << "  MFU " << std::setprecision(1) << 100.0 * tflops[0] / peak << "% causal, " << 100.0 * tflops[1] / peak
            << "% full";
      log << "  mem " << std::setprecision(2) << memory << " GiB (device " << device_memory << ")";
      if (shape.pp > 1) log << "  bubble " << std::setprecision(2) << stats.bubble;
      log << "  eta " << std::setprecision(1) << eta << " s\n";
      log.flush();
    }
    const bool saved = !options.save_dir.empty() &&
                       ((options.save_every > 0 && step % options.save_every == 0) || step == last_step);
    if (saved) save_checkpoint(step);
    // A stop signal on any rank (Slurm's SIGTERM before preemption or the time limit) ends the run on every rank
    // after this step, with a checkpoint.
    int32_t stop_code = stop.requested();
    grid.world().all_reduce(make_view(&stop_code, DType::kI32, {1}), parallel::ReduceOp::kMax, *stream);
    if (stop_code != 0 && step < last_step) {
      if (!options.save_dir.empty() && !saved) save_checkpoint(step);
      log << "stopped by signal " << stop_code << " after step " << step
          << (options.save_dir.empty() ? "; no --save-dir, so the state is not kept"
                                       : "; continue with --resume auto")
          << "\n";
      last_step = step;
      break;
    }
  }
  const auto end = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(end - start).count();
  const int64_t steps_run = std::max<int64_t>(0, last_step - first_step + 1);
  log << "trained " << steps_run << " steps in " << std::fixed << std::setprecision(1) << seconds << " s ("
      << std::setprecision(0) << tokens / seconds << " tokens/s); loss " << std::setprecision(4) << first_loss
      << " -> " << last_loss << "\n";
  if (!options.save_weights.empty()) {
    const double spread = trainer.replica_spread(rt);
    if (spread > 1e-6)
      log << "warning: the replicated parameters differ over the tensor-parallel ranks (relative spread " << spread
          << " of their sum of squares); saving tp rank 0's copy\n";
    std::vector<std::vector<float>> values = trainer.collect_parameters(rt);  // every shard and stage to the leader
    if (leader)
      io::save_weights(table, std::move(values), options.save_weights, io::WeightNames::kSeed,
                       model::config_to_json(config));
  }
  if (leader) log << device->gemm_tuning_report();  // "GEMM tuning: ..." where a product was tuned
  if (options.profile && leader) {
    const int64_t steps_profiled = std::max<int64_t>(0, steps_run - options.profile_after);
    if (steps_profiled == 0)
      log << "--profile: no step timed (" << steps_run << " run, --profile-after " << options.profile_after << ")\n";
    else
      print_profile(log, device->profile(), steps_profiled, std::chrono::duration<double>(end - profile_start).count());
  }
  return 0;
}

}  // namespace kosmos
