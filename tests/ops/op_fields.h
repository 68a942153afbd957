// op_fields.h: the tensor operands of every op descriptor by name, so the validation test can corrupt each one in
// turn. A new op needs a line here (the exhaustive visit below fails to compile without it).
#pragma once

#include <utility>
#include <vector>

#include "backends/ops.h"

namespace kosmos::testing {

using Operands = std::vector<std::pair<const char *, TensorView *>>;

inline Operands fields_of(Matmul & op) { return {{"c", &op.c}, {"a", &op.a}, {"b", &op.b}, {"bias", &op.bias}}; }
inline Operands fields_of(BiasBackward & op) { return {{"dbias", &op.dbias}, {"dout", &op.dout}}; }
inline Operands fields_of(LayerNormForward & op) {
  return {{"out", &op.out},       {"mean", &op.mean},   {"rstd", &op.rstd},         {"in", &op.in},
          {"weight", &op.weight}, {"bias", &op.bias},   {"added", &op.added},       {"residual", &op.residual}};
}
inline Operands fields_of(LayerNormBackward & op) {
  return {{"din", &op.din},     {"dweight", &op.dweight}, {"dbias", &op.dbias},
          {"dout", &op.dout},   {"in", &op.in},           {"weight", &op.weight},
          {"mean", &op.mean},   {"rstd", &op.rstd},       {"residual_gradient", &op.residual_gradient},
          {"din_column_sums", &op.din_column_sums},       {"out", &op.out},
          {"bias", &op.bias}};
}
inline Operands fields_of(ActivationForward & op) { return {{"out", &op.out}, {"in", &op.in}}; }
inline Operands fields_of(ActivationBackward & op) { return {{"din", &op.din}, {"dout", &op.dout}, {"in", &op.in}}; }
inline Operands fields_of(Add & op) { return {{"out", &op.out}, {"a", &op.a}, {"b", &op.b}}; }
inline Operands fields_of(Scale & op) { return {{"out", &op.out}, {"in", &op.in}}; }
inline Operands fields_of(Cast & op) { return {{"out", &op.out}, {"in", &op.in}}; }
inline Operands fields_of(Copy & op) { return {{"out", &op.out}, {"in", &op.in}}; }
inline Operands fields_of(Patchify & op) { return {{"out", &op.out}, {"images", &op.images}}; }
inline Operands fields_of(Fill & op) { return {{"out", &op.out}}; }
inline Operands fields_of(AttentionForward & op) {
  return {{"out", &op.out}, {"lse", &op.lse}, {"q", &op.q}, {"k", &op.k}, {"v", &op.v}, {"keep", &op.keep}};
}
inline Operands fields_of(AttentionBackward & op) {
  return {{"dq", &op.dq}, {"dk", &op.dk}, {"dv", &op.dv}, {"dout", &op.dout}, {"q", &op.q},
          {"k", &op.k},   {"v", &op.v},   {"out", &op.out}, {"lse", &op.lse}, {"keep", &op.keep}};
}
inline Operands fields_of(XPosForward & op) { return {{"out", &op.out}, {"in", &op.in}}; }
inline Operands fields_of(XPosBackward & op) { return {{"din", &op.din}, {"dout", &op.dout}}; }
inline Operands fields_of(EmbeddingForward & op) { return {{"out", &op.out}, {"ids", &op.ids}, {"table", &op.table}}; }
inline Operands fields_of(EmbeddingBackward & op) {
  return {{"dtable", &op.dtable}, {"dout", &op.dout}, {"ids", &op.ids}};
}
inline Operands fields_of(SinusoidalPositions & op) { return {{"out", &op.out}, {"positions", &op.positions}}; }
inline Operands fields_of(CrossEntropyForward & op) {
  return {{"loss", &op.loss}, {"lse", &op.lse}, {"logits", &op.logits}, {"targets", &op.targets},
          {"weights", &op.weights}};
}
inline Operands fields_of(CrossEntropyBackward & op) {
  return {{"dlogits", &op.dlogits}, {"logits", &op.logits}, {"targets", &op.targets}, {"weights", &op.weights},
          {"lse", &op.lse}};
}
inline Operands fields_of(DropoutForward & op) {
  return {{"out", &op.out}, {"in", &op.in}, {"residual", &op.residual}};
}
inline Operands fields_of(DropoutBackward & op) {
  return {{"din", &op.din}, {"dout", &op.dout}, {"din_column_sums", &op.din_column_sums}};
}
inline Operands fields_of(AdamWStep & op) {
  return {{"param", &op.param}, {"m", &op.m}, {"v", &op.v}, {"grad", &op.grad}};
}
inline Operands fields_of(SquaredNorm & op) { return {{"out", &op.out}, {"in", &op.in}}; }
inline Operands fields_of(L2NormalizeForward & op) { return {{"out", &op.out}, {"norm", &op.norm}, {"in", &op.in}}; }
inline Operands fields_of(L2NormalizeBackward & op) {
  return {{"din", &op.din}, {"dout", &op.dout}, {"out", &op.out}, {"norm", &op.norm}};
}

inline Operands operand_fields(OpDesc & op) {
  return std::visit([](auto & concrete) { return fields_of(concrete); }, op);
}

}  // namespace kosmos::testing
