// tensor.cpp: TensorView helpers (construction, reshaping, slicing and the text used in error messages).
#include "backends/tensor.h"

#include <sstream>

#include "backends/error.h"

namespace kosmos {

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int axis = ndim - 1; axis >= 0; --axis) {
    if (dims[axis] != 1 && strides[axis] != expected) return false;
    expected *= dims[axis];
  }
  return true;
}

TensorView make_view(void * data, DType dtype, int ndim, const int64_t * dims) {
  KOSMOS_CHECK(ndim >= 0 && ndim <= kMaxDims, "make_view: ", ndim, " dimensions requested; views hold 0 to ",
               kMaxDims);
  TensorView view;
  view.data = data;
  view.dtype = dtype;
  view.ndim = ndim;
  int64_t stride = 1;
  for (int axis = ndim - 1; axis >= 0; --axis) {
    KOSMOS_CHECK(dims[axis] >= 0, "make_view: dimension ", axis, " is ", dims[axis], "; sizes must be >= 0");
    view.dims[axis] = dims[axis];
    view.strides[axis] = stride;
    stride *= dims[axis];
  }
  return view;
}

TensorView make_view(void * data, DType dtype, std::initializer_list<int64_t> dims) {
  return make_view(data, dtype, static_cast<int>(dims.size()), dims.begin());
}

TensorView reshape(const TensorView & view, std::initializer_list<int64_t> dims) {
  TensorView result = make_view(view.data, view.dtype, dims);
  KOSMOS_CHECK(view.is_contiguous(), "reshape: ", describe(view), " is not contiguous; copy it first");
  KOSMOS_CHECK(result.numel() == view.numel(), "reshape: ", describe(view), " has ", view.numel(),
               " elements but ", describe_dims(result), " needs ", result.numel());
  return result;
}

TensorView slice(const TensorView & view, int axis, int64_t start, int64_t length) {
  KOSMOS_CHECK(axis >= 0 && axis < view.ndim, "slice: axis ", axis, " out of range for ", describe(view));
  KOSMOS_CHECK(start >= 0 && length >= 0 && start + length <= view.dims[axis], "slice: [", start, ", ",
               start + length, ") is outside axis ", axis, " of ", describe(view));
  TensorView result = view;
  result.dims[axis] = length;
  result.data = static_cast<char *>(view.data) + start * view.strides[axis] * static_cast<int64_t>(dtype_size(view.dtype));
  return result;
}

std::string describe_dims(const TensorView & view) {
  return describe_dims(std::vector<int64_t>(view.dims.begin(), view.dims.begin() + view.ndim));
}

std::string describe_dims(const std::vector<int64_t> & dims) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < dims.size(); ++i) out << (i ? ", " : "") << dims[i];
  out << "]";
  return out.str();
}

std::string describe(const TensorView & view) {
  if (!view.present()) return "absent";
  std::ostringstream out;
  out << dtype_name(view.dtype) << describe_dims(view);
  if (!view.is_contiguous()) {
    out << " strides [";
    for (int axis = 0; axis < view.ndim; ++axis) out << (axis ? ", " : "") << view.strides[axis];
    out << "]";
  }
  return out.str();
}

bool same_dims(const TensorView & a, const TensorView & b) {
  if (a.ndim != b.ndim) return false;
  for (int axis = 0; axis < a.ndim; ++axis)
    if (a.dims[axis] != b.dims[axis]) return false;
  return true;
}

}  // namespace kosmos
