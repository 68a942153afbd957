// op_harness.cpp: DeviceRun (uploads, outputs, accumulators, recorded ops) and the case-writing helpers.
#include "tests/ops/op_harness.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/error.h"
#include "backends/registry.h"

namespace kosmos::testing {
namespace {

std::vector<unsigned char> encode(const Tensor & host, DType dtype) {
  std::vector<unsigned char> bytes(static_cast<size_t>(host.numel()) * dtype_size(dtype));
  for (int64_t i = 0; i < host.numel(); ++i) {
    const float value = static_cast<float>(host.v[i]);
    switch (dtype) {
      case DType::kF32: std::memcpy(&bytes[i * 4], &value, 4); break;
      case DType::kBF16: {
        const uint16_t half = float_to_bf16(value);
        std::memcpy(&bytes[i * 2], &half, 2);
        break;
      }
      case DType::kF16: {
        const uint16_t half = float_to_f16(value);
        std::memcpy(&bytes[i * 2], &half, 2);
        break;
      }
      case DType::kI32: {
        const int32_t integer = static_cast<int32_t>(host.v[i]);
        std::memcpy(&bytes[i * 4], &integer, 4);
        break;
      }
    }
  }
  return bytes;
}

Tensor decode(const std::vector<unsigned char> & bytes, DType dtype, const std::vector<int64_t> & dims) {
  Tensor host(dims);
  for (int64_t i = 0; i < host.numel(); ++i) {
    switch (dtype) {
      case DType::kF32: {
        float value;
        std::memcpy(&value, &bytes[i * 4], 4);
        host.v[i] = value;
        break;
      }
      case DType::kBF16: {
        uint16_t half;
        std::memcpy(&half, &bytes[i * 2], 2);
        host.v[i] = bf16_to_float(half);
        break;
      }
      case DType::kF16: {
        uint16_t half;
        std::memcpy(&half, &bytes[i * 2], 2);
        host.v[i] = f16_to_float(half);
        break;
      }
      case DType::kI32: {
        int32_t integer;
        std::memcpy(&integer, &bytes[i * 4], 4);
        host.v[i] = integer;
        break;
      }
    }
  }
  return host;
}

}  // namespace

TensorView DeviceRun::allocate(const std::vector<int64_t> & dims, DType dtype) {
  int64_t count = 1;
  for (int64_t size : dims) count *= size;
  buffers_.push_back(device_.allocate(static_cast<size_t>(std::max<int64_t>(count, 1)) * dtype_size(dtype),
                                      BufferUse::kActivations));
  return make_view(buffers_.back().data(), dtype, static_cast<int>(dims.size()), dims.data());
}

TensorView DeviceRun::upload(const Tensor & host, DType dtype) {
  TensorView view = allocate(host.dims, dtype);
  std::vector<unsigned char> bytes = encode(host, dtype);
  TensorView source = view;
  source.data = bytes.data();
  device_.copy(view, source, stream_);
  stream_.synchronize();
  return view;
}

TensorView DeviceRun::upload_permuted(const Tensor & host, const std::vector<int> & order, DType dtype) {
  const int ndim = static_cast<int>(host.dims.size());
  std::vector<int64_t> stored_dims(ndim);
  for (int i = 0; i < ndim; ++i) stored_dims[i] = host.dims[order[i]];
  Tensor stored(stored_dims);
  std::vector<int64_t> logical_strides(ndim, 1), stored_strides(ndim, 1);
  for (int i = ndim - 2; i >= 0; --i) {
    logical_strides[i] = logical_strides[i + 1] * host.dims[i + 1];
    stored_strides[i] = stored_strides[i + 1] * stored_dims[i + 1];
  }
  for (int64_t s = 0; s < stored.numel(); ++s) {
    int64_t logical = 0;
    for (int i = 0; i < ndim; ++i) logical += (s / stored_strides[i]) % stored_dims[i] * logical_strides[order[i]];
    stored.v[s] = host.v[logical];
  }
  TensorView view = upload(stored, dtype);
  for (int i = 0; i < ndim; ++i) {
    view.dims[order[i]] = stored_dims[i];
    view.strides[order[i]] = stored_strides[i];
  }
  return view;
}

TensorView DeviceRun::upload_window(const Tensor & host, int64_t pad, DType dtype) {
  const int64_t rows = host.dim(0), cols = host.dim(1);
  Tensor wide({rows, cols + pad}, kWindowFill);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) wide.v[r * (cols + pad) + c] = host.v[r * cols + c];
  TensorView view = upload(wide, dtype);
  view.dims[1] = cols;
  return view;
}

TensorView DeviceRun::output(const std::vector<int64_t> & dims, DType dtype, double fill) {
  return upload(Tensor(dims, fill), dtype);
}

TensorView DeviceRun::accumulator(const std::vector<int64_t> & dims) {
  Tensor start = random_tensor(rng_, dims);
  TensorView view = upload(start, DType::kF32);
  accumulator_start_[view.data] = std::move(start);
  return view;
}

Tensor DeviceRun::download(const TensorView & view) {
  if (view.ndim == 2 && view.strides[1] == 1 && view.strides[0] > view.dims[1]) {  // a window made by upload_window
    const Tensor wide = download(make_view(view.data, view.dtype, {view.dims[0], view.strides[0]}));
    Tensor result({view.dims[0], view.dims[1]});
    for (int64_t r = 0; r < view.dims[0]; ++r) {
      for (int64_t c = 0; c < view.dims[1]; ++c) result.v[r * view.dims[1] + c] = wide.v[r * view.strides[0] + c];
      for (int64_t c = view.dims[1]; c < view.strides[0]; ++c) {  // kWindowFill, rounded to the dtype
        const double held = wide.v[r * view.strides[0] + c];
        KOSMOS_CHECK(std::abs(held - kWindowFill) <= 16.0, "DeviceRun::download: an op wrote into the padding of ",
                     describe(view), ": row ", r, ", column ", c, " holds ", held, ", not ", kWindowFill);
      }
    }
    return result;
  }
  const std::vector<int64_t> dims(view.dims.begin(), view.dims.begin() + view.ndim);
  if (view.numel() == 0) return Tensor(dims);  // nothing stored, whatever the strides say
  // The storage order: axes by decreasing stride (a permutation of a dense layout, as upload_permuted makes).
  std::vector<int> order(view.ndim);
  for (int i = 0; i < view.ndim; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return view.strides[x] > view.strides[y]; });
  std::vector<int64_t> stored_dims(view.ndim);
  for (int i = 0; i < view.ndim; ++i) stored_dims[i] = dims[order[i]];
  TensorView stored = make_view(view.data, view.dtype, view.ndim, stored_dims.data());
  for (int i = 0; i < view.ndim; ++i)
    KOSMOS_CHECK(stored.strides[i] == view.strides[order[i]] || stored_dims[i] == 1, "DeviceRun::download: ",
                 describe(view), " is not a permutation of a dense layout");
  std::vector<unsigned char> bytes(static_cast<size_t>(view.numel()) * dtype_size(view.dtype));
  TensorView target = stored;
  target.data = bytes.data();
  device_.copy(target, stored, stream_);
  stream_.synchronize();
  const Tensor storage = decode(bytes, view.dtype, stored_dims);
  Tensor result(dims);
  std::vector<int64_t> logical_strides(view.ndim, 1);
  for (int i = view.ndim - 2; i >= 0; --i) logical_strides[i] = logical_strides[i + 1] * dims[i + 1];
  for (int64_t s = 0; s < storage.numel(); ++s) {
    int64_t logical = 0, rest = s;
    for (int i = view.ndim - 1; i >= 0; --i) {
      logical += rest % stored_dims[i] * logical_strides[order[i]];
      rest /= stored_dims[i];
    }
    result.v[logical] = storage.v[s];
  }
  return result;
}

Tensor DeviceRun::download_accumulated(const TensorView & view) {
  Tensor result = download(view);
  const Tensor & start = accumulator_start_.at(view.data);
  for (int64_t i = 0; i < result.numel(); ++i) result.v[i] -= start.v[i];
  return result;
}

void DeviceRun::op(const OpDesc & desc) {
  validate(desc);
  const OpSupport support = device_.supports(desc);
  if (!support.supported) throw Unsupported{std::string(op_name(desc)) + ": " + support.reason};
  recorded_.push_back(desc);
  op_run(device_, desc, stream_);
  stream_.synchronize();
}

void DeviceRun::matmul_backward(const MatmulBackward & desc) {
  kosmos::matmul_backward(device_, desc, stream_);
  stream_.synchronize();
}

std::vector<std::string> testable_backends() {
  const BackendRegistry registry;
  std::vector<std::string> names;
  for (const BackendEntry & entry : registry.entries())
    if (entry.available && entry.device_count() > 0) names.push_back(entry.name);
  return names;
}

std::unique_ptr<Device> create_test_device(const std::string & backend) {
  return BackendRegistry().create(backend, 0);
}

std::string test_name_of_backend(std::string backend) {
  std::replace(backend.begin(), backend.end(), '-', '_');
  return backend;
}

Tensor random_tensor(std::mt19937_64 & rng, const std::vector<int64_t> & dims, double scale, DType representable) {
  std::normal_distribution<double> normal(0.0, scale);
  Tensor tensor(dims);
  for (double & x : tensor.v) {
    const float value = static_cast<float>(normal(rng));
    x = representable == DType::kBF16  ? bf16_to_float(float_to_bf16(value))
        : representable == DType::kF16 ? f16_to_float(float_to_f16(value))
                                       : value;
  }
  return tensor;
}

Tensor from_ints(const std::vector<int32_t> & values) {
  Tensor tensor({static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) tensor.v[i] = values[i];
  return tensor;
}

std::vector<int32_t> to_ints(const Tensor & tensor) {
  std::vector<int32_t> values(tensor.v.size());
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<int32_t>(tensor.v[i]);
  return values;
}

double normalised_mse(const Tensor & actual, const Tensor & expected) {
  double error = 0.0, norm = 0.0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    if (std::isinf(expected.v[i]) && actual.v[i] == expected.v[i]) continue;  // e.g. lse of a row with no keys
    error += (actual.v[i] - expected.v[i]) * (actual.v[i] - expected.v[i]);
    norm += expected.v[i] * expected.v[i];
  }
  return norm < 1e-20 ? error : error / norm;  // an all-zero reference is compared absolutely
}

const std::vector<OpCase> & all_op_cases() {
  static const std::vector<OpCase> cases = [] {
    std::vector<OpCase> all;
    for (auto family : {matmul_cases, norm_cases, elementwise_cases, attention_cases, embedding_cases,
                        optimizer_cases}) {
      std::vector<OpCase> some = family();
      all.insert(all.end(), some.begin(), some.end());
    }
    return all;
  }();
  return cases;
}

}  // namespace kosmos::testing
