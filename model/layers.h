// layers.h: the building blocks every KOSMOS module is made of, as forward/backward pairs over the device
// interface: the runtime a layer runs on, Linear, LayerNorm, and the pre-LN transformer block that serves both the
// CLIP encoder layer and the Magneto (sub-LN) decoder layer (they differ only in options).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>
#include <optional>
#include <string>

#include "backends/device.h"
#include "model/arena.h"
#include "model/parameters.h"
#include "parallel/comm.h"

namespace kosmos::model {

// What a layer needs to run: the device, its stream and the step's activation memory.
struct Runtime {
  Device & device;
  Stream & stream;
  Arena & arena;
  // When set, Linear::backward leaves its weight-gradient matmuls here instead of running them (the W pass of a
  // zero-bubble pipeline schedule runs them later); the views they read stay valid until the arena is reset.
  std::vector<std::function<void()>> * deferred_weight_gradients = nullptr;
  // When set (by the trainer, for the backward that finishes a data-parallel step's gradients), the backward calls
  // it with a flat offset into the parameter buffers each time every gradient at or above that offset is final, so
  // that those buckets can be reduced while the backward goes on; the offsets fall, to 0 at the end of the first
  // stage's. A split backward (zero-bubble) leaves its calls to the W pass (MicroState::weight_gradients).
  std::function<void(int64_t)> * gradients_final_from = nullptr;
  void run(const OpDesc & op) { op_run(device, op, stream); }
  void report_gradients_final_from(int64_t offset) const {
    if (gradients_final_from) (*gradients_final_from)(offset);
  }
  TensorView take(std::initializer_list<int64_t> dims) { return arena.take(DType::kF32, dims); }
};

// `x` as a matmul operand of `dtype`: itself when it has that dtype, else a dense copy cast into the arena (mixed
// precision: f32 activations meet bf16 weights).
TensorView matmul_operand(Runtime & rt, const TensorView & x, DType dtype);

// y = x W^T + b with W [out, in] (PyTorch's layout). The matmuls read W in its dtype: the f32 parameter, or with mixed
// precision its bf16 compute copy (ModelState::compute_value), when x and dy are cast to bf16 for them and the
// products accumulate in f32; y and dx are f32 or the weight's dtype (bf16 activations, BlockOptions), dW and db f32.
struct Linear {
  TensorView weight, bias;    // [out, in] f32|bf16 (what the matmuls read), [out] f32 or absent
  TensorView dweight, dbias;  // [out, in] f32, [out] f32: accumulated by backward when trainable
  bool trainable = true;

  int64_t in() const { return weight.dim(1); }
  int64_t out() const { return weight.dim(0); }
  void forward(Runtime & rt, TensorView y, TensorView x) const;
  // dx = dy W (or += when accumulate_dx; skipped when dx is absent); dW += dy^T x; db += sum of dy rows.
  void backward(Runtime & rt, TensorView dx, TensorView dy, TensorView x, bool accumulate_dx) const;
  // The same in two calls, for a caller that has x only after dx (a LayerNorm's backward makes it again): dx now,
  // then dW and db (deferred to a zero-bubble W pass as backward's are).
  void backward_input(Runtime & rt, TensorView dx, TensorView dy, bool accumulate_dx) const;
  void backward_weight(Runtime & rt, TensorView dy, TensorView x) const;

 private:
  void input_gradient(Runtime & rt, TensorView dx, TensorView dy_operand, bool accumulate_dx) const;
  // dW and db from dy as the matmuls read it; true when they were left to the W pass, whose closure reads the cast
  // operands, so that the caller must not take them back.
  bool weight_gradients(Runtime & rt, TensorView dy_operand, TensorView x) const;
};
Linear make_linear(const ModelState & state, const std::string & prefix, bool bias);

// Dropout randomness of one site: the Philox key and where this micro-batch starts among the whole batch's draws,
// the global index of its first element (activations), or of its first probability row (attention, see ops.h).
struct DropoutSite {
  float p = 0.0f;
  uint64_t seed = 0;
  uint64_t offset = 0;
};

struct LayerNorm {
  TensorView weight, bias, dweight, dbias;  // [C] f32
  float eps = 1e-5f;
  bool trainable = true;

  struct Saved {
    TensorView mean, rstd;  // [rows] f32
    std::optional<Activation> activation;  // what the forward applied to x before normalising
  };
  // y = LN(x), or LN(act(x)) with an activation (ops.h: one pass, act(x) neither stored nor rounded).
  Saved forward(Runtime & rt, TensorView y, TensorView x, std::optional<Activation> activation = std::nullopt) const;
  // The same into statistics taken before (take_saved), for a caller that keeps them but gives y back.
  Saved take_saved(Runtime & rt, int64_t rows, std::optional<Activation> activation = std::nullopt) const;
  void forward_into(Runtime & rt, TensorView y, TensorView x, const Saved & saved) const;
  // ... with x made in the same pass, x = residual + dropout(added) (f32, written; added f32 or bf16): a sub-layer's
  // output joining the residual stream where this LayerNorm reads it next (ops.h LayerNormForward::added).
  void forward_joining(Runtime & rt, TensorView y, TensorView x, TensorView added, TensorView residual,
                       const DropoutSite & dropout, const Saved & saved) const;
  // dx (overwritten, the gradient at x) from dy, plus residual_gradient where given (f32, the gradient of a residual
  // path joining x: one pass for both); weight and bias gradients accumulate when trainable. dx_column_sums [C] f32,
  // where given, accumulates the sums of dx's columns (the bias gradient of the linear layer whose output x is).
  // y_again, where given, is overwritten with the forward's y (the same values), made in the same pass.
  void backward(Runtime & rt, TensorView dx, TensorView dy, TensorView x, const Saved & saved,
                TensorView residual_gradient = TensorView{}, TensorView dx_column_sums = TensorView{},
                TensorView y_again = TensorView{}) const;
};
LayerNorm make_layernorm(const ModelState & state, const std::string & prefix, double eps);

// A pre-LN transformer block. CLIP: x += out(attn(LN1 x)); x += fc2(act(fc1(LN2 x))). Magneto adds the sub-LNs
// (inner_attn_ln before out_proj, ffn_layernorm before fc2), xPos on q and k, causal masking and dropout.
struct BlockWeights {
  LayerNorm ln_attention, ln_ffn;
  std::optional<LayerNorm> ln_inner_attention, ln_inner_ffn;  // Magneto's sub-LN
  Linear q, k, v, out, fc1, fc2;
  // q, k and v as one Linear [3 w, in] (one matmul each way instead of three), where their weights, biases and
  // gradients lie side by side in memory (ParameterTable::add_qkv; a tensor-parallel rank's shards of them too).
  std::optional<Linear> qkv = std::nullopt;
};
BlockWeights make_clip_block(const ModelState & state, const std::string & prefix, double eps);
// With tensor parallelism the state holds this rank's shards (tensor_parallel_split): q, k, v and fc1 split on their
// output rows (column-parallel), out_proj and fc2 on their input columns (row-parallel; their biases stay whole and
// are added once).
BlockWeights make_magneto_block(const ModelState & state, const std::string & prefix, double eps);

// Activation recomputation: what a block's training forward keeps for its backward, which runs the rest again
// from the kept input (the same ops, values and dropout keys, so the same gradients) at the cost of that forward.
// Each level recomputes what the one before it does, and more.
//   kNone: every activation the backward reads (a Magneto layer: 17 [rows, d] f32 activations, with bf16 activations
//     38 bytes per row and d);
//   kFfn: all but the FFN's tail: its sub-LN's output (and under tp the sub-LN's gathered input; CLIP's blocks also
//     the activation's output), which the backward makes again from the kept hidden layer in one elementwise pass and
//     no matmul: without tp, the sub-LN's own backward, from the sub-LN's kept statistics (LayerNormBackward::out:
//     a GPU's packed GELU kernels write it in their pass; the other paths run the forward again inside the op). A
//     Magneto layer keeps 13 of the 17 (30 of the 38 bytes);
//   kAttention: the FFN sub-layer's input, LayerNorm output and hidden layer; the attention sub-layer up to out_proj
//     (LayerNorm, q, k, v, xPos, attention, sub-LN) and the FFN's tail run again. A Magneto layer keeps 7 of the 17
//     (18 of the 38 bytes) for about 1/10 more of its FLOPs (kosmos1 at 2048 positions);
//   kLayer: the block's input only; the whole forward but fc2 runs again (fc2's output, like out_proj's under
//     kAttention, only the residual stream reads). A layer keeps one [rows, d] f32 of the 17 (of the 38 bytes, 4) for
//     about 23% more FLOPs (a whole forward would be a third).
enum class Recompute : uint8_t { kNone, kFfn, kAttention, kLayer };
const char * recompute_name(Recompute recompute);  // "none", "ffn", "attention", "layer"
std::optional<Recompute> parse_recompute(const std::string & name);

struct BlockOptions {
  int64_t batch = 1, length = 1, heads = 1;
  bool causal = false;
  bool xpos = false;
  float xpos_scale_base = 512.0f;
  Activation activation = Activation::kGelu;
  DropoutSite attention_dropout, output_dropout;  // attention probabilities; the attention and FFN outputs
  uint64_t ffn_dropout_seed = 0;                  // the FFN output's key (same p and offset as output_dropout)
  // Tensor parallelism: this rank runs heads [rank*H/tp, (rank+1)*H/tp) and a 1/tp slice of the FFN; the sub-LNs
  // (over the whole width) see the slices gathered. Null: the whole block here.
  parallel::Comm * tp = nullptr;
  Recompute recompute = Recompute::kNone;  // the same in a block's forward and backward
  bool deterministic_attention = true;     // AttentionParams::deterministic
  // The dtype of the activations inside the sub-layers and of their gradients (activation_dtype), the sub-layers'
  // outputs (the projections' before their dropout and residual add) and the gradients at the pre-LNs' outputs
  // included, but for those two under tensor parallelism, which sums them over ranks. The residual stream (x, x_mid,
  // out) and the gradients at the LayerNorms' inputs are f32 always.
  DType activations = DType::kF32;
};

// The sub-layers' activation dtype for weights computed in `compute_dtype`: bf16 with bf16 weights (mixed
// precision as PyTorch's autocast keeps it: LayerNorm outputs, q | k | v, the attention, the FFN's hidden layer and
// their gradients in bf16, every sum in f32), which halves their memory and traffic and spares the matmuls a cast;
// f32 otherwise (fp16 keeps f32 activations: the attention's operands need bf16's range).
DType activation_dtype(DType compute_dtype);

// What the (optional) sub-LN and projection at the end of a sub-layer keep: `whole`, the sub-LN's input (with tensor
// parallelism every rank's columns gathered, else this rank's input itself), `normed`, its output, which is absent
// where the sub-LN's backward makes it again from `stats` (the FFN's, layers.cpp remakes_ffn_end).
struct ProjectionSaved {
  TensorView whole, normed;
  LayerNorm::Saved stats;
};

// What the backward needs, kept from the forward (in the arena, x and x_mid f32, the rest in BlockOptions'
// activations dtype; [rows, width] but for this rank's columns).
// With recomputation only x (kLayer), or x and the FFN's part from x_mid to the hidden layer (kAttention), or all but
// the FFN's tail (kFfn: activated and ffn_end) are present; with kAttention and kFfn a Magneto block without tensor
// parallelism also keeps ffn_end's statistics (and its whole, the hidden layer). `activated` (the activation's
// output) is kept only by blocks without an FFN sub-LN (CLIP): Magneto's sub-LN normalises the activation's output
// on the fly.
struct BlockSaved {
  TensorView x, h_attention, qkv, attention, lse, x_mid, h_ffn, hidden, activated;
  TensorView keep;  // the attention's dropout masks as the device records them (AttentionForward::keep), or absent
  ProjectionSaved attention_end, ffn_end;  // sub-LN and out_proj; sub-LN and fc2
  LayerNorm::Saved ln_attention, ln_ffn;
};

// out = block(x); x and out are [batch*length, width]. Saves what the backward needs (as o.recompute says) when
// `saved` is given; the arena takes back every other temporary before it returns. An absent `out` (the backward's
// recomputation, which needs only what is saved) skips the FFN's last projection, fc2, and the residual add.
void block_forward(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView out, TensorView x,
                   BlockSaved * saved);
// dx (overwritten) from dout; parameter gradients accumulate. Its temporaries (recomputed activations too) are
// taken back before it returns, unless a zero-bubble W pass still needs them (Runtime::deferred_weight_gradients).
void block_backward(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView dx, TensorView dout,
                    const BlockSaved & saved);

// One decoder layer's raw keys and values for incremental decoding, this rank's heads: torchscale's prev_key and
// prev_value, kept before xPos, which is applied to the whole key sequence again at each step (its centre moves
// with the length; kosmos-spec 3.5 and 4.3).
struct LayerCache {
  int64_t capacity = 0;          // positions it holds at most (set before the first block_decode)
  Buffer key_buffer, value_buffer;
  TensorView keys, values;       // [B, H/tp, capacity, dh] f32 over the buffers
  TensorView keys_view(int64_t length) const;    // the first `length` positions
  TensorView values_view(int64_t length) const;
};

// block_forward for `o.length` new positions of each row after the `cached` ones in `cache`: the first call (cached
// 0) runs a whole prompt, causally, and allocates the cache; each later one runs one position per row, which sees
// everything cached. Nothing is saved for a backward.
void block_decode(Runtime & rt, const BlockWeights & w, const BlockOptions & o, TensorView out, TensorView x,
                  LayerCache & cache, int64_t cached);

// [B*T, H*dh] activations (possibly a column window of a wider buffer) seen as [B, H, T, dh] for attention.
TensorView heads_view(TensorView rows, int64_t batch, int64_t length, int64_t heads);

}  // namespace kosmos::model
