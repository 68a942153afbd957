// device.cpp: Buffer's ownership rules (move-only, freed by the device that made it) and the device's count of them.
#include "backends/device.h"

#include <utility>

#include "backends/error.h"

namespace kosmos {

Buffer::Buffer(Device * device, void * data, size_t bytes) : device_(device), data_(data), bytes_(bytes) {
  if (device_ != nullptr && data_ != nullptr) device_->count_allocated(bytes_);
}

Buffer Buffer::reserved(Device * device, void * base, size_t capacity) {
  Buffer buffer(device, base, 0);
  buffer.capacity_ = capacity;
  buffer.reserved_ = true;
  return buffer;
}

Buffer & Buffer::operator=(Buffer && other) noexcept {
  if (this != &other) {
    release();
    device_ = std::exchange(other.device_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    reserved_ = std::exchange(other.reserved_, false);
  }
  return *this;
}

void Buffer::release() {
  if (device_ != nullptr && data_ != nullptr) {
    device_->count_freed(bytes_);
    if (reserved_)
      device_->free_reserved(data_, capacity_);
    else
      device_->free_memory(data_, bytes_);
  }
  device_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
  capacity_ = 0;
  reserved_ = false;
}

void Device::grow(Buffer & buffer, size_t bytes) {
  KOSMOS_CHECK(buffer.reserved_ && buffer.device_ == this, name(), ": grow() takes a buffer this device reserved");
  if (bytes <= buffer.bytes_) return;
  KOSMOS_CHECK(bytes <= buffer.capacity_, name(), ": ", bytes, " bytes of a growing buffer (activations or kernel "
               "scratch) do not fit the ", buffer.capacity_, " bytes the device has; use smaller micro-batches, "
               "more pipeline or tensor-parallel ranks, or recomputation");
  const size_t backed = back_memory(buffer.data_, buffer.bytes_, bytes, buffer.capacity_);
  count_allocated(backed - buffer.bytes_);
  buffer.bytes_ = backed;
}

size_t Device::back_memory(void *, size_t, size_t, size_t) {
  KOSMOS_FAIL(name(), ": reserves no address ranges, so it has none to back with memory");
}

void Device::free_reserved(void *, size_t) noexcept {}

void Device::count_allocated(size_t bytes) {
  const size_t now = bytes_in_use_.fetch_add(bytes) + bytes;
  size_t peak = peak_bytes_.load();
  while (now > peak && !peak_bytes_.compare_exchange_weak(peak, now)) {
  }
}

TensorView Buffer::view(DType dtype, std::initializer_list<int64_t> dims) const {
  TensorView result = make_view(data_, dtype, dims);
  const size_t needed = static_cast<size_t>(result.numel()) * dtype_size(dtype);
  KOSMOS_CHECK(needed <= bytes_, "Buffer::view: ", describe(result), " needs ", needed, " bytes but the buffer has ",
               bytes_);
  return result;
}

}  // namespace kosmos
