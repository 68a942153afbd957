// loader.h: training batches from a prepared dataset (dataset.h). Global sample k of the run comes from the stream
// a Philox draw keyed by (seed, k) picks with the streams' weights; each stream is read in a fresh Philox shuffle
// every epoch, keyed by (seed, stream, epoch). A step's global batch is samples [k, k + global batch), each dp rank
// taking its contiguous share, so the data (and the dropout keyed by sample index) does not depend on the layout.
// A prefetch thread reads the next step while this one trains. The position (next sample, next image, samples
// taken from each stream) goes into checkpoints and comes back exactly on resume.
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "io/dataset.h"
#include "model/kosmos.h"

namespace kosmos::io {

struct LoaderPosition {
  int64_t next_sample = 0;         // global sample index of the next step's first sample
  int64_t next_image = 0;          // global index of that sample's first image
  std::vector<int64_t> taken;      // samples taken so far from each stream (epochs follow from it)
};

class DataLoader {
 public:
  // Opens DIR (its manifest) for a model: the dataset's sequence length, image size, image slots, vocabulary and
  // special ids must be the model's; each mismatch is an error naming both values and the fix.
  DataLoader(const std::string & dir, const model::KosmosConfig & config, uint64_t seed);
  ~DataLoader();
  DataLoader(const DataLoader &) = delete;
  DataLoader & operator=(const DataLoader &) = delete;

  const DatasetManifest & manifest() const { return manifest_; }
  // This dp rank's micro-batches of the next step, and the position moves past the whole global batch.
  std::vector<model::Batch> next_step(int64_t global_batch, int dp_rank, int dp_size, int64_t micro_batches);
  // The position as JSON (for checkpoints), and back.
  std::string position_json() const;
  void restore(const std::string & position_json);
  // Returns once no read ahead is in flight.
  void wait();

  // The model config a dataset's manifest asks for: `base` with the dataset's special ids and its vocabulary
  // rounded up to a multiple of 64 (any tp up to 64 divides it).
  static model::KosmosConfig adapt_config(const model::KosmosConfig & base, const DatasetManifest & manifest);

 private:
  struct Request {
    int64_t global_batch = 0, micro_batches = 0;
    int dp_rank = 0, dp_size = 1;
    bool operator==(const Request & other) const {
      return global_batch == other.global_batch && micro_batches == other.micro_batches && dp_rank == other.dp_rank &&
             dp_size == other.dp_size;
    }
  };
  struct Step {
    Request request;
    LoaderPosition start, next;
    std::vector<model::Batch> micro;
  };
  class Shards;  // open shard files and per-stream shuffles (touched by one thread at a time)

  Step assemble(const Request & request, const LoaderPosition & start);
  void launch_prefetch(const Request & request);

  std::string dir_;
  model::KosmosConfig config_;
  uint64_t seed_;
  DatasetManifest manifest_;
  std::vector<double> cumulative_weight_;  // per stream, normalised, the last 1
  std::unique_ptr<Shards> shards_;
  LoaderPosition position_;
  std::future<Step> prefetch_;
};

}  // namespace kosmos::io
