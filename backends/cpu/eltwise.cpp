// eltwise.cpp: activations (exact GELU = oneDNN gelu_erf, QuickGELU = oneDNN swish with alpha 1.702), add and
// scale on oneDNN; cast (exact round-to-nearest-even conversions) and fill as plain loops. Dense tensors are
// handed to oneDNN as flat vectors, so one primitive serves every shape with the same element count.
#include <algorithm>
#include <cstring>
#include <ios>
#include <sstream>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/dnnl_compat.h"
#include "backends/error.h"

namespace kosmos::cpu {
namespace {

constexpr float kQuickGeluAlpha = 1.702f;

struct EltwiseAlgorithm {
  dnnl::algorithm algorithm;
  float alpha;
};

EltwiseAlgorithm eltwise_algorithm(Activation kind) {
  switch (kind) {
    case Activation::kGelu: return {dnnl::algorithm::eltwise_gelu_erf, 0.0f};
    case Activation::kQuickGelu: return {dnnl::algorithm::eltwise_swish, kQuickGeluAlpha};
  }
  KOSMOS_FAIL("cpu activation: unknown kind ", static_cast<int>(kind), " (known: gelu, quick_gelu)");
}

dnnl::memory::desc flat_desc(const TensorView & view) {
  return dnnl::memory::desc({view.numel()}, dnnl_type(view.dtype), dnnl::memory::format_tag::a);
}

std::string flat_key(const char * kind, const TensorView & view, float alpha) {
  std::ostringstream key;
  key << std::hexfloat << kind << '|' << dtype_name(view.dtype) << '|' << view.numel() << '|' << alpha;
  return key.str();
}

CachedPrimitive eltwise_forward_primitive(CpuContext & ctx, dnnl::algorithm algorithm, const TensorView & view,
                                          float alpha, dnnl::prop_kind prop) {
  const dnnl::memory::desc md = flat_desc(view);
  const auto pd = dnnl_compat::eltwise_forward_pd(ctx.engine(), prop, algorithm, md, alpha, 0.0f);
  CachedPrimitive made{dnnl::eltwise_forward(pd), {}};
  for (int arg : {DNNL_ARG_SRC, DNNL_ARG_DST}) made.args.emplace(arg, dnnl::memory(md, ctx.engine(), DNNL_MEMORY_NONE));
  return made;
}

}  // namespace

void cpu_op(CpuContext & ctx, const ActivationForward & op) {
  if (op.in.numel() == 0) return;
  if (any_narrow({op.out, op.in})) {  // bf16: computed in f32 (oneDNN 2.x has bf16 eltwise only with AVX-512)
    WidenedOperands wide(ctx);
    cpu_op(ctx, ActivationForward{wide.output(op.out), wide.input(op.in), op.kind});
    wide.finish();
    return;
  }
  const EltwiseAlgorithm chosen = eltwise_algorithm(op.kind);
  CachedPrimitive & cached = ctx.primitive(flat_key(activation_name(op.kind), op.in, chosen.alpha), [&] {
    return eltwise_forward_primitive(ctx, chosen.algorithm, op.in, chosen.alpha, dnnl::prop_kind::forward_training);
  });
  ctx.execute(cached, {{DNNL_ARG_SRC, op.in.data}, {DNNL_ARG_DST, op.out.data}});
}

void cpu_op(CpuContext & ctx, const ActivationBackward & op) {
  if (op.in.numel() == 0) return;
  if (any_narrow({op.din, op.dout, op.in})) {  // as the forward
    WidenedOperands wide(ctx);
    cpu_op(ctx, ActivationBackward{wide.output(op.din), wide.input(op.dout), wide.input(op.in), op.kind});
    wide.finish();
    return;
  }
  const EltwiseAlgorithm chosen = eltwise_algorithm(op.kind);
  const std::string key = flat_key(activation_name(op.kind), op.in, chosen.alpha) + "|backward";
  CachedPrimitive & cached = ctx.primitive(key, [&] {
    const dnnl::memory::desc md = flat_desc(op.in);
    const auto hint = dnnl_compat::eltwise_forward_pd(ctx.engine(), dnnl::prop_kind::forward_training,
                                                      chosen.algorithm, md, chosen.alpha, 0.0f);
    const auto pd = dnnl_compat::eltwise_backward_pd(ctx.engine(), chosen.algorithm, md, chosen.alpha, 0.0f, hint);
    CachedPrimitive made{dnnl::eltwise_backward(pd), {}};
    for (int arg : {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC})
      made.args.emplace(arg, dnnl::memory(md, ctx.engine(), DNNL_MEMORY_NONE));
    return made;
  });
  ctx.execute(cached, {{DNNL_ARG_SRC, op.in.data}, {DNNL_ARG_DIFF_DST, op.dout.data}, {DNNL_ARG_DIFF_SRC, op.din.data}});
}

void cpu_op(CpuContext & ctx, const Add & op) {
  if (op.a.numel() == 0) return;
  // As [outer, inner] with b [1, inner] when b covers only a's trailing dims (oneDNN broadcasts size-1 dims).
  const int64_t inner = op.b.numel(), outer = op.a.numel() / inner;
  CachedPrimitive & cached = ctx.primitive(flat_key("add", op.a, static_cast<float>(inner)), [&] {
    const auto type = dnnl_type(op.a.dtype);
    const dnnl::memory::desc md({outer, inner}, type, dnnl::memory::format_tag::ab);
    const dnnl::memory::desc b_md({op.b.numel() == op.a.numel() ? outer : 1, inner}, type,
                                  dnnl::memory::format_tag::ab);
    const auto pd = dnnl_compat::binary_pd(ctx.engine(), dnnl::algorithm::binary_add, md, b_md, md);
    CachedPrimitive made{dnnl::binary(pd), {}};
    made.args.emplace(DNNL_ARG_SRC_0, dnnl::memory(md, ctx.engine(), DNNL_MEMORY_NONE));
    made.args.emplace(DNNL_ARG_SRC_1, dnnl::memory(b_md, ctx.engine(), DNNL_MEMORY_NONE));
    made.args.emplace(DNNL_ARG_DST, dnnl::memory(md, ctx.engine(), DNNL_MEMORY_NONE));
    return made;
  });
  ctx.execute(cached, {{DNNL_ARG_SRC_0, op.a.data}, {DNNL_ARG_SRC_1, op.b.data}, {DNNL_ARG_DST, op.out.data}});
}

void cpu_op(CpuContext & ctx, const Scale & op) {
  if (op.in.numel() == 0) return;
  CachedPrimitive & cached = ctx.primitive(flat_key("scale", op.in, op.alpha), [&] {
    return eltwise_forward_primitive(ctx, dnnl::algorithm::eltwise_linear, op.in, op.alpha,
                                     dnnl::prop_kind::forward_inference);
  });
  ctx.execute(cached, {{DNNL_ARG_SRC, op.in.data}, {DNNL_ARG_DST, op.out.data}});
}

namespace {

float load_element(const TensorView & view, int64_t index) { return load_as_float(view.data, view.dtype, index); }
void store_element(const TensorView & view, int64_t index, float value) {
  store_from_float(view.data, view.dtype, index, value);
}

// A view walked row by row over all but its last dim, the way Copy and Cast read and write any strides.
struct Rows {
  int64_t count, width;  // rows, and elements per row
  explicit Rows(const TensorView & view)
      : count(view.numel() / std::max<int64_t>(view.ndim == 0 ? 1 : view.dim(-1), 1)),
        width(view.ndim == 0 ? 1 : view.dim(-1)) {}
};
// The offset in elements of row `row` of `view`, and the step between its elements.
int64_t row_offset(const TensorView & view, int64_t row) {
  int64_t offset = 0;
  for (int axis = view.ndim - 2; axis >= 0; --axis) {
    offset += (row % view.dims[axis]) * view.strides[axis];
    row /= view.dims[axis];
  }
  return offset;
}
int64_t element_step(const TensorView & view) { return view.ndim == 0 ? 1 : view.stride(-1); }

// out[i] = convert(in[i]) over `count` dense elements of the given storage types.
template <typename From, typename To, typename Convert>
void convert_flat(const TensorView & in, const TensorView & out, int64_t count, Convert convert) {
  const From * source = in.as<From>();
  To * target = out.as<To>();
#pragma omp parallel for simd
  for (int64_t index = 0; index < count; ++index) target[index] = convert(source[index]);
}

}  // namespace

TensorView WidenedOperands::input(const TensorView & view) {
  if (!view.present() || view.dtype == DType::kF32) return view;
  const TensorView wide = scratch_like(view);
  cpu_op(ctx_, Cast{wide, view});
  return wide;
}

TensorView WidenedOperands::output(const TensorView & view) {
  if (!view.present() || view.dtype == DType::kF32) return view;
  outputs_.emplace_back(view, scratch_like(view));
  return outputs_.back().second;
}

TensorView WidenedOperands::scratch_like(const TensorView & view) {
  return make_view(ctx_.scratch(next_slot_++, static_cast<size_t>(view.numel())), DType::kF32, view.ndim,
                   view.dims.data());
}

TensorView WidenedOperands::output_over(const TensorView & view, const TensorView & widened_input) {
  if (!view.present() || view.dtype == DType::kF32) return view;
  outputs_.emplace_back(view, widened_input);
  return widened_input;
}

void WidenedOperands::finish() {
  for (const auto & [target, wide] : outputs_) cpu_op(ctx_, Cast{target, wide});
  outputs_.clear();
}

bool any_narrow(std::initializer_list<TensorView> views) {
  for (const TensorView & view : views)
    if (view.present() && view.dtype != DType::kF32) return true;
  return false;
}

void cpu_op(CpuContext &, const Cast & op) {
  if (op.in.is_contiguous() && op.out.is_contiguous()) {  // one flat loop (a whole parameter buffer is one row)
    const int64_t count = op.in.numel();
    // f32 <-> bf16, what the widened ops and the compute copies cast, in typed loops that vectorize.
    if (op.in.dtype == DType::kF32 && op.out.dtype == DType::kBF16) {
      convert_flat<float, uint16_t>(op.in, op.out, count, [](float value) { return float_to_bf16(value); });
      return;
    }
    if (op.in.dtype == DType::kBF16 && op.out.dtype == DType::kF32) {
      convert_flat<uint16_t, float>(op.in, op.out, count, [](uint16_t value) { return bf16_to_float(value); });
      return;
    }
#pragma omp parallel for
    for (int64_t index = 0; index < count; ++index) store_element(op.out, index, load_element(op.in, index));
    return;
  }
  const Rows rows(op.in);
  const int64_t in_step = element_step(op.in), out_step = element_step(op.out);
#pragma omp parallel for if (rows.count > 64)
  for (int64_t row = 0; row < rows.count; ++row) {
    const int64_t in_base = row_offset(op.in, row), out_base = row_offset(op.out, row);
    for (int64_t col = 0; col < rows.width; ++col)
      store_element(op.out, out_base + col * out_step, load_element(op.in, in_base + col * in_step));
  }
}

void cpu_op(CpuContext &, const Copy & op) {
  // Row by row over all but the last dim; a dense last dim is one memcpy per row.
  const Rows rows(op.in);
  const size_t element = dtype_size(op.in.dtype);
  const int64_t in_step = element_step(op.in), out_step = element_step(op.out);
#pragma omp parallel for if (rows.count > 64)
  for (int64_t row = 0; row < rows.count; ++row) {
    const char * source = static_cast<const char *>(op.in.data) + row_offset(op.in, row) * element;
    char * target = static_cast<char *>(op.out.data) + row_offset(op.out, row) * element;
    if (in_step == 1 && out_step == 1) {
      std::memcpy(target, source, static_cast<size_t>(rows.width) * element);
    } else {
      for (int64_t col = 0; col < rows.width; ++col)
        std::memcpy(target + col * out_step * element, source + col * in_step * element, element);
    }
  }
}

void cpu_op(CpuContext &, const Patchify & op) {
  const int64_t images = op.images.dim(0), channels = op.images.dim(1), height = op.images.dim(2);
  const int64_t width = op.images.dim(3), p = op.patch, across = width / p, patches = (height / p) * across;
  const float * source = op.images.as<float>();
  float * target = op.out.as<float>();
#pragma omp parallel for
  for (int64_t row = 0; row < images * patches; ++row) {
    const int64_t n = row / patches, patch = row % patches, top = (patch / across) * p, left = (patch % across) * p;
    float * out = target + row * channels * p * p;
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t y = 0; y < p; ++y)
        std::memcpy(out + (c * p + y) * p, source + ((n * channels + c) * height + top + y) * width + left,
                    static_cast<size_t>(p) * sizeof(float));
  }
}

void cpu_op(CpuContext &, const Fill & op) {
  const int64_t count = op.out.numel();
  if (op.out.dtype == DType::kF32) {
    float * out = op.out.as<float>();
#pragma omp parallel for simd
    for (int64_t index = 0; index < count; ++index) out[index] = op.value;
    return;
  }
#pragma omp parallel for
  for (int64_t index = 0; index < count; ++index) store_element(op.out, index, op.value);
}

}  // namespace kosmos::cpu
