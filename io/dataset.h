// dataset.h: a prepared dataset, as `kosmos data prepare` writes it and the loader reads it. One folder:
//   manifest.json               sequence length, image size and slots, vocabulary and special ids, the streams with
//                               their mixing weights and shards (written last: a folder without it is incomplete)
//   <stream>-00000.h5, ...      HDF5 shards of packed sequences, each
//     /tokens  [N, L] i32        input ids (an image's slots hold <image> placeholders)
//     /targets [N, L] i32        the id each position predicts
//     /loss    [N, L] u8         1 where that prediction counts (kosmos-spec 8.3)
//     /image_first [N] i64       index in /images of the sequence's first image
//     /image_count [N] i32       its images
//     /images  [M, 3, S, S] f32  CLIP-preprocessed pixels
//   all chunked with Fletcher32 checksums, so a damaged shard is an error at load.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kosmos::io {

struct StreamShard {
  std::string file;        // relative to the dataset folder
  int64_t sequences = 0;
  int64_t images = 0;
};

struct StreamInfo {
  std::string name;        // "text", "caption", "interleaved" or any other
  double weight = 1.0;     // mixing weight (normalised over the streams)
  std::vector<StreamShard> shards;
  int64_t documents = 0, skipped = 0, sequences = 0, images = 0, tokens = 0;
};

struct DatasetManifest {
  int64_t length = 0;          // positions per sequence
  int64_t image_size = 0;      // pixels per side
  int64_t image_slots = 0;     // slots after each <image>
  int64_t vocab_size = 0;
  int64_t bos = 0, pad = 1, eos = 2, unk = 3, image = 0, image_end = 0;
  std::string tokenizer;       // the .model it was tokenised with
  std::vector<StreamInfo> streams;

  // Reads DIR/manifest.json; a missing or malformed one is an error naming it and the fix.
  static DatasetManifest read(const std::string & dir);
  // Writes DIR/manifest.json through a temporary file and a rename.
  void write(const std::string & dir) const;
};

struct StreamInput {
  std::string name;    // stream name
  std::string path;    // its JSONL file
  double weight = 1.0;
};
// "NAME=FILE" or "NAME=FILE:WEIGHT" as --stream gives it; a malformed one is an error showing the form.
StreamInput parse_stream_argument(const std::string & text);

struct PrepareOptions {
  std::vector<StreamInput> streams;
  std::string tokenizer;          // SentencePiece .model
  std::string out;                // the dataset folder (created)
  int64_t length = 256;           // positions per packed sequence
  int64_t image_size = 224;       // preprocessed image side
  int64_t image_slots = 64;       // slots after each <image> (the model's latents)
  int64_t shard_sequences = 4096; // sequences per shard file
  bool skip_bad = false;          // count and skip bad documents instead of stopping
};

struct PrepareProgress {
  int64_t documents = 0, bytes_done = 0, bytes_total = 0;
  double seconds = 0.0;
};

struct PrepareReport {
  int64_t documents = 0, skipped = 0, sequences = 0, images = 0, tokens = 0;
  double seconds = 0.0;
  std::vector<std::string> skipped_reasons;  // the first few, to show with the count
};

// Tokenises and packs every stream (RoBERTa's full-sentence packing: whole documents back to back, a new sequence
// when the next does not fit), preprocesses the images and writes the shards and the manifest. A malformed JSONL
// line, a missing or damaged image, or a document longer than a sequence is an error naming the file and line,
// or with skip_bad a counted and reported skip. `progress` is called about twice a second.
PrepareReport prepare_dataset(const PrepareOptions & options,
                              const std::function<void(const PrepareProgress &)> & progress);

}  // namespace kosmos::io
