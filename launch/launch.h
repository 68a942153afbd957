// launch.h: the subcommands that main.cpp wires to CLI11. Each takes its options struct and returns an exit code;
// errors are thrown as kosmos::Error and reported by main.
#pragma once

#include <atomic>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "backends/registry.h"
#include "launch/decoding.h"
#include "parallel/comm.h"

namespace kosmos {

// This rank's place on its node (ranks sharing memory), after checking the launcher's task count against MPI's world
// (an error naming the launcher and the fix when they differ). Needs MPI.
struct LaunchPlace {
  int local_rank = 0, local_size = 1;
};
LaunchPlace check_launch();

// MPI_COMM_WORLD as the communicator for `device`'s buffers: MPI itself where the host can touch them (the CPU),
// NCCL on CUDA (point-to-point and host buffers staged through host memory), else staged through host memory
// (ROCm: Debian has no RCCL).
std::unique_ptr<parallel::Comm> world_for(Device & device);
// The watchdog's status folder of this job when --watchdog-dir is not given: one per launch (PMIx namespace, Slurm
// job and step, or the launcher's process), under the temp dir, so that the ranks of one node share it.
std::string default_watchdog_dir();

// `kosmos info`: build options, backends (with why a backend is unavailable), devices, library versions.
void print_info(std::ostream & out, const BackendRegistry & registry);

struct DemoOptions {
  std::string backend = "auto";
  int device = 0;
  int steps = 200;          // AdamW steps of the MLP demo
  uint64_t seed = 1234;     // data and initialisation
};

// `kosmos demo`: trains a small MLP classifier with the op set (matmul, layernorm, GELU, cross-entropy, AdamW,
// dropout) on synthetic data and times one attention forward+backward at a decoder shape.
int run_demo(std::ostream & out, const BackendRegistry & registry, const DemoOptions & options);

struct TrainOptions {
  std::string backend = "auto";
  int device = -1;                   // -1: this rank's local rank on its node, modulo the devices it sees
  int local_rank = 0;                // set by main (check_launch), not an option
  std::string preset = "tiny";       // tiny, small, kosmos1, kosmos2
  std::string model_config;          // JSON file applied over the preset (peer key names)
  int64_t steps = 200;
  uint64_t seed = 1;
  int64_t batch = 8;                 // sequences per micro-batch
  bool batch_given = false;          // --batch was given (main.cpp): --global-batch then says it goes unused
  int64_t length = 0;                // positions per sequence; 0: the smallest that fits the synthetic samples
  int64_t micro_batches = 1;         // gradient accumulation
  double lr = 2e-3;                  // peak learning rate
  int64_t warmup = 20;               // warm-up steps
  double clip = 2.0;                 // global gradient-norm clip (0: off)
  double weight_decay = 0.01;
  std::string data;                  // a prepared dataset folder (kosmos data prepare); "": built-in synthetic batches
  bool one_image_per_sequence = false;  // the synthetic batches: one image in each (else every third holds two)
  std::string metrics;               // JSON lines file, one object per step
  int64_t log_every = 10;            // print a step line every N steps
  bool profile = false;              // print time per op at the end
  int64_t profile_after = 0;         // steps run before --profile starts timing (bench: its untimed warm-up steps)
  int dp = 0, pp = 1, tp = 1;        // process grid (dp 0: all ranks not used by pp x tp)
  int64_t global_batch = 0;          // sequences per step over all dp ranks; 0: batch x micro_batches x dp
  bool zero1 = false;                // shard the optimizer over dp (ZeRO-1)
  bool overlap_reduce = true;        // reduce gradient buckets over dp during the backward
  double reduce_bucket_mib = 16.0;   // data-parallel gradient all-reduce granularity
  std::string save_weights;          // write the final parameters (safetensors) here
  std::string save_dir;              // HDF5 checkpoints go here (step_<N>.h5 and `latest`)
  int64_t save_every = 0;            // a checkpoint every N steps (0: only after the last step)
  int64_t keep = 3;                  // complete checkpoints kept in save_dir (0: all)
  std::string resume;                // "", "auto" (newest in save_dir, if any), or a checkpoint file or folder
  int64_t stop_at = 0;               // stop after this step (checkpointing it); the schedule still runs to `steps`
  std::string run_config;            // the effective options as TOML (--print-config), kept in each checkpoint
  double peak_tflops = 0.0;          // one device's peak, for MFU in the step lines (0: MFU not shown)
  std::string schedule = "1f1b";     // pipeline schedule: gpipe, 1f1b, interleaved, zb-h1
  int chunks = 2;                    // model chunks per stage for --schedule interleaved
  std::vector<int64_t> stage_layers; // decoder layers per (virtual) stage, overriding the cost model
  std::string precision = "fp32";    // fp32, or bf16 or fp16: matmuls on 16-bit copies of the weights and activations with f32
                                     // accumulation; master weights, gradients, AdamW moments and other ops in f32
  std::string recompute = "none";    // activations run again in the backward: none, attention, layer (model/layers.h)
  std::string attention_backward = "deterministic";  // deterministic or atomic (AttentionParams::deterministic)
  int gemm_tuning = 0;               // GEMM algorithms timed per new product shape (Device::set_gemm_tuning; 0: none)
  int64_t head_chunk_rows = 0;       // rows of logits the head and loss compute at once (0: 512 MiB of them)
  std::string non_finite = "auto";   // a NaN or infinite loss or gradient norm: skip the update, stop, or
                                     // reduce-scale (skip and halve the loss scale); auto: reduce-scale with
                                     // fp16, else skip
  double loss_scale = 0.0;           // a power of two (0: 1, or 65536 with reduce-scale; on resume the checkpoint's)
  int64_t loss_scale_window = 2000;  // reduce-scale: finite steps in a row before the scale doubles
  int64_t poison_step = 0;           // test hook: world rank 0 writes a NaN into its gradients at this step
  double watchdog_timeout = 600.0;   // a collective or p2p call longer than this ends the job (0: off)
  std::string watchdog_dir;          // the ranks' status files ("": a folder per job under the temp dir)
  int stall_rank = -1;               // test hook: this world rank sleeps inside its first call of stall_step
  int64_t stall_step = 0;
  double stall_seconds = 120.0;
};

// Where this rank sits in the process grid, once known: errors print it ("pp 1 tp 0 dp 1").
struct RankLabel {
  std::string coordinates;
};

// A stop asked for from outside (StopSignals' watcher sets the flag to SIGTERM's, SIGUSR1's or SIGINT's number).
struct StopRequest {
  const std::atomic<int> * signal = nullptr;
  int requested() const { return signal ? signal->load() : 0; }
};

// The dtype the matmuls compute in for a --precision of fp32, bf16 or fp16 (an error names any other).
DType precision_dtype(const std::string & precision);

// `kosmos train`: trains on the built-in synthetic batches or a prepared dataset, on one rank or a dp x pp x tp grid
// under mpirun, printing progress and writing per-step metrics and checkpoints. Sets `label` once the grid is made.
// A stop request on any rank ends the run on every rank after the current step, with a checkpoint (exit 0).
int run_train(std::ostream & out, const BackendRegistry & registry, const TrainOptions & options, RankLabel & label,
              const StopRequest & stop = {});

struct BenchOptions {
  TrainOptions train;                // what to time (preset, batch, length, layout, ...)
  int64_t steps = 20;                // steps run
  int64_t warmup = 3;                // of which the first are not timed
  std::string out;                   // results as JSON
};

// `kosmos bench`: median step time, tokens/s, TFLOP/s and MFU of a short training run.
int run_bench(std::ostream & out, const BackendRegistry & registry, const BenchOptions & options, RankLabel & label);

struct CommBenchOptions {
  std::string backend = "cpu";       // whose buffers: cpu (MPI on host memory), cuda or rocm (staged)
  int local_rank = 0;                // set by main
  int64_t min_bytes = 8;
  int64_t max_bytes = int64_t{64} << 20;
  double seconds_per_size = 0.05;    // time spent on each size and operation, both paths together
  std::string out;                   // every result as JSON
  std::string csv;                   // the same as CSV
  std::string calibration_out;       // the link's alpha and beta for `kosmos plan --calibration`
};

// `kosmos bench comm`: collective and p2p bandwidth through the Comm and through plain MPI, interleaved.
int run_bench_comm(std::ostream & out, const BackendRegistry & registry, const CommBenchOptions & options);

struct OpsBenchOptions {
  std::string backend = "auto";
  int local_rank = 0;                // set by main
  std::string preset = "small";      // whose shapes
  int64_t batch = 4, length = 256;   // tokens of a micro-batch
  int64_t optimizer_elements = int64_t{1} << 22;
  double seconds_per_op = 0.3;
  std::string out, csv, calibration_out;
};

// `kosmos bench ops`: GFLOP/s and GB/s of every op family at a preset's shapes on one backend.
int run_bench_ops(std::ostream & out, const BackendRegistry & registry, const OpsBenchOptions & options);

struct PlanOptions {
  int gpus = 8;                      // devices of the job
  std::string gpu = "h100";          // h100, h200, mi250, mi300x or cpu
  int nodes = 0;                     // 0: gpus / devices per node, rounded up
  std::string preset = "kosmos1";
  std::string model_config;          // JSON over the preset
  int64_t global_batch_tokens = 0;   // tokens per step (0: --global-batch sequences)
  int64_t global_batch = 0;          // sequences per step
  int64_t length = 2048;             // positions per sequence
  double images_per_sequence = 1.0;
  std::string calibration;           // JSON of measured machine rates (matmul_tflops, memory_gbs, intra_gbs, ...)
  std::string measured;              // a `kosmos bench --out` JSON from this machine: calibrates the matmul rate
  std::string layout;                // "dp=2,pp=2,tp=1,m=4,schedule=1f1b[,chunks=2][,zero1][,recompute]"
  int top = 5;                       // layouts printed
  std::string out;                   // the predictions as JSON
};

// `kosmos plan`: the planner's predicted step time, memory and MFU of the best layouts of N devices (or of one
// layout), from datasheet or measured machine rates (bench/planner.h).
int run_plan(std::ostream & out, const PlanOptions & options);

struct InferenceOptions {
  ModelSource model;                 // a checkpoint, weights with a config, or an HF folder
  std::string tokens;                // the prompt as comma-separated ids ...
  std::string image_tensor;          // ... with preprocessed pixels, .npy [N, C, H, W] float32
  std::vector<std::string> images;   // or image files (PNG, JPEG), each <image> [slots] </image> after <s> ...
  std::string prompt;                // ... then this text
  std::string tokenizer;             // SentencePiece .model for --prompt and the printed text
  int64_t image_token_id = -1;       // overrides the config's <image> id
  std::string out = "logits.npy";    // forward: where the logits [T, V] go
  int64_t max_new_tokens = 8;        // generate
  bool ignore_eos = false;           // generate: keep going past </s>
  bool print_ids = false;            // generate: print the generated ids
  Sampling sampling;                 // generate: greedy unless a temperature is given
};

// `kosmos forward`: one fp32 forward pass; writes the logits [T, V] as .npy.
int run_forward(std::ostream & out, const BackendRegistry & registry, const InferenceOptions & options);
// `kosmos generate`: greedy or sampled decoding from the given ids or images and text.
int run_generate(std::ostream & out, const BackendRegistry & registry, const InferenceOptions & options);

struct EvalOptions {
  ModelSource model;                 // usually --checkpoint
  std::string tokenizer;             // SentencePiece .model the model was trained with
  std::string captions;              // JSONL of [image, caption] documents: captioning accuracy
  std::string vqa;                   // JSONL of documents whose last text holds "answer:": VQA accuracy
  std::string data;                  // a prepared dataset: perplexity
  int64_t batches = 8;               // perplexity: batches of `batch` sequences
  int64_t batch = 32;                // prompts or sequences per forward
  int64_t limit = 200;               // documents read from each JSONL
  int64_t max_new_tokens = 24;
  uint64_t seed = 1;                 // perplexity: the data order
  std::string out;                   // results as JSON
  double min_colour_shape = 0.0;     // captioning: fail (exit 1) below this colour-and-shape accuracy
};

// `kosmos eval`: captioning and VQA accuracy, perplexity.
int run_eval(std::ostream & out, const BackendRegistry & registry, const EvalOptions & options);

struct ConvertOptions {
  std::string input, output;         // FILE.safetensors -> FILE.h5, or FILE.h5 -> FILE.safetensors
  std::string preset = "kosmos1";    // safetensors -> h5: the model the weights belong to ...
  std::string model_config;          // ... with this JSON over it (peer key names)
  std::string names = "seed";        // h5 -> safetensors: seed (torchscale, HF CLIP, flamingo) or hf-kosmos2
  uint64_t seed = 1;                 // safetensors -> h5: the seed stored for the run that resumes from it
};

// `kosmos convert`: peer weights into a checkpoint, or a checkpoint into peer weights.
int run_convert(std::ostream & out, const BackendRegistry & registry, const ConvertOptions & options);

struct DataOptions {
  std::string out;                   // synth: the corpus folder; prepare: the dataset folder
  int64_t documents = 1000;          // synth: documents in all
  uint64_t seed = 1;                 // synth
  int64_t image_size = 224;          // synth: PNG side; prepare: preprocessed side (the model's image size)
  std::vector<std::string> streams;  // prepare: NAME=FILE.jsonl[:WEIGHT]
  std::string tokenizer;             // prepare: SentencePiece .model
  int64_t length = 256;              // prepare: positions per sequence
  int64_t image_slots = 64;          // prepare: slots after each <image> (the model's latents)
  int64_t shard_sequences = 4096;    // prepare: sequences per shard
  bool skip_bad = false;             // prepare: count and skip bad documents
  bool progress = true;              // prepare: progress bar on stderr
};

// `kosmos data synth`: the synthetic multimodal corpus (JSONL, PNGs, corpus.txt).
int run_data_synth(std::ostream & out, const DataOptions & options);
// `kosmos data prepare`: JSONL streams into a packed, tokenised HDF5 dataset.
int run_data_prepare(std::ostream & out, const DataOptions & options);

struct TokenizerOptions {
  std::string action;                // train, encode, decode
  std::string model;                 // encode, decode: the .model
  std::string text;                  // encode: the text; decode: comma-separated ids
  std::string input;                 // train: corpus, one sentence per line
  std::string out;                   // train: the model prefix (writes PREFIX.model and PREFIX.vocab)
  int64_t vocab = 1000;              // train: SentencePiece pieces
};

// `kosmos tokenizer train | encode | decode`.
int run_tokenizer(std::ostream & out, const TokenizerOptions & options);

}  // namespace kosmos
