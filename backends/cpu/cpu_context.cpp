// cpu_context.cpp: oneDNN engine/stream setup, primitive execution with per-call data pointers, scratch memory,
// and the TensorView -> oneDNN memory descriptor mapping.
#include "backends/cpu/cpu_context.h"

#include <sstream>

#include "backends/error.h"

namespace kosmos::cpu {

CpuContext::CpuContext() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

void CpuContext::execute(CachedPrimitive & cached, std::initializer_list<std::pair<int, void *>> data) {
  for (const auto & [arg, pointer] : data) {
    auto found = cached.args.find(arg);
    KOSMOS_CHECK(found != cached.args.end(), "cpu backend: oneDNN argument ", arg,
                 " was not prepared for this primitive (internal error)");
    found->second.set_data_handle(pointer);
  }
  cached.primitive.execute(stream_, cached.args);
  stream_.wait();
}

float * CpuContext::scratch(int slot, size_t count) {
  if (scratch_.size() <= static_cast<size_t>(slot)) scratch_.resize(slot + 1);
  if (scratch_[slot].size() < count) scratch_[slot].resize(count);
  return scratch_[slot].data();
}

dnnl::memory::data_type dnnl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return dnnl::memory::data_type::f32;
    case DType::kBF16: return dnnl::memory::data_type::bf16;
    case DType::kF16: return dnnl::memory::data_type::f16;
    case DType::kI32: return dnnl::memory::data_type::s32;
  }
  KOSMOS_FAIL("cpu backend: dtype ", static_cast<int>(dtype), " has no oneDNN type (known: f32, bf16, f16, i32)");
}

dnnl::memory::desc memory_desc(const TensorView & view) {
  dnnl::memory::dims dims(view.dims.begin(), view.dims.begin() + view.ndim);
  dnnl::memory::dims strides(view.strides.begin(), view.strides.begin() + view.ndim);
  return dnnl::memory::desc(dims, dnnl_type(view.dtype), strides);
}

std::string key_of(const TensorView & view) {
  std::ostringstream out;
  out << dtype_name(view.dtype) << '[';
  for (int axis = 0; axis < view.ndim; ++axis) out << view.dims[axis] << ':' << view.strides[axis] << ',';
  out << ']';
  return out.str();
}

}  // namespace kosmos::cpu
