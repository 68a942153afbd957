// train.cpp: `kosmos train` on one rank: model from a preset (and an optional JSON config), the built-in synthetic
// image-caption set, AdamW with warm-up and decay, a step line every --log-every steps and --metrics JSON lines.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backends/error.h"
#include "io/synthetic.h"
#include "launch/launch.h"
#include "model/trainer.h"

namespace kosmos {
namespace {

std::string read_file(const std::string & path) {
  std::ifstream in(path, std::ios::binary);
  KOSMOS_CHECK(in, "cannot open ", path, " for reading; check the path and its permissions");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

int run_train(std::ostream & out, const BackendRegistry & registry, const TrainOptions & options) {
  model::KosmosConfig config = model::preset(options.preset);
  if (!options.model_config.empty())
    config = model::config_from_json(read_file(options.model_config), config, options.model_config);
  model::validate(config);
  const int64_t images_per_sample = 1;
  const int64_t minimum_length = 2 + images_per_sample * (config.image_slots() + 7);
  const int64_t length = options.length > 0 ? options.length : minimum_length;

  std::unique_ptr<Device> device = registry.create(options.backend, options.device);
  std::unique_ptr<Stream> stream = device->create_stream();
  const model::ParameterTable table(config);
  model::ModelState state(*device, table);
  state.initialise(options.seed, *stream);
  state.zero_moments(*stream);
  model::KosmosModel kosmos_model(config, state);
  model::OptimizerConfig optimizer;
  optimizer.peak_lr = options.lr;
  optimizer.warmup_steps = std::min(options.warmup, options.steps);
  optimizer.total_steps = options.steps;
  optimizer.clip_norm = options.clip;
  optimizer.weight_decay = options.weight_decay;
  model::Trainer trainer(kosmos_model, state, optimizer);
  model::Arena arena(*device);
  model::Runtime rt{*device, *stream, arena};

  std::ofstream metrics;
  if (!options.metrics.empty()) {
    metrics.open(options.metrics, std::ios::trunc);
    KOSMOS_CHECK(metrics, "--metrics ", options.metrics, ": cannot open for writing; check the folder exists");
  }
  out << "kosmos train: preset " << options.preset << ", " << table.total() << " parameters ("
      << table.trainable_total() << " trainable), device " << device->name() << " (" << device->description()
      << ")\n";
  out << "data: built-in synthetic image-caption set, " << options.micro_batches << " x " << options.batch
      << " sequences of " << length << " positions per step, seed " << options.seed << "\n";
  device->set_profiling(options.profile);
  const auto start = std::chrono::steady_clock::now();
  double first_loss = 0.0, last_loss = 0.0;
  int64_t sample = 0, tokens = 0;
  for (int64_t step = 1; step <= options.steps; ++step) {
    std::vector<model::Batch> micro;
    for (int64_t m = 0; m < options.micro_batches; ++m, sample += options.batch)
      micro.push_back(io::synthetic_batch(config, options.batch, length, sample, options.seed));
    const model::StepStats stats = trainer.step(rt, micro, step, options.seed);
    tokens += stats.tokens;
    if (step == 1) first_loss = stats.loss;
    last_loss = stats.loss;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (metrics.is_open()) {
      metrics << nlohmann::json{{"step", step},         {"loss", stats.loss},
                                {"lr", stats.lr},       {"grad_norm", stats.grad_norm},
                                {"tokens", stats.tokens}, {"tokens_per_s", stats.tokens / stats.seconds},
                                {"step_seconds", stats.seconds}, {"elapsed_seconds", elapsed}}
                     .dump()
              << "\n";
      metrics.flush();
    }
    if (step == 1 || step % options.log_every == 0 || step == options.steps) {
      const double eta = elapsed / static_cast<double>(step) * static_cast<double>(options.steps - step);
      out << "step " << std::setw(6) << step << "/" << options.steps << "  loss " << std::fixed << std::setprecision(4)
          << stats.loss << "  lr " << std::scientific << std::setprecision(2) << stats.lr << "  grad norm "
          << std::fixed << std::setprecision(3) << stats.grad_norm << "  " << std::setprecision(0)
          << stats.tokens / stats.seconds << " tokens/s  eta " << std::setprecision(1) << eta << " s\n";
      out.flush();
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out << "trained " << options.steps << " steps in " << std::fixed << std::setprecision(1) << seconds << " s ("
      << std::setprecision(0) << tokens / seconds << " tokens/s); loss " << std::setprecision(4) << first_loss
      << " -> " << last_loss << "\n";
  if (options.profile) {
    std::vector<std::pair<std::string, Device::OpTime>> times = device->profile();
    std::sort(times.begin(), times.end(), [](const auto & a, const auto & b) { return a.second.seconds > b.second.seconds; });
    double total = 0.0;
    for (const auto & entry : times) total += entry.second.seconds;
    out << "time per op over " << options.steps << " steps (" << std::fixed << std::setprecision(3) << total
        << " s in ops, " << seconds << " s in all):\n";
    for (const auto & [name, time] : times)
      out << "  " << std::left << std::setw(24) << name << std::right << std::setw(9) << std::setprecision(3)
          << time.seconds << " s " << std::setw(6) << std::setprecision(1) << 100.0 * time.seconds / total << " %  "
          << time.calls << " calls\n";
  }
  return 0;
}

}  // namespace kosmos
