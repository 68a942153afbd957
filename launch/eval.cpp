// eval.cpp: `kosmos eval`: zero-shot captioning and VQA accuracy from JSONL documents (the synthetic corpus's
// caption.jsonl and interleaved.jsonl, or any in that form) and perplexity on a prepared dataset; results as JSON.
// Captioning prompts with the image alone and scores the first three words ("a red circle": the object's colour
// and shape) and the whole caption; VQA prompts with the document up to its last "answer:" and scores the answer.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backends/error.h"
#include "io/image.h"
#include "io/loader.h"
#include "io/tokenizer.h"
#include "launch/decoding.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

namespace fs = std::filesystem;

std::string trim(const std::string & text) {
  const size_t first = text.find_first_not_of(" \t\n"), last = text.find_last_not_of(" \t\n.");
  return first == std::string::npos || last < first ? "" : text.substr(first, last - first + 1);
}

std::string first_words(const std::string & text, int count) {
  std::istringstream in(text);
  std::string word, out;
  for (int i = 0; i < count && in >> word; ++i) out += (i ? " " : "") + word;
  return out;
}

// One prompt to continue and the answer it should give.
struct Question {
  std::vector<std::string> images;
  std::string text;       // after the images
  std::string reference;  // the expected continuation
};

// Reads the questions of a JSONL file: captioning (image, then the caption) or VQA (the document up to the last
// "answer:" of its last text segment). Lines of another shape are errors naming the line.
std::vector<Question> read_questions(const std::string & path, bool vqa, int64_t limit) {
  std::ifstream in(path);
  KOSMOS_CHECK(in, "kosmos eval: cannot read ", path, "; check the path");
  const fs::path folder = fs::path(path).parent_path();
  std::vector<Question> questions;
  std::string line;
  for (int64_t number = 1; std::getline(in, line) && static_cast<int64_t>(questions.size()) < limit; ++number) {
    const nlohmann::json document = nlohmann::json::parse(line, nullptr, false);
    const std::string where = path + ":" + std::to_string(number);
    KOSMOS_CHECK(document.is_array() && !document.empty(), where, ": not a JSON list of segments");
    Question question;
    std::string text;
    for (size_t i = 0; i < document.size(); ++i) {
      const nlohmann::json & segment = document[i];
      if (segment.contains("image")) {
        KOSMOS_CHECK(text.empty(), where, ": text between images; eval prompts are images, then one text");
        question.images.push_back((folder / segment["image"].get<std::string>()).string());
      } else {
        KOSMOS_CHECK(segment.contains("text"), where, ": segment ", i, " is neither text nor image");
        text += segment["text"].get<std::string>();
        if (i + 1 < document.size() && document[i + 1].contains("image")) {
          if (!vqa) KOSMOS_FAIL(where, ": a caption document is an image, then its caption");
          text.clear();  // interleaved text before another image is not part of this prompt
        }
      }
    }
    if (vqa) {
      const size_t answer = text.rfind("answer:");
      KOSMOS_CHECK(answer != std::string::npos, where, ": no \"answer:\" in the last text segment for VQA");
      question.text = text.substr(0, answer + 7);
      question.reference = trim(text.substr(answer + 7));
    } else {
      KOSMOS_CHECK(question.images.size() == 1, where, ": a caption document has one image, this one ",
                   question.images.size());
      question.reference = trim(text);
    }
    questions.push_back(question);
  }
  KOSMOS_CHECK(!questions.empty(), "kosmos eval: ", path, " holds no documents");
  return questions;
}

// The generated text of every question, in batches of prompts of equal length; `progress` gets a line after each
// batch (answered so far, of how many, ETA).
std::vector<std::string> answer_all(LoadedModel & loaded, const io::Tokenizer & tokenizer,
                                    const std::vector<Question> & questions, int64_t batch_size, int64_t max_new,
                                    std::ostream & progress) {
  const auto start = std::chrono::steady_clock::now();
  size_t answered = 0;
  const model::VisionConfig & v = loaded.config.vision;
  std::vector<std::vector<int32_t>> prompts;
  for (const Question & q : questions)
    prompts.push_back(prompt_tokens(loaded.config, static_cast<int64_t>(q.images.size()), tokenizer.encode(q.text)));
  std::map<size_t, std::vector<size_t>> by_length;
  for (size_t i = 0; i < prompts.size(); ++i) by_length[prompts[i].size()].push_back(i);
  std::vector<std::string> answers(questions.size());
  for (const auto & [length, members] : by_length)
    for (size_t first = 0; first < members.size(); first += static_cast<size_t>(batch_size)) {
      const size_t last = std::min(members.size(), first + static_cast<size_t>(batch_size));
      model::Batch batch;
      batch.batch = static_cast<int64_t>(last - first);
      batch.length = static_cast<int64_t>(length);
      for (size_t m = first; m < last; ++m) {
        const std::vector<int32_t> & prompt = prompts[members[m]];
        batch.tokens.insert(batch.tokens.end(), prompt.begin(), prompt.end());
        for (const std::string & image : questions[members[m]].images) {
          const std::vector<float> pixels = io::clip_preprocess(io::read_image(image), v.image_size);
          batch.images.insert(batch.images.end(), pixels.begin(), pixels.end());
          ++batch.image_count;
        }
      }
      batch.image_slots = model::find_image_slots(batch.tokens, batch.batch, batch.length, loaded.config);
      Sampling greedy;
      greedy.vocab_limit = tokenizer.vocab_size();  // no padding id of a dataset's vocabulary
      const std::vector<std::vector<int32_t>> generated = decode(loaded, batch, max_new, greedy, false);
      for (size_t m = first; m < last; ++m) answers[members[m]] = tokenizer.decode(generated[m - first]);
      answered += last - first;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      progress << "\r  " << answered << "/" << questions.size() << " prompts answered, ETA " << std::fixed
               << std::setprecision(1) << elapsed / answered * (questions.size() - answered) << " s   " << std::flush;
    }
  progress << "\n";
  return answers;
}

// Perplexity on --batches batches of --batch sequences of a prepared dataset: the model split as loaded (pipeline
// stages, tp ranks), the data-parallel replicas each taking their share of every batch.
nlohmann::json perplexity(LoadedModel & loaded, const EvalOptions & options, std::ostream & out,
                          std::ostream & progress) {
  parallel::Comm & replicas = loaded.grid->group(parallel::Axis::kData);
  KOSMOS_CHECK(options.batch % replicas.size() == 0, "kosmos eval --data: --batch ", options.batch,
               " sequences do not split over the ", replicas.size(), " data-parallel replicas (ranks / (pp x tp)); "
               "give a multiple of ", replicas.size());
  // As many batches as the dataset holds sequences for, at most: the loader would go on into another epoch of the
  // same sequences and count them twice. (With several streams, one whose weight outpaces its size may still begin
  // another epoch sooner: the loader draws each sample's stream by weight.)
  io::DataLoader loader(options.data, loaded.config, options.seed);
  int64_t held = 0;
  for (const io::StreamInfo & stream : loader.manifest().streams) held += stream.sequences;
  KOSMOS_CHECK(held >= options.batch, "kosmos eval --data: ", options.data, " holds ", held,
               " sequences, fewer than one --batch of ", options.batch, "; give --batch ", held, " or less");
  const int64_t batches = std::min(options.batches, held / options.batch);
  if (batches < options.batches)
    out << "note: " << options.data << " holds " << held << " sequences: perplexity on " << batches
        << " batches of " << options.batch << ", not the " << options.batches << " --batches asked\n";
  const auto start = std::chrono::steady_clock::now();
  double loss = 0.0, counted = 0.0;
  for (int64_t b = 0; b < batches; ++b) {
    const model::Batch batch = loader.next_step(options.batch, replicas.rank(), replicas.size(), 1)[0];
    float sums[2] = {static_cast<float>(forward_loss(loaded, batch)), 0.0f};  // summed loss, counted positions
    for (float w : batch.loss_weights) sums[1] += w;
    replicas.all_reduce(make_view(sums, DType::kF32, {2}), parallel::ReduceOp::kSum, *loaded.stream);
    loss += sums[0];
    counted += sums[1];
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress << "\r  " << b + 1 << "/" << batches << " batches, ETA " << std::fixed << std::setprecision(1)
             << elapsed / static_cast<double>(b + 1) * static_cast<double>(batches - b - 1) << " s   "
             << std::flush;
  }
  progress << "\n";
  loader.wait();
  KOSMOS_CHECK(counted > 0.0, "kosmos eval --data: no position of the ", batches * options.batch,
               " sequences read from ", options.data, " carries a loss; check the dataset");
  out << "perplexity on " << batches * options.batch << " sequences of " << options.data << ": "
      << std::defaultfloat << std::setprecision(5) << std::exp(loss / counted) << " (loss " << loss / counted
      << " per token)\n";
  return {{"data", options.data}, {"sequences", batches * options.batch}, {"tokens", counted},
          {"loss", loss / counted}, {"perplexity", std::exp(loss / counted)}};
}

}  // namespace

int run_eval(std::ostream & all_ranks, const BackendRegistry & registry, const EvalOptions & options) {
  KOSMOS_CHECK(!options.captions.empty() || !options.vqa.empty() || !options.data.empty(),
               "kosmos eval: nothing to evaluate; give --captions FILE.jsonl, --vqa FILE.jsonl or --data DIR");
  KOSMOS_CHECK(options.min_colour_shape <= 0.0 || !options.captions.empty(), "kosmos eval: --min-colour-shape ",
               options.min_colour_shape, " needs --captions FILE.jsonl, whose colour and shape accuracy it checks");
  LoadedModel loaded = load_model(registry, options.model);
  const bool leader = loaded.grid->world().rank() == 0;  // every rank decodes the same tokens
  std::ostringstream silent;
  std::ostream & out = leader ? all_ranks : silent;
  std::optional<io::Tokenizer> tokenizer;  // read for captions and VQA only
  if (!options.captions.empty() || !options.vqa.empty()) {
    tokenizer.emplace(options.tokenizer);
    check_tokenizer_matches(*tokenizer, options.tokenizer, loaded.config);
  }
  nlohmann::json results = {{"checkpoint", loaded.description}};
  const auto start = std::chrono::steady_clock::now();
  for (const bool vqa : {false, true}) {
    const std::string & path = vqa ? options.vqa : options.captions;
    if (path.empty()) continue;
    const std::vector<Question> questions = read_questions(path, vqa, options.limit);
    const std::vector<std::string> answers =
        answer_all(loaded, *tokenizer, questions, options.batch, options.max_new_tokens, leader ? std::cerr : silent);
    int64_t exact = 0, object = 0;
    nlohmann::json examples = nlohmann::json::array();
    for (size_t i = 0; i < questions.size(); ++i) {
      const std::string answer = trim(vqa ? answers[i].substr(0, answers[i].find('.')) : answers[i]);
      exact += answer == questions[i].reference;
      object += first_words(answer, 3) == first_words(questions[i].reference, 3);
      if (examples.size() < 5) examples.push_back({{"expected", questions[i].reference}, {"generated", answer}});
    }
    const double n = static_cast<double>(questions.size());
    nlohmann::json & entry = results[vqa ? "vqa" : "captioning"];
    entry = {{"file", path}, {"samples", questions.size()}, {"exact_match", exact / n}, {"examples", examples}};
    if (!vqa) entry["colour_shape_match"] = object / n;  // "a red circle": the first three words
    out << (vqa ? "VQA" : "captioning") << " on " << questions.size() << " documents of " << path << ": exact match "
        << std::fixed << std::setprecision(1) << 100.0 * exact / n << "%"
        << (vqa ? std::string() : ", colour and shape " + std::to_string(100.0 * object / n).substr(0, 5) + "%")
        << "\n";
  }
  if (!options.data.empty())
    results["perplexity"] = perplexity(loaded, options, out, leader ? std::cerr : silent);
  results["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int code = 0;
  if (options.min_colour_shape > 0.0) {
    const double accuracy = results["captioning"]["colour_shape_match"].get<double>();
    if (accuracy < options.min_colour_shape) {
      out << "colour and shape accuracy " << accuracy << " is below --min-colour-shape " << options.min_colour_shape
          << "\n";
      code = 1;
    }
  }
  if (!options.out.empty() && leader) {
    std::ofstream file(options.out, std::ios::trunc);
    file << results.dump(2) << "\n";
    KOSMOS_CHECK(file, "kosmos eval: cannot write --out ", options.out);
    out << "wrote " << options.out << "\n";
  }
  return code;
}

}  // namespace kosmos
