// arena.h: activation memory for a step. Views are carved from large device buffers in order (a stack) and all
// released at once by reset(); after the first step has sized the arena, later steps of the same shapes take
// everything from one buffer and allocate nothing.
#pragma once

#include <cstddef>
#include <vector>

#include "backends/device.h"

namespace kosmos::model {

class Arena {
 public:
  explicit Arena(Device & device, size_t chunk_bytes = size_t{64} << 20) : device_(device), chunk_bytes_(chunk_bytes) {}

  // A dense view of fresh (uninitialised) memory.
  TensorView take(DType dtype, std::initializer_list<int64_t> dims);
  TensorView take(DType dtype, const std::vector<int64_t> & dims);
  // Everything taken so far is free again (no view taken before may be used after). When the takes since the last
  // reset needed more than one buffer, or one larger than the deepest stack seen so far needs (plus 1/16, in 2 MiB
  // granules), the buffers are replaced by one of that size.
  void reset();
  // A point to come back to: rewind(mark()) frees what was taken after it (a frozen layer's temporaries).
  struct Mark {
    size_t chunk, used, depth;
  };
  Mark mark() const { return {current_, current_ < chunks_.size() ? chunks_[current_].used : 0, depth_}; }
  void rewind(const Mark & mark);
  // The most bytes the stack has held at once (alignment included), and the bytes of the buffers holding it.
  size_t deepest() const { return deepest_; }
  size_t reserved() const;

 private:
  struct Chunk {
    Buffer buffer;
    size_t used = 0;
  };
  Device & device_;
  size_t chunk_bytes_;
  std::vector<Chunk> chunks_;
  size_t current_ = 0;
  size_t depth_ = 0, deepest_ = 0;  // bytes taken and not given back; its maximum
};

}  // namespace kosmos::model
