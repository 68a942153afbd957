// data.cpp: `kosmos data synth`, `kosmos data prepare` (with a progress bar and ETA) and `kosmos tokenizer train |
// encode | decode`.
#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "backends/error.h"
#include "io/dataset.h"
#include "io/synth_data.h"
#include "io/tokenizer.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

std::string progress_bar(const io::PrepareProgress & progress) {
  const double fraction = progress.bytes_total > 0 ? static_cast<double>(progress.bytes_done) / progress.bytes_total : 1;
  const int width = 30, filled = static_cast<int>(std::round(fraction * width));
  const double rate = progress.seconds > 0 ? progress.documents / progress.seconds : 0.0;
  const double eta = fraction > 0 ? progress.seconds * (1.0 - fraction) / fraction : 0.0;
  std::ostringstream line;
  line << "\r[" << std::string(static_cast<size_t>(filled), '=') << std::string(static_cast<size_t>(width - filled), ' ')
       << "] " << std::setw(3) << static_cast<int>(fraction * 100) << "%  " << progress.documents << " documents  "
       << std::fixed << std::setprecision(0) << rate << " documents/s  ETA " << std::setprecision(1) << eta << " s ";
  return line.str();
}

}  // namespace

int run_data_synth(std::ostream & out, const DataOptions & options) {
  io::SynthOptions synth;
  synth.out = options.out;
  synth.documents = options.documents;
  synth.seed = options.seed;
  synth.image_size = options.image_size;
  const io::SynthReport report = io::write_synthetic_corpus(synth);
  out << "wrote " << options.out << ": " << report.caption << " image-caption, " << report.interleaved
      << " interleaved and " << report.text << " text-only documents, " << report.images
      << " images, corpus.txt for the tokenizer\n";
  return 0;
}

int run_data_prepare(std::ostream & out, const DataOptions & options) {
  io::PrepareOptions prepare;
  for (const std::string & stream : options.streams) prepare.streams.push_back(io::parse_stream_argument(stream));
  prepare.tokenizer = options.tokenizer;
  prepare.out = options.out;
  prepare.length = options.length;
  prepare.image_size = options.image_size;
  prepare.image_slots = options.image_slots;
  prepare.shard_sequences = options.shard_sequences;
  prepare.skip_bad = options.skip_bad;
  const bool show = options.progress;
  const io::PrepareReport report = io::prepare_dataset(prepare, [&](const io::PrepareProgress & progress) {
    if (show) std::cerr << progress_bar(progress) << std::flush;
  });
  if (show) std::cerr << "\n";
  out << "prepared " << options.out << ": " << report.documents << " documents into " << report.sequences
      << " sequences of " << options.length << " (" << report.tokens << " tokens, " << report.images << " images) in "
      << std::fixed << std::setprecision(2) << report.seconds << " s, " << std::setprecision(0)
      << report.documents / std::max(report.seconds, 1e-9) << " documents/s\n";
  if (report.skipped > 0) {
    out << "warning: skipped " << report.skipped << " bad documents (--skip-bad); the first:\n";
    for (const std::string & reason : report.skipped_reasons) out << "  " << reason << "\n";
  }
  return 0;
}

int run_tokenizer(std::ostream & out, const TokenizerOptions & options) {
  if (options.action == "train") {
    io::train_tokenizer(options.input, options.out, options.vocab);
    const io::Tokenizer trained(options.out + ".model");
    out << "wrote " << options.out << ".model: " << options.vocab << " SentencePiece pieces, " << trained.vocab_size()
        << " kosmos ids (<image> " << trained.image() << ", </image> " << trained.image_end() << ")\n";
    return 0;
  }
  const io::Tokenizer tokenizer(options.model);
  if (options.action == "encode") {
    const std::vector<int32_t> ids = tokenizer.encode(options.text);
    for (size_t i = 0; i < ids.size(); ++i) out << (i ? "," : "") << ids[i];
    out << "\n";
    return 0;
  }
  KOSMOS_CHECK(options.action == "decode", "kosmos tokenizer: unknown action '", options.action,
               "' (known: train, encode, decode)");
  std::vector<int32_t> ids;
  std::stringstream list(options.text);
  for (std::string item; std::getline(list, item, ',');) {
    char * end = nullptr;
    const long id = std::strtol(item.c_str(), &end, 10);
    KOSMOS_CHECK(end && *end == '\0' && !item.empty(), "kosmos tokenizer decode: '", item,
                 "' is not an id; give comma-separated integers");
    ids.push_back(static_cast<int32_t>(id));
  }
  out << tokenizer.decode(ids) << "\n";
  return 0;
}

}  // namespace kosmos
