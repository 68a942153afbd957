// arena.cpp: bump allocation, 64-byte aligned, over one reserved buffer that grows in place, or over a list of
// device buffers merged into one at a reset.
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
  // A take that does not fit the current buffer moves on to the next (the rest of this one unused until a rewind).
  while (current_ < chunks_.size() && chunks_[current_].used + bytes > chunks_[current_].buffer.capacity()) ++current_;
  if (current_ == chunks_.size()) chunks_.push_back(Chunk{new_buffer(bytes), 0});
  Chunk & chunk = chunks_[current_];
  if (chunk.used + bytes > chunk.buffer.bytes()) device_.grow(chunk.buffer, chunk.used + bytes);
  void * data = static_cast<char *>(chunk.buffer.data()) + chunk.used;
  chunk.used += bytes;
  depth_ += bytes;
  deepest_ = std::max(deepest_, depth_);
  return make_view(data, dtype, static_cast<int>(dims.size()), dims.data());
}

// The arena's first buffer is reserved where the device can; the others (or all, where it cannot) are separate.
Buffer Arena::new_buffer(size_t bytes) {
  if (chunks_.empty()) {
    Buffer reserved = device_.reserve(BufferUse::kActivations);
    if (reserved.data() != nullptr) return reserved;
  }
  return device_.allocate(std::max(bytes, chunk_bytes_), BufferUse::kActivations);
}

void Arena::reset() {
  for (Chunk & chunk : chunks_) chunk.used = 0;
  current_ = 0;
  depth_ = 0;
  if (chunks_.size() == 1 && chunks_[0].buffer.is_reserved()) return;  // grows in place, as deep as needed
  // One buffer for the deepest stack, so that no take skips a chunk's tail, and 1/16 more so that a step a little
  // deeper (another image count) still fits; whole 2 MiB granules. It replaces several chunks, or one larger
  // than that (the first chunk's minimum size). The old buffers go first (a device's free waits for the work that
  // may still read them).
  constexpr size_t kGranule = size_t{2} << 20;
  const size_t bytes = (deepest_ + deepest_ / 16 + kGranule - 1) / kGranule * kGranule;
  if (chunks_.size() > 1 || (chunks_.size() == 1 && chunks_[0].buffer.bytes() > bytes)) {
    chunks_.clear();
    chunks_.push_back(Chunk{device_.allocate(bytes, BufferUse::kActivations), 0});
  }
}

void Arena::rewind(const Mark & mark) {
  for (size_t i = mark.chunk; i < chunks_.size(); ++i) chunks_[i].used = i == mark.chunk ? mark.used : 0;
  current_ = mark.chunk;
  depth_ = mark.depth;
}

size_t Arena::reserved() const {
  size_t bytes = 0;
  for (const Chunk & chunk : chunks_) bytes += chunk.buffer.bytes();
  return bytes;
}

}  // namespace kosmos::model
