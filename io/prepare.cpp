// prepare.cpp: `kosmos data prepare`: JSONL documents to packed, tokenised sequences and preprocessed images in
// HDF5 shards, and the manifest (dataset.h). Also the manifest's own reading and writing.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "backends/error.h"
#include "io/dataset.h"
#include "io/document.h"
#include "io/hdf5.h"
#include "io/image.h"
#include "io/tokenizer.h"

namespace kosmos::io {
namespace {

namespace fs = std::filesystem;
using hdf5::Handle;

// One tokenised document: its ids, whether each id's prediction counts, and its images' pixels.
struct Document {
  std::vector<int32_t> ids;
  std::vector<uint8_t> counted;
  std::vector<float> pixels;  // [images, 3, S, S]
  int64_t images = 0;
};

// A line's segments as a document (kosmos-spec 8.3): <s> text... <image> slots </image> ... </s>, the loss on the
// text and </s> only. Errors name `where` (file:line).
Document document_of(const std::string & line, const std::string & where, const fs::path & folder,
                     const Tokenizer & tokenizer, const PrepareOptions & options) {
  Document document;
  const auto add = [&](int32_t id, bool counted) {
    document.ids.push_back(id);
    document.counted.push_back(counted ? 1 : 0);
  };
  add(Tokenizer::kBos, false);
  for (const DocumentSegment & segment : parse_document_line(line, where)) {
    if (segment.kind == DocumentSegment::Kind::kText) {
      for (int32_t id : tokenizer.encode(segment.value)) add(id, true);
      continue;
    }
    RgbImage picture;
    try {
      picture = read_image((folder / segment.value).string());
    } catch (const Error & error) {
      KOSMOS_FAIL(where, ": ", error.what());
    }
    const std::vector<float> pixels = clip_preprocess(picture, options.image_size);
    document.pixels.insert(document.pixels.end(), pixels.begin(), pixels.end());
    ++document.images;
    add(tokenizer.image(), false);  // predicting <image>, its slots and </image>: no loss
    for (int64_t s = 0; s < options.image_slots; ++s) add(tokenizer.image(), false);
    add(tokenizer.image_end(), false);
  }
  add(Tokenizer::kEos, true);
  return document;
}

// Writes one stream's shards: sequences gathered in memory, images appended to an extendible dataset as they come.
class ShardWriter {
 public:
  ShardWriter(const PrepareOptions & options, StreamInfo & stream) : options_(options), stream_(stream) {}
  ~ShardWriter() = default;

  // Packs a document: into the open sequence when it fits, else into a new one.
  void add(const Document & document) {
    const int64_t length = options_.length, size = static_cast<int64_t>(document.ids.size());
    if (fill_ == 0 || fill_ + size > length) begin_sequence();
    const int64_t row = (sequences_ - 1) * length;
    for (int64_t i = 0; i < size; ++i) {
      tokens_[static_cast<size_t>(row + fill_ + i)] = document.ids[static_cast<size_t>(i)];
      // Position p predicts the id at p + 1: within the document, and the next document's <s> (no loss) after it.
      if (i + 1 < size) {
        targets_[static_cast<size_t>(row + fill_ + i)] = document.ids[static_cast<size_t>(i + 1)];
        loss_[static_cast<size_t>(row + fill_ + i)] = document.counted[static_cast<size_t>(i + 1)];
      }
    }
    if (fill_ > 0) targets_[static_cast<size_t>(row + fill_ - 1)] = Tokenizer::kBos;
    fill_ += size;
    image_count_.back() += static_cast<int32_t>(document.images);
    if (document.images > 0) append_images(document);
    stream_.tokens += size;
  }

  void finish() {
    if (sequences_ > 0) close_shard();
  }

 private:
  void begin_sequence() {
    if (sequences_ == options_.shard_sequences) close_shard();
    if (!file_) open_shard();
    const size_t cells = static_cast<size_t>(options_.length);
    tokens_.resize(tokens_.size() + cells, static_cast<int32_t>(Tokenizer::kPad));
    targets_.resize(targets_.size() + cells, static_cast<int32_t>(Tokenizer::kPad));
    loss_.resize(loss_.size() + cells, 0);
    image_first_.push_back(shard_images_);
    image_count_.push_back(0);
    ++sequences_;
    fill_ = 0;
  }

  void open_shard() {
    char name[64];
    std::snprintf(name, sizeof name, "%s-%05zu.h5", stream_.name.c_str(), stream_.shards.size());
    file_name_ = name;
    path_ = (fs::path(options_.out) / name).string();
    file_ = std::make_unique<Handle>(H5Fcreate(path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    KOSMOS_H5_CHECK(file_->valid() ? 0 : -1, "data prepare: cannot create shard ", path_,
                    "; check that --out is writable and has space");
    const hsize_t size = static_cast<hsize_t>(options_.image_size);
    const hsize_t dims[4] = {0, 3, size, size}, limit[4] = {H5S_UNLIMITED, 3, size, size}, chunk[4] = {1, 3, size, size};
    Handle space(H5Screate_simple(4, dims, limit), H5Sclose);
    Handle creation(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    KOSMOS_H5_CHECK(H5Pset_chunk(creation, 4, chunk), path_, ": chunking /images");
    KOSMOS_H5_CHECK(H5Pset_fletcher32(creation), path_, ": checksums on /images");
    images_ = std::make_unique<Handle>(
        H5Dcreate2(*file_, "/images", H5T_IEEE_F32LE, space, H5P_DEFAULT, creation, H5P_DEFAULT), H5Dclose);
    KOSMOS_H5_CHECK(images_->valid() ? 0 : -1, path_, ": creating /images");
  }

  void append_images(const Document & document) {
    const hsize_t size = static_cast<hsize_t>(options_.image_size);
    const hsize_t start[4] = {static_cast<hsize_t>(shard_images_), 0, 0, 0};
    const hsize_t count[4] = {static_cast<hsize_t>(document.images), 3, size, size};
    const hsize_t extent[4] = {start[0] + count[0], 3, size, size};
    KOSMOS_H5_CHECK(H5Dset_extent(*images_, extent), path_, ": growing /images");
    Handle file_space(H5Dget_space(*images_), H5Sclose);
    KOSMOS_H5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr), path_,
                    ": selecting new images");
    Handle memory_space(H5Screate_simple(4, count, nullptr), H5Sclose);
    KOSMOS_H5_CHECK(H5Dwrite(*images_, H5T_NATIVE_FLOAT, memory_space, file_space, H5P_DEFAULT, document.pixels.data()),
                    path_, ": writing images");
    shard_images_ += document.images;
    stream_.images += document.images;
  }

  template <typename Value>
  void write_table(const char * name, hid_t file_type, hid_t memory_type, const std::vector<Value> & values,
                   int rank) {
    const hsize_t dims[2] = {static_cast<hsize_t>(sequences_), static_cast<hsize_t>(options_.length)};
    const hsize_t chunk[2] = {std::min<hsize_t>(dims[0], 64), dims[1]};
    Handle space(H5Screate_simple(rank, dims, nullptr), H5Sclose);
    Handle creation(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    KOSMOS_H5_CHECK(H5Pset_chunk(creation, rank, chunk), path_, ": chunking ", name);
    KOSMOS_H5_CHECK(H5Pset_fletcher32(creation), path_, ": checksums on ", name);
    Handle data(H5Dcreate2(*file_, name, file_type, space, H5P_DEFAULT, creation, H5P_DEFAULT), H5Dclose);
    KOSMOS_H5_CHECK(data.valid() ? 0 : -1, path_, ": creating ", name);
    KOSMOS_H5_CHECK(H5Dwrite(data, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), path_, ": writing ",
                    name);
  }

  void close_shard() {
    write_table("/tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, tokens_, 2);
    write_table("/targets", H5T_STD_I32LE, H5T_NATIVE_INT32, targets_, 2);
    write_table("/loss", H5T_STD_U8LE, H5T_NATIVE_UINT8, loss_, 2);
    write_table("/image_first", H5T_STD_I64LE, H5T_NATIVE_INT64, image_first_, 1);
    write_table("/image_count", H5T_STD_I32LE, H5T_NATIVE_INT32, image_count_, 1);
    hdf5::write_string_attribute(*file_, "stream", stream_.name, path_);
    hdf5::write_int_attribute(*file_, "length", options_.length, path_);
    images_.reset();
    KOSMOS_H5_CHECK(H5Fflush(*file_, H5F_SCOPE_GLOBAL), path_, ": flushing");
    file_.reset();
    stream_.shards.push_back({file_name_, sequences_, shard_images_});
    stream_.sequences += sequences_;
    tokens_.clear(), targets_.clear(), loss_.clear(), image_first_.clear(), image_count_.clear();
    sequences_ = 0, shard_images_ = 0, fill_ = 0;
  }

  const PrepareOptions & options_;
  StreamInfo & stream_;
  std::unique_ptr<Handle> file_, images_;
  std::string file_name_, path_;
  std::vector<int32_t> tokens_, targets_;  // [sequences, L]
  std::vector<uint8_t> loss_;              // [sequences, L]
  std::vector<int64_t> image_first_;       // [sequences]
  std::vector<int32_t> image_count_;       // [sequences]
  int64_t sequences_ = 0, shard_images_ = 0, fill_ = 0;
};

}  // namespace

StreamInput parse_stream_argument(const std::string & text) {
  const size_t equals = text.find('=');
  KOSMOS_CHECK(equals != std::string::npos && equals > 0 && equals + 1 < text.size(), "--stream '", text,
               "': write NAME=FILE.jsonl or NAME=FILE.jsonl:WEIGHT, e.g. caption=data/caption.jsonl:2");
  StreamInput input{text.substr(0, equals), text.substr(equals + 1), 1.0};
  const size_t colon = input.path.rfind(':');
  if (colon != std::string::npos) {
    const std::string weight = input.path.substr(colon + 1);
    char * end = nullptr;
    input.weight = std::strtod(weight.c_str(), &end);
    KOSMOS_CHECK(end && *end == '\0' && !weight.empty() && input.weight > 0 && std::isfinite(input.weight),
                 "--stream '", text, "': weight '", weight, "' is not a positive finite number");
    input.path = input.path.substr(0, colon);
  }
  for (char c : input.name)
    KOSMOS_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-', "--stream '", text,
                 "': the name may hold letters, digits, '_' and '-' only");
  return input;
}

DatasetManifest DatasetManifest::read(const std::string & dir) {
  const fs::path path = fs::path(dir) / "manifest.json";
  std::ifstream in(path);
  KOSMOS_CHECK(in, "dataset ", dir, ": no manifest.json; prepare it with `kosmos data prepare --out ", dir,
               "` (an interrupted prepare leaves no manifest)");
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, false);
  KOSMOS_CHECK(!json.is_discarded(), path.string(), ": not valid JSON; prepare the dataset again");
  DatasetManifest manifest;
  try {
    manifest.length = json.at("length");
    manifest.image_size = json.at("image_size");
    manifest.image_slots = json.at("image_slots");
    manifest.vocab_size = json.at("vocab_size");
    const nlohmann::json & ids = json.at("special_ids");
    manifest.bos = ids.at("<s>"), manifest.pad = ids.at("<pad>"), manifest.eos = ids.at("</s>");
    manifest.unk = ids.at("<unk>"), manifest.image = ids.at("<image>"), manifest.image_end = ids.at("</image>");
    manifest.tokenizer = json.at("tokenizer");
    for (const nlohmann::json & s : json.at("streams")) {
      StreamInfo stream;
      stream.name = s.at("name"), stream.weight = s.at("weight"), stream.documents = s.at("documents");
      stream.skipped = s.at("skipped"), stream.sequences = s.at("sequences"), stream.images = s.at("images");
      stream.tokens = s.at("tokens");
      for (const nlohmann::json & shard : s.at("shards"))
        stream.shards.push_back({shard.at("file"), shard.at("sequences"), shard.at("images")});
      manifest.streams.push_back(stream);
    }
  } catch (const nlohmann::json::exception & error) {
    KOSMOS_FAIL(path.string(), ": ", error.what(), "; prepare the dataset again");
  }
  return manifest;
}

void DatasetManifest::write(const std::string & dir) const {
  nlohmann::json streams_json = nlohmann::json::array();
  for (const StreamInfo & s : streams) {
    nlohmann::json shards_json = nlohmann::json::array();
    for (const StreamShard & shard : s.shards)
      shards_json.push_back({{"file", shard.file}, {"sequences", shard.sequences}, {"images", shard.images}});
    streams_json.push_back({{"name", s.name}, {"weight", s.weight}, {"documents", s.documents},
                            {"skipped", s.skipped}, {"sequences", s.sequences}, {"images", s.images},
                            {"tokens", s.tokens}, {"shards", shards_json}});
  }
  const nlohmann::json json = {
      {"length", length},
      {"image_size", image_size},
      {"image_slots", image_slots},
      {"vocab_size", vocab_size},
      {"special_ids",
       {{"<s>", bos}, {"<pad>", pad}, {"</s>", eos}, {"<unk>", unk}, {"<image>", image}, {"</image>", image_end}}},
      {"tokenizer", tokenizer},
      {"streams", streams_json}};
  const fs::path path = fs::path(dir) / "manifest.json", partial = fs::path(dir) / "manifest.json.partial";
  {
    std::ofstream out(partial, std::ios::trunc);
    out << json.dump(2) << "\n";
    out.flush();
    KOSMOS_CHECK(out, "cannot write ", partial.string(), "; check the folder's permissions and space");
  }
  std::error_code error;
  fs::rename(partial, path, error);
  KOSMOS_CHECK(!error, "cannot rename ", partial.string(), " to ", path.string(), " (", error.message(), ")");
}

PrepareReport prepare_dataset(const PrepareOptions & options,
                              const std::function<void(const PrepareProgress &)> & progress) {
  KOSMOS_CHECK(!options.streams.empty(), "data prepare: no --stream given; add e.g. --stream caption=caption.jsonl");
  // Each stream's shards are NAME-00000.h5, ...: a name given twice would have the second stream overwrite the first.
  std::set<std::string> names;
  for (const StreamInput & input : options.streams)
    KOSMOS_CHECK(names.insert(input.name).second, "data prepare: two --stream arguments are named '", input.name,
                 "'; give each stream a name of its own (NAME=FILE.jsonl)");
  KOSMOS_CHECK(options.length >= 8 && options.image_size >= 1 && options.image_slots >= 1 &&
                   options.shard_sequences >= 1,
               "data prepare: --length ", options.length, ", --image-size ", options.image_size, ", --image-slots ",
               options.image_slots, " and --shard-sequences ", options.shard_sequences,
               " must be positive (length at least 8)");
  const Tokenizer tokenizer(options.tokenizer);
  const std::lock_guard<std::mutex> hold(hdf5::library_lock());
  hdf5::silence();
  std::error_code error;
  fs::create_directories(options.out, error);
  KOSMOS_CHECK(!error, "data prepare: cannot create --out ", options.out, " (", error.message(), ")");
  fs::remove(fs::path(options.out) / "manifest.json", error);  // the folder is incomplete until the end

  DatasetManifest manifest;
  manifest.length = options.length;
  manifest.image_size = options.image_size;
  manifest.image_slots = options.image_slots;
  manifest.vocab_size = tokenizer.vocab_size();
  manifest.image = tokenizer.image();
  manifest.image_end = tokenizer.image_end();
  manifest.tokenizer = fs::absolute(options.tokenizer).string();
  PrepareProgress state;
  for (const StreamInput & input : options.streams) {
    KOSMOS_CHECK(fs::is_regular_file(input.path), "data prepare: stream ", input.name, ": ", input.path,
                 " is not a file; check the path");
    state.bytes_total += static_cast<int64_t>(fs::file_size(input.path));
  }
  PrepareReport report;
  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  for (const StreamInput & input : options.streams) {
    StreamInfo stream;
    stream.name = input.name;
    stream.weight = input.weight;
    ShardWriter writer(options, stream);
    std::ifstream in(input.path);
    const fs::path folder = fs::path(input.path).parent_path();
    std::string line;
    for (int64_t number = 1; std::getline(in, line); ++number) {
      state.bytes_done += static_cast<int64_t>(line.size()) + 1;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines are not documents
      const std::string where = input.path + ":" + std::to_string(number);
      try {
        const Document document = document_of(line, where, folder, tokenizer, options);
        KOSMOS_CHECK(static_cast<int64_t>(document.ids.size()) <= options.length, where, ": the document has ",
                     document.ids.size(), " tokens, more than a sequence of --length ", options.length,
                     "; raise --length, split the document, or pass --skip-bad");
        writer.add(document);
        ++stream.documents;
      } catch (const Error & failure) {
        if (!options.skip_bad) throw;
        ++stream.skipped;
        if (report.skipped_reasons.size() < 5) report.skipped_reasons.push_back(failure.what());
      }
      ++state.documents;
      const auto now = std::chrono::steady_clock::now();
      if (progress && now - last_report > std::chrono::milliseconds(500)) {
        state.seconds = std::chrono::duration<double>(now - start).count();
        progress(state);
        last_report = now;
      }
    }
    writer.finish();
    report.documents += stream.documents;
    report.skipped += stream.skipped;
    report.sequences += stream.sequences;
    report.images += stream.images;
    report.tokens += stream.tokens;
    manifest.streams.push_back(stream);
  }
  manifest.write(options.out);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  state.seconds = report.seconds;
  state.bytes_done = state.bytes_total;
  if (progress) progress(state);
  return report;
}

}  // namespace kosmos::io
