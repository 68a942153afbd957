// planner.cpp: the step-time and memory model behind `kosmos plan`, and the machines it knows. It models what this
// system does: the decoder split Megatron-style over tp (four activation all-reduces per layer and micro-batch), the
// image path replicated over tp on the first stage, pipeline cuts from the same cost model as `kosmos train`, the
// schedule's idle time from the dependency simulator, one gradient reduction of the parameters the stage trains
// (all-reduce, or ZeRO-1's reduce and all-gather of them) behind its last backward pass where the machine overlaps
// them, AdamW over them (or the rank's ZeRO-1 slice), and every rank holding its tp shards of its pipeline stage's
// parameters' values, its trainable ones' gradients and their AdamW moments (ZeRO-1: of its slice).
#include "bench/planner.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "backends/error.h"
#include "model/kosmos.h"
#include "model/parameters.h"
#include "model/partition.h"

namespace kosmos::bench {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
// Bytes AdamW moves per parameter: reads value, gradient and both moments, writes value and moments, plus the
// gradient norm's read and the gradient's zeroing.
constexpr double kOptimizerBytesPerParameter = 36.0;
// How far rank_layouts may move the asked global batch to a multiple of dp x micro-batch size (either way).
constexpr double kBatchTolerance = 0.15;

// A ring collective moving `bytes` from each of `ranks` ranks: latency per step plus the bus traffic.
double ring_seconds(double bytes, int ranks, double alpha_us, double bus_gbs, double traffic_factor) {
  if (ranks <= 1) return 0.0;
  return (ranks - 1) * alpha_us * 1e-6 * traffic_factor +
         bytes * traffic_factor * (ranks - 1) / ranks / (bus_gbs * 1e9);
}
double all_reduce_seconds(double bytes, int ranks, double alpha_us, double bus_gbs) {
  return ring_seconds(bytes, ranks, alpha_us, bus_gbs, 2.0);
}

}  // namespace

Hardware hardware_preset(const std::string & name) {
  Hardware h;
  h.name = name;
  if (name == "h100") {
    h = {name,
         989.0,
         0.75 * 989.0,
         3350.0,
         80.0,
         8,
         5.0,
         370.0,
         10.0,
         45.0,
         2,
         "H100 SXM datasheet (989 TFLOP/s bf16 dense, 3.35 TB/s, 80 GB); sustained matmul 75% of peak; NVLink busbw "
         "370 GB/s and 8x400 Gb/s InfiniBand (45 GB/s per GPU), typical nccl-tests figures"};
  } else if (name == "h200") {
    h = {name,
         989.0,
         0.80 * 989.0,
         4800.0,
         139.0,
         8,
         5.0,
         370.0,
         10.0,
         45.0,
         2,
         "H200 datasheet (989 TFLOP/s bf16 dense, 4.8 TB/s, 141 GB); 804 TFLOP/s bf16 GEMM measured here "
         "(performance-anchors); links as h100"};
  } else if (name == "mi250") {
    h = {name,
         181.0,
         0.65 * 181.0,
         1600.0,
         64.0,
         8,
         10.0,
         100.0,
         15.0,
         12.5,
         2,
         "MI250 per GCD (181 TFLOP/s bf16 dense, 1.6 TB/s, 64 GB); Infinity Fabric busbw 100 GB/s; 4x200 Gb/s "
         "Slingshot per 8 GCDs (12.5 GB/s each)"};
  } else if (name == "mi300x") {
    h = {name,
         1307.0,
         0.6 * 1307.0,
         5300.0,
         192.0,
         8,
         8.0,
         300.0,
         10.0,
         45.0,
         2,
         "MI300X datasheet (1307 TFLOP/s bf16 dense, 5.3 TB/s, 192 GB); xGMI busbw 300 GB/s; 8x400 Gb/s per node"};
  } else if (name == "cpu") {
    // One rank per core of this project's 2-core VM (AMD EPYC, AVX2), fp32: rough defaults (a core's AVX2 peak is
    // about 0.1 TFLOP/s; `kosmos bench ops` measured 0.09-0.18 on the matmuls with 2 threads, 17.6 GB/s streaming);
    // calibrate with --measured and --calibration, as bench/scaling.sh does.
    h = {name, 0.05, 0.02,
         10.0, 12.0, 2,
         1.0,  5.0,  1.0,
         5.0,  4,    "this project's 2-core development VM, one rank per core, fp32 (calibrate with --calibration)"};
  } else {
    KOSMOS_FAIL("--gpu ", name, " is not a machine the planner knows; choose h100, h200, mi250, mi300x or cpu");
  }
  h.reduction_overlaps_backward = name == "h100" || name == "h200";
  h.records_attention_dropout = name == "h100" || name == "h200";
  return h;
}

Hardware calibrated(Hardware base, const std::string & json_text, const std::string & source) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception & error) {
    KOSMOS_FAIL(source, ": not JSON (", error.what(), "); give the file `kosmos bench ... --out` wrote");
  }
  KOSMOS_CHECK(json.is_object(), source, ": expected a JSON object of machine rates");
  for (const auto & [key, value] : json.items()) {
    KOSMOS_CHECK(value.is_number(), source, ": ", key, " must be a number");
    const double number = value.get<double>();
    if (key == "matmul_tflops")
      base.matmul_tflops = number;
    else if (key == "memory_gbs")
      base.memory_gbs = number;
    else if (key == "intra_alpha_us")
      base.intra_alpha_us = number;
    else if (key == "intra_gbs")
      base.intra_gbs = number;
    else if (key == "inter_alpha_us")
      base.inter_alpha_us = number;
    else if (key == "inter_gbs")
      base.inter_gbs = number;
    else if (key == "peak_tflops")
      base.peak_tflops = number;
    else if (key == "memory_gib")
      base.memory_gib = number;
    else if (key == "usable_fraction") {
      KOSMOS_CHECK(number > 0.0 && number <= 1.0, source, ": usable_fraction is ", number,
                   "; give the share of device memory a layout may fill, in (0, 1]");
      base.usable_fraction = number;
    } else
      KOSMOS_FAIL(source, ": unknown key ", key,
                  " (known: matmul_tflops, memory_gbs, intra_alpha_us, intra_gbs, "
                  "inter_alpha_us, inter_gbs, peak_tflops, memory_gib, usable_fraction)");
  }
  base.source += "; calibrated from " + source;
  return base;
}

std::string describe(const Layout & layout) {
  std::ostringstream out;
  out << "dp " << layout.dp << " pp " << layout.pp << " tp " << layout.tp << " m " << layout.micro_batches << " "
      << parallel::schedule_name(layout.schedule);
  if (layout.schedule == parallel::ScheduleKind::kInterleaved) out << " v" << layout.chunks;
  if (layout.zero1) out << " zero1";
  if (layout.recompute) out << " recompute";
  return out.str();
}

namespace {

// What every prediction of one model needs, made once: the config with its vocabulary padded (as `data prepare`
// pads it, so that tp divides it) and the sizes of its parameters.
struct PlannedModel {
  model::KosmosConfig config;
  struct Parameter {
    std::string name;
    double elements;
    bool trainable, split;  // split: over the tp ranks (ParameterSpec::split)
  };
  std::vector<Parameter> specs;
};

PlannedModel planned(const model::KosmosConfig & base) {
  PlannedModel planned_model{base, {}};
  planned_model.config.decoder.vocab_size = (base.decoder.vocab_size + 63) / 64 * 64;
  const model::ParameterTable table(planned_model.config);
  for (const model::ParameterSpec & spec : table.specs())
    planned_model.specs.push_back({spec.name, static_cast<double>(spec.numel), spec.trainable,
                                   spec.split != model::TensorParallelSplit::kReplicated});
  return planned_model;
}

Prediction predict_planned(const PlannedModel & planned_model, const Hardware & hw, const Workload & work,
                           const Layout & layout, int nodes) {
  Prediction p;
  p.layout = layout;
  p.sequences = work.sequences;
  const model::KosmosConfig & config = planned_model.config;
  const auto & d = config.decoder;
  const int devices = layout.dp * layout.pp * layout.tp;
  const int virtual_stages = layout.pp * layout.chunks;
  const int64_t per_step = static_cast<int64_t>(layout.dp) * layout.micro_batches;
  auto impossible = [&](const std::string & why) {
    p.why_not = why;
    return p;
  };
  if (d.heads % layout.tp != 0 || d.ffn_dim % layout.tp != 0) return impossible("tp does not divide heads or FFN");
  if (layout.tp > hw.devices_per_node) return impossible("tp spans nodes");
  if (d.layers < virtual_stages) return impossible("fewer layers than pipeline stages");
  if (work.sequences % per_step != 0) return impossible("the global batch does not split into dp x micro-batches");
  if (layout.schedule == parallel::ScheduleKind::kInterleaved &&
      (layout.pp == 1 || layout.micro_batches % layout.pp != 0))
    return impossible("interleaving needs pp > 1 and micro-batches a multiple of pp");
  if (devices % std::max(1, nodes) != 0) return impossible("devices do not split evenly over the nodes");

  const int64_t micro = work.sequences / per_step;  // sequences per micro-batch
  const double tokens = static_cast<double>(micro * work.length);
  const double act = hw.activation_bytes;
  const double rate = hw.matmul_tflops * 1e12, bandwidth = hw.memory_gbs * 1e9;

  // FLOPs per micro-batch (forward + backward) as the pipeline cuts see them, with tp's share of the decoder.
  const auto images_in = [&](int64_t sequences) {
    return static_cast<int64_t>(std::llround(static_cast<double>(sequences) * work.images_per_sequence));
  };
  model::StageCosts costs = model::stage_costs(config, micro, work.length, images_in(micro));
  costs.layer /= layout.tp;
  costs.head /= layout.tp;
  const std::vector<model::StageRange> stages = model::partition_stages(config, virtual_stages, costs);
  // Recomputation runs a layer's forward (a third of its training FLOPs) again but for fc2 (model/layers.h kLayer).
  const double recomputed_forward =
      costs.layer / 3.0 - 2.0 * static_cast<double>(d.embed_dim) * static_cast<double>(d.ffn_dim) * tokens / layout.tp;
  double heaviest = 0.0, heaviest_layers = 0.0;
  for (int stage = 0; stage < layout.pp; ++stage) {
    double flops = 0.0, layers = 0.0;
    for (int chunk = 0; chunk < layout.chunks; ++chunk) {
      const model::StageRange & range = stages[static_cast<size_t>(chunk * layout.pp + stage)];
      const double count = static_cast<double>(range.layer_end - range.layer_begin);
      flops += count * (costs.layer + (layout.recompute ? recomputed_forward : 0.0)) +
               (range.first ? costs.image_path : 0.0) + (range.last ? costs.head : 0.0);
      layers += count;
    }
    if (flops > heaviest) {
      heaviest = flops;
      heaviest_layers = layers;
    }
  }
  // Elementwise traffic per token and layer (LayerNorms, GELU, residuals, dropout, xPos, forward and backward).
  const double elementwise_bytes = tokens * heaviest_layers * (20.0 * d.embed_dim + 10.0 * d.ffn_dim / layout.tp) * act;
  const double work_seconds = heaviest / rate + elementwise_bytes / bandwidth;

  // Tensor parallelism: four all-reduces of the micro-batch's activations per layer, two forward, two backward.
  const double activation_bytes = tokens * d.embed_dim * act;
  const double tp_per_micro =
      4.0 * heaviest_layers * all_reduce_seconds(activation_bytes, layout.tp, hw.intra_alpha_us, hw.intra_gbs);
  // Pipeline: each pass receives (or sends) one activation or gradient of the micro-batch.
  const bool stages_cross_nodes = nodes > 1 && layout.pp > 1;
  const double p2p = layout.pp > 1 ? (stages_cross_nodes ? hw.inter_alpha_us : hw.intra_alpha_us) * 1e-6 +
                                         activation_bytes / ((stages_cross_nodes ? hw.inter_gbs : hw.intra_gbs) * 1e9)
                                   : 0.0;
  // Passes of a stage (all its chunks; the simulator runs each chunk's pass at 1/chunks of it): forward a third of
  // the work, input- and weight-gradient a third each (the cost model's 2 + 4 FLOPs per parameter and token).
  const double pass = (work_seconds + tp_per_micro) / 3.0;
  parallel::PassCosts pass_costs{pass + p2p, pass + p2p, pass};
  double makespan = 0.0;
  if (layout.pp == 1) {
    makespan = layout.micro_batches * 3.0 * pass;
  } else {
    std::vector<std::vector<parallel::PipeAction>> schedules;
    for (int stage = 0; stage < layout.pp; ++stage)
      schedules.push_back(
          parallel::make_schedule(layout.schedule, layout.pp, stage, layout.micro_batches, layout.chunks));
    makespan = parallel::simulate(schedules, layout.micro_batches, layout.chunks, pass_costs).makespan;
  }
  const double busy = layout.micro_batches * (3.0 * pass + (layout.pp > 1 ? 2.0 * p2p : 0.0));
  p.compute_seconds = layout.micro_batches * work_seconds;
  p.tp_seconds = layout.micro_batches * tp_per_micro;
  p.pp_seconds = layout.pp > 1 ? layout.micro_batches * 2.0 * p2p : 0.0;
  p.bubble_seconds = std::max(0.0, makespan - busy);

  // The gradients each stage trains, summed over dp (fp32; all-reduced, or with ZeRO-1 reduced to the slices' ranks
  // and the updated values all-gathered, which move as much), then a tied embedding's between the first and the
  // last stage. Each bucket's reduction starts as the stage's last pass that writes its gradients goes by (the last
  // backward, or under zero-bubble the last W pass): where the machine overlaps the two, that pass hides as much of
  // it, but not the gradients that pass finishes last (the embeddings and the image path, and under ZeRO-1 with a
  // pipeline what waits for the tied embedding's exchange: the same) nor ZeRO-1's all-gather, after the update.
  const bool dp_in_node = layout.tp * layout.dp <= hw.devices_per_node || nodes <= 1;
  const double dp_alpha = dp_in_node ? hw.intra_alpha_us : hw.inter_alpha_us;
  const double dp_gbs = dp_in_node ? hw.intra_gbs : hw.inter_gbs;
  const double finishing_pass = layout.schedule == parallel::ScheduleKind::kZeroBubbleH1 && layout.pp > 1 ? pass
                                                                                                          : 2.0 * pass;
  const auto finished_last = [](const std::string & name) {
    return name.rfind("decoder.layers.", 0) != 0 && name.rfind("decoder.layer_norm.", 0) != 0 &&
           name != "decoder.output_projection.weight";
  };
  // The parameter state of a rank of each stage: fp32 values (+ the bf16 copy) of the parameters it holds (its
  // 1/tp of the split ones); fp32 gradients of the trainable ones, and their AdamW moments (ZeRO-1: this rank's 1/dp
  // slice of them). The fullest stage's counts here, the most a rank of any stage trains, and the slowest stage's
  // exposed reduction.
  double stage_trained = 0.0;
  std::vector<double> state_bytes(static_cast<size_t>(layout.pp), 0.0);
  for (int stage = 0; stage < layout.pp; ++stage) {
    double held = 0.0, trained = 0.0, trained_last = 0.0;
    for (const PlannedModel::Parameter & spec : planned_model.specs) {
      if (!model::stage_holds(spec.name, stage, stages, layout.pp, d)) continue;
      const double elements = spec.split ? spec.elements / layout.tp : spec.elements;
      held += elements;
      if (spec.trainable) trained += elements;
      if (spec.trainable && finished_last(spec.name)) trained_last += elements;
    }
    stage_trained = std::max(stage_trained, trained);
    state_bytes[static_cast<size_t>(stage)] = held * (4.0 + (act < 4.0 ? act : 0.0)) + trained * 4.0 +
                                              trained * 8.0 / (layout.zero1 ? layout.dp : 1);
    const double reduction = all_reduce_seconds(trained * 4.0, layout.dp, dp_alpha, dp_gbs);
    const double hideable = reduction * (trained - trained_last) / std::max(1.0, trained) / (layout.zero1 ? 2.0 : 1.0);
    p.dp_seconds = std::max(p.dp_seconds, reduction - (hw.reduction_overlaps_backward
                                                           ? std::min(hideable, finishing_pass) : 0.0));
  }
  // The tied embedding: each rank exchanges its 1/tp of the rows' gradients with its peer on the other end of the
  // pipeline, which with ZeRO-1 also sends the updated rows back.
  const double tied_bytes = static_cast<double>(d.vocab_size) * d.embed_dim * 4.0 / layout.tp;
  const double tied_alpha = stages_cross_nodes ? hw.inter_alpha_us : hw.intra_alpha_us;
  const double tied_gbs = stages_cross_nodes ? hw.inter_gbs : hw.intra_gbs;
  const double tied_seconds =
      layout.pp > 1 && d.tied ? all_reduce_seconds(tied_bytes, 2, tied_alpha, tied_gbs) +
                                    (layout.zero1 ? tied_alpha * 1e-6 + tied_bytes / (tied_gbs * 1e9) : 0.0)
                              : 0.0;
  p.pp_seconds += tied_seconds;
  p.optimizer_seconds =
      stage_trained / (layout.zero1 ? layout.dp : 1) * kOptimizerBytesPerParameter / bandwidth;
  p.step_seconds = makespan + tied_seconds + p.dp_seconds + p.optimizer_seconds;

  // Memory: the fullest stage's parameter state and activations (each stage's layers as the pipeline cuts them).
  // A layer's saved activations as model/layers.cpp keeps them: the residual stream's x and x_mid in f32; in the
  // activation dtype the pre-LN outputs, q | k | v, the attention, its sub-LN output, the FFN's hidden layer (its
  // sub-LN normalises GELU of it on the fly) and its sub-LN output, and under tp the sub-LNs' gathered inputs. With
  // recomputation only the f32 input is kept, and one layer's whole set is live.
  const double e = d.embed_dim, f = d.ffn_dim, tp = layout.tp;
  const double gathered = layout.tp > 1 ? e + f : 0.0;
  // A GPU that keeps the attention's dropout masks adds a bit a probability, over whole 64-key steps and 128-query
  // blocks (kernels_attention_mma.cu's record), its heads' share of them: on the mma.sync kernels, which take bf16
  // operands of head size 32 or 64.
  const double length = static_cast<double>(work.length);
  const int64_t head_dim = d.embed_dim / d.heads;
  const bool masks_kept = hw.records_attention_dropout && act < 4.0 && (head_dim == 32 || head_dim == 64);
  const double kept_masks = masks_kept && d.attention_dropout > 0.0
                                ? static_cast<double>(micro) * static_cast<double>(d.heads) / tp *
                                      std::ceil(length / 64.0) * 64.0 * std::ceil(length / 128.0) * 128.0 / 8.0
                                : 0.0;
  const double one_layer =
      tokens * (8.0 * e + act * (3.0 * e + 4.0 * e / tp + f + f / tp + gathered)) + kept_masks;
  const double per_layer = layout.recompute ? tokens * 4.0 * e : one_layer;
  // A layer's backward takes, while the micro-batch's other layers are still held, the gradients at the residual
  // stream's three points in f32; those at the two pre-LNs' outputs in the activation dtype, in f32 under tp (which
  // sums them over ranks); and, in the activation dtype, those at the FFN's hidden layer, the attention, q | k | v,
  // the two sub-LNs' inputs (under tp also gathered) and (training drops out) the two dropouts' outputs
  // (model/layers.cpp block_backward). Zero-bubble's B keeps them for its W pass, in every layer.
  const double dropped = d.dropout > 0.0 ? 2.0 * e : 0.0;
  const double normed_inputs = 2.0 * e * (layout.tp > 1 ? 4.0 : act);
  const double layer_backward =
      tokens * (12.0 * e + normed_inputs + act * (2.0 * f / tp + 5.0 * e / tp + gathered + dropped));
  const bool deferred = layout.schedule == parallel::ScheduleKind::kZeroBubbleH1 && layout.pp > 1;
  // The first stage's micro-batch also keeps the embedded rows and x (f32) and the image path's activations: the
  // frozen CLIP layers' two turns of output and the trainable layers' outputs, the post-LayerNorm and the feature
  // (f32), the trainable layers' saved set (no sub-LN: the hidden layer and its activation), and the resampler's
  // per layer (normed media, keys and values over media and latents) (model/image_path.cpp).
  const auto & v = config.vision;
  const auto & c = config.connector;
  const double images = static_cast<double>(images_in(micro));
  const double vt = static_cast<double>(v.tokens()), dv = static_cast<double>(v.hidden_size);
  const double span = vt + static_cast<double>(c.num_latents), inner = static_cast<double>(c.heads * c.dim_head);
  const double clip_layer_saved =
      vt * (8.0 * dv + act * (6.0 * dv + 2.0 * static_cast<double>(v.intermediate_size)));
  const double image_path =
      images * (vt * dv * 4.0 * static_cast<double>(4 + v.trainable_layers) +
                static_cast<double>(v.trainable_layers) * clip_layer_saved +
                static_cast<double>(c.depth) * 4.0 * (vt * dv + span * (dv + 2.0 * inner)));
  const double embedded = 2.0 * tokens * e * 4.0;
  // Each stage holds the activations of the micro-batches its schedule has in flight (an arena each, as large as
  // a micro-batch's deepest: its chunks' layers, the boundaries it received, and one layer's backward), and keeps
  // every boundary it sends (as many as it receives) until the step ends. The last stage's head and loss hold one
  // chunk of rows' logits at a time, their gradient over them (bf16 on a GPU, f32 on the CPU; model/kosmos.h), before
  // the backward. (Under fp16, which the planner does not model, the logits stay f32 beside an f16 gradient: 6 bytes
  // an element, not 2.)
  const int chunks = parallel::model_chunks(layout.schedule, layout.chunks);
  const double vocab_local = static_cast<double>(d.vocab_size) / layout.tp;
  const double logit_rows = std::min(  // as the model's chunks (kosmos.cpp), of its vocab_local()
      tokens, static_cast<double>(model::KosmosModel::default_head_chunk_rows(d.vocab_size / layout.tp,
                                                                              static_cast<int64_t>(act))));
  const double logits = logit_rows * vocab_local * act;
  const double boundary = tokens * e * 4.0;
  double fullest = 0.0;
  for (int stage = 0; stage < layout.pp; ++stage) {
    double layers = 0.0, received = 0.0;
    bool first = false, last = false;
    for (int chunk = 0; chunk < chunks; ++chunk) {
      const model::StageRange & range = stages[static_cast<size_t>(chunk * layout.pp + stage)];
      layers += static_cast<double>(range.layer_end - range.layer_begin);
      received += (range.first ? 0.0 : 1.0) + (range.last ? 0.0 : 1.0);  // its input, its output's gradient
      first = first || range.first;
      last = last || range.last;
    }
    const int held = layout.pp == 1 ? 1
                                    : parallel::peak_micro_batches_held(
                                          parallel::make_schedule(layout.schedule, layout.pp, stage,
                                                                  layout.micro_batches, chunks),
                                          chunks);
    const double kept = layers * (per_layer + (deferred ? layer_backward : 0.0)) + received * boundary +
                        (first ? embedded + image_path : 0.0);
    const double deepest = kept + std::max(deferred ? 0.0 : layer_backward, last ? logits : 0.0);
    const double activations = held * deepest + layout.micro_batches * received * boundary +
                               (layout.recompute ? one_layer : 0.0);
    fullest = std::max(fullest, state_bytes[static_cast<size_t>(stage)] + activations);
  }
  p.memory_gib = fullest / kGiB;
  const double usable_gib = hw.usable_fraction * hw.memory_gib;
  p.fits = p.memory_gib <= usable_gib;
  if (!p.fits)
    p.why_not = "needs " + std::to_string(static_cast<int>(p.memory_gib)) + " GiB per device of " +
                std::to_string(static_cast<int>(usable_gib)) + " usable";

  const double model_flops = model::step_flops(config, work.sequences, work.length, images_in(work.sequences), true);
  p.tokens_per_second = static_cast<double>(work.sequences * work.length) / p.step_seconds;
  p.mfu = model_flops / p.step_seconds / (devices * hw.peak_tflops * 1e12);
  return p;
}

}  // namespace

Prediction predict(const model::KosmosConfig & config, const Hardware & hardware, const Workload & workload,
                   const Layout & layout, int nodes) {
  return predict_planned(planned(config), hardware, workload, layout, nodes);
}

double matmul_rate_for(const model::KosmosConfig & config, Hardware hardware, const Workload & workload,
                       const Layout & layout, double measured_seconds) {
  // The step is a / rate + c (compute scales with the rate, the rest does not): two predictions give a and c.
  const PlannedModel planned_model = planned(config);
  hardware.matmul_tflops = 1.0;
  const Prediction slow = predict_planned(planned_model, hardware, workload, layout, 1);
  KOSMOS_CHECK(slow.why_not.empty() || slow.step_seconds > 0.0, "calibration layout ", describe(layout),
               " cannot run: ", slow.why_not);
  hardware.matmul_tflops = 2.0;
  const Prediction fast = predict_planned(planned_model, hardware, workload, layout, 1);
  const double a = 2.0 * (slow.step_seconds - fast.step_seconds), c = slow.step_seconds - a;
  KOSMOS_CHECK(measured_seconds > c && a > 0.0, "calibration: the measured step (", measured_seconds,
               " s) is shorter than the planner's non-matmul terms alone (", c, " s); check the memory and link rates");
  return a / (measured_seconds - c);
}

std::vector<Prediction> rank_layouts(const model::KosmosConfig & config, const Hardware & hardware,
                                     const Workload & workload, int devices, int nodes) {
  const PlannedModel planned_model = planned(config);
  std::vector<Prediction> runnable;
  for (int tp = 1; tp <= devices; tp *= 2) {
    for (int pp = 1; pp * tp <= devices; ++pp) {
      if (devices % (tp * pp) != 0) continue;
      const int dp = devices / (tp * pp);
      for (int64_t micro_size = 1; micro_size <= 16; micro_size *= 2) {
        // The multiples of dp x micro-batch size on either side of the asked batch, within kBatchTolerance of it.
        const int64_t unit = dp * micro_size, below = workload.sequences / unit;
        const std::set<int64_t> counts{below, below * unit == workload.sequences ? below : below + 1};
        for (int64_t micro_batches : counts) {
          const double off = std::abs(static_cast<double>(micro_batches * unit - workload.sequences)) /
                             static_cast<double>(workload.sequences);
          if (micro_batches < 1 || micro_batches > 256 || off > kBatchTolerance) continue;
          Workload rounded = workload;
          rounded.sequences = micro_batches * unit;
          for (parallel::ScheduleKind schedule :
               {parallel::ScheduleKind::kOneFOneB, parallel::ScheduleKind::kInterleaved,
                parallel::ScheduleKind::kZeroBubbleH1}) {
            if (pp == 1 && schedule != parallel::ScheduleKind::kOneFOneB) continue;
            for (bool recompute : {false, true}) {
              for (bool zero1 : {false, true}) {
                if (zero1 && dp == 1) continue;
                const Layout layout{dp,       pp,
                                    tp,       static_cast<int>(micro_batches),
                                    schedule, parallel::model_chunks(schedule, 2),
                                    zero1,    recompute};
                Prediction p = predict_planned(planned_model, hardware, rounded, layout, nodes);
                if (p.step_seconds > 0.0) runnable.push_back(p);
              }
            }
          }
        }
      }
    }
  }
  std::stable_sort(runnable.begin(), runnable.end(), [](const Prediction & a, const Prediction & b) {
    if (a.fits != b.fits) return a.fits;
    return a.tokens_per_second > b.tokens_per_second;  // the batches differ by their rounding: compare throughput
  });
  return runnable;
}

}  // namespace kosmos::bench
