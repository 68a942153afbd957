// ops.cpp: op names, op_run (validate, ask the device, run), and the composite matmul backward that every
// backend shares because it is only matmuls and a bias reduction.
#include "backends/ops.h"

#include <type_traits>

#include "backends/device.h"
#include "backends/error.h"

namespace kosmos {
namespace {

template <typename Op>
constexpr const char * op_name_of() {
  if constexpr (std::is_same_v<Op, Matmul>) return "matmul";
  else if constexpr (std::is_same_v<Op, BiasBackward>) return "bias_backward";
  else if constexpr (std::is_same_v<Op, LayerNormForward>) return "layernorm_forward";
  else if constexpr (std::is_same_v<Op, LayerNormBackward>) return "layernorm_backward";
  else if constexpr (std::is_same_v<Op, ActivationForward>) return "activation_forward";
  else if constexpr (std::is_same_v<Op, ActivationBackward>) return "activation_backward";
  else if constexpr (std::is_same_v<Op, Add>) return "add";
  else if constexpr (std::is_same_v<Op, Scale>) return "scale";
  else if constexpr (std::is_same_v<Op, Cast>) return "cast";
  else if constexpr (std::is_same_v<Op, Copy>) return "copy";
  else if constexpr (std::is_same_v<Op, Patchify>) return "patchify";
  else if constexpr (std::is_same_v<Op, Fill>) return "fill";
  else if constexpr (std::is_same_v<Op, AttentionForward>) return "attention_forward";
  else if constexpr (std::is_same_v<Op, AttentionBackward>) return "attention_backward";
  else if constexpr (std::is_same_v<Op, XPosForward>) return "xpos_forward";
  else if constexpr (std::is_same_v<Op, XPosBackward>) return "xpos_backward";
  else if constexpr (std::is_same_v<Op, EmbeddingForward>) return "embedding_forward";
  else if constexpr (std::is_same_v<Op, EmbeddingBackward>) return "embedding_backward";
  else if constexpr (std::is_same_v<Op, SinusoidalPositions>) return "sinusoidal_positions";
  else if constexpr (std::is_same_v<Op, CrossEntropyForward>) return "cross_entropy_forward";
  else if constexpr (std::is_same_v<Op, CrossEntropyBackward>) return "cross_entropy_backward";
  else if constexpr (std::is_same_v<Op, DropoutForward>) return "dropout_forward";
  else if constexpr (std::is_same_v<Op, DropoutBackward>) return "dropout_backward";
  else if constexpr (std::is_same_v<Op, AdamWStep>) return "adamw_step";
  else if constexpr (std::is_same_v<Op, SquaredNorm>) return "squared_norm";
  else if constexpr (std::is_same_v<Op, L2NormalizeForward>) return "l2_normalize_forward";
  else if constexpr (std::is_same_v<Op, L2NormalizeBackward>) return "l2_normalize_backward";
  else static_assert(!sizeof(Op), "op_name_of: an op in OpDesc has no name");
}

// Batch entry `entry` of a 3-D view as a 2-D view (a 2-D view is returned as is).
TensorView squeeze_batch(const TensorView & view, int64_t entry) {
  if (view.ndim != 3) return view;
  const TensorView one = slice(view, 0, entry, 1);
  TensorView result = one;
  result.ndim = 2;
  result.dims = {one.dims[1], one.dims[2], 0, 0};
  result.strides = {one.strides[1], one.strides[2], 0, 0};
  return result;
}

// A 3-D [batch, M, K] view with dense batch rows as [batch*M, K].
TensorView merge_batch_rows(const TensorView & view) {
  if (view.ndim != 3) return view;
  KOSMOS_CHECK(view.stride(0) == view.dim(1) * view.stride(1), "matmul_backward: ", describe(view),
               " must have dense batch rows to pair with a 2-D dc");
  TensorView result = view;
  result.ndim = 2;
  result.dims = {view.dims[0] * view.dims[1], view.dims[2], 0, 0};
  result.strides = {view.strides[1], view.strides[2], 0, 0};
  return result;
}

}  // namespace

const char * op_name(const OpDesc & op) {
  return std::visit([](const auto & concrete) { return op_name_of<std::decay_t<decltype(concrete)>>(); }, op);
}

const char * activation_name(Activation kind) {
  switch (kind) {
    case Activation::kGelu: return "gelu";
    case Activation::kQuickGelu: return "quick_gelu";
  }
  KOSMOS_FAIL("activation_name: unknown activation ", static_cast<int>(kind), " (known: gelu, quick_gelu)");
}

void op_run(Device & device, const OpDesc & op, Stream & stream) {
  validate(op);
  const OpSupport support = device.supports(op);
  KOSMOS_CHECK(support.supported, op_name(op), " is not available on device ", device.name(), ": ", support.reason);
  device.run(op, stream);
}

void matmul_backward(Device & device, const MatmulBackward & op, Stream & stream) {
  // Forward: C = alpha * op(A) op(B). With Ahat = op(A), Bhat = op(B):
  //   dAhat = alpha * dC Bhat^T,   dBhat = alpha * Ahat^T dC,
  // and dA is dAhat (or its transpose when trans_a), dB likewise: each one Matmul with the flags arranged below.
  // An operand broadcast over the batch (2-D, or batch 1) gets the sum over the batch: one 2-D pass per entry.
  TensorView a = op.a, da = op.da, dc = op.dc;
  if (dc.ndim == 2 && a.ndim == 3) {  // the forward read A as [batch*M, K]
    a = merge_batch_rows(a);
    if (da.present()) da = merge_batch_rows(da);
  }
  const int64_t batch = dc.ndim == 3 ? dc.dim(0) : 1;
  auto broadcast = [batch](const TensorView & x) { return batch > 1 && (x.ndim == 2 || x.dim(0) == 1); };
  auto entry = [](const TensorView & x, int64_t e) { return x.ndim == 3 ? squeeze_batch(x, x.dim(0) == 1 ? 0 : e) : x; };
  auto gradient = [&](const TensorView & grad, bool accumulate, bool of_a) {
    const bool summed = broadcast(of_a ? a : op.b);
    for (int64_t e = 0; e < (summed ? batch : 1); ++e) {
      const TensorView g = summed ? entry(grad, 0) : grad;
      const TensorView a_e = summed ? entry(a, e) : a, b_e = summed ? entry(op.b, e) : op.b;
      const TensorView dc_e = summed ? entry(dc, e) : dc;
      const float beta = accumulate || e > 0 ? 1.0f : 0.0f;
      Matmul step;
      if (of_a) {
        step = op.trans_a ? Matmul{g, b_e, dc_e, TensorView{}, op.trans_b, true, op.alpha, beta}  // dAhat^T
                          : Matmul{g, dc_e, b_e, TensorView{}, false, !op.trans_b, op.alpha, beta};
      } else {
        step = op.trans_b ? Matmul{g, dc_e, a_e, TensorView{}, true, op.trans_a, op.alpha, beta}  // dBhat^T
                          : Matmul{g, a_e, dc_e, TensorView{}, !op.trans_a, false, op.alpha, beta};
      }
      op_run(device, step, stream);
    }
  };
  if (da.present()) gradient(da, op.accumulate_da, true);
  if (op.db.present()) gradient(op.db, true, false);
  if (op.dbias.present()) op_run(device, BiasBackward{op.dbias, merge_batch_rows(dc)}, stream);
}

}  // namespace kosmos
