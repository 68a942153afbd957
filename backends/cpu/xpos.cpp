// xpos.cpp: xPos (kosmos-spec section 4) for the CPU. A table holds scale*cos and scale*sin for every (position,
// pair), computed in double and kept between calls; applying it is one pass over [B, H, T, dh], threads over rows.
#include <cmath>
#include <ios>
#include <sstream>

#include "backends/cpu/cpu_kernels.h"

namespace kosmos::cpu {
namespace {

// table[t][i] = {scale * cos, scale * sin} of pair i at row t, interleaved as [T][dh/2][2]; kept in the context
// between calls (q's upscaled table in slot 0, k's downscaled one in slot 1), so every layer of a step reuses them.
const float * xpos_table(CpuContext & ctx, int64_t length, int64_t head_dim, const XPosParams & params) {
  const int64_t pairs = head_dim / 2;
  std::ostringstream key;
  key << std::hexfloat << "xpos|" << length << '|' << head_dim << '|' << params.offset << '|' << params.scale_base
      << '|' << params.downscale;
  return ctx.table(params.downscale ? 1 : 0, key.str(), static_cast<size_t>(length * pairs * 2), [&](float * table) {
    const int64_t total = length + params.offset;
    const double min_position = std::floor(-static_cast<double>(total) / 2.0);  // Python: -(len + offset) // 2
#pragma omp parallel for
    for (int64_t t = 0; t < length; ++t) {
      const double position = static_cast<double>(params.offset + t);
      const double centred = min_position + position;
      for (int64_t i = 0; i < pairs; ++i) {
        const double zeta = (2.0 * i + 0.4 * head_dim) / (1.4 * head_dim);
        const double theta = std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
        double scale = std::pow(zeta, centred / params.scale_base);
        if (params.downscale) scale = 1.0 / scale;
        table[(t * pairs + i) * 2] = static_cast<float>(scale * std::cos(position * theta));
        table[(t * pairs + i) * 2 + 1] = static_cast<float>(scale * std::sin(position * theta));
      }
    }
  });
}

// For each pair (a, b) with c = scale cos, s = scale sin:
//   forward  (sign +1): (a c - b s, b c + a s)
//   backward (sign -1): (a c + b s, b c - a s), the transpose of the rotation.
void xpos_apply(CpuContext & ctx, const TensorView & out, const TensorView & in, const XPosParams & params,
                float sign) {
  const int64_t batch = in.dim(0), heads = in.dim(1), length = in.dim(2), head_dim = in.dim(3);
  const int64_t pairs = head_dim / 2;
  const float * table = xpos_table(ctx, length, head_dim, params);
#pragma omp parallel for
  for (int64_t row = 0; row < batch * heads * length; ++row) {
    const int64_t t = row % length, h = (row / length) % heads, b = row / (length * heads);
    const float * source = in.as<float>() + b * in.stride(0) + h * in.stride(1) + t * in.stride(2);
    float * target = out.as<float>() + b * out.stride(0) + h * out.stride(1) + t * out.stride(2);
    const float * factors = table + t * pairs * 2;
#pragma omp simd
    for (int64_t i = 0; i < pairs; ++i) {
      const float a = source[2 * i], b_value = source[2 * i + 1];
      const float c = factors[2 * i], s = sign * factors[2 * i + 1];
      target[2 * i] = a * c - b_value * s;
      target[2 * i + 1] = b_value * c + a * s;
    }
  }
}

// bf16 in and out: rotated in f32 and rounded once (in place when out aliases in).
void xpos_widened(CpuContext & ctx, const TensorView & out, const TensorView & in, const XPosParams & params,
                  float sign) {
  if (!any_narrow({out, in})) {
    xpos_apply(ctx, out, in, params, sign);
    return;
  }
  WidenedOperands wide(ctx);
  const TensorView wide_in = wide.input(in);
  const TensorView wide_out = out.data == in.data ? wide.output_over(out, wide_in) : wide.output(out);
  xpos_apply(ctx, wide_out, wide_in, params, sign);
  wide.finish();
}

}  // namespace

void cpu_op(CpuContext & ctx, const XPosForward & op) { xpos_widened(ctx, op.out, op.in, op.params, 1.0f); }
void cpu_op(CpuContext & ctx, const XPosBackward & op) { xpos_widened(ctx, op.din, op.dout, op.params, -1.0f); }

}  // namespace kosmos::cpu
