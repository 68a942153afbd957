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
  //   dAhat = alpha * dC Bhat^T,   dBhat = alpha * Ahat^T dC.
  // dA is dAhat (or its transpose when trans_a), dB likewise; each is one Matmul with the flags arranged below.
  if (op.da.present()) {
    Matmul da;
    if (!op.trans_a) {  // dA = alpha * dC * Bhat^T (read as [batch*M, K] when the forward did)
      const TensorView da_rows = op.dc.ndim == 2 ? merge_batch_rows(op.da) : op.da;
      da = Matmul{da_rows, op.dc, op.b, TensorView{}, false, !op.trans_b, op.alpha, op.accumulate_da ? 1.0f : 0.0f};
    } else {  // dA = dAhat^T = alpha * Bhat * dC^T
      da = Matmul{op.da, op.b, op.dc, TensorView{}, op.trans_b, true, op.alpha, op.accumulate_da ? 1.0f : 0.0f};
    }
    op_run(device, da, stream);
  }
  if (op.db.present()) {
    // A B shared by a batched product (2-D, or batch 1) gets the sum over the batch: one 2-D matmul per entry,
    // each accumulating, or a single one when the forward read A as [batch*M, K].
    const int64_t batch = op.a.ndim == 3 ? op.a.dim(0) : 1;
    const bool shared_b = batch > 1 && (op.b.ndim == 2 || op.b.dim(0) == 1);
    const bool flattened = shared_b && op.dc.ndim == 2;
    const int64_t passes = shared_b && !flattened ? batch : 1;
    for (int64_t entry = 0; entry < passes; ++entry) {
      TensorView a = op.a, dc = op.dc, db = op.db;
      if (shared_b) {
        db = squeeze_batch(op.db, 0);
        a = flattened ? merge_batch_rows(op.a) : squeeze_batch(op.a, entry);
        if (!flattened) dc = squeeze_batch(op.dc, entry);
      }
      Matmul step;
      if (!op.trans_b) {  // dB = alpha * Ahat^T dC
        step = Matmul{db, a, dc, TensorView{}, !op.trans_a, false, op.alpha, 1.0f};
      } else {  // dB = dBhat^T = alpha * dC^T Ahat
        step = Matmul{db, dc, a, TensorView{}, true, op.trans_a, op.alpha, 1.0f};
      }
      op_run(device, step, stream);
    }
  }
  if (op.dbias.present()) op_run(device, BiasBackward{op.dbias, op.dc}, stream);
}

}  // namespace kosmos
