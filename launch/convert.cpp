// convert.cpp: `kosmos convert`: a peer's safetensors weights into an HDF5 checkpoint (step 0, zero AdamW moments:
// a run resumes from it as from pretrained weights), and an HDF5 checkpoint back into safetensors in a peer's
// names, so a model trained here loads in PyTorch. The direction follows the file names' extensions.
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backends/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "launch/files.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

bool has_extension(const std::string & path, const std::string & extension) {
  return std::filesystem::path(path).extension() == extension;
}

}  // namespace

int run_convert(std::ostream & out, const BackendRegistry & registry, const ConvertOptions & options) {
  const bool to_checkpoint = has_extension(options.input, ".safetensors") && has_extension(options.output, ".h5");
  const bool to_weights = has_extension(options.input, ".h5") && has_extension(options.output, ".safetensors");
  KOSMOS_CHECK(to_checkpoint || to_weights, "kosmos convert ", options.input, " ", options.output,
               ": converts FILE.safetensors to FILE.h5 (a checkpoint) or FILE.h5 to FILE.safetensors; name the files "
               "with those extensions");
  if (to_checkpoint && std::filesystem::exists(options.output)) {  // a trained checkpoint keeps its AdamW state
    int64_t step = 0;
    try {
      step = io::read_checkpoint_info(options.output).step;
    } catch (const Error &) {  // not a checkpoint: replaced as any output file is
    }
    KOSMOS_CHECK(step == 0, "kosmos convert: ", options.output, " is the checkpoint of training step ", step,
                 " (with its AdamW moments), which a converted file (step 0, zero moments) would replace; give another "
                 "output path, or remove it first");
  }
  std::unique_ptr<parallel::Comm> world = parallel::mpi_world();
  KOSMOS_CHECK(world->size() == 1, "kosmos convert runs on one rank; launch it without mpirun (got ", world->size(),
               " ranks)");
  // The model: from the checkpoint's own record, or from the preset and the config the weights were made with
  // (--model-config, else the one our own safetensors files keep in their metadata, else the preset's).
  model::KosmosConfig config = model::preset(options.preset);
  if (to_weights) {
    config = model::config_from_json(io::read_checkpoint_info(options.input).model_config, config,
                                     options.input + " (/meta model_config)");
  } else if (!options.model_config.empty()) {
    config = model::config_from_json(read_text_file(options.model_config), config, options.model_config);
  } else {
    const std::string kept = io::SafetensorsFile(options.input).metadata(io::kModelConfigKey);
    if (!kept.empty())
      config = model::config_from_json(kept, config, options.input + " (__metadata__ " + io::kModelConfigKey + ")");
  }
  model::validate(config);
  std::unique_ptr<Device> device = registry.create("cpu", 0);
  std::unique_ptr<Stream> stream = device->create_stream();
  const model::ParameterTable table(config);
  model::ModelState state(*device, table);
  // Progress: each of the two halves (read, write) reported with its time as it ends.
  auto started = std::chrono::steady_clock::now();
  const auto lap = [&] {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - started).count();
    started = now;
    std::ostringstream text;
    text << std::fixed << std::setprecision(2) << seconds << " s";
    return text.str();
  };
  if (to_checkpoint) {
    const io::WeightsReport report = io::load_weights(state, io::SafetensorsFile(options.input), *stream);
    out << "[1/2] read " << report.loaded << " parameters from " << options.input << " in " << lap() << "\n";
    KOSMOS_CHECK(!report.vision_only, options.input, " holds only a CLIP vision tower; a checkpoint needs the whole "
                 "model (seed composition or HF Kosmos-2 names)");
    state.zero_moments(*stream);
    std::vector<model::ParameterPart> parts;
    for (const model::ParameterSpec & spec : table.specs()) parts.push_back(model::ParameterPart::whole(spec));
    const io::CheckpointInfo info{0,
                                  options.seed,
                                  1.0,
                                  0,
                                  R"({"synthetic":{"next_sample":0}})",
                                  model::config_to_json(config),
                                  "converted from " + std::filesystem::path(options.input).filename().string(),
                                  "{}",
                                  KOSMOS_VERSION,
                                  ""};
    io::write_checkpoint(options.output, state, parts, info, *world, *stream);
    out << "[2/2] wrote " << options.output << " in " << lap() << ": step 0, zero AdamW moments ("
        << report.skipped << " buffers and tied duplicates of the input skipped)\n";
  } else {
    const io::CheckpointInfo info = io::read_checkpoint(options.input, state, false, *world, *stream);
    out << "[1/2] read " << table.specs().size() << " parameters of step " << info.step << " from " << options.input
        << " in " << lap() << "\n";
    io::save_weights(state, options.output, *stream, io::weight_names_from(options.names),
                     model::config_to_json(config));
    out << "[2/2] wrote " << options.output << " in " << options.names << " names in " << lap() << "\n";
  }
  return 0;
}

}  // namespace kosmos
