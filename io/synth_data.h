// synth_data.h: `kosmos data synth`: a deterministic synthetic multimodal corpus in the input format of
// `kosmos data prepare`, so the default training run needs no download. Pictures of one coloured shape (square,
// circle, triangle; 8 colours) at one of 9 places on a plain background, with three streams as in the paper:
//   caption.jsonl      [{"image": ...}, {"text": "a red circle at the top left."}]
//   interleaved.jsonl  text, two images with their descriptions, and a question with its answer
//   text.jsonl         text-only documents of sentences about colours, shapes and places
// plus images/*.png and corpus.txt (every text, one per line, for `kosmos tokenizer train`).
#pragma once

#include <cstdint>
#include <string>

namespace kosmos::io {

struct SynthOptions {
  std::string out;          // the folder to write (created)
  int64_t documents = 1000; // in all: half captions, a quarter interleaved, a quarter text-only
  uint64_t seed = 1;
  int64_t image_size = 64;  // pixels per side of the PNGs
};

struct SynthReport {
  int64_t caption = 0, interleaved = 0, text = 0, images = 0;
};

// Writes the corpus; the same options give the same bytes.
SynthReport write_synthetic_corpus(const SynthOptions & options);

}  // namespace kosmos::io
