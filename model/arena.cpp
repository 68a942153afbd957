// arena.cpp: bump allocation over a list of device buffers, 64-byte aligned.
#include "model/arena.h"

#include <algorithm>

namespace kosmos::model {

TensorView Arena::take(DType dtype, std::initializer_list<int64_t> dims) {
  return take(dtype, std::vector<int64_t>(dims));
}

TensorView Arena::take(DType dtype, const std::vector<int64_t> & dims) {
  int64_t count = 1;
  for (int64_t size : dims) count *= size;
  const size_t bytes = (static_cast<size_t>(count) * dtype_size(dtype) + 63) / 64 * 64;
  while (current_ < chunks_.size() && chunks_[current_].used + bytes > chunks_[current_].buffer.bytes()) ++current_;
  if (current_ == chunks_.size())
    chunks_.push_back(Chunk{device_.allocate(std::max(bytes, chunk_bytes_), BufferUse::kActivations), 0});
  Chunk & chunk = chunks_[current_];
  void * data = static_cast<char *>(chunk.buffer.data()) + chunk.used;
  chunk.used += bytes;
  return make_view(data, dtype, static_cast<int>(dims.size()), dims.data());
}

void Arena::reset() {
  for (Chunk & chunk : chunks_) chunk.used = 0;
  current_ = 0;
}

void Arena::rewind(const Mark & mark) {
  for (size_t i = mark.chunk; i < chunks_.size(); ++i) chunks_[i].used = i == mark.chunk ? mark.used : 0;
  current_ = mark.chunk;
}

}  // namespace kosmos::model
