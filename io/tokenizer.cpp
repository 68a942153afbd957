// tokenizer.cpp: the id layout of tokenizer.h over a SentencePiece processor, and training through its library.
#include "io/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>

#include "backends/error.h"

namespace kosmos::io {

const std::vector<std::string> Tokenizer::kTags = {"<mask>", "</doc>", "<image>", "</image>", "</chunk>", "</line>"};

Tokenizer::Tokenizer(const std::string & model_path)
    : path_(model_path), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  KOSMOS_CHECK(std::filesystem::is_regular_file(model_path), "tokenizer ", model_path,
               ": no such file; give a SentencePiece .model (data/tokenizer/kosmos-demo.model ships with kosmos)");
  const sentencepiece::util::Status status = processor_->Load(model_path);
  KOSMOS_CHECK(status.ok(), "tokenizer ", model_path, ": not a SentencePiece model (", status.ToString(), ")");
  const int pieces = processor_->GetPieceSize();
  ours_of_piece_.assign(static_cast<size_t>(pieces), kUnk);
  for (int id = 0; id < pieces; ++id) {
    if (processor_->IsControl(id) || processor_->IsUnknown(id)) {
      const std::string & name = processor_->IdToPiece(id);
      ours_of_piece_[static_cast<size_t>(id)] = name == "<s>" ? kBos : name == "</s>" ? kEos : name == "<pad>" ? kPad : kUnk;
      continue;
    }
    ours_of_piece_[static_cast<size_t>(id)] = kFirstPiece + static_cast<int32_t>(piece_of_ours_.size());
    piece_of_ours_.push_back(id);
  }
  first_tag_ = kFirstPiece + static_cast<int32_t>(piece_of_ours_.size());
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer &&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(const std::string & text) const {
  std::vector<int> pieces;
  const sentencepiece::util::Status status = processor_->Encode(text, &pieces);
  KOSMOS_CHECK(status.ok(), "tokenizer ", path_, ": cannot encode text starting '", text.substr(0, 40), "' (",
               status.ToString(), ")");
  std::vector<int32_t> ids;
  ids.reserve(pieces.size());
  for (int piece : pieces) ids.push_back(ours_of_piece_[static_cast<size_t>(piece)]);
  return ids;
}

std::string Tokenizer::piece(int32_t id) const {
  KOSMOS_CHECK(id >= 0 && id < vocab_size(), "tokenizer ", path_, ": id ", id, " is outside its vocabulary [0, ",
               vocab_size(), ")");
  static const char * const kSpecial[] = {"<s>", "<pad>", "</s>", "<unk>"};
  if (id < kFirstPiece) return kSpecial[id];
  if (id >= first_tag_) return kTags[static_cast<size_t>(id - first_tag_)];
  return processor_->IdToPiece(piece_of_ours_[static_cast<size_t>(id - kFirstPiece)]);
}

std::string Tokenizer::decode(const std::vector<int32_t> & ids) const {
  std::string text;
  std::vector<int> run;  // consecutive pieces, decoded together so that SentencePiece places the spaces
  const auto flush = [&] {
    if (run.empty()) return;
    std::string part;
    const sentencepiece::util::Status status = processor_->Decode(run, &part);
    KOSMOS_CHECK(status.ok(), "tokenizer ", path_, ": cannot decode (", status.ToString(), ")");
    text += part;
    run.clear();
  };
  for (int32_t id : ids) {
    piece(id);  // range check
    if (id >= kFirstPiece && id < first_tag_) {
      run.push_back(piece_of_ours_[static_cast<size_t>(id - kFirstPiece)]);
      continue;
    }
    flush();
    if (id == kUnk || id >= first_tag_) text += piece(id);
  }
  flush();
  return text;
}

void train_tokenizer(const std::string & corpus, const std::string & prefix, int64_t pieces) {
  KOSMOS_CHECK(std::filesystem::is_regular_file(corpus), "tokenizer train: corpus ", corpus,
               ": no such file; give a text file, one sentence per line");
  KOSMOS_CHECK(pieces >= 8, "tokenizer train: --vocab ", pieces, " is too small; use at least 8 pieces");
  KOSMOS_CHECK(std::filesystem::file_size(corpus) > 0, "tokenizer train: corpus ", corpus,
               " is empty; give a text file, one sentence per line");
  const std::string arguments = "--input=" + corpus + " --model_prefix=" + prefix + " --vocab_size=" +
                                std::to_string(pieces) +
                                " --model_type=unigram --character_coverage=1.0 --minloglevel=2"
                                " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1"
                                " --num_threads=1";  // one thread: the same corpus gives the same bytes
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(arguments);
  // SentencePiece says "Vocabulary size too high" where the corpus holds fewer pieces than asked for; any other
  // failure (its files are written last: a folder that cannot take them) has its own message.
  const bool too_many_pieces = status.ToString().find("Vocabulary size too high") != std::string::npos;
  KOSMOS_CHECK(status.ok(), "tokenizer train on ", corpus, " with --vocab ", pieces, " failed: ", status.ToString(),
               too_many_pieces ? "; a small corpus supports only a small vocabulary (lower --vocab)"
                               : "; check the corpus, and that --out's folder is writable");
}

}  // namespace kosmos::io
