// planner.h: the layout planner's analytical model of one training step: for a model, a machine and a layout
// (dp x pp x tp, micro-batches, schedule, ZeRO-1, recomputation) it predicts the step time per rank (compute from a
// sustained matmul rate, elementwise traffic from memory bandwidth, alpha-beta collectives on the intra- and
// inter-node links, the pipeline bubble from the schedule simulator) and the memory per rank, and ranks the layouts
// of N devices. Its machine numbers come from datasheets or, where measured, from `kosmos bench` calibrations.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "parallel/schedule.h"

namespace kosmos::bench {

// A machine: one device's rates and memory, and the links between devices.
struct Hardware {
  std::string name;            // h100, h200, mi250, mi300x, cpu
  double peak_tflops = 0.0;    // datasheet dense peak at the compute precision (MFU's denominator)
  double matmul_tflops = 0.0;  // sustained rate of the model's matmuls, attention included
  double memory_gbs = 0.0;     // memory bandwidth (elementwise ops, the optimizer)
  double memory_gib = 0.0;     // memory per device
  int devices_per_node = 1;
  double intra_alpha_us = 0.0;  // link latency within a node
  double intra_gbs = 0.0;       // bus bandwidth of a collective within a node (nccl-tests' busbw)
  double inter_alpha_us = 0.0;  // between nodes
  double inter_gbs = 0.0;       // per device, between nodes
  int activation_bytes = 2;     // bf16 activations on GPUs, fp32 (4) on the CPU
  std::string source;           // where the numbers come from
  // Whether the data-parallel reduction runs beside the backward that finishes the gradients: on NVIDIA GPUs (NCCL
  // on its own stream); not where this system stages collectives through blocking MPI calls (ROCm: Debian has no
  // RCCL) nor on the CPU (MPI moves the data inside its calls, on the cores that compute).
  bool reduction_overlaps_backward = false;
  // Whether the attention's forward keeps its dropout masks for the backward, a bit a probability
  // (Device::attention_keep_words): the CUDA backend's mma.sync kernels do.
  bool records_attention_dropout = false;
  // The share of memory_gib a layout may fill; the rest is for what the planner does not count (the CUDA context,
  // NCCL's buffers, library workspaces, kernels' scratch) and for its own error (within 15% of measured, README).
  double usable_fraction = 0.9;
};

// The built-in machines (datasheet numbers, said in `source`); "cpu" holds this project's 2-core VM as measured.
Hardware hardware_preset(const std::string & name);

// Overrides measured by `kosmos bench` (JSON): {"matmul_tflops": .., "memory_gbs": .., "intra_alpha_us": ..,
// "intra_gbs": ..}, or given by hand (inter_*, peak_tflops, memory_gib, usable_fraction); any subset. An unknown
// key is an error naming it.
Hardware calibrated(Hardware base, const std::string & json_text, const std::string & source);

struct Layout {
  int dp = 1, pp = 1, tp = 1;
  int micro_batches = 1;
  parallel::ScheduleKind schedule = parallel::ScheduleKind::kOneFOneB;
  int chunks = 1;  // model chunks per stage (interleaved)
  bool zero1 = false;
  bool recompute = false;  // activations recomputed per layer in the backward (only each layer's input kept)
};
std::string describe(const Layout & layout);  // "dp 2 pp 2 tp 1 m 4 1f1b"

// The work of one step: global batch and sequence shape.
struct Workload {
  int64_t sequences = 8;             // global batch, in sequences
  int64_t length = 2048;             // positions per sequence
  double images_per_sequence = 1.0;  // on average
};

struct Prediction {
  Layout layout;
  int64_t sequences = 0;  // the global batch it ran (rank_layouts rounds the asked batch up to dp x m x b)
  double step_seconds = 0.0;
  double compute_seconds = 0.0;                                 // the busiest rank's forward + backward work
  double bubble_seconds = 0.0;                                  // pipeline idle time
  double tp_seconds = 0.0, pp_seconds = 0.0, dp_seconds = 0.0;  // communication on the critical path
  double optimizer_seconds = 0.0;
  double memory_gib = 0.0;  // the fullest rank: parameters, optimizer state, activations, logits
  double tokens_per_second = 0.0;
  double mfu = 0.0;     // model FLOPs (full attention) / (devices * peak)
  bool fits = true;     // memory within the device
  std::string why_not;  // when the layout is impossible (divisibility), or does not fit
};

// The sustained matmul rate (TFLOP/s) at which predict() gives `measured_seconds` for `layout`: a measured step
// of this system calibrates the planner's compute (an error when the other terms alone exceed the measurement).
double matmul_rate_for(const model::KosmosConfig & config, Hardware hardware, const Workload & workload,
                       const Layout & layout, double measured_seconds);

// One layout's prediction; `why_not` is set (and step_seconds 0) when the layout cannot run this model.
Prediction predict(const model::KosmosConfig & config, const Hardware & hardware, const Workload & workload,
                   const Layout & layout, int nodes);

// Every runnable layout of `devices` devices (dp x pp x tp, micro-batch sizes of 1 to 16 sequences, schedules,
// ZeRO-1, recomputation), predicted and sorted by tokens per second, those that fit first. Each layout's global
// batch is a multiple of dp x micro-batch size within 15% of the asked one (so step times alone do not compare).
std::vector<Prediction> rank_layouts(const model::KosmosConfig & config, const Hardware & hardware,
                                     const Workload & workload, int devices, int nodes);

}  // namespace kosmos::bench
