// cases_optimizer.cpp: the AdamW step (first and a later step, weight decay, clipping scale) and the accumulated
// squared norm of global-norm clipping. Forward-only ops: they have no backward.
#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

OpCase adamw_case(int64_t count, int64_t step, float weight_decay, float grad_scale) {
  std::mt19937_64 rng(count + step);
  OpCase c;
  c.name = "adamw_n" + std::to_string(count) + "_step" + std::to_string(step);
  c.tolerance = 1e-11;
  c.inputs["param"] = random_tensor(rng, {count});
  c.inputs["m"] = random_tensor(rng, {count}, 0.1);
  c.inputs["v"] = random_tensor(rng, {count}, 0.1);
  for (double & x : c.inputs["v"].v) x = static_cast<float>(x * x);  // a second moment is never negative
  c.inputs["grad"] = random_tensor(rng, {count});
  constexpr float kLr = 2e-4f, kBeta1 = 0.9f, kBeta2 = 0.98f, kEps = 1e-6f;  // KOSMOS-1's AdamW
  c.reference_forward = [=](const Named & in) {
    const reference::AdamWState next = reference::adamw_step({in.at("param"), in.at("m"), in.at("v")}, in.at("grad"),
                                                             kLr, kBeta1, kBeta2, kEps, weight_decay, step, grad_scale);
    return Named{{"param", next.param}, {"m", next.m}, {"v", next.v}};
  };
  c.device = [=](DeviceRun & run, const Named & in, const Named &) {
    const TensorView param = run.upload(in.at("param"), DType::kF32), m = run.upload(in.at("m"), DType::kF32);
    const TensorView v = run.upload(in.at("v"), DType::kF32), grad = run.upload(in.at("grad"), DType::kF32);
    run.op(AdamWStep{param, m, v, grad, kLr, kBeta1, kBeta2, kEps, weight_decay, step, grad_scale});
    return Named{{"param", run.download(param)}, {"m", run.download(m)}, {"v", run.download(v)}};
  };
  return c;
}

OpCase squared_norm_case(std::vector<int64_t> dims) {
  std::mt19937_64 rng(dims.back());
  OpCase c;
  c.name = "squared_norm_" + std::to_string(dims.front()) + "x" + std::to_string(dims.back());
  c.tolerance = 1e-13;
  c.inputs["in"] = random_tensor(rng, dims);
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
  return {adamw_case(1, 1, 0.0f, 1.0f), adamw_case(1000, 1, 0.01f, 1.0f), adamw_case(4099, 10, 0.01f, 0.5f),
          squared_norm_case({1, 1}), squared_norm_case({100, 1001})};
}

}  // namespace kosmos::testing
