// tokenizer.h: SentencePiece tokenization with KOSMOS's special tokens. Any SentencePiece .model loads (T5's 32k,
// a 64k one as the paper used, the small one shipped in data/tokenizer/). Ids, the fairseq / HF Kosmos-2 layout
// (kosmos-spec 8.4):
//   0 <s>   1 <pad>   2 </s>   3 <unk>
//   4 ...   the model's ordinary pieces in its own order (its control and unknown pieces are the four above)
//   then    <mask> </doc> <image> </image> </chunk> </line>
// so a 64000-piece model with three control pieces gives <image> = 64003 and 64007 ids in all, the paper's vocabulary.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace kosmos::io {

class Tokenizer {
 public:
  static constexpr int32_t kBos = 0, kPad = 1, kEos = 2, kUnk = 3, kFirstPiece = 4;
  // Loads a SentencePiece model; a missing or damaged file is an error naming it.
  explicit Tokenizer(const std::string & model_path);
  ~Tokenizer();
  Tokenizer(Tokenizer &&) noexcept;
  Tokenizer & operator=(Tokenizer &&) = delete;

  int64_t vocab_size() const { return first_tag_ + static_cast<int64_t>(kTags.size()); }
  int32_t mask() const { return first_tag_; }
  int32_t image() const { return first_tag_ + 2; }
  int32_t image_end() const { return first_tag_ + 3; }
  const std::string & path() const { return path_; }

  // The pieces of `text` (no <s> or </s>).
  std::vector<int32_t> encode(const std::string & text) const;
  // Text for ids: pieces decoded by SentencePiece, tags written as themselves ("<image>"), <s> </s> <pad> dropped.
  // An id outside the vocabulary is an error.
  std::string decode(const std::vector<int32_t> & ids) const;
  // The text of one id: a piece ("▁the") or a special token's name.
  std::string piece(int32_t id) const;

  static const std::vector<std::string> kTags;  // <mask> </doc> <image> </image> </chunk> </line>

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::vector<int32_t> ours_of_piece_;  // SentencePiece id -> ours
  std::vector<int32_t> piece_of_ours_;  // ours (from kFirstPiece) -> SentencePiece id
  int32_t first_tag_ = kFirstPiece;
};

// Trains a unigram SentencePiece model on a text file (one sentence per line) into `prefix`.model and .vocab, with
// `pieces` pieces in all (SentencePiece's own <unk> <s> </s> included), the SentencePiece trainer library quiet.
void train_tokenizer(const std::string & corpus, const std::string & prefix, int64_t pieces);

}  // namespace kosmos::io
