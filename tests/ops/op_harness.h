// op_harness.h: the op test harness (llama.cpp's test-backend-ops habit). An OpCase holds random inputs, the fp64
// reference forward/backward, and the same computation written against the device interface. The harness runs
// the device side on every registered backend and compares each output and gradient with the reference by
// normalised mean squared error; separately it checks the reference backward by central finite differences.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/device.h"
#include "tests/reference/reference.h"

namespace kosmos::testing {

using reference::Tensor;
using Named = std::map<std::string, Tensor>;

// Thrown by DeviceRun::op when the device says it lacks an op case; the test skips with the reason.
struct Unsupported {
  std::string reason;
};

// Device memory for one case run: uploads reference tensors, allocates outputs, runs ops and reads back.
class DeviceRun {
 public:
  DeviceRun(Device & device, Stream & stream) : device_(device), stream_(stream) {}
  Device & device() { return device_; }

  TensorView upload(const Tensor & host, DType dtype);
  // An upload whose device layout is `host` with its axes permuted by `order` (device dim i = host dim order[i]),
  // returned as a strided view with the host's logical dims: exercises ops on non-contiguous inputs.
  TensorView upload_permuted(const Tensor & host, const std::vector<int> & order, DType dtype = DType::kF32);
  // A 2-D upload whose rows sit `pad` elements apart beyond their width: a column window of a wider matrix, whose
  // other columns hold kWindowFill (download() checks that no op wrote there).
  TensorView upload_window(const Tensor & host, int64_t pad, DType dtype = DType::kF32);
  static constexpr double kWindowFill = 5555.0;
  TensorView output(const std::vector<int64_t> & dims, DType dtype, double fill = 7777.0);
  // A gradient buffer that ops accumulate into: starts at random values, which download_accumulated() subtracts.
  TensorView accumulator(const std::vector<int64_t> & dims);
  Tensor download(const TensorView & view);  // dense views, or strided ones made by upload_permuted or upload_window
  Tensor download_accumulated(const TensorView & view);
  // Runs an op, first asking the device whether it supports it (throws Unsupported if not). Records the op.
  void op(const OpDesc & desc);
  void matmul_backward(const MatmulBackward & desc);
  const std::vector<OpDesc> & recorded() const { return recorded_; }

 private:
  TensorView allocate(const std::vector<int64_t> & dims, DType dtype);
  Device & device_;
  Stream & stream_;
  std::vector<Buffer> buffers_;
  std::map<const void *, Tensor> accumulator_start_;
  std::vector<OpDesc> recorded_;
  std::mt19937_64 rng_{99};
};

struct OpCase {
  std::string name;          // letters, digits and underscores: it becomes part of a test name
  double tolerance = 1e-10;  // the largest normalised MSE accepted against the reference
  DType grad_dtype = DType::kF32;  // output gradients are drawn exactly representable in this dtype
  // Draws the inputs: random values, exactly representable in the dtype the device gets. inputs() calls it when a
  // test first asks, not when the case list is made: every test process makes the whole list to name its tests, and
  // drawing every case's inputs there took 0.4 s of each of about 1100 processes.
  std::function<Named()> draw_inputs;
  std::vector<std::string> differentiable;  // inputs whose gradient "d<name>" the backward returns
  std::vector<std::string> graded_outputs;  // forward outputs that receive a gradient in the backward
  // Elements whose gradient is zero by definition although the forward reads them (an embedding's padding row):
  // the finite-difference check expects 0 there.
  std::function<bool(const std::string & input, int64_t index)> gradient_blocked;
  std::function<Named(const Named & inputs)> reference_forward;
  // Gradients "d<input>" given output gradients "d<output>"; empty for ops without a backward.
  std::function<Named(const Named & inputs, const Named & output_grads)> reference_backward;
  // The device computation: the forward outputs, plus "d<input>" gradients when output_grads is not empty.
  std::function<Named(DeviceRun & run, const Named & inputs, const Named & output_grads)> device;
  // Set on a case that exists for the tensor-core attention kernels alone (their tile geometry, the one-pass
  // backward's atomics, masks drawn again without the forward's record): the case that runs the same code of the
  // scalar attention kernels (which keep no record and add dq up in one order) over the same shapes and inputs. The
  // emulated ROCm build has only those, and there such a case would cost 3 to 70 s of the emulator's time for
  // nothing new: it is not run there (a real ROCm device runs it).
  std::string scalar_kernels_twin;
  // Whether the case is its twin with one of the tensor-core kernels' variants added (atomics, masks drawn again: its
  // twin's name the start of its own), which the fp64 reference ignores.
  bool is_variant_of_twin() const { return !scalar_kernels_twin.empty() && name.rfind(scalar_kernels_twin, 0) == 0; }

  // The inputs, drawn on the first call (by each copy of the case that is asked).
  const Named & inputs() const {
    if (!drawn_inputs_) drawn_inputs_ = std::make_shared<const Named>(draw_inputs ? draw_inputs() : Named{});
    return *drawn_inputs_;
  }

 private:
  mutable std::shared_ptr<const Named> drawn_inputs_;
};

// All op cases, by family (ops_cases_*.cpp).
std::vector<OpCase> matmul_cases();
std::vector<OpCase> norm_cases();          // layernorm, l2 normalise
std::vector<OpCase> elementwise_cases();   // activations, add, scale, cast, fill, dropout
std::vector<OpCase> attention_cases();     // attention, xPos
std::vector<OpCase> embedding_cases();     // embedding, sinusoidal positions, cross-entropy
std::vector<OpCase> optimizer_cases();     // AdamW, squared norm
const std::vector<OpCase> & all_op_cases();

// The backends the op tests run on: every registered one that sees a device here (the CPU always; with CUDA, its
// kernel variants cuda-owngemm, cuda-wmma and cuda-cudnn too).
std::vector<std::string> testable_backends();
std::unique_ptr<Device> create_test_device(const std::string & backend);
// The backend's name as a test name takes it, '-' as '_' ("cuda-wmma" -> "cuda_wmma"): GoogleTest takes letters,
// digits and '_' only, and aborts the whole binary at registration on any other character.
std::string test_name_of_backend(std::string backend);

// Helpers for writing cases.
Tensor random_tensor(std::mt19937_64 & rng, const std::vector<int64_t> & dims, double scale = 1.0,
                     DType representable = DType::kF32);
Tensor from_ints(const std::vector<int32_t> & values);
std::vector<int32_t> to_ints(const Tensor & tensor);
double normalised_mse(const Tensor & actual, const Tensor & expected);

}  // namespace kosmos::testing
