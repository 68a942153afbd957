// arena.h: activation memory for a step. Views are carved in order (a stack) and all released at once by reset().
// Where the device reserves address ranges (CPU, CUDA), the stack is one reserved buffer backed by memory as it
// deepens: the first step holds what it takes and no more, later steps of the same shapes allocate nothing.
// Elsewhere (ROCm) it is a list of buffers, merged into one of the deepest stack when the first step has sized it.
#pragma once

#include <cstddef>
#include <vector>

#include "backends/device.h"

namespace kosmos::model {

class Arena {
 public:
  // `chunk_bytes`: the least size of each separate buffer, where the device reserves no address ranges.
  explicit Arena(Device & device, size_t chunk_bytes = size_t{64} << 20) : device_(device), chunk_bytes_(chunk_bytes) {}

  // A dense view of fresh (uninitialised) memory.
  TensorView take(DType dtype, std::initializer_list<int64_t> dims);
  TensorView take(DType dtype, const std::vector<int64_t> & dims);
  // Everything taken so far is free again (no view taken before may be used after). A reserved buffer keeps its
  // memory. Separate buffers: when the takes since the last reset needed more than one, or one larger than the
  // deepest stack seen so far needs (plus 1/16, in 2 MiB granules), they are replaced by one of that size.
  void reset();
  // A point to come back to: rewind(mark()) frees what was taken after it (a frozen layer's temporaries).
  struct Mark {
    size_t chunk, used, depth;
  };
  Mark mark() const { return {current_, current_ < chunks_.size() ? chunks_[current_].used : 0, depth_}; }
  void rewind(const Mark & mark);
  // The most bytes the stack has held at once (alignment included), and the memory of the buffers holding it.
  size_t deepest() const { return deepest_; }
  size_t reserved() const;

 private:
  struct Chunk {
    Buffer buffer;  // reserved (the only chunk, growing in place) or one of the separate buffers
    size_t used = 0;
  };
  Buffer new_buffer(size_t bytes);
  Device & device_;
  size_t chunk_bytes_;
  std::vector<Chunk> chunks_;
  size_t current_ = 0;
  size_t depth_ = 0, deepest_ = 0;  // bytes taken and not given back; its maximum
};

}  // namespace kosmos::model
