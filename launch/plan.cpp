// plan.cpp: `kosmos plan`: reads the machine (a preset, optionally calibrated by `kosmos bench` measurements), the
// model and the global batch, and prints the planner's best layouts, or one layout's breakdown, with JSON for
// scripts (bench/scaling.sh compares these predictions with measured steps).
#include <cmath>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backends/error.h"
#include "bench/planner.h"
#include "launch/files.h"
#include "launch/launch.h"
#include "model/config.h"

namespace kosmos {
namespace {

// "dp=2,pp=2,tp=1,m=4,schedule=1f1b,chunks=2,zero1,recompute"
bench::Layout parse_layout(const std::string & text) {
  bench::Layout layout;
  std::istringstream parts(text);
  for (std::string part; std::getline(parts, part, ',');) {
    const size_t equals = part.find('=');
    const std::string key = part.substr(0, equals), value = equals == std::string::npos ? "" : part.substr(equals + 1);
    const auto number = [&]() {
      try {
        return std::stoi(value);
      } catch (const std::exception &) {
        KOSMOS_FAIL("--layout ", text, ": ", key, " needs a number, got '", value, "'");
      }
    };
    if (key == "dp")
      layout.dp = number();
    else if (key == "pp")
      layout.pp = number();
    else if (key == "tp")
      layout.tp = number();
    else if (key == "m")
      layout.micro_batches = number();
    else if (key == "chunks")
      layout.chunks = number();
    else if (key == "schedule")
      layout.schedule = parallel::schedule_from_name(value);
    else if (key == "zero1")
      layout.zero1 = true;
    else if (key == "recompute")
      layout.recompute = true;
    else
      KOSMOS_FAIL("--layout ", text, ": unknown part '", part,
                  "' (dp=, pp=, tp=, m=, schedule=, chunks=, zero1, "
                  "recompute)");
  }
  KOSMOS_CHECK(layout.dp > 0 && layout.pp > 0 && layout.tp > 0 && layout.micro_batches > 0 && layout.chunks > 0,
               "--layout ", text, ": dp, pp, tp, m and chunks must be positive");
  if (layout.schedule != parallel::ScheduleKind::kInterleaved) layout.chunks = 1;
  return layout;
}

nlohmann::json to_json(const bench::Prediction & p) {
  return {{"layout", bench::describe(p.layout)},
          {"sequences", p.sequences},
          {"dp", p.layout.dp},
          {"pp", p.layout.pp},
          {"tp", p.layout.tp},
          {"micro_batches", p.layout.micro_batches},
          {"schedule", parallel::schedule_name(p.layout.schedule)},
          {"zero1", p.layout.zero1},
          {"recompute", p.layout.recompute},
          {"step_seconds", p.step_seconds},
          {"tokens_per_second", p.tokens_per_second},
          {"mfu_full", p.mfu},
          {"memory_gib", p.memory_gib},
          {"fits", p.fits},
          {"compute_seconds", p.compute_seconds},
          {"bubble_seconds", p.bubble_seconds},
          {"tp_seconds", p.tp_seconds},
          {"pp_seconds", p.pp_seconds},
          {"dp_seconds", p.dp_seconds},
          {"optimizer_seconds", p.optimizer_seconds}};
}

void print_row(std::ostream & out, int rank, const bench::Prediction & p) {
  out << std::setw(3) << rank << "  " << std::left << std::setw(38) << bench::describe(p.layout) << std::right
      << std::setw(6) << p.sequences << std::fixed << std::setprecision(3) << std::setw(9) << p.step_seconds
      << std::setprecision(0) << std::setw(11) << p.tokens_per_second << std::setprecision(1) << std::setw(7)
      << 100.0 * p.mfu << std::setw(8) << p.memory_gib << std::setprecision(3) << std::setw(9) << p.compute_seconds
      << std::setw(8) << p.bubble_seconds << std::setw(8) << p.tp_seconds << std::setw(8) << p.pp_seconds
      << std::setw(8) << p.dp_seconds << std::setw(8) << p.optimizer_seconds << (p.fits ? "" : "  (does not fit)")
      << "\n";
}

}  // namespace

int run_plan(std::ostream & out, const PlanOptions & options) {
  model::KosmosConfig config = model::preset(options.preset);
  if (!options.model_config.empty())
    config = model::config_from_json(read_text_file(options.model_config), config, options.model_config);
  bench::Hardware hardware = bench::hardware_preset(options.gpu);
  if (!options.calibration.empty())
    hardware = bench::calibrated(hardware, read_text_file(options.calibration), options.calibration);
  const int nodes =
      options.nodes > 0 ? options.nodes : (options.gpus + hardware.devices_per_node - 1) / hardware.devices_per_node;
  KOSMOS_CHECK(options.nodes == 0 || (options.nodes <= options.gpus && options.gpus % options.nodes == 0), "--nodes ",
               options.nodes, " does not split --gpus ", options.gpus, " evenly; give a node count that divides it, "
               "or 0 (devices per node: ", hardware.devices_per_node, " on ", options.gpu, ")");
  KOSMOS_CHECK(options.global_batch == 0 || options.global_batch_tokens == 0, "kosmos plan: --global-batch ",
               options.global_batch, " and --global-batch-tokens ", options.global_batch_tokens,
               " both give the batch; give one of them");
  bench::Workload workload;
  workload.length = options.length;
  workload.images_per_sequence = options.images_per_sequence;
  if (options.global_batch > 0) {
    workload.sequences = options.global_batch;
  } else {
    KOSMOS_CHECK(options.global_batch_tokens > 0, "kosmos plan: give --global-batch-tokens T or --global-batch N");
    workload.sequences = std::max<int64_t>(
        1, std::llround(static_cast<double>(options.global_batch_tokens) / static_cast<double>(options.length)));
  }
  if (!options.measured.empty()) {  // a measured step of this machine calibrates the matmul rate
    const nlohmann::json measured = nlohmann::json::parse(read_text_file(options.measured));
    bench::Workload measured_work;
    measured_work.sequences = measured.at("sequences_per_step");
    measured_work.length = measured.at("length");
    measured_work.images_per_sequence = measured.at("images_per_sequence");
    bench::Layout measured_layout;
    measured_layout.dp = measured.at("dp");
    measured_layout.pp = measured.at("pp");
    measured_layout.tp = measured.at("tp");
    measured_layout.micro_batches = measured.at("micro_batches");
    measured_layout.schedule = parallel::schedule_from_name(measured.at("schedule"));
    measured_layout.zero1 = measured.at("zero1");
    hardware.matmul_tflops =
        bench::matmul_rate_for(config, hardware, measured_work, measured_layout, measured.at("step_seconds_median"));
    hardware.source += "; matmul rate from the step measured in " + options.measured;
  }
  out << "kosmos plan: " << options.preset << ", " << options.gpus << " x " << options.gpu << " on " << nodes
      << " node(s), " << workload.sequences << " sequences of " << workload.length << " per step ("
      << workload.sequences * workload.length << " tokens)\n"
      << "machine: " << std::setprecision(4) << hardware.matmul_tflops << " TFLOP/s sustained matmul of "
      << hardware.peak_tflops << " peak, " << hardware.memory_gbs << " GB/s memory, " << hardware.memory_gib
      << " GiB (" << 100.0 * hardware.usable_fraction << "% of it for a layout), links " << hardware.intra_gbs
      << " GB/s in a node and " << hardware.inter_gbs << " between ("
      << hardware.source << ")\n";
  std::vector<bench::Prediction> predictions;
  if (!options.layout.empty()) {
    const bench::Layout layout = parse_layout(options.layout);
    KOSMOS_CHECK(layout.dp * layout.pp * layout.tp == options.gpus, "--layout ", options.layout, " uses ",
                 layout.dp * layout.pp * layout.tp, " devices but --gpus is ", options.gpus);
    predictions.push_back(bench::predict(config, hardware, workload, layout, nodes));
    KOSMOS_CHECK(predictions.back().step_seconds > 0.0, "--layout ", options.layout,
                 " cannot run this model: ", predictions.back().why_not);
  } else {
    predictions = bench::rank_layouts(config, hardware, workload, options.gpus, nodes);
    KOSMOS_CHECK(!predictions.empty(), "kosmos plan: no layout of ", options.gpus, " devices runs ", options.preset,
                 " with ", workload.sequences, " sequences per step; change --gpus or the batch");
  }
  out << "  #  layout                                 batch   step s   tokens/s  MFU %     GiB  compute  bubble      tp"
         "      pp      dp     opt\n";
  const int shown = std::min<int>(options.top, static_cast<int>(predictions.size()));
  for (int i = 0; i < shown; ++i) print_row(out, i + 1, predictions[static_cast<size_t>(i)]);
  if (options.layout.empty())
    out << "(" << predictions.size() << " layouts predicted; MFU counts full attention over " << options.gpus << " x "
        << hardware.peak_tflops << " TFLOP/s)\n";
  if (!options.out.empty()) {
    nlohmann::json all = nlohmann::json::array();
    for (const bench::Prediction & p : predictions) all.push_back(to_json(p));
    std::ofstream file(options.out, std::ios::trunc);
    file << nlohmann::json{{"gpu", options.gpu},
                           {"gpus", options.gpus},
                           {"nodes", nodes},
                           {"preset", options.preset},
                           {"sequences", workload.sequences},
                           {"length", workload.length},
                           {"matmul_tflops", hardware.matmul_tflops},
                           {"source", hardware.source},
                           {"predictions", all}}
                .dump(2)
         << "\n";
    KOSMOS_CHECK(file, "kosmos plan: cannot write --out ", options.out);
  }
  return 0;
}

}  // namespace kosmos
