// matmul.cpp: Matmul on oneDNN's matmul primitive (alpha as an eltwise_linear post-op, beta as a sum post-op,
// transposes as strides, batch broadcast as size-1 dims), and the bias reduction of the linear backward.
#include <omp.h>

#include <algorithm>
#include <ios>
#include <sstream>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/dnnl_compat.h"
#include "backends/error.h"

namespace kosmos::cpu {
namespace {

// op(view): the last two dims swapped when transposed.
TensorView logical(const TensorView & view, bool transposed) {
  TensorView result = view;
  if (transposed) {
    std::swap(result.dims[view.ndim - 1], result.dims[view.ndim - 2]);
    std::swap(result.strides[view.ndim - 1], result.strides[view.ndim - 2]);
  }
  return result;
}

// The view with a leading batch dim of 1 when it has only two.
TensorView with_batch(const TensorView & view) {
  if (view.ndim == 3) return view;
  TensorView result = view;
  result.ndim = 3;
  result.dims = {1, view.dims[0], view.dims[1], 0};
  result.strides = {view.dims[0] * view.strides[0], view.strides[0], view.strides[1], 0};
  return result;
}

// A 3-D [batch, M, K] view with dense batch rows as [batch*M, K].
TensorView rows_merged(const TensorView & view) {
  if (view.ndim != 3) return view;
  TensorView result = view;
  result.ndim = 2;
  result.dims = {view.dims[0] * view.dims[1], view.dims[2], 0, 0};
  result.strides = {view.strides[1], view.strides[2], 0, 0};
  return result;
}

// c = beta * c (+ bias): the whole op when alpha == 0, and the bias pass when alpha != 1 with a bias.
void scale_rows_add_bias(const TensorView & c, float beta, const TensorView & bias, bool apply_beta) {
  const int64_t cols = c.dim(-1), rows = c.rows();
  const int64_t row_stride = c.stride(-2);
  const int64_t rows_per_batch = c.dim(-2);
  const int64_t batch_stride = c.ndim == 3 ? c.stride(0) : 0;
#pragma omp parallel for
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t base = (row / rows_per_batch) * batch_stride + (row % rows_per_batch) * row_stride;
    for (int64_t col = 0; col < cols; ++col) {
      float value = apply_beta ? (beta == 0.0f ? 0.0f : beta * load_as_float(c.data, c.dtype, base + col))
                               : load_as_float(c.data, c.dtype, base + col);
      if (bias.present()) value += load_as_float(bias.data, bias.dtype, col);
      store_from_float(c.data, c.dtype, base + col, value);
    }
  }
}

}  // namespace

void cpu_op(CpuContext & ctx, const Matmul & op) {
  if (op.alpha == 0.0f) {  // no product at all: c = beta * c + bias
    scale_rows_add_bias(op.c, op.beta, op.bias, true);
    return;
  }
  if ((op.a.dtype == DType::kBF16 && dnnl::get_effective_cpu_isa() < dnnl::cpu_isa::avx512_core) ||
      op.a.dtype == DType::kF16) {
    // oneDNN 2.x has no bf16 kernels below AVX-512, and f16 ones only on CPUs with AVX-512 FP16: the operands widen
    // exactly to f32 and the f32 primitive multiplies them (a 16-bit matmul with f32 accumulation); a 16-bit C is
    // computed in f32 and rounded once.
    WidenedOperands wide(ctx);
    const TensorView c = wide.input(op.c);  // read too when beta != 0
    cpu_op(ctx, Matmul{wide.output_over(op.c, c), wide.input(op.a), wide.input(op.b), wide.input(op.bias), op.trans_a,
                       op.trans_b, op.alpha, op.beta});
    wide.finish();
    return;
  }
  TensorView src = logical(op.a, op.trans_a), weights = logical(op.b, op.trans_b), dst = op.c;
  if (dst.ndim == 2) {
    src = rows_merged(src);  // validated: untransposed with dense batch rows when 3-D
    if (weights.ndim == 3) weights = rows_merged(weights);  // [1, K, N] -> [K, N]
  } else {
    src = with_batch(src);
    weights = with_batch(weights);
  }
  const bool fuse_bias = op.bias.present() && op.alpha == 1.0f;
  TensorView bias_view;
  if (fuse_bias) {
    bias_view = op.bias;
    bias_view.ndim = dst.ndim;
    bias_view.dims = dst.ndim == 3 ? std::array<int64_t, kMaxDims>{1, 1, op.bias.dims[0], 0}
                                   : std::array<int64_t, kMaxDims>{1, op.bias.dims[0], 0, 0};
    bias_view.strides = dst.ndim == 3 ? std::array<int64_t, kMaxDims>{op.bias.dims[0], op.bias.dims[0], 1, 0}
                                      : std::array<int64_t, kMaxDims>{op.bias.dims[0], 1, 0, 0};
  }
  std::ostringstream key;
  key << std::hexfloat << "matmul|" << key_of(src) << '|' << key_of(weights) << '|' << key_of(dst) << '|'
      << (fuse_bias ? key_of(bias_view) : "-") << '|' << op.alpha << '|' << op.beta;
  CachedPrimitive & cached = ctx.primitive(key.str(), [&] {
    dnnl::post_ops post_ops;
    // acc -> acc + (beta / alpha) * c_old -> alpha * (...) gives alpha * A B + beta * c_old.
    if (op.beta != 0.0f) dnnl_compat::append_sum(post_ops, op.beta / op.alpha);
    if (op.alpha != 1.0f) dnnl_compat::append_eltwise(post_ops, dnnl::algorithm::eltwise_linear, op.alpha, 0.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(post_ops);
    const dnnl::memory::desc src_md = memory_desc(src), weights_md = memory_desc(weights), dst_md = memory_desc(dst);
    const dnnl::memory::desc bias_md = fuse_bias ? memory_desc(bias_view) : dnnl::memory::desc();
    const auto pd = dnnl_compat::matmul_pd(ctx.engine(), src_md, weights_md, fuse_bias ? &bias_md : nullptr, dst_md,
                                           attr);
    CachedPrimitive made{dnnl::matmul(pd), {}};
    made.args.emplace(DNNL_ARG_SRC, dnnl::memory(src_md, ctx.engine(), DNNL_MEMORY_NONE));
    made.args.emplace(DNNL_ARG_WEIGHTS, dnnl::memory(weights_md, ctx.engine(), DNNL_MEMORY_NONE));
    made.args.emplace(DNNL_ARG_DST, dnnl::memory(dst_md, ctx.engine(), DNNL_MEMORY_NONE));
    if (fuse_bias) made.args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias_md, ctx.engine(), DNNL_MEMORY_NONE));
    return made;
  });
  if (fuse_bias) {
    ctx.execute(cached, {{DNNL_ARG_SRC, src.data}, {DNNL_ARG_WEIGHTS, weights.data}, {DNNL_ARG_DST, dst.data},
                         {DNNL_ARG_BIAS, op.bias.data}});
  } else {
    ctx.execute(cached, {{DNNL_ARG_SRC, src.data}, {DNNL_ARG_WEIGHTS, weights.data}, {DNNL_ARG_DST, dst.data}});
    if (op.bias.present()) scale_rows_add_bias(op.c, 1.0f, op.bias, false);
  }
}

void cpu_op(CpuContext &, const BiasBackward & op) {
  constexpr int64_t kBlock = 256;  // columns per task: rows stream through cache, sums stay in registers
  const int64_t cols = op.dout.dim(-1), rows = op.dout.rows();
  const int64_t row_stride = op.dout.ndim == 2 ? op.dout.stride(0) : cols;
  float * dbias = op.dbias.as<float>();
#pragma omp parallel for
  for (int64_t first = 0; first < cols; first += kBlock) {
    const int64_t width = std::min(kBlock, cols - first);
    double sums[kBlock] = {};
    for (int64_t row = 0; row < rows; ++row) {
      if (op.dout.dtype != DType::kF32) {  // bf16 or f16
        const int64_t line = row * row_stride + first;
        for (int64_t col = 0; col < width; ++col) sums[col] += load_as_float(op.dout.data, op.dout.dtype, line + col);
      } else {
        const float * line = op.dout.as<float>() + row * row_stride + first;
#pragma omp simd
        for (int64_t col = 0; col < width; ++col) sums[col] += line[col];
      }
    }
    for (int64_t col = 0; col < width; ++col) dbias[first + col] += static_cast<float>(sums[col]);
  }
}

}  // namespace kosmos::cpu
