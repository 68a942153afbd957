// device.cpp: Buffer's ownership rules (move-only, freed by the device that made it) and the device's count of them.
#include "backends/device.h"

#include <utility>

#include "backends/error.h"

namespace kosmos {

Buffer::Buffer(Device * device, void * data, size_t bytes) : device_(device), data_(data), bytes_(bytes) {
  if (device_ != nullptr && data_ != nullptr) device_->count_allocated(bytes_);
}

Buffer & Buffer::operator=(Buffer && other) noexcept {
  if (this != &other) {
    release();
    device_ = std::exchange(other.device_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void Buffer::release() {
  if (device_ != nullptr && data_ != nullptr) {
    device_->count_freed(bytes_);
    device_->free_memory(data_, bytes_);
  }
  device_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

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
