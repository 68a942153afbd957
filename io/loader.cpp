// loader.cpp: stream mixing, per-epoch shuffles, dp shares, shard reads and the prefetch thread (loader.h).
#include "io/loader.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>

#include "backends/error.h"
#include "backends/philox.h"
#include "io/hdf5.h"

namespace kosmos::io {

namespace {

constexpr uint64_t kMixKey = 0x6d69786d69786d69ull, kShuffleKey = 0x73687566666c6521ull;

}  // namespace

// The shard files (opened on first use) and each stream's current epoch order.
class DataLoader::Shards {
 public:
  Shards(const std::string & dir, const DatasetManifest & manifest, uint64_t seed)
      : dir_(dir), manifest_(manifest), seed_(seed), orders_(manifest.streams.size()),
        order_epoch_(manifest.streams.size(), -1), files_(manifest.streams.size()) {
    for (const StreamInfo & stream : manifest.streams) {
      std::vector<int64_t> ends;
      int64_t total = 0;
      for (const StreamShard & shard : stream.shards) ends.push_back(total += shard.sequences);
      shard_ends_.push_back(ends);
    }
  }

  // The sequence (shard, row) that stream `s` serves as its `taken`-th sample: a Fisher-Yates shuffle per epoch.
  std::pair<size_t, int64_t> locate(size_t s, int64_t taken) {
    const int64_t size = manifest_.streams[s].sequences, epoch = taken / size;
    if (order_epoch_[s] != epoch) {
      std::vector<int64_t> & order = orders_[s];
      order.resize(static_cast<size_t>(size));
      std::iota(order.begin(), order.end(), 0);
      const uint64_t key = seed_ ^ kShuffleKey ^ (static_cast<uint64_t>(s) << 48) ^ static_cast<uint64_t>(epoch);
      for (int64_t i = size - 1; i > 0; --i) {
        const uint64_t draw = (static_cast<uint64_t>(philox_bits(key, static_cast<uint64_t>(2 * i))) << 32) |
                              philox_bits(key, static_cast<uint64_t>(2 * i + 1));
        std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(draw % static_cast<uint64_t>(i + 1))]);
      }
      order_epoch_[s] = epoch;
    }
    const int64_t sequence = orders_[s][static_cast<size_t>(taken % size)];
    const std::vector<int64_t> & ends = shard_ends_[s];
    const size_t shard = static_cast<size_t>(std::upper_bound(ends.begin(), ends.end(), sequence) - ends.begin());
    return {shard, sequence - (shard == 0 ? 0 : ends[shard - 1])};
  }

  // The images of sequence `row` of shard (s, shard): the index of its first in /images, and their count.
  std::pair<int64_t, int32_t> images_of(size_t s, size_t shard, int64_t row) {
    const File & file = open(s, shard);
    return {file.image_first[static_cast<size_t>(row)], file.image_count[static_cast<size_t>(row)]};
  }

  // Rows [row, row + count) of a table of shard (s, shard) into `out` (L values per row, or one for 1-d tables).
  template <typename Value>
  void read_row(size_t s, size_t shard, const char * table, hid_t type, int64_t row, int64_t count, Value * out) {
    File & file = open(s, shard);
    hdf5::Handle data(H5Dopen2(file.handle, table, H5P_DEFAULT), H5Dclose);
    KOSMOS_H5_CHECK(data.valid() ? 0 : -1, "data shard ", file.path, ": no ", table,
                    "; the shard is damaged or not from `kosmos data prepare`: prepare the dataset again");
    hdf5::Handle space(H5Dget_space(data), H5Sclose);
    const int rank = H5Sget_simple_extent_ndims(space);
    hsize_t start[4] = {static_cast<hsize_t>(row), 0, 0, 0}, counts[4] = {1, 1, 1, 1};
    hsize_t dims[4] = {0, 0, 0, 0};
    H5Sget_simple_extent_dims(space, dims, nullptr);
    counts[0] = static_cast<hsize_t>(count);
    for (int d = 1; d < rank; ++d) counts[d] = dims[d];
    KOSMOS_CHECK(rank >= 1 && rank <= 4 && start[0] + counts[0] <= dims[0], "data shard ", file.path, ": ", table,
                 " has ", dims[0], " rows, row ", row, " (+", count, ") asked; the manifest does not match the "
                 "shard: prepare the dataset again");
    KOSMOS_H5_CHECK(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, counts, nullptr), file.path,
                    ": selecting row ", row, " of ", table);
    hdf5::Handle memory(H5Screate_simple(rank, counts, nullptr), H5Sclose);
    KOSMOS_H5_CHECK(H5Dread(data, type, memory, space, H5P_DEFAULT, out), "data shard ", file.path, ": reading ", table,
                    " row ", row, " failed; the shard is damaged (a checksum mismatch means flipped bits): prepare "
                    "the dataset again");
  }

 private:
  struct File {
    std::string path;
    hdf5::Handle handle{-1, H5Fclose};
    std::vector<int64_t> image_first;  // [sequences], read whole at open: every rank places every sample per step
    std::vector<int32_t> image_count;  // [sequences]
  };
  File & open(size_t s, size_t shard) {
    std::vector<std::unique_ptr<File>> & stream_files = files_[s];
    if (stream_files.size() <= shard) stream_files.resize(manifest_.streams[s].shards.size());
    std::unique_ptr<File> & file = stream_files[shard];
    if (!file) {
      auto opened = std::make_unique<File>();
      opened->path = (std::filesystem::path(dir_) / manifest_.streams[s].shards[shard].file).string();
      KOSMOS_CHECK(std::filesystem::is_regular_file(opened->path), "data shard ", opened->path,
                   " is missing; the dataset folder is incomplete: prepare it again");
      hdf5::silence();
      hdf5::Handle handle(H5Fopen(opened->path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
      KOSMOS_H5_CHECK(handle.valid() ? 0 : -1, "data shard ", opened->path,
                      ": cannot open it as HDF5; it is truncated or damaged: prepare the dataset again");
      opened->handle = std::move(handle);
      file = std::move(opened);
      const int64_t sequences = manifest_.streams[s].shards[shard].sequences;
      file->image_first.resize(static_cast<size_t>(sequences));
      file->image_count.resize(static_cast<size_t>(sequences));
      read_row(s, shard, "/image_first", H5T_NATIVE_INT64, 0, sequences, file->image_first.data());
      read_row(s, shard, "/image_count", H5T_NATIVE_INT32, 0, sequences, file->image_count.data());
    }
    return *file;
  }

  std::string dir_;
  const DatasetManifest & manifest_;
  uint64_t seed_;
  std::vector<std::vector<int64_t>> shard_ends_;  // per stream: cumulative sequences per shard
  std::vector<std::vector<int64_t>> orders_;      // per stream: the current epoch's order
  std::vector<int64_t> order_epoch_;
  std::vector<std::vector<std::unique_ptr<File>>> files_;
};

model::KosmosConfig DataLoader::adapt_config(const model::KosmosConfig & base, const DatasetManifest & manifest) {
  model::KosmosConfig config = base;
  // Rounded up to a multiple of 64 as Megatron pads it, so that any tensor-parallel degree up to 64 divides the
  // vocabulary; the extra ids never occur in the data.
  config.decoder.vocab_size = (manifest.vocab_size + 63) / 64 * 64;
  config.tokens.bos = manifest.bos, config.tokens.pad = manifest.pad, config.tokens.eos = manifest.eos;
  config.tokens.unk = manifest.unk, config.tokens.image = manifest.image, config.tokens.image_end = manifest.image_end;
  return config;
}

DataLoader::DataLoader(const std::string & dir, const model::KosmosConfig & config, uint64_t seed)
    : dir_(dir), config_(config), seed_(seed), manifest_(DatasetManifest::read(dir)) {
  const model::VisionConfig & v = config.vision;
  KOSMOS_CHECK(manifest_.image_size == v.image_size, "dataset ", dir, " holds images of ", manifest_.image_size,
               " pixels but the model's vision tower takes ", v.image_size, "; prepare it with --image-size ",
               v.image_size);
  KOSMOS_CHECK(manifest_.image_slots == config.image_slots(), "dataset ", dir, " leaves ", manifest_.image_slots,
               " slots per image but the model's connector gives ", config.image_slots(),
               " latents; prepare it with --image-slots ", config.image_slots());
  KOSMOS_CHECK(manifest_.vocab_size <= config.decoder.vocab_size && manifest_.image == config.tokens.image &&
                   manifest_.image_end == config.tokens.image_end && manifest_.pad == config.tokens.pad,
               "dataset ", dir, " was tokenised with a vocabulary of ", manifest_.vocab_size, " (<image> ",
               manifest_.image, ") but the model has ", config.decoder.vocab_size, " (<image> ", config.tokens.image,
               "); use DataLoader::adapt_config (kosmos train does) or the tokenizer the model was built for");
  double total = 0.0;
  for (const StreamInfo & stream : manifest_.streams) {
    KOSMOS_CHECK(stream.sequences > 0, "dataset ", dir, ": stream ", stream.name,
                 " has no sequences (every document was skipped or the file was empty); remove it or fix its input");
    total += stream.weight;
  }
  KOSMOS_CHECK(!manifest_.streams.empty() && total > 0, "dataset ", dir, " has no streams; prepare it again");
  double running = 0.0;
  for (const StreamInfo & stream : manifest_.streams) cumulative_weight_.push_back((running += stream.weight) / total);
  cumulative_weight_.back() = 1.0;
  position_.taken.assign(manifest_.streams.size(), 0);
  shards_ = std::make_unique<Shards>(dir, manifest_, seed);
}

DataLoader::~DataLoader() {
  wait();
  const std::lock_guard<std::mutex> hold(hdf5::library_lock());  // closing the shards is HDF5 work too
  shards_.reset();
}

void DataLoader::wait() {
  if (prefetch_.valid()) prefetch_.wait();
}

std::string DataLoader::position_json() const {
  nlohmann::json taken = nlohmann::json::object();
  for (size_t s = 0; s < manifest_.streams.size(); ++s) taken[manifest_.streams[s].name] = position_.taken[s];
  return nlohmann::json{{"dataset", {{"next_sample", position_.next_sample}, {"next_image", position_.next_image},
                                     {"taken", taken}}}}
      .dump();
}

void DataLoader::restore(const std::string & position_json) {
  wait();
  prefetch_ = {};
  const nlohmann::json json = nlohmann::json::parse(position_json, nullptr, false);
  KOSMOS_CHECK(!json.is_discarded() && json.contains("dataset"), "the checkpoint's data position ",
               position_json.substr(0, 120), " is not a dataset's; it was written by a run on another data source "
               "(the built-in synthetic set?): resume with the same data");
  const nlohmann::json & data = json.at("dataset");
  LoaderPosition position;
  position.next_sample = data.at("next_sample");
  position.next_image = data.at("next_image");
  for (const StreamInfo & stream : manifest_.streams) {
    KOSMOS_CHECK(data.at("taken").contains(stream.name), "the checkpoint's data position has no stream '", stream.name,
                 "' (it has ", data.at("taken").dump(), "); resume with the dataset it was trained on");
    position.taken.push_back(data.at("taken").at(stream.name).get<int64_t>());
  }
  position_ = position;
}

DataLoader::Step DataLoader::assemble(const Request & request, const LoaderPosition & start) {
  KOSMOS_CHECK(request.global_batch % (request.dp_size * request.micro_batches) == 0, "data: a global batch of ",
               request.global_batch, " does not split into ", request.dp_size, " dp ranks x ", request.micro_batches,
               " micro-batches");
  const std::lock_guard<std::mutex> hold(hdf5::library_lock());  // this may run on the read-ahead thread
  Step step{request, start, start, {}};
  // Every rank places every sample of the step (stream, sequence, images), so positions and image indices agree.
  struct Place {
    size_t stream, shard;
    int64_t row, first_image, images;
  };
  std::vector<Place> places;
  for (int64_t k = 0; k < request.global_batch; ++k) {
    const double u = philox_uniform(seed_ ^ kMixKey, static_cast<uint64_t>(start.next_sample + k));
    size_t s = 0;
    while (s + 1 < cumulative_weight_.size() && u >= cumulative_weight_[s]) ++s;
    const auto [shard, row] = shards_->locate(s, step.next.taken[s]++);
    const auto [first_image, images] = shards_->images_of(s, shard, row);
    places.push_back({s, shard, row, first_image, images});
  }
  const int64_t share = request.global_batch / request.dp_size, micro = share / request.micro_batches;
  const int64_t length = manifest_.length, pixels = 3 * manifest_.image_size * manifest_.image_size;
  int64_t image_index = start.next_image;
  for (int64_t k = 0; k < request.dp_rank * share; ++k) image_index += places[static_cast<size_t>(k)].images;
  for (int64_t m = 0; m < request.micro_batches; ++m) {
    model::Batch batch;
    batch.batch = micro, batch.length = length;
    batch.first_sample = start.next_sample + request.dp_rank * share + m * micro;
    batch.first_image = image_index;
    batch.tokens.resize(static_cast<size_t>(micro * length));
    batch.targets.resize(batch.tokens.size());
    batch.loss_weights.resize(batch.tokens.size());
    std::vector<uint8_t> loss(static_cast<size_t>(length));
    for (int64_t b = 0; b < micro; ++b) {
      const Place & place = places[static_cast<size_t>(batch.first_sample - start.next_sample + b)];
      const size_t row = static_cast<size_t>(b * length);
      shards_->read_row(place.stream, place.shard, "/tokens", H5T_NATIVE_INT32, place.row, 1, &batch.tokens[row]);
      shards_->read_row(place.stream, place.shard, "/targets", H5T_NATIVE_INT32, place.row, 1, &batch.targets[row]);
      shards_->read_row(place.stream, place.shard, "/loss", H5T_NATIVE_UINT8, place.row, 1, loss.data());
      for (int64_t t = 0; t < length; ++t) {
        const size_t i = row + static_cast<size_t>(t);
        batch.loss_weights[i] = loss[static_cast<size_t>(t)];
        // Every backend indexes tables with these ids; a GPU does not check them, so a damaged shard stops here.
        const auto in_vocabulary = [&](int32_t id) { return id >= 0 && id < manifest_.vocab_size; };
        KOSMOS_CHECK(in_vocabulary(batch.tokens[i]) && in_vocabulary(batch.targets[i]), "dataset ", dir_, ": shard ",
                     manifest_.streams[place.stream].shards[place.shard].file, " row ", place.row, " position ", t,
                     " holds token ", batch.tokens[i], " and target ", batch.targets[i],
                     ", not both in the vocabulary [0, ", manifest_.vocab_size,
                     ") it was prepared with; the shard is damaged: prepare the dataset again");
      }
      if (place.images > 0) {
        const size_t offset = batch.images.size();
        batch.images.resize(offset + static_cast<size_t>(place.images * pixels));
        shards_->read_row(place.stream, place.shard, "/images", H5T_NATIVE_FLOAT, place.first_image, place.images,
                          &batch.images[offset]);
        batch.image_count += place.images;
      }
    }
    image_index += batch.image_count;
    batch.image_slots = model::find_image_slots(batch.tokens, batch.batch, batch.length, config_);
    KOSMOS_CHECK(static_cast<int64_t>(batch.image_slots.size()) == batch.image_count, "dataset ", dir_, ": samples ",
                 batch.first_sample, "..", batch.first_sample + micro - 1, " hold ", batch.image_slots.size(),
                 " <image> tokens but ", batch.image_count, " images; the shards are inconsistent: prepare again");
    step.micro.push_back(std::move(batch));
  }
  for (const Place & place : places) step.next.next_image += place.images;
  step.next.next_sample += request.global_batch;
  return step;
}

void DataLoader::launch_prefetch(const Request & request) {
  const LoaderPosition start = position_;
  prefetch_ = std::async(std::launch::async, [this, request, start] { return assemble(request, start); });
}

std::vector<model::Batch> DataLoader::next_step(int64_t global_batch, int dp_rank, int dp_size, int64_t micro_batches) {
  const Request request{global_batch, micro_batches, dp_rank, dp_size};
  Step step;
  bool ready = false;
  if (prefetch_.valid()) {
    Step ahead = prefetch_.get();  // a read error of the prefetch thread surfaces here
    if (ahead.request == request && ahead.start.next_sample == position_.next_sample) {
      step = std::move(ahead);
      ready = true;
    }
  }
  if (!ready) step = assemble(request, position_);
  position_ = step.next;
  launch_prefetch(request);
  return std::move(step.micro);
}

}  // namespace kosmos::io
