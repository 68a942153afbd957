// parameters.h: the parameter table of a KOSMOS model and the device memory that holds it.
// Names and shapes are the PyTorch peers' own (the seed composition: clip_model.* = HF CLIPVisionTransformer,
// perceive.* = flamingo-pytorch PerceiverResampler, image_proj.weight, decoder.* = torchscale Decoder; and HF
// Kosmos-2's image_to_text_projection.* for the XConnector), so importing a checkpoint is a rename at most.
// Values live in one flat f32 buffer: the trainable parameters first (in table order), then the frozen ones. Their
// gradients and the two AdamW moments live in three more flat f32 buffers that cover the trainable part only (a
// frozen CLIP layer has no gradient and no moments); with mixed precision a fifth buffer, bf16 or f16, holds the
// values the matmuls read. A pipeline stage's table holds only the parameters that stage runs (the others keep
// their names and shapes but take no memory), and a tensor-parallel rank's only its rows or columns of the split
// ones.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backends/device.h"
#include "model/config.h"

namespace kosmos::model {

enum class Init : uint8_t {
  kZeros,
  kOnes,
  kUniformFanIn,  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for nn.Linear weights and biases
  kNormal,        // N(0, init_std^2)
};

// How tensor parallelism splits a parameter, the one rule every user of a shard follows: the decoder layers' q, k,
// v and fc1 (weight and bias) and the vocab-parallel embedding and head by rows, out_proj and fc2 weights by
// columns; the rest is replicated and computed identically on every rank.
enum class TensorParallelSplit : uint8_t { kReplicated, kRows, kColumns };
TensorParallelSplit tensor_parallel_split(const std::string & name);

// A rank's place in its tensor-parallel group: of each split parameter it holds block `rank` of `ranks` equal blocks
// of rows or columns.
struct TensorParallelRank {
  int rank = 0, ranks = 1;
};

struct ParameterSpec;

// Elements of one parameter: rows [row_begin, row_end) and columns [column_begin, column_end) of the parameter seen
// as a matrix [shape[0], numel / shape[0]], and of those only the ones inside [flat_begin, flat_end) of its
// row-major order. Empty when flat_begin == flat_end. What a rank holds of a parameter, and what it writes of it to
// a checkpoint.
struct ParameterPart {
  int64_t row_begin = 0, row_end = 0, column_begin = 0, column_end = 0;
  int64_t flat_begin = 0, flat_end = 0;
  bool empty() const { return flat_begin >= flat_end || row_begin >= row_end || column_begin >= column_end; }
  // Element `i` of the part's rows x columns in their own row-major order, as an element of the whole of
  // `whole_columns` columns.
  int64_t whole_element(int64_t i, int64_t whole_columns) const {
    const int64_t columns = column_end - column_begin;
    return (row_begin + i / columns) * whole_columns + column_begin + i % columns;
  }
  static ParameterPart whole(const ParameterSpec & spec);
  // Tensor-parallel rank `tp`'s rows or columns of the parameter (all of a replicated one).
  static ParameterPart of_rank(const ParameterSpec & spec, TensorParallelRank tp);
  static ParameterPart none() { return {}; }
};

struct ParameterSpec {
  std::string name;
  std::vector<int64_t> shape;   // the whole parameter's, as the peers and the checkpoints have it
  Init init = Init::kZeros;
  double init_arg = 0.0;        // fan_in for kUniformFanIn, the standard deviation for kNormal
  double gain = 1.0;            // Magneto's sqrt(log 2N) on v_proj, out_proj, fc1, fc2 (kosmos-spec 3.3)
  int64_t zero_row = -1;        // a row set to zero after init (an embedding's padding_idx)
  bool trainable = true;
  bool aligned_end = true;      // the next parameter of the flat buffers starts on 64 bytes (see ParameterTable::add)
  TensorParallelSplit split = TensorParallelSplit::kReplicated;
  bool held = true;             // whether this rank's flat buffers hold it (a pipeline stage: the ones it runs)
  int64_t offset = -1;          // elements into the flat buffers; -1 when not held
  int64_t numel = 0;            // the whole parameter's elements
  // What this rank holds of it: the whole, or under tensor parallelism its rows or columns `local`, a tensor
  // [local_shape] of local_numel elements in the flat buffers from `offset`.
  ParameterPart local;
  std::vector<int64_t> local_shape;
  int64_t local_numel = 0;
  int64_t columns() const { return shape.empty() || shape[0] == 0 ? 1 : numel / shape[0]; }
};

// The elements this rank holds (spec.local, in their own row-major order) of the whole parameter's row-major
// values: `whole` itself when it holds them all.
std::vector<float> local_values(const ParameterSpec & spec, std::vector<float> whole);

// Which parameters, by name, a rank keeps in its flat buffers (partition.h's stage_holds for a pipeline stage).
using HoldsParameter = std::function<bool(const std::string & name)>;

class ParameterTable {
 public:
  // Every parameter of the model; the flat buffers hold those `holds` accepts (all of them when it is empty), and of
  // those that tensor parallelism splits the rows or columns of tensor-parallel rank `tp`. The decoder's heads, FFN
  // width and vocabulary must divide by tp.ranks.
  explicit ParameterTable(const KosmosConfig & config, const HoldsParameter & holds = {},
                          TensorParallelRank tp = {});
  const std::vector<ParameterSpec> & specs() const { return specs_; }
  // The spec named `name`; an unknown name is an error that suggests the names sharing its prefix.
  const ParameterSpec & find(const std::string & name) const;
  bool contains(const std::string & name) const { return index_.count(name) != 0; }
  // The flat layout, in elements: the held trainable parameters at [0, trainable_end()), then kShardSlack zeros
  // (which let ZeRO-1 cut the trainable part into equal slices for up to kShardSlack ranks), then the held frozen
  // parameters up to total(). Values are [total()], gradients [trainable_end() + kShardSlack].
  static constexpr int64_t kShardSlack = 4096;
  int64_t trainable_end() const { return trainable_end_; }
  int64_t total() const { return total_; }
  // How many parameters the model has (elements, without the alignment gaps and the slack), and how many of them
  // train: all of the model's, held here or not.
  int64_t count() const;
  int64_t trainable_count() const;
  const TensorParallelRank & tensor_parallel() const { return tp_; }
  // Whether the flat buffers hold every parameter whole (no pipeline stage's or tp rank's part of the model).
  bool holds_whole_model() const { return holds_all_ && tp_.ranks == 1; }

 private:
  // Appends a parameter; every one starts on 64 bytes, except those after one added with aligned_end false (add_qkv's
  // three weights and three biases follow each other with no gap).
  void add(const std::string & name, std::vector<int64_t> shape, Init init, double init_arg, bool trainable,
           double gain = 1.0, bool aligned_end = true);
  void add_linear(const std::string & prefix, int64_t in, int64_t out, bool bias, bool trainable, double gain = 1.0);
  // q_proj, k_proj and v_proj (with biases) of a [width] self-attention: the three weights side by side with no gap,
  // then the three biases, so that they multiply as one [3 width, width] matmul (BlockWeights::qkv); v_proj takes
  // v_gain.
  void add_qkv(const std::string & prefix, int64_t width, bool trainable, double v_gain);
  void add_layernorm(const std::string & prefix, int64_t width, bool trainable);
  // Gives every held parameter its offset (the layout above), once the table is complete.
  void lay_out();
  std::vector<ParameterSpec> specs_;
  std::unordered_map<std::string, size_t> index_;
  int64_t trainable_end_ = 0, total_ = 0;
  bool holds_all_ = true;
  TensorParallelRank tp_;
};

// ZeRO-1's cut of the trainable part of the flat buffers over the data-parallel ranks: rank `rank` of `ranks` holds
// the AdamW moments of one slice and updates it. Slices are ceil(trainable_end / ranks) elements (the last one runs
// into the slack); one rank holds the whole trainable part.
struct Zero1Shard {
  int rank = 0, ranks = 1;
};

// Device memory for a table: values, the trainable parameters' gradients (accumulated by the backward), the AdamW
// moments of this rank's ZeRO-1 slice of them, and with mixed precision the compute copy of the values.
class ModelState {
 public:
  // compute_dtype f32: the matmuls read the values themselves. bf16 or f16 (mixed precision): they read a copy of
  // the values in that dtype, which stay the f32 master weights that AdamW updates (gradients and moments are f32
  // either way).
  ModelState(Device & device, const ParameterTable & table, DType compute_dtype = DType::kF32,
             Zero1Shard shard = {});
  const ParameterTable & table() const { return table_; }
  DType compute_dtype() const { return compute_dtype_; }
  // The parameter as the matmuls read it: its value (f32), or a view of the compute copy (bf16 or f16). Like every
  // view of a parameter here, absent when the table does not hold it.
  TensorView compute_value(const ParameterSpec & spec) const;
  TensorView compute_value(const std::string & name) const { return compute_value(table_.find(name)); }
  // Remakes the compute copy from the values (round to nearest even); nothing to do in f32. Whoever changes the
  // values otherwise than through AdamWStep::compute_param (initialise, a checkpoint load, a gather) has it called
  // before the next forward: the Trainer does at its first step and after its gathers.
  void refresh_compute_values(Stream & stream);
  // The whole compute copy, [total] in compute_dtype (absent in f32): where AdamW writes the updated values rounded
  // (AdamWStep::compute_param), which keeps the copy current without refreshing it.
  TensorView compute_values() const;
  TensorView value(const std::string & name) const { return value(table_.find(name)); }
  TensorView value(const ParameterSpec & spec) const { return view(values_, spec); }
  // A trainable parameter's gradient; absent for a frozen one, which has none.
  TensorView grad(const std::string & name) const { return grad(table_.find(name)); }
  TensorView grad(const ParameterSpec & spec) const { return spec.trainable ? view(grads_, spec) : TensorView{}; }
  // A trainable parameter's AdamW moments where this rank holds all of them (inside moment_range()); else absent.
  TensorView moment1(const ParameterSpec & spec) const { return moment_view(moment1_, spec); }
  TensorView moment2(const ParameterSpec & spec) const { return moment_view(moment2_, spec); }
  TensorView all_grads() const;  // the trainable part's gradients, [trainable_end]
  // ZeRO-1: this rank's shard, the elements of each slice, and the flat range [begin, end) whose moments this rank
  // holds and updates (the whole trainable part unsharded).
  const Zero1Shard & shard() const { return shard_; }
  int64_t slice_elements() const;
  std::pair<int64_t, int64_t> moment_range() const;
  // A whole flat buffer: the values [total], the gradients [gradient_elements()] (the slack stays zero), the
  // moments [slice_elements()], whose element i is the flat buffers' element moment_range().first + i.
  enum class Slot : uint8_t { kValues, kGrads, kMoment1, kMoment2 };
  TensorView flat(Slot slot) const;
  int64_t gradient_elements() const { return table_.trainable_end() + ParameterTable::kShardSlack; }
  // Where element `offset` of the flat buffers lies in flat(slot): `offset`, less the moment range's start for the
  // moments (outside [0, slice_elements()) when this rank does not hold it; a gradient's must be trainable).
  int64_t position(Slot slot, int64_t offset) const;
  // The device memory of each buffer, in bytes (for the run's report).
  struct Bytes {
    size_t values = 0, compute_copy = 0, gradients = 0, moments = 0;
    size_t total() const { return values + compute_copy + gradients + moments; }
  };
  Bytes bytes() const;
  // Every parameter from its spec, drawn from Philox keyed by (seed, name): the values do not depend on the
  // order of the table or on how it is later split across ranks.
  void initialise(uint64_t seed, Stream & stream);
  void zero_grads(Stream & stream);
  void zero_moments(Stream & stream);
  Device & device() const { return device_; }

 private:
  TensorView view(const Buffer & buffer, const ParameterSpec & spec, DType dtype = DType::kF32) const;
  TensorView moment_view(const Buffer & buffer, const ParameterSpec & spec) const;
  Device & device_;
  ParameterTable table_;
  DType compute_dtype_;
  Zero1Shard shard_;
  Buffer values_;             // [total] f32
  Buffer grads_;              // [gradient_elements()] f32
  Buffer moment1_, moment2_;  // [slice_elements()] f32, from moment_range().first
  Buffer compute_values_;     // [total] compute_dtype_, allocated only when it is not f32
};

}  // namespace kosmos::model
