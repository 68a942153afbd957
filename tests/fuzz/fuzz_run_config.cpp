// fuzz_run_config.cpp: libFuzzer target for the TOML run config (`--config run.toml`: CLI11's TOML parser, then the
// `[train]` keys into options like launch/main.cpp's): any text gives options or a CLI11 error, never a crash.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <sstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
  CLI::App app{"fuzz"};
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.set_config("--config");
  CLI::App * train = app.add_subcommand("train");
  int64_t steps = 200;
  double lr = 2e-3;
  std::string preset = "tiny";
  std::vector<int64_t> stage_layers;
  bool zero1 = false;
  train->add_option("--steps", steps);
  train->add_option("--lr", lr);
  train->add_option("--preset", preset)->check(CLI::IsMember({"tiny", "small", "kosmos1", "kosmos2"}));
  train->add_option("--stage-layers", stage_layers)->delimiter(',');
  train->add_flag("--zero1", zero1);
  std::istringstream text(std::string(reinterpret_cast<const char *>(data), size));
  try {
    app.parse_from_stream(text);  // the TOML parser, then each key into its option and its checks
  } catch (const CLI::Error &) {
  } catch (const std::exception &) {  // CLI11 2.1 reports a few malformed values as std::invalid_argument
  }
  return 0;
}
