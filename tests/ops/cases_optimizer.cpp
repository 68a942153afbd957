// cases_optimizer.cpp: the AdamW step (first and a later step, weight decay, clipping scale, the bf16/f16 compute
// copy) and the accumulated squared norm of global-norm clipping. Forward-only ops: they have no backward.
#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

// `copy` bf16 or f16: the step also writes the compute copy, checked against the reference's update rounded to that
// dtype (f32: no copy). The copy cases take a larger lr, so that a copy left at the old values stands out.
OpCase adamw_case(int64_t count, int64_t step, float weight_decay, float grad_scale, DType copy = DType::kF32) {
  OpCase c;
  c.name = "adamw_n" + std::to_string(count) + "_step" + std::to_string(step);
  c.tolerance = 1e-11;
  c.draw_inputs = [count, step] {
    std::mt19937_64 rng(count + step);
    Named in;
    in["param"] = random_tensor(rng, {count});
    in["m"] = random_tensor(rng, {count}, 0.1);
    in["v"] = random_tensor(rng, {count}, 0.1);
    for (double & x : in["v"].v) x = static_cast<float>(x * x);  // a second moment is never negative
    in["grad"] = random_tensor(rng, {count});
    return in;
  };
  constexpr float kBeta1 = 0.9f, kBeta2 = 0.98f, kEps = 1e-6f;  // KOSMOS-1's AdamW
  const float lr = copy == DType::kF32 ? 2e-4f : 2e-2f;         // KOSMOS-1's lr; one that moves a bf16 value
  if (copy != DType::kF32) {
    c.name += std::string("_") + dtype_name(copy) + "_copy";
    // A float update may round to the other neighbour than the reference's: an ulp of the copy (2^-8 of the value
    // in bf16) in a few of the n elements.
    c.tolerance = 1e-7;
  }
  c.reference_forward = [=](const Named & in) {
    const reference::AdamWState next = reference::adamw_step({in.at("param"), in.at("m"), in.at("v")}, in.at("grad"),
                                                             lr, kBeta1, kBeta2, kEps, weight_decay, step, grad_scale);
    Named out{{"param", next.param}, {"m", next.m}, {"v", next.v}};
    if (copy != DType::kF32) {
      Tensor rounded = next.param;
      for (double & x : rounded.v) {
        const float value = static_cast<float>(x);
        x = copy == DType::kBF16 ? bf16_to_float(float_to_bf16(value)) : f16_to_float(float_to_f16(value));
      }
      out["compute_param"] = rounded;
    }
    return out;
  };
  c.device = [=](DeviceRun & run, const Named & in, const Named &) {
    const TensorView param = run.upload(in.at("param"), DType::kF32), m = run.upload(in.at("m"), DType::kF32);
    const TensorView v = run.upload(in.at("v"), DType::kF32), grad = run.upload(in.at("grad"), DType::kF32);
    // The copy starts at the old values, rounded, as the trainer's does.
    const TensorView compute_param = copy == DType::kF32 ? TensorView{} : run.upload(in.at("param"), copy);
    run.op(AdamWStep{param, m, v, grad, lr, kBeta1, kBeta2, kEps, weight_decay, step, grad_scale, compute_param});
    Named out{{"param", run.download(param)}, {"m", run.download(m)}, {"v", run.download(v)}};
    if (compute_param.present()) out["compute_param"] = run.download(compute_param);
    return out;
  };
  return c;
}

OpCase squared_norm_case(std::vector<int64_t> dims) {
  OpCase c;
  c.name = "squared_norm_" + std::to_string(dims.front()) + "x" + std::to_string(dims.back());
  c.tolerance = 1e-13;
  c.draw_inputs = [dims] {
    std::mt19937_64 rng(dims.back());
    return Named{{"in", random_tensor(rng, dims)}};
  };
  c.reference_forward = [](const Named & in) {
    return Named{{"sum", Tensor({1}, reference::squared_norm(in.at("in")))}};
  };
  c.device = [](DeviceRun & run, const Named & in, const Named &) {
    const TensorView x = run.upload(in.at("in"), DType::kF32), sum = run.accumulator({1});
    run.op(SquaredNorm{sum, x});
    return Named{{"sum", run.download_accumulated(sum)}};
  };
  return c;
}

}  // namespace

std::vector<OpCase> optimizer_cases() {
  return {adamw_case(1, 1, 0.0f, 1.0f),
          adamw_case(1000, 1, 0.01f, 1.0f),
          adamw_case(4099, 10, 0.01f, 0.5f),
          adamw_case(4099, 10, 0.01f, 0.5f, DType::kBF16),  // 512 packs and a tail of 3
          adamw_case(21, 3, 0.0f, 1.0f, DType::kF16),
          squared_norm_case({1, 1}),
          squared_norm_case({100, 1001}),
          squared_norm_case({2100, 1001})};  // more packs than the GPU's grid of at most 1024 x 256 threads
}

}  // namespace kosmos::testing
