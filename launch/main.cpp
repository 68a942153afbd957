// main.cpp: the `kosmos` command: CLI11 subcommands, MPI start-up and the one place that catches kosmos::Error.
// An error prints "[rank r] error: ..." on the rank where it happened and ends the job with a non-zero code on
// every rank (MPI_Abort when more than one rank runs).
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "backends/error.h"
#include "launch/files.h"
#include "launch/launch.h"
#include "launch/stop_signals.h"

namespace {

int world_rank() {
  int initialized = 0, rank = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int initialized = 0, size = 1;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// How long a failing rank waits before tearing the job down, so that the other ranks that fail at the same point
// (a bad flag or config fails everywhere at once) print their own report first.
constexpr std::chrono::milliseconds kReportGrace{1000};

// Prints the error on this rank, prefixed with its place in the grid when known, and ends the job on every rank.
// The report goes out in one write, so the ranks' lines do not interleave.
[[noreturn]] void fail(const std::string & message, const kosmos::RankLabel & label) {
  const std::string report = "[rank " + std::to_string(world_rank()) +
                             (label.coordinates.empty() ? "" : " | " + label.coordinates) + "] error: " + message + "\n";
  std::fwrite(report.data(), 1, report.size(), stderr);
  std::fflush(stderr);
  if (world_size() > 1) {
    std::this_thread::sleep_for(kReportGrace);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  std::exit(1);
}

// --backend of a subcommand that runs on one device per rank: the registry's names (backends/registry.cpp).
CLI::Option * add_backend_option(CLI::App * app, std::string & backend) {
  return app
      ->add_option("--backend", backend,
                   "device backend: auto, cpu, cuda or rocm; cuda-owngemm and cuda-wmma are cuda with every matmul on "
                   "the own GEMM kernel, or bf16 attention on the WMMA kernels, to compare them with the standard ones; "
                   "cuda-cudnn runs bf16 attention on cuDNN's fused kernels where cuDNN 9 is found and the op allows "
                   "its dropout masks and dq's varying order (--attention-backward atomic); "
                   "emulated, emulated-wmma and emulated-rocm (the ROCm build's kernels, in waves of 64) run the GPU "
                   "kernels on the host's cores (slow; to test them without a GPU)")
      ->capture_default_str()
      ->check(CLI::IsMember(
          {"auto", "cpu", "cuda", "cuda-owngemm", "cuda-wmma", "cuda-cudnn", "rocm", "emulated", "emulated-wmma",
           "emulated-rocm"}));
}

// Numbers above 0, or at least 0, with errors that say so in words (CLI11's own give the range in the digits of the
// largest double).
CLI::Validator sign_check(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string & text) -> std::string {
        double value = 0.0;
        if (!CLI::detail::lexical_cast(text, value)) return "'" + text + "' is not a number";
        if (std::isfinite(value) && (zero_allowed ? value >= 0.0 : value > 0.0)) return "";
        return (zero_allowed ? "must be a finite number, 0 or more, got " : "must be a finite number above 0, got ") +
               text;
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}
const CLI::Validator kPositive = sign_check(false), kNonNegative = sign_check(true);

// A file the command writes (or a prefix of the files it writes), checked as the command line is read, before the
// work whose results go there (kosmos::output_path_problem). By world rank 0 alone, which writes them: a folder on
// its node only is no error on the others.
const CLI::Validator kWritableFile(
    [](std::string & path) -> std::string { return world_rank() == 0 ? kosmos::output_path_problem(path) : ""; },
    "FILE");

// An on/off option that is on unless --no-NAME is given: both spellings, and its default written as "true" by
// --print-config (CLI11 takes no default from a flag's variable and would write "false").
CLI::Option * add_switch(CLI::App * app, const std::string & name, bool & value, const std::string & help) {
  return app->add_flag("--" + name + ",!--no-" + name, value, help)->default_str(value ? "true" : "false");
}

}  // namespace

int main(int argc, char ** argv) {
  kosmos::StopSignals stop_signals;  // before MPI_Init: its threads and OpenMP's never see SIGTERM, SIGUSR1, SIGINT
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);

  CLI::App app{"kosmos: trains and runs the KOSMOS-1 multimodal language model across MPI ranks"};
  app.require_subcommand(1);
  app.fallthrough();  // --config and --print-config may follow the subcommand too (subcommands inherit this)
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key in a --config file is an error
  app.set_version_flag("--version", std::string("kosmos ") + KOSMOS_VERSION);
  app.set_config("--config", "",
                 "TOML file of options: a [train], [generate], [eval], [data.prepare], ... section per subcommand, "
                 "keys named as the long options (steps = 500); the command line overrides it");
  bool print_config = false;
  app.add_flag("--print-config", print_config,
               "print the effective options of the subcommand (config file and command line) as TOML and exit");

  CLI::App * info = app.add_subcommand("info", "print the build options, backends, devices and library versions");

  kosmos::DemoOptions demo_options;
  CLI::App * demo = app.add_subcommand(
      "demo", "train a small MLP on synthetic data with the op set and time one attention forward+backward");
  add_backend_option(demo, demo_options.backend);
  demo->add_option("--device", demo_options.device, "device ordinal within the backend")
      ->capture_default_str()
      ->check(kNonNegative);
  demo->add_option("--steps", demo_options.steps, "AdamW steps (2 at least: the check compares the last loss with the "
                   "first, which the first update has not yet changed)")
      ->capture_default_str()->check(CLI::Range(2, 100000));
  demo->add_option("--seed", demo_options.seed, "seed of the data, the initialisation and dropout")
      ->capture_default_str();

  kosmos::TrainOptions train;
  CLI::App * train_app = app.add_subcommand(
      "train", "train KOSMOS (any dp x pp x tp under mpirun or srun) on a prepared dataset or the built-in synthetic "
               "batches, with checkpoints, step lines and metrics");
  add_backend_option(train_app, train.backend);
  train_app->add_option("--device", train.device,
                        "device ordinal within the backend (-1: the rank's local rank on its node, modulo the devices)")
      ->capture_default_str();
  train_app->add_option("--preset", train.preset, "model size: tiny, small (the CPU benchmark config), kosmos1, kosmos2")
      ->capture_default_str()
      ->check(CLI::IsMember({"tiny", "small", "kosmos1", "kosmos2"}));
  train_app->add_option("--model-config", train.model_config,
                        "JSON model config applied over the preset (torchscale/HF/flamingo key names)")
      ->check(CLI::ExistingFile);
  const std::string precision_help =
      "fp32, or bf16 or fp16 (mixed precision): every matmul reads 16-bit copies of the weights (remade after each "
      "update) and accumulates in f32; master weights, parameter gradients and AdamW moments stay f32. bf16 keeps "
      "the activations inside each layer (and their gradients) and the head's logits in bf16, the residual stream "
      "in f32; fp16 keeps them in f32 and casts each matmul operand. LayerNorm statistics, softmax and the loss "
      "are f32 in all (the loss widens bf16 logits as it reads them). fp16 needs loss scaling: --non-finite auto "
      "is reduce-scale with it. Checkpoints hold the f32 values either way";
  const auto precisions = CLI::IsMember({"fp32", "bf16", "fp16"});
  train_app->add_option("--precision", train.precision, precision_help)->capture_default_str()->check(precisions);
  const std::string recompute_help =
      "activation recomputation in the transformer layers: none keeps every activation the backward reads; ffn makes "
      "the FFN's sub-LN output (over GELU) again from its hidden layer (about a fifth less activation memory, one "
      "elementwise pass, on a GPU's decoder layers none); attention also runs each layer's attention sub-layer up "
      "to out_proj again (about 60% less, for about 1/10 more layer FLOPs); layer keeps only each layer's input and "
      "runs the layer again but for fc2 (about 1/10 of the activations for about 23% more FLOPs). The gradients are "
      "the same";
  const auto recomputations = CLI::IsMember({"none", "ffn", "attention", "layer"});
  train_app->add_option("--recompute", train.recompute, recompute_help)->capture_default_str()->check(recomputations);
  const std::string attention_backward_help =
      "the decoder layers' attention backward on a GPU under --precision bf16: deterministic makes two passes over "
      "the sequence (dq in one, dk and dv in the other; seven products) and gives the same bits run after run; "
      "atomic makes one pass of five products and adds dq up in f32 by atomics, in the order the blocks finish, so "
      "that dq's last bits vary between runs. The CPU's is deterministic either way";
  const auto attention_backwards = CLI::IsMember({"deterministic", "atomic"});
  train_app->add_option("--attention-backward", train.attention_backward, attention_backward_help)
      ->capture_default_str()->check(attention_backwards);
  const std::string gemm_tuning_help =
      "on a GPU with cuBLASLt: a product of a shape (with strides, dtypes and alignments) not seen before times up to "
      "N of cuBLASLt's algorithms for it, best first by its heuristic, on its own operands (the median of 3 runs "
      "each), and keeps the fastest for the rest of the run, the heuristic's first unless another is 2% faster. "
      "0 or 1: the heuristic's first, untimed, the same choice run after run. It costs the first step a few ms a "
      "shape; the run's end reports what it chose. The clock decides, so two tuned runs may choose differently and "
      "their results differ in the last bits (so it is refused with --tp > 1, whose ranks must agree). Where C is "
      "narrower than f32, only algorithms that add split-k parts in f32 (or split nothing) are timed. The CPU and "
      "ROCm backends have one kernel per product and ignore it";
  train_app->add_option("--gemm-tuning", train.gemm_tuning, gemm_tuning_help)->capture_default_str()
      ->check(CLI::Range(0, 64));
  const std::string head_chunk_help =
      "rows of logits the head and the loss compute at once (the whole micro-batch's logits never exist); 0: as many "
      "as fit 512 MiB of logits and their gradient (bf16 4096 rows of kosmos1's, f32 2048), in whole 128s where that "
      "many fit (a GPU's GEMM library wants rows in multiples of 16)";
  train_app->add_option("--head-chunk-rows", train.head_chunk_rows, head_chunk_help)
      ->capture_default_str()->check(kNonNegative);
  train_app->add_option("--non-finite", train.non_finite,
                        "a NaN or infinite loss or gradient norm (seen by every rank at the same step): skip that "
                        "step's update and count it in the metrics, stop the run with an error, or reduce-scale: "
                        "skip it and halve the loss scale (dynamic loss scaling); auto: reduce-scale with "
                        "--precision fp16, else skip")
      ->capture_default_str()->check(CLI::IsMember({"auto", "skip", "stop", "reduce-scale"}));
  train_app->add_option("--loss-scale", train.loss_scale,
                        "the backward computes the gradients of the loss times this power of two, divided by it "
                        "before clipping (exact: the update does not depend on it); 0: 1, or 65536 with "
                        "--non-finite reduce-scale, which on resume continues from the checkpoint's scale")
      ->capture_default_str()->check(kNonNegative);
  train_app->add_option("--loss-scale-window", train.loss_scale_window,
                        "with --non-finite reduce-scale: finite steps in a row after which the loss scale doubles")
      ->capture_default_str()->check(kPositive);
  train_app->add_option("--watchdog-timeout", train.watchdog_timeout,
                        "seconds a collective or point-to-point call may take (an NCCL one until the GPU has "
                        "finished it) before every rank reports who waits for whom and the job ends (0: no "
                        "watchdog)")
      ->capture_default_str()->check(kNonNegative);
  train_app->add_option("--watchdog-dir", train.watchdog_dir,
                        "folder for the ranks' status files (default: one per job under the temp folder)");
  train_app->add_option("--debug-stall-rank", train.stall_rank, "test hook: this world rank stalls ...")->group("");
  train_app->add_option("--debug-stall-step", train.stall_step, "... inside its first call of this step ...")
      ->group("");
  train_app->add_option("--debug-stall-seconds", train.stall_seconds, "... for this long")->group("");
  train_app->add_option("--debug-poison-step", train.poison_step,
                        "test hook: world rank 0 writes a NaN into its gradients at this step")
      ->group("");  // hidden: for the tests
  train_app->add_option("--steps", train.steps, "optimizer steps")->capture_default_str()->check(kPositive);
  train_app->add_option("--seed", train.seed, "seed of initialisation, data and dropout")->capture_default_str();
  train_app->add_option("--batch", train.batch, "sequences per micro-batch")->capture_default_str()->check(kPositive);
  train_app->add_option("--length", train.length, "positions per sequence (0: the shortest that fits a sample)")
      ->capture_default_str()
      ->check(kNonNegative);
  train_app->add_option("--micro-batches", train.micro_batches, "micro-batches accumulated per optimizer step")
      ->capture_default_str()
      ->check(kPositive);
  train_app->add_option("--lr", train.lr, "peak learning rate")->capture_default_str()->check(kPositive);
  train_app->add_option("--warmup", train.warmup, "linear warm-up steps, then linear decay to 0 at --steps")
      ->capture_default_str()
      ->check(kNonNegative);
  train_app->add_option("--clip", train.clip, "global gradient-norm clip (0: off)")
      ->capture_default_str()
      ->check(kNonNegative);
  train_app->add_option("--weight-decay", train.weight_decay, "AdamW decoupled weight decay")->capture_default_str()
      ->check(kNonNegative);
  train_app->add_option("--data", train.data,
                        "a prepared dataset folder (kosmos data prepare); its vocabulary and sequence length replace "
                        "the preset's (default: built-in synthetic image-caption batches)")
      ->check(CLI::ExistingDirectory);
  const std::string one_image_help = "the built-in synthetic batches with one image in every sequence, as the PyTorch "
                                     "peer's (by default every third sequence holds two)";
  train_app->add_flag("--one-image-per-sequence", train.one_image_per_sequence, one_image_help);
  // --metrics and --save-weights may lie in --save-dir, which the run makes: run_train checks them after that.
  train_app->add_option("--metrics", train.metrics,
                        "write one JSON object per step to this file (a resumed run keeps the lines of the steps "
                        "up to its checkpoint and appends)");
  const std::string profile_help =
      "print the time spent in each op at the end, and on a GPU in each matmul and attention shape (timed by events "
      "on the GPU's stream, with no wait per op)";
  train_app->add_flag("--profile", train.profile, profile_help);
  train_app->add_option("--profile-after", train.profile_after,
                        "steps run before --profile starts timing, so that the first step's one-off work (choosing "
                        "GEMM algorithms, loading kernels, sizing memory) stays out of the table (kosmos bench: its "
                        "--warmup)")
      ->capture_default_str()
      ->check(kNonNegative);
  train_app->add_option("--dp", train.dp, "data-parallel ranks (0: every rank pp x tp leaves)")
      ->capture_default_str()
      ->check(kNonNegative);
  train_app->add_option("--pp", train.pp, "pipeline stages")->capture_default_str()->check(kPositive);
  train_app->add_option("--tp", train.tp, "tensor-parallel ranks: split decoder heads, FFN and vocabulary")
      ->capture_default_str()->check(kPositive);
  train_app->add_option("--global-batch", train.global_batch,
                        "sequences per step over all data-parallel ranks (0: batch x micro-batches x dp)")
      ->capture_default_str()
      ->check(kNonNegative);
  train_app->add_option("--chunks", train.chunks, "model chunks (virtual stages) per stage with --schedule interleaved")
      ->capture_default_str()
      ->check(kPositive);
  train_app->add_option("--stage-layers", train.stage_layers,
                        "decoder layers per pipeline (virtual) stage, e.g. 2,4,4,2 (default: the cost model's split)")
      ->delimiter(',');
  train_app->add_option("--schedule", train.schedule, "pipeline schedule: gpipe, 1f1b, interleaved or zb-h1")
      ->capture_default_str()
      ->check(CLI::IsMember({"gpipe", "1f1b", "interleaved", "zb-h1"}));
  train_app->add_flag("--zero1", train.zero1, "shard the AdamW state over the data-parallel ranks (ZeRO-1)");
  const std::string overlap_help =
      "data parallelism: start each gradient bucket's reduction (all-reduce, or with --zero1 a reduce to the rank "
      "whose slice holds it) during the step's last backward that writes it, as soon as its gradients are final "
      "(--no-overlap-reduce: all buckets after the backwards)";
  add_switch(train_app, "overlap-reduce", train.overlap_reduce, overlap_help);
  const std::string bucket_help =
      "MiB of f32 gradients per data-parallel reduction: smaller buckets start sooner during the backward, larger "
      "ones pay the per-call latency less often";
  train_app->add_option("--reduce-bucket-mib", train.reduce_bucket_mib, bucket_help)
      ->capture_default_str()->check(CLI::Range(0.001, 4096.0));
  train_app->add_option("--save-weights", train.save_weights, "write the final parameters to this safetensors file");
  train_app->add_option("--save-dir", train.save_dir,
                        "write HDF5 checkpoints (step_<N>.h5, `latest`) of the whole training state to this folder");
  train_app->add_option("--save-every", train.save_every, "a checkpoint every N steps (0: only after the last step)")
      ->capture_default_str()->check(kNonNegative);
  train_app->add_option("--keep", train.keep, "complete checkpoints kept in --save-dir, the newest (0: all)")
      ->capture_default_str()->check(kNonNegative);
  train_app->add_option("--resume", train.resume,
                        "continue from a checkpoint: auto (the newest in --save-dir, else start fresh), a step_<N>.h5 "
                        "file or a folder of them; works under any --dp/--pp/--tp");
  train_app->add_option("--stop-at", train.stop_at,
                        "stop after this step, checkpointing it, though the schedule runs to --steps (a job's share "
                        "of a long run; 0: run to --steps)")
      ->capture_default_str()->check(kNonNegative);
  train_app->add_option("--peak-tflops", train.peak_tflops,
                        "one device's peak TFLOP/s (e.g. 989 for an H100's dense bf16): the step lines then show MFU "
                        "= model FLOPs / (time x ranks x peak), causal and full attention")
      ->capture_default_str()->check(kNonNegative);
  train_app->add_option("--log-every", train.log_every, "print a step line every N steps")
      ->capture_default_str()
      ->check(kPositive);

  const std::string demo_tokenizer = std::string(KOSMOS_DATA_DIR) + "/tokenizer/kosmos-demo.model";
  kosmos::InferenceOptions inference;
  inference.tokenizer = demo_tokenizer;
  CLI::App * forward_app = app.add_subcommand("forward", "one fp32 forward pass of a prompt; logits to .npy");
  CLI::App * generate_app =
      app.add_subcommand("generate", "continue a prompt of images and text, greedy or sampled, and print it");
  for (CLI::App * sub : {forward_app, generate_app}) {
    add_backend_option(sub, inference.model.backend);
    sub->add_option("--device", inference.model.device, "device ordinal within the backend")->capture_default_str();
    sub->add_option("--checkpoint", inference.model.checkpoint,
                    "a kosmos checkpoint (step_N.h5) or a run folder (its newest); the model config comes with it");
    sub->add_option("--model-config", inference.model.model_config, "kosmos model config JSON (peer key names)")
        ->check(CLI::ExistingFile);
    sub->add_option("--preset", inference.model.preset, "preset the model config is applied over")
        ->capture_default_str()
        ->check(CLI::IsMember({"tiny", "small", "kosmos1", "kosmos2"}));
    sub->add_option("--weights", inference.model.weights, "safetensors weights (seed, HF CLIP or HF Kosmos-2 names)")
        ->check(CLI::ExistingFile);
    sub->add_option("--hf", inference.model.hf_dir, "an HF Kosmos-2 folder (config.json + model.safetensors)")
        ->check(CLI::ExistingDirectory);
    sub->add_option("--tokens", inference.tokens, "the prompt as comma-separated token ids; the slots follow each "
                    "<image> id");
    sub->add_option("--image-tensor", inference.image_tensor, ".npy of preprocessed pixels [N, C, H, W] float32")
        ->check(CLI::ExistingFile);
    sub->add_option("--image", inference.images, "an image file (PNG, JPEG), repeated for several; each becomes "
                    "<image> [slots] </image> after <s>, before --prompt")->check(CLI::ExistingFile);
    sub->add_option("--prompt", inference.prompt, "text after the images, e.g. \"a\" or \"question: ... answer:\"");
    sub->add_option("--tokenizer", inference.tokenizer, "SentencePiece .model for --prompt and the printed text")
        ->capture_default_str();
    sub->add_option("--image-token-id", inference.image_token_id, "the <image> id (default: from the config)");
  }
  generate_app->add_option("--pp", inference.model.pp, "pipeline stages the model is split over (under mpirun)")
      ->capture_default_str()->check(kPositive);
  generate_app->add_option("--tp", inference.model.tp, "tensor-parallel ranks the model is split over (under mpirun)")
      ->capture_default_str()->check(kPositive);
  const std::string inference_precision_help =
      "fp32, or bf16 or fp16: the matmuls read a 16-bit copy of the weights and 16-bit copies of their inputs and "
      "accumulate in f32 (LayerNorm, softmax and attention stay f32)";
  generate_app->add_option("--precision", inference.model.precision, inference_precision_help)
      ->capture_default_str()->check(precisions);
  generate_app->add_option("--temperature", inference.sampling.temperature, "sampling temperature (0: greedy)")
      ->capture_default_str()->check(kNonNegative);
  generate_app->add_option("--top-k", inference.sampling.top_k, "sample among the k likeliest (0: all)")
      ->capture_default_str()->check(kNonNegative);
  generate_app->add_option("--top-p", inference.sampling.top_p, "sample within this probability mass (nucleus)")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  generate_app->add_option("--seed", inference.sampling.seed, "seed of the sampling")->capture_default_str();
  forward_app->add_option("--out", inference.out, "where to write the logits [T, V] (.npy)")
      ->capture_default_str()->check(kWritableFile);
  generate_app->add_option("--max-new-tokens", inference.max_new_tokens, "tokens to generate")
      ->capture_default_str()
      ->check(kPositive);
  generate_app->add_flag("--ignore-eos", inference.ignore_eos, "do not stop at </s>");
  generate_app->add_flag("--print-ids", inference.print_ids, "print the generated ids, comma-separated");

  kosmos::EvalOptions evaluation;
  evaluation.tokenizer = demo_tokenizer;
  CLI::App * eval_app = app.add_subcommand(
      "eval", "zero-shot captioning and VQA accuracy on JSONL documents, perplexity on a prepared dataset; JSON out");
  eval_app->add_option("--checkpoint", evaluation.model.checkpoint, "a checkpoint (step_N.h5) or a run folder")
      ->required();
  add_backend_option(eval_app, evaluation.model.backend);
  eval_app->add_option("--pp", evaluation.model.pp, "pipeline stages the model is split over (under mpirun)")
      ->capture_default_str()->check(kPositive);
  eval_app->add_option("--tp", evaluation.model.tp, "tensor-parallel ranks the model is split over (under mpirun)")
      ->capture_default_str()->check(kPositive);
  eval_app->add_option("--precision", evaluation.model.precision, inference_precision_help)
      ->capture_default_str()->check(precisions);
  eval_app->add_option("--tokenizer", evaluation.tokenizer, "SentencePiece .model the model was trained with")
      ->capture_default_str();
  eval_app->add_option("--captions", evaluation.captions,
                       "JSONL of [image, caption] documents (e.g. a synthetic caption.jsonl): prompts with the image, "
                       "scores the caption and its first three words (colour and shape)")->check(CLI::ExistingFile);
  eval_app->add_option("--vqa", evaluation.vqa,
                       "JSONL of documents ending in \"question: ... answer: X.\" (e.g. interleaved.jsonl): prompts "
                       "up to \"answer:\", scores X")->check(CLI::ExistingFile);
  eval_app->add_option("--data", evaluation.data, "a prepared dataset: perplexity over --batches batches")
      ->check(CLI::ExistingDirectory);
  eval_app->add_option("--batches", evaluation.batches, "perplexity: batches")->capture_default_str()
      ->check(kPositive);
  eval_app->add_option("--batch", evaluation.batch, "prompts or sequences per forward")->capture_default_str()
      ->check(kPositive);
  eval_app->add_option("--limit", evaluation.limit, "documents read from each JSONL")->capture_default_str()
      ->check(kPositive);
  eval_app->add_option("--max-new-tokens", evaluation.max_new_tokens, "tokens generated per prompt at most")
      ->capture_default_str()->check(kPositive);
  eval_app->add_option("--out", evaluation.out, "write the results (and a few examples) as JSON here")
      ->check(kWritableFile);
  eval_app->add_option("--min-colour-shape", evaluation.min_colour_shape,
                       "exit 1 when the captions' colour-and-shape accuracy is below this (0 to 1)")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));

  kosmos::ConvertOptions convert;
  CLI::App * convert_app = app.add_subcommand(
      "convert", "convert FILE.safetensors (peer names) to an HDF5 checkpoint FILE.h5, or FILE.h5 to FILE.safetensors");
  convert_app->add_option("input", convert.input, "the file to read (.safetensors or .h5)")
      ->required()->check(CLI::ExistingFile);
  convert_app->add_option("output", convert.output, "the file to write (.h5 or .safetensors)")
      ->required()->check(kWritableFile);
  convert_app->add_option("--preset", convert.preset, "safetensors -> h5: the model the weights belong to")
      ->capture_default_str();
  convert_app->add_option("--model-config", convert.model_config, "safetensors -> h5: kosmos JSON over the preset")
      ->check(CLI::ExistingFile);
  convert_app->add_option("--names", convert.names,
                          "h5 -> safetensors: seed (torchscale decoder, HF CLIP, flamingo-pytorch) or hf-kosmos2")
      ->capture_default_str()->check(CLI::IsMember({"seed", "hf-kosmos2"}));
  convert_app->add_option("--seed", convert.seed, "safetensors -> h5: the seed a run resuming from it continues with")
      ->capture_default_str();

  // `kosmos bench`: a short training run, timed.
  kosmos::BenchOptions bench;
  bench.train.preset = "small";
  bench.train.batch = 4;
  bench.train.length = 256;
  CLI::App * bench_app = app.add_subcommand(
      "bench", "time a short training run of a preset: median step time, tokens/s, TFLOP/s and MFU (JSON with --out)");
  bench_app->add_option("--preset", bench.train.preset, "model size: tiny, small, kosmos1, kosmos2")
      ->capture_default_str()->check(CLI::IsMember({"tiny", "small", "kosmos1", "kosmos2"}));
  bench_app->add_option("--model-config", bench.train.model_config, "JSON applied over the preset")
      ->check(CLI::ExistingFile);
  add_backend_option(bench_app, bench.train.backend);
  bench_app->add_option("--batch", bench.train.batch, "sequences per micro-batch")->capture_default_str()
      ->check(kPositive);
  bench_app->add_option("--length", bench.train.length, "positions per sequence")->capture_default_str()
      ->check(kPositive);
  bench_app->add_option("--micro-batches", bench.train.micro_batches, "micro-batches per step")->capture_default_str()
      ->check(kPositive);
  bench_app->add_option("--dp", bench.train.dp, "data-parallel ranks (0: what pp x tp leave)")->capture_default_str();
  bench_app->add_option("--pp", bench.train.pp, "pipeline stages")->capture_default_str()->check(kPositive);
  bench_app->add_option("--tp", bench.train.tp, "tensor-parallel ranks")->capture_default_str()
      ->check(kPositive);
  bench_app->add_option("--schedule", bench.train.schedule, "pipeline schedule")->capture_default_str();
  bench_app->add_option("--chunks", bench.train.chunks, "model chunks per stage (--schedule interleaved)")
      ->capture_default_str()->check(kPositive);
  bench_app->add_flag("--zero1", bench.train.zero1, "shard the AdamW state over the data-parallel ranks (ZeRO-1)");
  add_switch(bench_app, "overlap-reduce", bench.train.overlap_reduce, overlap_help);
  bench_app->add_option("--reduce-bucket-mib", bench.train.reduce_bucket_mib, bucket_help)
      ->capture_default_str()->check(CLI::Range(0.001, 4096.0));
  bench_app->add_option("--precision", bench.train.precision, precision_help)->capture_default_str()->check(precisions);
  bench_app->add_option("--recompute", bench.train.recompute, recompute_help)
      ->capture_default_str()->check(recomputations);
  bench_app->add_option("--attention-backward", bench.train.attention_backward, attention_backward_help)
      ->capture_default_str()->check(attention_backwards);
  bench_app->add_option("--gemm-tuning", bench.train.gemm_tuning, gemm_tuning_help)->capture_default_str()
      ->check(CLI::Range(0, 64));
  bench_app->add_option("--head-chunk-rows", bench.train.head_chunk_rows, head_chunk_help)
      ->capture_default_str()->check(kNonNegative);
  bench_app->add_option("--data", bench.train.data, "a prepared dataset instead of the synthetic batches")
      ->check(CLI::ExistingDirectory);
  bench_app->add_flag("--one-image-per-sequence", bench.train.one_image_per_sequence, one_image_help);
  bench_app->add_option("--steps", bench.steps, "steps run")->capture_default_str()->check(kPositive);
  bench_app->add_option("--warmup", bench.warmup, "first steps left out of the timing")->capture_default_str()
      ->check(kNonNegative);
  bench_app->add_option("--peak-tflops", bench.train.peak_tflops, "one device's peak TFLOP/s, for MFU")
      ->capture_default_str()->check(kNonNegative);
  bench_app->add_option("--out", bench.out, "write the medians as JSON here")->check(kWritableFile);
  bench_app->add_flag("--profile", bench.train.profile, profile_help);
  bench_app->require_subcommand(0, 1);
  // `kosmos bench step` is `kosmos bench`: its options fall through to the parent's.
  CLI::App * bench_step = bench_app->add_subcommand("step", "the training step (the default of `kosmos bench`)");
  kosmos::CommBenchOptions comm_bench;
  CLI::App * bench_comm = bench_app->add_subcommand(
      "comm", "all-reduce, all-gather, reduce-scatter, broadcast and pairwise exchange over message sizes, through "
              "the Comm and through plain MPI (nccl-tests' bus bandwidth), under mpirun with 2+ ranks");
  bench_comm->add_option("--backend", comm_bench.backend, "whose buffers: cpu, cuda or rocm")->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "rocm"}));
  bench_comm->add_option("--min-bytes", comm_bench.min_bytes, "smallest message (a size: 8, 4K, 64M; K = 1024)")
      ->capture_default_str()->transform(CLI::AsSizeValue(false))->check(kPositive);
  bench_comm->add_option("--max-bytes", comm_bench.max_bytes,
                         "largest message (sizes double from the smallest; a size: 64M, 1G; K = 1024)")
      ->capture_default_str()->transform(CLI::AsSizeValue(false))->check(kPositive);
  bench_comm->add_option("--seconds-per-size", comm_bench.seconds_per_size, "time spent per operation and size")
      ->capture_default_str()->check(kPositive);
  bench_comm->add_option("--out", comm_bench.out, "every result as JSON")->check(kWritableFile);
  bench_comm->add_option("--csv", comm_bench.csv, "every result as CSV")->check(kWritableFile);
  bench_comm->add_option("--calibration-out", comm_bench.calibration_out,
                         "the link's alpha and bus bandwidth as JSON, for kosmos plan --calibration")
      ->check(kWritableFile);
  kosmos::OpsBenchOptions ops_bench;
  CLI::App * bench_ops = bench_app->add_subcommand(
      "ops", "GFLOP/s of the matmuls and attention and GB/s of the other ops at a preset's shapes, on one backend");
  add_backend_option(bench_ops, ops_bench.backend);
  bench_ops->add_option("--preset", ops_bench.preset, "whose shapes: tiny, small, kosmos1, kosmos2")
      ->capture_default_str()->check(CLI::IsMember({"tiny", "small", "kosmos1", "kosmos2"}));
  bench_ops->add_option("--batch", ops_bench.batch, "sequences of the micro-batch")->capture_default_str()
      ->check(kPositive);
  bench_ops->add_option("--length", ops_bench.length, "positions per sequence")->capture_default_str()
      ->check(kPositive);
  bench_ops->add_option("--optimizer-elements", ops_bench.optimizer_elements, "parameters of the AdamW step timed")
      ->capture_default_str()->check(kPositive);
  bench_ops->add_option("--seconds-per-op", ops_bench.seconds_per_op, "time spent on each op")
      ->capture_default_str()->check(kPositive);
  bench_ops->add_option("--out", ops_bench.out, "every result as JSON")->check(kWritableFile);
  bench_ops->add_option("--csv", ops_bench.csv, "every result as CSV")->check(kWritableFile);
  bench_ops->add_option("--calibration-out", ops_bench.calibration_out,
                        "the best matmul rate and memory bandwidth as JSON, for kosmos plan --calibration")
      ->check(kWritableFile);

  // `kosmos plan`: the layout planner.
  kosmos::PlanOptions plan;
  CLI::App * plan_app = app.add_subcommand(
      "plan", "predict step time, memory and MFU of the layouts of N devices (or of one --layout) and rank them");
  plan_app->add_option("--gpus", plan.gpus, "devices of the job")->capture_default_str()->check(kPositive);
  plan_app->add_option("--gpu", plan.gpu, "machine: h100, h200, mi250, mi300x, or cpu (this project's VM)")
      ->capture_default_str()->check(CLI::IsMember({"h100", "h200", "mi250", "mi300x", "cpu"}));
  plan_app->add_option("--nodes", plan.nodes, "nodes (0: devices / devices per node, rounded up)")
      ->capture_default_str()->check(kNonNegative);
  plan_app->add_option("--preset", plan.preset, "model: tiny, small, kosmos1, kosmos2")->capture_default_str()
      ->check(CLI::IsMember({"tiny", "small", "kosmos1", "kosmos2"}));
  plan_app->add_option("--model-config", plan.model_config, "JSON applied over the preset")->check(CLI::ExistingFile);
  plan_app->add_option("--global-batch-tokens", plan.global_batch_tokens, "tokens per step (or --global-batch)")
      ->check(kNonNegative);
  plan_app->add_option("--global-batch", plan.global_batch, "sequences per step")->check(kNonNegative);
  plan_app->add_option("--length", plan.length, "positions per sequence")->capture_default_str()
      ->check(kPositive);
  plan_app->add_option("--images-per-sequence", plan.images_per_sequence, "images per sequence on average")
      ->capture_default_str()->check(kNonNegative);
  plan_app->add_option("--calibration", plan.calibration,
                       "JSON of measured machine rates (matmul_tflops, memory_gbs, intra_alpha_us, intra_gbs, ...; "
                       "`kosmos bench comm --out` writes the link rates)")
      ->check(CLI::ExistingFile);
  plan_app->add_option("--measured", plan.measured,
                       "a `kosmos bench --out` JSON measured on this machine: calibrates the matmul rate")
      ->check(CLI::ExistingFile);
  plan_app->add_option("--layout", plan.layout,
                       "predict one layout: dp=2,pp=2,tp=1,m=4,schedule=1f1b[,chunks=2][,zero1][,recompute]");
  plan_app->add_option("--top", plan.top, "layouts printed")->capture_default_str()->check(kPositive);
  plan_app->add_option("--out", plan.out, "write every prediction as JSON here")->check(kWritableFile);

  // `kosmos data synth | prepare`.
  kosmos::DataOptions data;
  data.tokenizer = demo_tokenizer;
  CLI::App * data_app = app.add_subcommand("data", "make and prepare training data");
  data_app->require_subcommand(1);
  CLI::App * synth_app = data_app->add_subcommand(
      "synth", "write the synthetic multimodal corpus: coloured shapes with captions, interleaved documents with "
               "questions and answers, text-only documents (JSONL + PNG + corpus.txt)");
  synth_app->add_option("--out", data.out, "the folder to write")->required();
  synth_app->add_option("--n", data.documents, "documents in all (1/2 captions, 1/4 interleaved, 1/4 text)")
      ->capture_default_str()->check(CLI::Range(int64_t{4}, int64_t{100000000}));
  synth_app->add_option("--seed", data.seed, "seed of every choice")->capture_default_str();
  synth_app->add_option("--image-size", data.image_size, "pixels per side of the pictures")
      ->capture_default_str()->check(CLI::Range(int64_t{8}, int64_t{4096}));
  CLI::App * prepare_app = data_app->add_subcommand(
      "prepare", "tokenise and pack JSONL streams into HDF5 shards of sequences with preprocessed images");
  prepare_app->add_option("--stream", data.streams,
                          "NAME=FILE.jsonl[:WEIGHT], repeated: one per stream (text, caption, interleaved), "
                          "mixed by WEIGHT when training")->required();
  prepare_app->add_option("--out", data.out, "the dataset folder to write")->required();
  prepare_app->add_option("--tokenizer", data.tokenizer, "SentencePiece .model")->capture_default_str();
  prepare_app->add_option("--length", data.length, "positions per packed sequence")
      ->capture_default_str()->check(CLI::Range(int64_t{8}, int64_t{1} << 20));
  prepare_app->add_option("--image-size", data.image_size, "preprocessed image side: the model's vision.image_size")
      ->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{4096}));
  prepare_app->add_option("--image-slots", data.image_slots, "slots after each <image>: the connector's latents")
      ->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{4096}));
  prepare_app->add_option("--shard-sequences", data.shard_sequences, "sequences per shard file")
      ->capture_default_str()->check(kPositive);
  prepare_app->add_flag("--skip-bad", data.skip_bad,
                        "count, report and skip bad documents (malformed lines, unreadable images, too long) instead "
                        "of stopping at the first");
  add_switch(prepare_app, "progress", data.progress, "a progress bar on stderr (--no-progress: none)");

  // `kosmos tokenizer train | encode | decode`.
  kosmos::TokenizerOptions tokenizer;
  tokenizer.model = demo_tokenizer;
  CLI::App * tokenizer_app = app.add_subcommand("tokenizer", "train a SentencePiece model, encode and decode text");
  tokenizer_app->require_subcommand(1);
  CLI::App * tokenizer_train = tokenizer_app->add_subcommand("train", "train a unigram SentencePiece model");
  tokenizer_train->add_option("--input", tokenizer.input, "the corpus: text, one sentence per line")
      ->required()->check(CLI::ExistingFile);
  tokenizer_train->add_option("--vocab", tokenizer.vocab, "SentencePiece pieces (kosmos adds <pad>, <mask> and 5 tags)")
      ->capture_default_str()->check(CLI::Range(int64_t{8}, int64_t{1} << 20));
  tokenizer_train->add_option("--out", tokenizer.out, "model prefix: writes PREFIX.model and PREFIX.vocab")
      ->required()->check(kWritableFile);
  CLI::App * tokenizer_encode = tokenizer_app->add_subcommand("encode", "print the ids of a text");
  tokenizer_encode->add_option("text", tokenizer.text, "the text")->required();
  CLI::App * tokenizer_decode = tokenizer_app->add_subcommand("decode", "print the text of ids");
  tokenizer_decode->add_option("ids", tokenizer.text, "comma-separated ids")->required();
  for (CLI::App * sub : {tokenizer_encode, tokenizer_decode})
    sub->add_option("--model", tokenizer.model, "SentencePiece .model")->capture_default_str();

  // A bad command line is one line, like every other error: "[rank r] error: ... (kosmos SUB --help lists ...)".
  app.failure_message([](const CLI::App * failed, const CLI::Error & error) {
    std::string command = "kosmos";
    for (const CLI::App * sub = failed; sub && !sub->get_subcommands().empty();) {
      sub = sub->get_subcommands().front();
      command += " " + sub->get_name();
    }
    return "[rank " + std::to_string(world_rank()) + "] error: " + error.what() + " (`" + command +
           " --help` lists the options)\n";
  });

  int code = 0;
  kosmos::RankLabel label;
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError & error) {
      const std::string unknown_key = "INI was not able to parse ";
      const std::string what = error.what();
      if (dynamic_cast<const CLI::ConfigError *>(&error) != nullptr && what.rfind(unknown_key, 0) == 0) {
        // CLI11 names neither the file nor the problem: a key no option of its section has.
        const CLI::Option * config = app.get_config_ptr();
        const std::string file = config != nullptr && config->count() > 0 ? config->as<std::string>() : "--config";
        const std::string report = "[rank " + std::to_string(world_rank()) + "] error: " + file + ": no option '" +
                                   what.substr(unknown_key.size()) + "' (a section's keys are its subcommand's long "
                                   "options, as `kosmos SUBCOMMAND --print-config` writes them)\n";
        std::fwrite(report.data(), 1, report.size(), stderr);
        code = error.get_exit_code();
      } else if (dynamic_cast<const CLI::RequiredError *>(&error) != nullptr && app.get_subcommands().empty()) {
        // No subcommand, where a word was given in its place: a misspelt one (`kosmos trian`).
        std::string word;
        for (int i = 1; i < argc && word.empty(); ++i) {
          const std::string arg = argv[i];
          if (arg == "--config") ++i;  // its value
          else if (arg.empty() || arg[0] != '-') word = arg;
        }
        if (word.empty()) {
          code = app.exit(error);
        } else {
          std::string names;
          for (const CLI::App * sub : app.get_subcommands({})) names += (names.empty() ? "" : ", ") + sub->get_name();
          const std::string report = "[rank " + std::to_string(world_rank()) + "] error: no subcommand '" + word +
                                     "'; the subcommands: " + names + " (kosmos --help says what each does)\n";
          std::fwrite(report.data(), 1, report.size(), stderr);
          code = error.get_exit_code();
        }
      } else {
        code = app.exit(error);
      }
      // A bad command line on some ranks only (a file that exists on one node) must not leave the others waiting.
      if (code != 0 && world_size() > 1) {
        std::this_thread::sleep_for(kReportGrace);  // the other ranks print the same line first
        MPI_Abort(MPI_COMM_WORLD, code);
      }
      MPI_Finalize();
      return code;
    }
    // The effective options of the chosen subcommand, as a TOML file that --config reads back.
    std::string section;
    const CLI::App * chosen = &app;
    while (!chosen->get_subcommands().empty()) {
      chosen = chosen->get_subcommands().front();
      section += (section.empty() ? "" : ".") + chosen->get_name();
    }
    std::string effective = "[" + section + "]\n";
    std::istringstream lines(chosen->config_to_str(true, false));
    for (std::string line; std::getline(lines, line);)  // an option left empty is not set: leave it out
      if (line.size() < 3 || (line.compare(line.size() - 3, 3, "=\"\"") != 0 && line.compare(line.size() - 3, 3, "=''") != 0))
        effective += line + "\n";
    if (print_config) {
      if (world_rank() == 0) std::cout << effective;
      MPI_Finalize();
      return 0;
    }
    train.run_config = effective;
    train.batch_given = train_app->count("--batch") > 0;
    train.local_rank = kosmos::check_launch().local_rank;
    const kosmos::BackendRegistry registry;
    if (*info) {
      if (world_rank() == 0) kosmos::print_info(std::cout, registry);
    } else if (*demo) {
      code = kosmos::run_demo(std::cout, registry, demo_options);
    } else if (*train_app) {
      stop_signals.catch_stops();
      code = kosmos::run_train(std::cout, registry, train, label, kosmos::StopRequest{&stop_signals.requested()});
    } else if (*forward_app) {
      code = kosmos::run_forward(std::cout, registry, inference);
    } else if (*generate_app) {
      code = kosmos::run_generate(std::cout, registry, inference);
    } else if (*bench_ops) {
      ops_bench.local_rank = train.local_rank;
      if (world_rank() == 0) code = kosmos::run_bench_ops(std::cout, registry, ops_bench);
    } else if (*bench_comm) {
      comm_bench.local_rank = train.local_rank;
      code = kosmos::run_bench_comm(std::cout, registry, comm_bench);
    } else if (*bench_app) {
      (void)bench_step;
      bench.train.local_rank = train.local_rank;
      code = kosmos::run_bench(std::cout, registry, bench, label);
    } else if (*plan_app) {
      if (world_rank() == 0) code = kosmos::run_plan(std::cout, plan);
    } else if (*eval_app) {
      code = kosmos::run_eval(std::cout, registry, evaluation);
    } else if (*convert_app) {
      code = kosmos::run_convert(std::cout, registry, convert);
    } else if (*synth_app) {
      code = kosmos::run_data_synth(std::cout, data);
    } else if (*prepare_app) {
      code = kosmos::run_data_prepare(std::cout, data);
    } else if (*tokenizer_app) {
      tokenizer.action = *tokenizer_train ? "train" : *tokenizer_encode ? "encode" : "decode";
      code = kosmos::run_tokenizer(std::cout, tokenizer);
    }
  } catch (const kosmos::Error & error) {
    fail(error.what(), label);
  } catch (const std::exception & error) {
    fail(std::string("unexpected failure: ") + error.what(), label);
  }
  MPI_Finalize();
  return code;
}
