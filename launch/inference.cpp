// inference.cpp: `kosmos forward` (one fp32 forward pass, logits to .npy) and `kosmos generate` (greedy or sampled
// decoding). The model comes from a checkpoint, safetensors weights with a config, or an HF Kosmos-2 folder; the
// prompt from token ids and preprocessed pixels (to check kosmos against PyTorch token for token) or from image
// files and text through the tokenizer.
#include <optional>
#include <sstream>

#include "backends/error.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/tokenizer.h"
#include "launch/decoding.h"
#include "launch/launch.h"

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

// The one-sequence prompt: ids with .npy pixels, or image files and text, whose tokenizer (checked against the
// model) it leaves in `tokenizer` for the generated text.
model::Batch prompt_batch(const LoadedModel & loaded, const InferenceOptions & options,
                          std::optional<io::Tokenizer> & tokenizer) {
  const model::KosmosConfig & config = loaded.config;
  const model::VisionConfig & v = config.vision;
  model::Batch batch;
  batch.batch = 1;
  KOSMOS_CHECK(options.tokens.empty() != (options.images.empty() && options.prompt.empty()),
               "give the prompt as --tokens (with --image-tensor) or as --image and --prompt text, not both");
  if (!options.tokens.empty()) {
    batch.tokens = parse_ids(options.tokens);
    if (!options.image_tensor.empty()) {
      io::NpyArray images = io::read_npy(options.image_tensor);
      KOSMOS_CHECK(images.shape.size() == 4 && images.shape[1] == v.channels && images.shape[2] == v.image_size &&
                       images.shape[3] == v.image_size,
                   options.image_tensor, ": expected preprocessed pixels [N, ", v.channels, ", ", v.image_size, ", ",
                   v.image_size, "] float32");
      batch.image_count = images.shape[0];
      batch.images = std::move(images.values);
    }
  } else {
    for (const std::string & path : options.images) {
      const std::vector<float> pixels = io::clip_preprocess(io::read_image(path), v.image_size);
      batch.images.insert(batch.images.end(), pixels.begin(), pixels.end());
      ++batch.image_count;
    }
    tokenizer.emplace(options.tokenizer);
    check_tokenizer_matches(*tokenizer, options.tokenizer, config);
    batch.tokens = prompt_tokens(config, batch.image_count, tokenizer->encode(options.prompt));
  }
  for (int32_t id : batch.tokens)
    KOSMOS_CHECK(id < config.decoder.vocab_size, "--tokens: id ", id, " is outside the vocabulary [0, ",
                 config.decoder.vocab_size, ")");
  batch.length = static_cast<int64_t>(batch.tokens.size());
  batch.image_slots = model::find_image_slots(batch.tokens, 1, batch.length, config);
  KOSMOS_CHECK(static_cast<int64_t>(batch.image_slots.size()) == batch.image_count, "the prompt holds ",
               batch.image_slots.size(), " image token(s) (id ", config.tokens.image, ") but ", batch.image_count,
               " image(s) were given; each image needs its token followed by ", config.image_slots(), " slot ids");
  return batch;
}

}  // namespace

int run_forward(std::ostream & out, const BackendRegistry & registry, const InferenceOptions & options) {
  LoadedModel loaded = load_model(registry, options.model, options.image_token_id);
  std::optional<io::Tokenizer> tokenizer;
  const model::Batch batch = prompt_batch(loaded, options, tokenizer);
  const std::vector<float> logits = forward_logits(loaded, batch);
  io::write_npy(options.out, {batch.length, loaded.config.decoder.vocab_size}, logits);
  out << "wrote logits [" << batch.length << ", " << loaded.config.decoder.vocab_size << "] to " << options.out << "\n";
  return 0;
}

int run_generate(std::ostream & all_ranks, const BackendRegistry & registry, const InferenceOptions & options) {
  LoadedModel loaded = load_model(registry, options.model, options.image_token_id);
  std::ostringstream silent;
  std::ostream & out = loaded.grid->world().rank() == 0 ? all_ranks : silent;  // every rank has the same tokens
  std::optional<io::Tokenizer> tokenizer;
  const model::Batch batch = prompt_batch(loaded, options, tokenizer);
  // A text prompt's tokenizer: its text holds none of the ids a dataset's model has past it (padding of the
  // vocabulary), so none is generated either.
  Sampling sampling = options.sampling;
  if (tokenizer) sampling.vocab_limit = tokenizer->vocab_size();
  const std::vector<int32_t> generated = decode(loaded, batch, options.max_new_tokens, sampling, options.ignore_eos)[0];
  if (options.print_ids) {
    for (size_t i = 0; i < generated.size(); ++i) out << (i ? "," : "") << generated[i];
    out << "\n";
  } else if (tokenizer) {
    out << options.prompt << tokenizer->decode(generated) << "\n";
  } else {
    out << "generated " << generated.size() << " token(s); use --print-ids to print them\n";
  }
  return 0;
}

}  // namespace kosmos
