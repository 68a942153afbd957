// tensor.h: TensorView, a non-owning typed window onto memory: up to four dimensions with strides in elements.
// Views never own and never allocate; Buffer (device.h) owns memory. A view with data == nullptr is "absent",
// which optional op operands (a bias, say) use.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "backends/dtype.h"

namespace kosmos {

constexpr int kMaxDims = 4;

struct TensorView {
  void * data = nullptr;
  DType dtype = DType::kF32;
  int ndim = 0;
  std::array<int64_t, kMaxDims> dims{};     // logical sizes, outermost first
  std::array<int64_t, kMaxDims> strides{};  // in elements, not bytes

  bool present() const { return data != nullptr; }
  int64_t numel() const {  // inline: loops test it per element
    int64_t count = 1;
    for (int axis = 0; axis < ndim; ++axis) count *= dims[axis];
    return count;
  }
  // dim(-1) is the innermost dimension.
  int64_t dim(int axis) const { return dims[axis < 0 ? ndim + axis : axis]; }
  int64_t stride(int axis) const { return strides[axis < 0 ? ndim + axis : axis]; }
  bool is_contiguous() const;  // row-major and dense
  int64_t rows() const {  // the product of all but the last dim (1 for a scalar)
    int64_t count = 1;
    for (int axis = 0; axis + 1 < ndim; ++axis) count *= dims[axis];
    return count;
  }
  template <typename T>
  T * as() const { return static_cast<T *>(data); }
};

// A dense row-major view of `dims` at `data`.
TensorView make_view(void * data, DType dtype, std::initializer_list<int64_t> dims);
TensorView make_view(void * data, DType dtype, int ndim, const int64_t * dims);
// The same memory seen with other dims; the view must be contiguous and the element count must match.
TensorView reshape(const TensorView & view, std::initializer_list<int64_t> dims);
// A strided view onto a sub-range [start, start + length) of one axis.
TensorView slice(const TensorView & view, int axis, int64_t start, int64_t length);
// "f32[4, 7]" or "f32[4, 7] strides [14, 1]" when not contiguous; "absent" when data is null.
std::string describe(const TensorView & view);
std::string describe_dims(const TensorView & view);  // "[4, 7]"
std::string describe_dims(const std::vector<int64_t> & dims);  // the same for a shape
bool same_dims(const TensorView & a, const TensorView & b);

}  // namespace kosmos
