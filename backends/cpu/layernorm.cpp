// layernorm.cpp: LayerNorm forward/backward on oneDNN's layer_normalization primitive. oneDNN keeps the variance;
// our interface saves rstd = 1/sqrt(var + eps), so the forward converts after the call and the backward converts
// back (var = 1/rstd^2 - eps) into scratch. Weight and bias gradients come out of oneDNN and are added (+=). The
// LayerNorm of an activation runs as its parts, act(in) in f32 scratch (widened exactly), then the LayerNorm of it;
// its backward as the LayerNorm's into f32 scratch, then act' (the same ops an f32 model runs one by one); a residual
// gradient is added after, and the forward's output asked of the backward is the forward run again. A forward that
// joins its input first (LayerNormForward::added) runs the dropout, then itself.
#include <cmath>
#include <ios>
#include <sstream>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/dnnl_compat.h"
#include "backends/dtype.h"

namespace kosmos::cpu {
namespace {

enum ScratchSlot {
  kVariance = 0,
  kWeightGrad = 1,
  kBiasGrad = 2,
  kActivated = 3,
  kActivatedGrad = 4,
  kRemadeStats = 5,  // the statistics of the forward run again for LayerNormBackward::out
};

// act(in) as dense f32 [.., C] in scratch slot kActivated (ActivationForward widens a 16-bit input exactly).
TensorView activated_input(CpuContext & ctx, const TensorView & in, Activation kind) {
  const TensorView activated =
      make_view(ctx.scratch(kActivated, static_cast<size_t>(in.numel())), DType::kF32, in.ndim, in.dims.data());
  cpu_op(ctx, ActivationForward{activated, in, kind});
  return activated;
}

struct LayerNormShape {
  dnnl::memory::desc data;   // [rows, C] f32
  dnnl::memory::desc stats;  // [rows] f32
};

LayerNormShape layernorm_shape(int64_t rows, int64_t cols) {
  return {dnnl::memory::desc({rows, cols}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab),
          dnnl::memory::desc({rows}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a)};
}

std::string layernorm_key(const char * kind, int64_t rows, int64_t cols, float eps) {
  std::ostringstream key;
  key << std::hexfloat << kind << '|' << rows << 'x' << cols << '|' << eps;
  return key.str();
}

}  // namespace

void cpu_op(CpuContext & ctx, const LayerNormForward & op) {
  if (op.added.present()) {  // the join (DropoutForward's pass), then the LayerNorm of what it wrote
    cpu_op(ctx, DropoutForward{op.in, op.added, op.residual, op.dropout});
    LayerNormForward plain = op;
    plain.added = plain.residual = TensorView{};
    cpu_op(ctx, plain);
    return;
  }
  if (op.activation) {
    LayerNormForward plain = op;
    plain.in = activated_input(ctx, op.in, *op.activation);
    plain.activation.reset();
    cpu_op(ctx, plain);
    return;
  }
  if (any_narrow({op.out, op.in})) {  // bf16 activations: normalised in f32, rounded once
    WidenedOperands wide(ctx);
    cpu_op(ctx, LayerNormForward{wide.output(op.out), op.mean, op.rstd, wide.input(op.in), op.weight, op.bias, op.eps});
    wide.finish();
    return;
  }
  const int64_t cols = op.in.dim(-1), rows = op.in.rows();
  CachedPrimitive & cached = ctx.primitive(layernorm_key("layernorm_forward", rows, cols, op.eps), [&] {
    const LayerNormShape shape = layernorm_shape(rows, cols);
    const auto pd = dnnl_compat::layernorm_forward_pd(ctx.engine(), shape.data, shape.stats, op.eps);
    const dnnl::memory::desc affine({cols}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
    CachedPrimitive made{dnnl::layer_normalization_forward(pd), {}};
    for (int arg : {DNNL_ARG_SRC, DNNL_ARG_DST})
      made.args.emplace(arg, dnnl::memory(shape.data, ctx.engine(), DNNL_MEMORY_NONE));
    for (int arg : {DNNL_ARG_MEAN, DNNL_ARG_VARIANCE})
      made.args.emplace(arg, dnnl::memory(shape.stats, ctx.engine(), DNNL_MEMORY_NONE));
    for (int arg : {DNNL_ARG_SCALE, DNNL_ARG_SHIFT})
      made.args.emplace(arg, dnnl::memory(affine, ctx.engine(), DNNL_MEMORY_NONE));
    return made;
  });
  float * variance = ctx.scratch(kVariance, rows);
  ctx.execute(cached, {{DNNL_ARG_SRC, op.in.data}, {DNNL_ARG_DST, op.out.data}, {DNNL_ARG_MEAN, op.mean.data},
                       {DNNL_ARG_VARIANCE, variance}, {DNNL_ARG_SCALE, op.weight.data},
                       {DNNL_ARG_SHIFT, op.bias.data}});
  float * rstd = op.rstd.as<float>();
#pragma omp parallel for simd
  for (int64_t row = 0; row < rows; ++row) rstd[row] = 1.0f / std::sqrt(variance[row] + op.eps);
}

void cpu_op(CpuContext & ctx, const LayerNormBackward & op) {
  if (op.out.present()) {  // the backward, then the forward again into out (its statistics, the same, to scratch)
    LayerNormBackward plain = op;
    plain.out = plain.bias = TensorView{};
    cpu_op(ctx, plain);
    const int64_t rows = op.in.rows();
    float * stats = ctx.scratch(kRemadeStats, static_cast<size_t>(2 * rows));
    cpu_op(ctx, LayerNormForward{op.out, make_view(stats, DType::kF32, {rows}),
                                 make_view(stats + rows, DType::kF32, {rows}), op.in, op.weight, op.bias, op.eps,
                                 op.activation});
    return;
  }
  if (op.din_column_sums.present()) {  // din first, then its columns' sums as it holds them
    LayerNormBackward plain = op;
    plain.din_column_sums = TensorView{};
    cpu_op(ctx, plain);
    cpu_op(ctx, BiasBackward{op.din_column_sums, op.din});
    return;
  }
  if (op.residual_gradient.present()) {  // the LayerNorm's gradient, then the residual path's added to it
    LayerNormBackward plain = op;
    plain.residual_gradient = TensorView{};
    cpu_op(ctx, plain);
    cpu_op(ctx, Add{op.din, op.din, op.residual_gradient});
    return;
  }
  if (op.activation) {
    LayerNormBackward plain = op;
    plain.in = activated_input(ctx, op.in, *op.activation);
    plain.din = make_view(ctx.scratch(kActivatedGrad, static_cast<size_t>(op.in.numel())), DType::kF32, op.in.ndim,
                          op.in.dims.data());
    plain.activation.reset();
    cpu_op(ctx, plain);
    // din = act'(in) times the LayerNorm's gradient (ActivationBackward widens and rounds 16-bit operands).
    cpu_op(ctx, ActivationBackward{op.din, plain.din, op.in, *op.activation});
    return;
  }
  if (any_narrow({op.din, op.dout, op.in})) {  // as the forward
    WidenedOperands wide(ctx);
    cpu_op(ctx, LayerNormBackward{wide.output(op.din), op.dweight, op.dbias, wide.input(op.dout), wide.input(op.in),
                                  op.weight, op.mean, op.rstd, op.eps});
    wide.finish();
    return;
  }
  const int64_t cols = op.in.dim(-1), rows = op.in.rows();
  CachedPrimitive & cached = ctx.primitive(layernorm_key("layernorm_backward", rows, cols, op.eps), [&] {
    const LayerNormShape shape = layernorm_shape(rows, cols);
    const auto hint = dnnl_compat::layernorm_forward_pd(ctx.engine(), shape.data, shape.stats, op.eps);
    const auto pd = dnnl_compat::layernorm_backward_pd(ctx.engine(), shape.data, shape.stats, op.eps, hint);
    const dnnl::memory::desc affine({cols}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
    CachedPrimitive made{dnnl::layer_normalization_backward(pd), {}};
    for (int arg : {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC})
      made.args.emplace(arg, dnnl::memory(shape.data, ctx.engine(), DNNL_MEMORY_NONE));
    for (int arg : {DNNL_ARG_MEAN, DNNL_ARG_VARIANCE})
      made.args.emplace(arg, dnnl::memory(shape.stats, ctx.engine(), DNNL_MEMORY_NONE));
    for (int arg : {DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_DIFF_SCALE, DNNL_ARG_DIFF_SHIFT})
      made.args.emplace(arg, dnnl::memory(affine, ctx.engine(), DNNL_MEMORY_NONE));
    return made;
  });
  float * variance = ctx.scratch(kVariance, rows);
  float * weight_grad = ctx.scratch(kWeightGrad, cols);
  float * bias_grad = ctx.scratch(kBiasGrad, cols);
  const float * rstd = op.rstd.as<float>();
#pragma omp parallel for simd
  for (int64_t row = 0; row < rows; ++row) variance[row] = 1.0f / (rstd[row] * rstd[row]) - op.eps;
  // oneDNN reads the shift only to know its layout; the weight stands in for it (same shape, never used).
  ctx.execute(cached, {{DNNL_ARG_SRC, op.in.data}, {DNNL_ARG_DIFF_DST, op.dout.data},
                       {DNNL_ARG_DIFF_SRC, op.din.data}, {DNNL_ARG_MEAN, op.mean.data}, {DNNL_ARG_VARIANCE, variance},
                       {DNNL_ARG_SCALE, op.weight.data}, {DNNL_ARG_SHIFT, op.weight.data},
                       {DNNL_ARG_DIFF_SCALE, weight_grad}, {DNNL_ARG_DIFF_SHIFT, bias_grad}});
  float * dweight = op.dweight.as<float>();
  float * dbias = op.dbias.as<float>();
#pragma omp parallel for simd
  for (int64_t col = 0; col < cols; ++col) {
    dweight[col] += weight_grad[col];
    dbias[col] += bias_grad[col];
  }
}

}  // namespace kosmos::cpu
