// bench.cpp: `kosmos bench`: the training throughput of a preset on this machine: a short `train` run (the same
// code path, any layout under mpirun), its warm-up steps dropped, summarised as medians: step time, tokens/s,
// model TFLOP/s, with --peak-tflops MFU, and the device memory peak. JSON with --out. The op-level benchmarks are
// build/bench/.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include <unistd.h>

#include "backends/error.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n == 0 ? 0.0 : n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace

int run_bench(std::ostream & out, const BackendRegistry & registry, const BenchOptions & options, RankLabel & label) {
  KOSMOS_CHECK(options.steps > options.warmup, "kosmos bench: --steps ", options.steps, " must exceed --warmup ",
               options.warmup, " (the warm-up steps are not timed)");
  TrainOptions train = options.train;
  train.steps = options.steps;
  train.warmup = std::min<int64_t>(train.warmup, options.steps);
  train.log_every = options.steps;
  train.profile_after = options.warmup;  // --profile times the timed steps only
  train.metrics = (std::filesystem::temp_directory_path() /
                   ("kosmos_bench_" + std::to_string(::getpid()) + ".jsonl")).string();
  std::ostringstream log;
  run_train(log, registry, train, label);
  std::ifstream metrics(train.metrics);
  std::vector<double> seconds, tokens_per_s, tflops_causal, tflops_full, mfu, bubble;
  int64_t sequences = 0, images = 0, length = 0, dp = 1;
  double device_peak_gib = 0.0;  // the most any rank's device buffers held at once, warm-up steps included
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json step = nlohmann::json::parse(line);
    device_peak_gib = std::max(device_peak_gib, step.at("device_peak_gib").get<double>());
    if (step.at("step").get<int64_t>() <= options.warmup) continue;
    seconds.push_back(step.at("step_seconds"));
    tokens_per_s.push_back(step.at("tokens_per_s"));
    tflops_causal.push_back(step.at("tflops_causal"));
    tflops_full.push_back(step.at("tflops_full"));
    mfu.push_back(step.at("mfu_causal"));
    bubble.push_back(step.at("bubble"));
    sequences += step.at("sequences").get<int64_t>();
    images += step.at("images").get<int64_t>();
    length = step.at("tokens").get<int64_t>() / std::max<int64_t>(1, step.at("sequences").get<int64_t>());
    dp = step.at("dp").get<int64_t>();
  }
  std::filesystem::remove(train.metrics);
  if (seconds.empty()) return 0;  // ranks but the first write no metrics
  const nlohmann::json result = {{"preset", train.preset},
                                 {"timed_steps", seconds.size()},
                                 {"step_seconds_median", median(seconds)},
                                 {"tokens_per_s_median", median(tokens_per_s)},
                                 {"tflops_causal_median", median(tflops_causal)},
                                 {"tflops_full_median", median(tflops_full)},
                                 {"mfu_causal_median", median(mfu)},
                                 {"bubble_median", median(bubble)},
                                 {"device_peak_gib", device_peak_gib},
                                 // the workload and layout, so that `kosmos plan --measured` can calibrate from it
                                 {"sequences_per_step", sequences / static_cast<int64_t>(seconds.size())},
                                 {"length", length},
                                 {"images_per_sequence", static_cast<double>(images) / std::max<int64_t>(1, sequences)},
                                 {"dp", dp}, {"pp", train.pp}, {"tp", train.tp},
                                 {"micro_batches", train.micro_batches}, {"schedule", train.schedule},
                                 {"chunks", train.chunks}, {"zero1", train.zero1}, {"precision", train.precision},
                                 {"recompute", train.recompute},
                                 {"attention_backward", train.attention_backward}, {"gemm_tuning", train.gemm_tuning}};
  const std::string header = log.str();  // the run's description, up to its first step line
  out << header.substr(0, header.find("\nstep ") + 1) << "bench: " << seconds.size() << " timed steps (after "
      << options.warmup << " warm-up): median " << std::fixed << std::setprecision(4) << median(seconds) << " s/step, "
      << std::setprecision(0) << median(tokens_per_s) << " tokens/s, " << std::setprecision(3)
      << median(tflops_causal) << " TFLOP/s causal (" << median(tflops_full) << " full)";
  if (train.peak_tflops > 0) out << ", MFU " << std::setprecision(1) << 100.0 * median(mfu) << "% causal";
  out << ", device memory peak " << std::setprecision(2) << device_peak_gib << " GiB\n";
  const size_t tuning = header.find("GEMM tuning: ");  // --gemm-tuning's report, then --profile's table
  const size_t profile = header.find("time per op over ");
  if (tuning != std::string::npos)
    out << header.substr(tuning, profile == std::string::npos ? std::string::npos : profile - tuning);
  if (train.profile && profile != std::string::npos) out << header.substr(profile);
  if (!options.out.empty()) {
    std::ofstream file(options.out, std::ios::trunc);
    file << result.dump(2) << "\n";
    KOSMOS_CHECK(file, "kosmos bench: cannot write --out ", options.out);
  }
  return 0;
}

}  // namespace kosmos
