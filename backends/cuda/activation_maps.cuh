// activation_maps.cuh: GELU (exact erf) and QuickGELU and their derivatives as f32 device functors, shared by the
// elementwise kernels (ActivationForward/Backward) and the LayerNorm kernels that normalise an activation's output.
#pragma once

#include "backends/cuda/gpu_common.cuh"
#include "backends/ops.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {

constexpr float kInverseSqrt2 = 0.70710678118654752f;
constexpr float kInverseSqrt2Pi = 0.39894228040143268f;
constexpr float kQuickGeluSlope = 1.702f;

struct ActivationMap {
  Activation kind;
  __device__ float operator()(float x) const {
    return kind == Activation::kGelu ? 0.5f * x * (1.0f + erff(x * kInverseSqrt2))
                                     : x / (1.0f + expf(-kQuickGeluSlope * x));
  }
};
// din = dout * act'(in), as operator()(dout, in).
struct ActivationGradientMap {
  Activation kind;
  __device__ float operator()(float dout, float x) const {
    float slope;
    if (kind == Activation::kGelu) {
      slope = 0.5f * (1.0f + erff(x * kInverseSqrt2)) + x * kInverseSqrt2Pi * expf(-0.5f * x * x);
    } else {
      const float sigmoid = 1.0f / (1.0f + expf(-kQuickGeluSlope * x));
      slope = sigmoid + kQuickGeluSlope * x * sigmoid * (1.0f - sigmoid);
    }
    return dout * slope;
  }
};

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
