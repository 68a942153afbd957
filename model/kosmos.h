// kosmos.h: the whole KOSMOS model on one rank: token embedding with image slots filled from the image path,
// absolute positions, the Magneto decoder, the final LayerNorm, the (tied or untied) output projection and the
// masked next-token loss, as one forward/backward over a micro-batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/image_path.h"
#include "model/layers.h"

namespace kosmos::model {

// One micro-batch on the host. Sequences are [batch, length]; image i fills the num_latents rows starting at flat
// row image_slots[i] (the positions after its <image> token).
struct Batch {
  int64_t batch = 0, length = 0;
  std::vector<int32_t> tokens;        // [B*T] input ids (image slots hold placeholders)
  std::vector<int32_t> targets;       // [B*T] the token each position predicts
  std::vector<float> loss_weights;    // [B*T] 1 where the prediction counts (kosmos-spec 8.3), else 0
  std::vector<float> images;          // [Ni, C, H, W] preprocessed pixels
  int64_t image_count = 0;
  std::vector<int64_t> image_slots;   // [Ni] flat row of each image's first slot
  int64_t first_sample = 0;           // global index of sequence 0, for layout-independent dropout
  int64_t first_image = 0;            // global index of image 0, likewise
};

// The image slots of `tokens`: the num_latents positions after each <image> token, in order. An <image> token
// without room for its slots is an error naming the sequence and position.
std::vector<int64_t> find_image_slots(const std::vector<int32_t> & tokens, int64_t batch, int64_t length,
                                      const KosmosConfig & config);

// What makes one step's randomness: dropout is on only when training.
struct StepRandomness {
  uint64_t seed = 0;
  int64_t step = 0;
  bool training = false;
};

// The part of the model one pipeline stage runs: the first holds the image path and the embeddings, the last the
// final LayerNorm, the head and the loss; each holds decoder layers [layer_begin, layer_end).
struct StageRange {
  bool first = true, last = true;
  int64_t layer_begin = 0, layer_end = -1;  // -1: to the last layer
};

// What one micro-batch's forward on a stage keeps for its backward (views into the arena of its activations).
struct MicroState {
  StepRandomness randomness;
  float loss_scale = 1.0f;
  TensorView ids, targets, weights, positions;   // [B*T]
  VisionSaved vision;
  ConnectorSaved connector;
  std::vector<BlockSaved> blocks;                // this stage's layers, in order
  std::vector<BlockOptions> options;
  TensorView last_hidden, normed;                // last stage: the final LayerNorm's input and output [B*T, d]
  TensorView d_normed;                           // [B*T, d]: the head's input gradient, made with the loss
  LayerNorm::Saved final_stats;
  // Left by a split backward for its W pass: the weight-gradient work, and where the backward reported gradients
  // final (Runtime::gradients_final_from), replayed in order to the W pass's listener (then only are they final).
  std::vector<std::function<void()>> weight_gradients;
  std::function<void(int64_t)> * weight_pass_listener = nullptr;  // the W pass's, while it runs
};

// Incremental decoding's state on one pipeline stage: each of its decoder layers' cache, the positions cached, and
// each row's real (non-pad) tokens so far, from which the position ids continue.
struct DecodeCache {
  int64_t capacity = 0;  // positions per row at most: prompt and new tokens
  int64_t length = 0;    // positions cached
  std::vector<LayerCache> layers;
  std::vector<int64_t> real_tokens;
};

class KosmosModel {
 public:
  // `tensor_parallel` (null or one rank: the whole model here) splits every decoder layer's heads and FFN, and the
  // embedding, head and loss by vocabulary rows, over its ranks, Megatron-style; `state` holds this rank's shards
  // (a ParameterTable made with its rank in the group). The image path stays replicated over those ranks: all its
  // layers but the last run forward only, and a replica needs no communication where a split would add two
  // all-reduces per layer.
  KosmosModel(const KosmosConfig & config, ModelState & state, parallel::Comm * tensor_parallel = nullptr);

  // Forward (and, when `backward`, backward, accumulating into the state's gradients) of one micro-batch.
  // Returns loss_scale * sum of weighted token losses. When `logits` is given it receives [B*T, V] on the host
  // ([B*T, V/tp], this rank's vocabulary rows, under tensor parallelism).
  double run(Runtime & rt, const Batch & batch, float loss_scale, const StepRandomness & randomness, bool backward,
             std::vector<float> * logits = nullptr);

  // One pipeline stage's share of a micro-batch. The first stage embeds `batch`; the others read `input`
  // [B*T, d] from the previous stage; all but the last write `output` [B*T, d]. The last returns the loss.
  double stage_forward(Runtime & rt, const StageRange & range, const Batch & batch, TensorView input,
                       TensorView output, float loss_scale, const StepRandomness & randomness, bool keep,
                       MicroState & state, std::vector<float> * logits = nullptr);
  // The backward of stage_forward: d_output [B*T, d] from the next stage (absent on the last), d_input written for
  // the previous stage (absent on the first); parameter gradients accumulate.
  void stage_backward(Runtime & rt, const StageRange & range, const Batch & batch, TensorView d_output,
                      TensorView d_input, MicroState & state);
  // The same backward split for zero-bubble schedules: the input gradients (and the cheap parameter gradients of
  // LayerNorms and embeddings) now, the linear layers' weight gradients left in the state for
  // stage_backward_weights, which reports the gradients final to its runtime's listener as it completes them.
  void stage_backward_input(Runtime & rt, const StageRange & range, const Batch & batch, TensorView d_output,
                            TensorView d_input, MicroState & state);
  void stage_backward_weights(Runtime & rt, MicroState & state);

  // Incremental decoding on one pipeline stage (kosmos-spec 3.5): the first call runs the prompt (`batch`, its
  // images included) and fills `cache`; each later call runs one new token per row. Like stage_forward it takes
  // `input` from the previous stage and writes `output` for the next; the last stage writes the logits of every
  // new position, [B*n, V] ([B*n, V/tp] under tensor parallelism), to `logits`.
  void stage_decode(Runtime & rt, const StageRange & range, const Batch & batch, TensorView input, TensorView output,
                    DecodeCache & cache, std::vector<float> * logits);

  const KosmosConfig & config() const { return config_; }
  // What the training forward of each decoder layer keeps for its backward (layers.h); kNone unless set.
  void set_recompute(Recompute recompute) { recompute_ = recompute; }
  Recompute recompute() const { return recompute_; }
  // Whether the decoder layers' attention backward gives the same bits run after run (AttentionParams::deterministic;
  // true unless set).
  void set_deterministic_attention(bool deterministic) { deterministic_attention_ = deterministic; }
  // Rows of logits the head and loss compute at once (0: default_head_chunk_rows).
  void set_head_chunk_rows(int64_t rows) { head_chunk_rows_ = rows; }
  // The default: as many rows of `vocab_local` logits as fit kHeadChunkBytes (512 MiB) at `bytes_per_logit`
  // (head_bytes_per_logit), in whole kHeadChunkRowMultiple where that many fit. Rows of 1024 or more that are no
  // multiple of 16 would have matmul.cu split each of the head's three products in two (its GEMM library's
  // whole-tile kernels want multiples of 16), the second a few rows long yet reading the head's weight, or its f32
  // gradient, whole: kosmos1's 1048 rows a chunk cost three such products a chunk, sixteen chunks a step. Fewer,
  // larger chunks also read the head's weight, and read and write its f32 gradient, fewer times a step.
  static int64_t default_head_chunk_rows(int64_t vocab_local, int64_t bytes_per_logit);
  // What a chunk holds for each logit where the head multiplies in `matmul_dtype`: the logits (bf16 under a bf16
  // head, else f32) and their gradient (in matmul_dtype, over the logits where the two agree). bf16 2, f32 4, f16 6.
  static int64_t head_bytes_per_logit(DType matmul_dtype);
  static constexpr int64_t kHeadChunkBytes = int64_t{1} << 29;
  static constexpr int64_t kHeadChunkRowMultiple = 128;
  // The elements between rows of the head's logits (or their gradient) in `dtype`: the vocabulary rounded up so that
  // a row is a multiple of `alignment` bytes (Device::matmul_row_alignment; kosmos.cpp's take_logits says why).
  static int64_t head_row_pitch(int64_t vocab, DType dtype, size_t alignment);

 private:
  // The first stage's input: token embeddings with the image slots filled by the image path, scaled, plus absolute
  // positions (continuing after each row's `preceding` real tokens when given), dropout when training.
  TensorView embed(Runtime & rt, const Batch & batch, const StepRandomness & randomness, bool keep, MicroState & s,
                   const std::vector<int64_t> * preceding);
  int64_t layer_end(const StageRange & range) const {
    return range.layer_end < 0 ? config_.decoder.layers : range.layer_end;
  }
  float embed_scale() const;
  std::string output_name() const;
  ImagePathKeys image_keys(const Batch & batch, const StepRandomness & randomness) const;
  // Tensor parallelism: whether it is on, and this rank's vocabulary rows [vocab_start, vocab_start + vocab_local)
  // of the embedding and the head (the rows its state holds).
  bool split() const { return tensor_parallel_ != nullptr; }
  int64_t vocab_start() const;
  int64_t vocab_local() const;
  // The output projection (tied or not; this rank's vocabulary rows) as a Linear without bias.
  Linear head() const;
  // The head and the loss (scaled by s.loss_scale) over chunks of rows, each chunk's logits [rows, V] (this
  // rank's [rows, V/tp] under tensor parallelism; bf16 from a bf16 head, else f32) living only while it is
  // processed, so that the whole batch's logits never exist on the device (`logits_out`, when given, receives them
  // on the host, as f32); with `backward` the loss's gradient (over the logits, where it has their dtype) goes
  // through the head at once: its weight gradient accumulates and its input gradient (summed over the tp ranks) is
  // kept in s.d_normed.
  double head_loss_in_chunks(Runtime & rt, const Batch & batch, bool backward, MicroState & s,
                             std::vector<float> * logits_out) const;
  // Vocabulary parallelism over `lse.dim(0)` rows with host loss weights `weights`: every rank's slice's log-sum-exp
  // `lse` becomes the whole vocabulary's (in place, for the backward), and the returned correction, added to this
  // rank's loss over its slice and summed over the tp ranks, gives the whole vocabulary's loss.
  double vocab_parallel_correction(Runtime & rt, const float * weights, float loss_scale, TensorView lse) const;

  const KosmosConfig config_;
  ModelState & state_;
  ImagePath image_path_;
  parallel::Comm * tensor_parallel_;  // null unless split over two or more ranks
  std::vector<BlockWeights> decoder_blocks_;  // every decoder layer's weights (this rank's shards), made once
  // Where in the flat parameter buffers decoder layer l's parameters begin, and the final LayerNorm's: above each,
  // only later layers, the final LayerNorm and an untied head (what a backward has finished by then).
  std::vector<int64_t> decoder_layer_offsets_;
  int64_t final_norm_offset_ = 0;
  Recompute recompute_ = Recompute::kNone;
  bool deterministic_attention_ = true;
  int64_t head_chunk_rows_ = 0;
};

}  // namespace kosmos::model
