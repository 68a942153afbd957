// cpu_kernels.h: one cpu_op overload per op in ops.h; CpuDevice::run dispatches to them with std::visit, so a
// missing overload is a compile error (exhaustive dispatch). Each op family lives in its own .cpp file.
#pragma once

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
// A dense f32 copy of `view` (exact from bf16 or f16) in scratch slot `slot`, for a kernel that computes in f32;
// an absent view stays absent.
TensorView widened(CpuContext & ctx, const TensorView & view, int slot);
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
