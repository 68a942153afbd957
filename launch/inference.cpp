// inference.cpp: `kosmos forward` (one fp32 forward pass, logits to .npy) and `kosmos generate` (greedy decoding),
// both from a model config + safetensors weights or an HF Kosmos-2 folder, with token ids and preprocessed pixels
// given directly, for checking kosmos against a PyTorch model token for token.
#include <algorithm>
#include <fstream>
#include <sstream>

#include "backends/error.h"
#include "io/npy.h"
#include "io/weights.h"
#include "launch/files.h"
#include "launch/launch.h"
#include "model/kosmos.h"

namespace kosmos {
namespace {

std::vector<int32_t> parse_ids(const std::string & text) {
  std::vector<int32_t> ids;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    try {
      size_t used = 0;
      const long long value = std::stoll(item, &used);
      KOSMOS_CHECK(used == item.size() && value >= 0 && value <= INT32_MAX, "");
      ids.push_back(static_cast<int32_t>(value));
    } catch (const std::exception &) {
      KOSMOS_FAIL("--tokens: '", item, "' is not a token id; give comma-separated non-negative integers, e.g. 0,5,9");
    }
  }
  KOSMOS_CHECK(!ids.empty(), "--tokens is empty; give comma-separated token ids, e.g. 0,5,9");
  return ids;
}

// The model, its weights and the single-sequence batch every inference command starts from.
struct Loaded {
  model::KosmosConfig config;
  std::unique_ptr<Device> device;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<model::ParameterTable> table;
  std::unique_ptr<model::ModelState> state;
  model::Batch batch;
};

Loaded load(const BackendRegistry & registry, const InferenceOptions & options) {
  KOSMOS_CHECK(options.hf_dir.empty() != (options.model_config.empty() && options.weights.empty()),
               "give either --hf DIR, or --model-config FILE with --weights FILE.safetensors");
  Loaded loaded;
  std::string weights = options.weights;
  if (!options.hf_dir.empty()) {
    loaded.config = model::config_from_hf_kosmos2(read_text_file(options.hf_dir + "/config.json"),
                                                  options.hf_dir + "/config.json");
    weights = options.hf_dir + "/model.safetensors";
  } else {
    KOSMOS_CHECK(!options.model_config.empty() && !weights.empty(),
                 "--model-config and --weights go together (or use --hf DIR)");
    loaded.config = model::config_from_json(read_text_file(options.model_config), model::preset(options.preset),
                                            options.model_config);
  }
  if (options.image_token_id >= 0) loaded.config.tokens.image = options.image_token_id;
  model::validate(loaded.config);
  loaded.device = registry.create(options.backend, options.device);
  loaded.stream = loaded.device->create_stream();
  loaded.table = std::make_unique<model::ParameterTable>(loaded.config);
  loaded.state = std::make_unique<model::ModelState>(*loaded.device, *loaded.table);
  const io::WeightsReport report = io::load_weights(*loaded.state, io::SafetensorsFile(weights), *loaded.stream);
  KOSMOS_CHECK(!report.vision_only, weights, " holds only a CLIP vision tower; forward and generate need a whole "
               "checkpoint (seed composition or HF Kosmos-2)");

  model::Batch & batch = loaded.batch;
  batch.tokens = parse_ids(options.tokens);
  for (int32_t id : batch.tokens)
    KOSMOS_CHECK(id < loaded.config.decoder.vocab_size, "--tokens: id ", id, " is outside the vocabulary [0, ",
                 loaded.config.decoder.vocab_size, ")");
  batch.batch = 1;
  batch.length = static_cast<int64_t>(batch.tokens.size());
  if (!options.image_tensor.empty()) {
    io::NpyArray images = io::read_npy(options.image_tensor);
    const model::VisionConfig & v = loaded.config.vision;
    KOSMOS_CHECK(images.shape.size() == 4 && images.shape[1] == v.channels && images.shape[2] == v.image_size &&
                     images.shape[3] == v.image_size,
                 options.image_tensor, ": expected preprocessed pixels [N, ", v.channels, ", ", v.image_size, ", ",
                 v.image_size, "] float32");
    batch.image_count = images.shape[0];
    batch.images = std::move(images.values);
  }
  // The image slots come from the prompt only: a generated id that happens to be <image> is text, as in HF's
  // generate.
  batch.image_slots = model::find_image_slots(batch.tokens, 1, batch.length, loaded.config);
  KOSMOS_CHECK(static_cast<int64_t>(batch.image_slots.size()) == batch.image_count, "--tokens holds ",
               batch.image_slots.size(), " image token(s) (id ", loaded.config.tokens.image, ") but --image-tensor has ",
               batch.image_count, " image(s); each image needs its token followed by ", loaded.config.image_slots(),
               " slot ids");
  return loaded;
}

// Runs one forward of `batch` with its tokens set to `tokens` (the prompt and what was generated so far) and
// returns the logits [T, V].
std::vector<float> forward_logits(Loaded & loaded, model::KosmosModel & kosmos_model, model::Batch & batch,
                                  const std::vector<int32_t> & tokens, model::Arena & arena) {
  batch.tokens = tokens;
  batch.length = static_cast<int64_t>(tokens.size());
  batch.targets.assign(tokens.size(), 0);
  batch.loss_weights.assign(tokens.size(), 0.0f);
  arena.reset();
  model::Runtime rt{*loaded.device, *loaded.stream, arena};
  std::vector<float> logits;
  kosmos_model.run(rt, batch, 1.0f, {0, 0, false}, false, &logits);
  return logits;
}

}  // namespace

int run_forward(std::ostream & out, const BackendRegistry & registry, const InferenceOptions & options) {
  Loaded loaded = load(registry, options);
  model::Arena arena(*loaded.device);
  model::KosmosModel kosmos_model(loaded.config, *loaded.state);
  const std::vector<int32_t> prompt = loaded.batch.tokens;
  const std::vector<float> logits = forward_logits(loaded, kosmos_model, loaded.batch, prompt, arena);
  io::write_npy(options.out, {loaded.batch.length, loaded.config.decoder.vocab_size}, logits);
  out << "wrote logits [" << loaded.batch.length << ", " << loaded.config.decoder.vocab_size << "] to " << options.out
      << "\n";
  return 0;
}

int run_generate(std::ostream & out, const BackendRegistry & registry, const InferenceOptions & options) {
  Loaded loaded = load(registry, options);
  model::Arena arena(*loaded.device);
  model::KosmosModel kosmos_model(loaded.config, *loaded.state);
  std::vector<int32_t> tokens = loaded.batch.tokens;
  const int64_t vocab = loaded.config.decoder.vocab_size;
  std::vector<int32_t> generated;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {  // greedy, a full forward per token
    const std::vector<float> logits = forward_logits(loaded, kosmos_model, loaded.batch, tokens, arena);
    const float * last = logits.data() + (static_cast<int64_t>(tokens.size()) - 1) * vocab;
    const int32_t next = static_cast<int32_t>(std::max_element(last, last + vocab) - last);
    tokens.push_back(next);
    generated.push_back(next);
    if (!options.ignore_eos && next == loaded.config.tokens.eos) break;
  }
  if (options.print_ids) {
    for (size_t i = 0; i < generated.size(); ++i) out << (i ? "," : "") << generated[i];
    out << "\n";
  } else {
    out << "generated " << generated.size() << " token(s); use --print-ids to print them\n";
  }
  return 0;
}

}  // namespace kosmos
