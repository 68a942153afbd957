// main.cpp: the `kosmos` command: CLI11 subcommands, MPI start-up and the one place that catches kosmos::Error.
// An error prints "[rank r] error: ..." on the rank where it happened and ends the job with a non-zero code on
// every rank (MPI_Abort when more than one rank runs).
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "backends/error.h"
#include "launch/launch.h"

namespace {

int world_rank() {
  int initialized = 0, rank = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int initialized = 0, size = 1;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

[[noreturn]] void fail(const std::string & message) {
  std::cerr << "[rank " << world_rank() << "] error: " << message << std::endl;
  if (world_size() > 1) MPI_Abort(MPI_COMM_WORLD, 1);
  MPI_Finalize();
  std::exit(1);
}

}  // namespace

int main(int argc, char ** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);

  CLI::App app{"kosmos: trains and runs the KOSMOS-1 multimodal language model across MPI ranks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("kosmos ") + KOSMOS_VERSION);

  CLI::App * info = app.add_subcommand("info", "print the build options, backends, devices and library versions");

  kosmos::DemoOptions demo_options;
  CLI::App * demo = app.add_subcommand(
      "demo", "train a small MLP on synthetic data with the op set and time one attention forward+backward");
  demo->add_option("--backend", demo_options.backend, "device backend: auto, cpu, cuda or rocm")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "rocm"}));
  demo->add_option("--device", demo_options.device, "device ordinal within the backend")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  demo->add_option("--steps", demo_options.steps, "AdamW steps")->capture_default_str()->check(CLI::Range(1, 100000));
  demo->add_option("--seed", demo_options.seed, "seed of the data, the initialisation and dropout")
      ->capture_default_str();

  int code = 0;
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError & error) {
      code = app.exit(error);
      MPI_Finalize();
      return code;
    }
    const kosmos::BackendRegistry registry;
    if (*info) {
      if (world_rank() == 0) kosmos::print_info(std::cout, registry);
    } else if (*demo) {
      code = kosmos::run_demo(std::cout, registry, demo_options);
    }
  } catch (const kosmos::Error & error) {
    fail(error.what());
  } catch (const std::exception & error) {
    fail(std::string("unexpected failure: ") + error.what());
  }
  MPI_Finalize();
  return code;
}
