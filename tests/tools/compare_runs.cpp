// compare_runs.cpp: checks that two training runs computed the same function: the loss and gradient norm of every
// step (--metrics files) and every final parameter (--save-weights files) agree within a relative tolerance
// (0: bit for bit; a step not finite in both runs agrees, in one it does not). Run B may have started later (a
// resumed run): its steps must be the last steps of run A. Parameters are compared tensor by tensor (relative L2), or
// with --whole-model as one vector over all of them: for runs whose rounding differs (mixed precision), where
// AdamW's normalised step turns a gradient element whose sign the rounding flipped into a whole lr-sized step, which
// in a small zero-initialised bias is alone a percent of the tensor.
// Usage: kosmos_compare_runs METRICS_A METRICS_B WEIGHTS_A WEIGHTS_B TOLERANCE [--whole-model]   (exit 0: they agree)
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "backends/error.h"
#include "io/safetensors.h"

int main(int argc, char ** argv) {
  const bool whole_model = argc == 7 && std::string(argv[6]) == "--whole-model";
  if (argc != 6 && !whole_model) {
    std::fprintf(stderr, "usage: %s METRICS_A METRICS_B WEIGHTS_A WEIGHTS_B TOLERANCE [--whole-model]\n", argv[0]);
    return 2;
  }
  const double tolerance = std::stod(argv[5]);
  int failures = 0;
  try {
    // Every step of A from B's first step on, matched by its step number.
    const auto read_steps = [](const char * path) {
      std::ifstream in(path);
      if (!in) throw std::runtime_error(std::string("cannot read ") + path);
      std::map<int64_t, nlohmann::json> steps;
      for (std::string line; std::getline(in, line);) {
        nlohmann::json step = nlohmann::json::parse(line);
        const int64_t number = step.at("step").get<int64_t>();
        // A resumed run appends to its metrics file: each step must be there once.
        if (!steps.emplace(number, std::move(step)).second)
          throw std::runtime_error(std::string(path) + " holds step " + std::to_string(number) + " twice");
      }
      return steps;
    };
    const std::map<int64_t, nlohmann::json> a = read_steps(argv[1]), b = read_steps(argv[2]);
    if (b.empty()) {
      std::printf("%s has no steps\n", argv[2]);
      return 1;
    }
    int steps = 0;
    for (auto it = a.lower_bound(b.begin()->first); it != a.end(); ++it) {
      const auto other = b.find(it->first);
      if (other == b.end()) {
        std::printf("step %ld of %s is missing from %s\n", static_cast<long>(it->first), argv[1], argv[2]);
        return 1;
      }
      ++steps;
      for (const char * key : {"loss", "grad_norm"}) {
        // A skipped step's NaN or infinity is written as null: both runs must have it there.
        const auto value = [&](const nlohmann::json & step) {
          return step.at(key).is_null() ? std::nan("") : step.at(key).get<double>();
        };
        const double u = value(it->second), v = value(other->second);
        if (std::isnan(u) && std::isnan(v)) continue;
        if (!(std::abs(u - v) <= tolerance * std::abs(u))) {
          std::printf("step %ld: %s %.17g vs %.17g\n", static_cast<long>(it->first), key, u, v);
          ++failures;
        }
      }
    }
    if (steps != static_cast<int>(b.size())) {
      std::printf("%s has steps that %s has not\n", argv[2], argv[1]);
      return 1;
    }
    const kosmos::io::SafetensorsFile wa(argv[3]), wb(argv[4]);
    double worst = 0.0, model_error = 0.0, model_norm = 0.0;
    std::string worst_name;
    for (const auto & [name, entry] : wa.entries()) {
      const std::vector<float> u = wa.read_f32(name), v = wb.read_f32(name);
      double error = 0.0, norm = 0.0;
      for (size_t i = 0; i < u.size(); ++i) {
        error += (static_cast<double>(u[i]) - v[i]) * (static_cast<double>(u[i]) - v[i]);
        norm += static_cast<double>(u[i]) * u[i];
      }
      model_error += error, model_norm += norm;
      const double relative = std::sqrt(error / std::max(norm, 1e-30));
      if (relative > worst) worst = relative, worst_name = name;
      if (!whole_model && relative > tolerance) {
        std::printf("parameter %s differs by %.3g relative\n", name.c_str(), relative);
        ++failures;
      }
    }
    const double model_relative = std::sqrt(model_error / std::max(model_norm, 1e-30));
    std::printf("%d steps and %zu parameters compared; largest parameter difference %.3g (%s), over the whole "
                "model %.3g\n", steps, wa.entries().size(), worst, worst_name.c_str(), model_relative);
    if (whole_model && model_relative > tolerance) {
      std::printf("the parameters differ by %.3g relative over the whole model\n", model_relative);
      ++failures;
    }
  } catch (const std::exception & error) {
    std::printf("error: %s\n", error.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
