// compare_runs.cpp: checks that two training runs computed the same function: the loss and gradient norm of every
// step (--metrics files) and every final parameter (--save-weights files) agree within a relative tolerance.
// Usage: kosmos_compare_runs METRICS_A METRICS_B WEIGHTS_A WEIGHTS_B TOLERANCE   (exit 0 when they agree)
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "backends/error.h"
#include "io/safetensors.h"

int main(int argc, char ** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s METRICS_A METRICS_B WEIGHTS_A WEIGHTS_B TOLERANCE\n", argv[0]);
    return 2;
  }
  const double tolerance = std::stod(argv[5]);
  int failures = 0;
  try {
    std::ifstream a(argv[1]), b(argv[2]);
    std::string line_a, line_b;
    int steps = 0;
    while (std::getline(a, line_a)) {
      if (!std::getline(b, line_b)) {
        std::printf("%s has more steps than %s\n", argv[1], argv[2]);
        return 1;
      }
      const auto x = nlohmann::json::parse(line_a), y = nlohmann::json::parse(line_b);
      ++steps;
      for (const char * key : {"loss", "grad_norm"}) {
        const double u = x.at(key).get<double>(), v = y.at(key).get<double>();
        if (std::abs(u - v) > tolerance * std::abs(u)) {
          std::printf("step %d: %s %.9g vs %.9g\n", x.at("step").get<int>(), key, u, v);
          ++failures;
        }
      }
    }
    const kosmos::io::SafetensorsFile wa(argv[3]), wb(argv[4]);
    double worst = 0.0;
    std::string worst_name;
    for (const auto & [name, entry] : wa.entries()) {
      const std::vector<float> u = wa.read_f32(name), v = wb.read_f32(name);
      double error = 0.0, norm = 0.0;
      for (size_t i = 0; i < u.size(); ++i) {
        error += (static_cast<double>(u[i]) - v[i]) * (static_cast<double>(u[i]) - v[i]);
        norm += static_cast<double>(u[i]) * u[i];
      }
      const double relative = std::sqrt(error / std::max(norm, 1e-30));
      if (relative > worst) worst = relative, worst_name = name;
      if (relative > tolerance) {
        std::printf("parameter %s differs by %.3g relative\n", name.c_str(), relative);
        ++failures;
      }
    }
    std::printf("%d steps and %zu parameters compared; largest parameter difference %.3g (%s)\n", steps,
                wa.entries().size(), worst, worst_name.c_str());
  } catch (const std::exception & error) {
    std::printf("error: %s\n", error.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
