// metrics_file.cpp: opening the --metrics file of a fresh or a resumed run (metrics_file.h).
#include "io/metrics_file.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "backends/error.h"

namespace kosmos::io {
namespace {

// Whether `line` is a step's JSON object of a step at most `last_step`.
bool logs_a_step_up_to(const std::string & line, int64_t last_step) {
  const nlohmann::json step = nlohmann::json::parse(line, nullptr, false);
  if (!step.is_object() || !step.contains("step") || !step.at("step").is_number_integer()) return false;
  return step.at("step").get<int64_t>() <= last_step;
}

}  // namespace

std::ofstream open_metrics(const std::string & path, int64_t resumed_step, int64_t * kept) {
  std::string keep;  // the lines kept, each with its newline
  int64_t lines = 0;
  std::error_code exists_error;
  if (resumed_step > 0 && std::filesystem::exists(path, exists_error)) {
    std::ifstream in(path);
    KOSMOS_CHECK(in, "--metrics ", path, ": cannot read the resumed run's steps from it; check its permissions");
    for (std::string line; std::getline(in, line);) {
      if (!logs_a_step_up_to(line, resumed_step)) continue;
      keep += line + "\n";
      ++lines;
    }
    // The kept lines go to a file beside it that then takes its place, so that a failure on the way loses nothing.
    const std::string partial = path + ".partial";
    {
      std::ofstream out(partial, std::ios::binary | std::ios::trunc);
      out << keep;
      KOSMOS_CHECK(out, "--metrics ", path, ": cannot write ", partial, "; check the folder is writable and has space");
    }
    std::error_code error;
    std::filesystem::rename(partial, path, error);
    KOSMOS_CHECK(!error, "--metrics ", path, ": cannot replace it by ", partial, " (", error.message(),
                 "); check the folder's permissions");
  }
  std::ofstream metrics(path, resumed_step > 0 ? std::ios::app : std::ios::trunc);
  KOSMOS_CHECK(metrics, "--metrics ", path, ": cannot open it for writing; check the folder exists and is writable");
  if (kept != nullptr) *kept = lines;
  return metrics;
}

}  // namespace kosmos::io
