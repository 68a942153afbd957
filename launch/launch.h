// launch.h: the subcommands that main.cpp wires to CLI11. Each takes its options struct and returns an exit code;
// errors are thrown as kosmos::Error and reported by main.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "backends/registry.h"

namespace kosmos {

// `kosmos info`: build options, backends (with why a backend is unavailable), devices, library versions.
void print_info(std::ostream & out, const BackendRegistry & registry);

struct DemoOptions {
  std::string backend = "auto";
  int device = 0;
  int steps = 200;          // AdamW steps of the MLP demo
  uint64_t seed = 1234;     // data and initialisation
};

// `kosmos demo`: trains a small MLP classifier with the op set (matmul, layernorm, GELU, cross-entropy, AdamW,
// dropout) on synthetic data and times one attention forward+backward at a decoder shape.
int run_demo(std::ostream & out, const BackendRegistry & registry, const DemoOptions & options);

}  // namespace kosmos
