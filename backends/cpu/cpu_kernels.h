// cpu_kernels.h: one cpu_op overload per op in ops.h; CpuDevice::run dispatches to them with std::visit, so a
// missing overload is a compile error (exhaustive dispatch). Each op family lives in its own .cpp file.
#pragma once

#include <initializer_list>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_context.h"
#include "backends/ops.h"

namespace kosmos::cpu {

// matmul.cpp (oneDNN matmul)
void cpu_op(CpuContext & ctx, const Matmul & op);
void cpu_op(CpuContext & ctx, const BiasBackward & op);
// layernorm.cpp (oneDNN layer normalization)
void cpu_op(CpuContext & ctx, const LayerNormForward & op);
void cpu_op(CpuContext & ctx, const LayerNormBackward & op);
// eltwise.cpp (oneDNN eltwise and binary; own cast, copy, patchify and fill)
void cpu_op(CpuContext & ctx, const ActivationForward & op);
void cpu_op(CpuContext & ctx, const ActivationBackward & op);
void cpu_op(CpuContext & ctx, const Add & op);
void cpu_op(CpuContext & ctx, const Scale & op);
void cpu_op(CpuContext & ctx, const Cast & op);
void cpu_op(CpuContext & ctx, const Copy & op);
void cpu_op(CpuContext & ctx, const Patchify & op);
void cpu_op(CpuContext & ctx, const Fill & op);
// A 16-bit op run as its f32 self: input() widens a 16-bit view exactly into scratch, output() gives an f32 scratch
// view that finish() rounds once into the 16-bit view; f32 and absent views pass through. An in-place op hands
// the widened input as its output too (output_over). The slots start above those the f32 kernels use.
class WidenedOperands {
 public:
  explicit WidenedOperands(CpuContext & ctx) : ctx_(ctx) {}
  TensorView input(const TensorView & view);
  TensorView output(const TensorView & view);
  TensorView output_over(const TensorView & view, const TensorView & widened_input);
  void finish();

 private:
  TensorView scratch_like(const TensorView & view);  // a dense f32 view of view's dims in the next slot
  static constexpr int kFirstSlot = 16;
  CpuContext & ctx_;
  int next_slot_ = kFirstSlot;
  std::vector<std::pair<TensorView, TensorView>> outputs_;  // (16-bit target, its f32 scratch)
};
// Whether any of the views is 16-bit (the op then runs through WidenedOperands).
bool any_narrow(std::initializer_list<TensorView> views);
// attention.cpp (own tiled kernel)
void cpu_op(CpuContext & ctx, const AttentionForward & op);
void cpu_op(CpuContext & ctx, const AttentionBackward & op);
// xpos.cpp
void cpu_op(CpuContext & ctx, const XPosForward & op);
void cpu_op(CpuContext & ctx, const XPosBackward & op);
// embedding.cpp
void cpu_op(CpuContext & ctx, const EmbeddingForward & op);
void cpu_op(CpuContext & ctx, const EmbeddingBackward & op);
void cpu_op(CpuContext & ctx, const SinusoidalPositions & op);
// cross_entropy.cpp
void cpu_op(CpuContext & ctx, const CrossEntropyForward & op);
void cpu_op(CpuContext & ctx, const CrossEntropyBackward & op);
// dropout.cpp
void cpu_op(CpuContext & ctx, const DropoutForward & op);
void cpu_op(CpuContext & ctx, const DropoutBackward & op);
// optimizer.cpp
void cpu_op(CpuContext & ctx, const AdamWStep & op);
void cpu_op(CpuContext & ctx, const SquaredNorm & op);
// l2_normalize.cpp
void cpu_op(CpuContext & ctx, const L2NormalizeForward & op);
void cpu_op(CpuContext & ctx, const L2NormalizeBackward & op);

}  // namespace kosmos::cpu
