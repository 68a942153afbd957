// arena.h: activation memory for a step. Views are carved from large device buffers in order and all released
// at once by reset(); after the first step has sized the arena, later steps allocate nothing.
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
  // Everything taken so far is free again (the memory stays allocated).
  void reset();
  // A point to come back to: rewind(mark()) frees what was taken after it (a frozen layer's temporaries).
  struct Mark {
    size_t chunk, used;
  };
  Mark mark() const { return {current_, current_ < chunks_.size() ? chunks_[current_].used : 0}; }
  void rewind(const Mark & mark);

 private:
  struct Chunk {
    Buffer buffer;
    size_t used = 0;
  };
  Device & device_;
  size_t chunk_bytes_;
  std::vector<Chunk> chunks_;
  size_t current_ = 0;
};

}  // namespace kosmos::model
