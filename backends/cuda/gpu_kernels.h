// gpu_kernels.h: the GPU backend's per-device context and one gpu_op() per op family, each enqueueing its kernels
// on the given stream. Included by the .cu files only (after gpu_common.cuh); gpu_device.cu dispatches to these.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <unordered_map>

#include "backends/cuda/gpu_common.cuh"
#include "backends/device.h"
#include "backends/ops.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {

struct GemmPlans;  // matmul.cu: the cuBLASLt handle and the algorithm chosen per shape
void delete_gemm_plans(GemmPlans * plans);
using GemmPlansOwner = std::unique_ptr<GemmPlans, void (*)(GemmPlans *)>;
GemmPlansOwner make_gemm_plans(int ordinal);  // on that device
const char * gemm_library_name();  // "cuBLASLt", or the own kernels' name
// GEMM tuning (Device::set_gemm_tuning): how many of the library's algorithms a new plan times, and what the tuning
// has chosen so far, for a log ("" while nothing was tuned).
void set_gemm_tuning(GemmPlans & plans, int candidates);
std::string gemm_tuning_report(const GemmPlans & plans);

// Which GEMM runs a Matmul: the vendor library where it takes the case, else the own tiled kernel; or the own
// kernel always (the ROCm build without hipBLASLt, and the test that checks that kernel on an NVIDIA card).
enum class GemmPath : uint8_t { kLibrary, kOwnKernels };

// Which tensor-core kernels run bf16 attention on NVIDIA: the mma.sync ones (kernels_attention_mma.cu) where they
// take the head size, else the WMMA ones (kernels_attention_tc.cu); or the WMMA ones always (the backend
// "cuda-wmma", to compare the two); or cuDNN's fused attention where it takes the op, else the mma.sync ones (the
// backend "cuda-cudnn", cudnn_attention.cu).
enum class AttentionKernels : uint8_t { kMma, kWmma, kCudnn };

struct CudnnAttention;  // cudnn_attention.cu: cuDNN's library, handle and plans, for AttentionKernels::kCudnn
void delete_cudnn_attention(CudnnAttention * state);
using CudnnAttentionOwner = std::unique_ptr<CudnnAttention, void (*)(CudnnAttention *)>;

// Scratch slots, one per user that may hold it across kernels of one op.
enum ScratchSlot : int {
  kScratchReduce = 0,
  kScratchRows = 1,
  kScratchAttention = 2,
  kScratchTable = 3,          // xPos's factors for queries (upscaled)
  kScratchColumnSums = 4,     // add_column_sums' partial sums, inside one call
  kScratchActivated = 5,      // a LayerNorm's activated input, where it runs as its parts (kernels_norm.cu)
  kScratchActivatedGrad = 6,  // and the gradient at it
  kScratchBias = 7,           // a matmul's bias in C's dtype for cuBLASLt's epilogue (matmul.cu)
  kScratchGemmWorkspace = 8,  // cuBLASLt's workspace (matmul.cu)
  kScratchAttentionDq = 9,    // the mma.sync attention backward's dq sums, where it adds them up by atomics
  kScratchEmbedding = 10,     // the embedding backward's grouping of the tokens by row (kernels_positions.cu)
  kScratchAttentionKeep = 11,  // the mma.sync attention's dropout keep record, where the op gives none to keep
  kScratchTableDown = 12,      // and for keys (downscaled)
  kScratchCudnn = 13,          // cuDNN's attention: its generator state, the backward's f32 sums, its workspace
  kScratchRemadeStats = 14,    // a LayerNorm backward's statistics, where it runs the forward again for its out
  kScratchWidened = 15,        // the first of 8: an attention's bf16 tensors as f32 for the f32 kernels
  kScratchSlots = kScratchWidened + 8
};

// What the kernels of one device share: the GEMM plans and scratch memory that grows but is never freed inside a
// step. The scratch is the device's own buffers, so Device::memory() counts it.
class GpuContext {
 public:
  // `device`: the device whose buffers the scratch is; it outlives this context.
  GpuContext(Device & device, int ordinal, GemmPath gemm_path, AttentionKernels attention_kernels);
  GpuContext(const GpuContext &) = delete;
  GpuContext & operator=(const GpuContext &) = delete;

  GemmPath gemm_path() const { return gemm_path_; }
  AttentionKernels attention_kernels() const { return attention_kernels_; }
  GemmPlans & gemm_plans() { return *gemm_plans_; }
  const GemmPlans & gemm_plans() const { return *gemm_plans_; }
  // Work handed to a slower kernel than its fast path: a product cuBLASLt declined (or whose layout rules it out)
  // on the own GEMM kernel, bf16 attention widened to the f32 kernels. --profile times such ops apart.
  int64_t slow_paths() const { return slow_paths_; }
  void count_slow_path() { ++slow_paths_; }
  // At least `bytes` of device scratch in `slot`, valid until the next call with that slot. A slot grows in place
  // where the device reserves address ranges (Device::reserve), with no wait; elsewhere it moves to a buffer of twice
  // the size asked, after waiting for the stream, so that kernels still reading the old block are done.
  void * scratch(int slot, size_t bytes, cudaStream_t stream);
  // What the slot's user last wrote there, in its own terms (all 0: nothing it may reuse): it sets the tag after
  // writing and reads it to skip making the same contents again; a slot that moves to another buffer drops it.
  using ScratchTag = std::array<uint64_t, 2>;
  ScratchTag & scratch_tag(int slot) { return scratch_tags_[slot]; }
  // cuDNN's attention state, made on first use (cudnn_attention.cu), also from the const query of the keep record.
  CudnnAttentionOwner & cudnn_attention() const { return cudnn_attention_; }

 private:
  GemmPath gemm_path_;
  AttentionKernels attention_kernels_;
  GemmPlansOwner gemm_plans_;
  int64_t slow_paths_ = 0;
  Device & device_;
  bool ranges_reserved_ = true;  // false once the device has answered reserve() with none
  Buffer scratch_[kScratchSlots];
  ScratchTag scratch_tags_[kScratchSlots] = {};
  mutable CudnnAttentionOwner cudnn_attention_{nullptr, nullptr};
};

void gpu_op(GpuContext & ctx, const Matmul & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const BiasBackward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const LayerNormForward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const LayerNormBackward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const ActivationForward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const ActivationBackward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const Add & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const Scale & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const Cast & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const Copy & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const Patchify & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const Fill & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const AttentionForward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const AttentionBackward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const XPosForward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const XPosBackward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const EmbeddingForward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const EmbeddingBackward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const SinusoidalPositions & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const CrossEntropyForward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const CrossEntropyBackward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const DropoutForward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const DropoutBackward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const AdamWStep & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const SquaredNorm & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const L2NormalizeForward & op, cudaStream_t stream);
void gpu_op(GpuContext & ctx, const L2NormalizeBackward & op, cudaStream_t stream);

#ifndef KOSMOS_USE_ROCM
// kernels_attention_tc.cu: attention with bf16 q, k, v on tensor cores (NVIDIA, compute capability 8.0 or newer):
// whether it takes a head size on this device, and the forward and backward (the backward given delta_i =
// dout_i . out_i, [B*H*Tq] f32, computed by kernels_attention.cu).
bool tensor_core_attention_takes(int64_t head_dim);
void tensor_core_attention_forward(const AttentionForward & op, cudaStream_t stream);
void tensor_core_attention_backward(const AttentionBackward & op, const float * delta, cudaStream_t stream);
// kernels_attention_mma.cu: the same on mma.sync, every score in registers; head sizes 32 and 64.
inline bool mma_attention_takes(int64_t head_dim) { return head_dim == 32 || head_dim == 64; }
// The words of the dropout keep record they write forward (AttentionForward::keep) and read backward (0 without
// dropout).
int64_t mma_attention_keep_words(const AttentionForward & op);
// Without a record to keep (AttentionForward::keep), the forward writes one to ctx's scratch.
void mma_attention_forward(GpuContext & ctx, const AttentionForward & op, cudaStream_t stream);
// dq_sums: null for the two-kernel backward (run to run the same bits), else [B*H*Tq, head_dim] f32 scratch into
// which the one-kernel backward adds dq up by atomics (AttentionParams::deterministic), for the caller to cast to dq.
// Without the forward's keep record (AttentionBackward::keep), one is drawn into ctx's scratch first.
void mma_attention_backward(GpuContext & ctx, const AttentionBackward & op, const float * delta, float * dq_sums,
                            cudaStream_t stream);
#endif
#ifdef KOSMOS_CUDNN_ATTENTION
// cudnn_attention.cu (the backend cuda-cudnn; not in the emulated and ROCm builds): whether cuDNN's fused attention
// runs `op`: cuDNN 9 found, bf16 q, k, v and out in [B, H, T, dh] views of 16-byte rows, a head size of a multiple of
// 8 up to 128, causal only with as many queries as keys, an op that lets the masks be cuDNN's and dq's order vary
// (AttentionParams::deterministic false), and plans made both ways (kept per layout). Then the forward and the
// backward, each false where cuDNN does not run it. With dropout the backward runs where its forward did (known by
// its lse), and fails where its forward ran on cuDNN and it cannot: only cuDNN draws those masks again.
bool cudnn_attention_takes(const GpuContext & ctx, const AttentionForward & op);
bool cudnn_attention_forward(GpuContext & ctx, const AttentionForward & op, cudaStream_t stream);
bool cudnn_attention_backward(GpuContext & ctx, const AttentionBackward & op, cudaStream_t stream);
#endif
// kernels_attention.cu: the words of the dropout keep record the kernels that would run `op` keep (Device::
// attention_keep_words): the mma.sync ones' on NVIDIA, none elsewhere.
int64_t attention_keep_words(const GpuContext & ctx, const AttentionForward & op);

// The largest head dimension the attention kernels hold per warp: 8 values per lane on NVIDIA's 32-wide warps,
// 4 on CDNA's 64-wide waves.
constexpr int64_t kMaxHeadDim = 256;

// Column sums of a [rows, cols] f32|bf16|f16 matrix with rows `row_stride` apart, added into sums[cols] (f32), in
// an order fixed by the shape (deterministic): the bias and LayerNorm parameter gradients (kernels_column_sums.cu).
void add_column_sums(GpuContext & ctx, float * sums, const void * matrix, DType dtype, int64_t rows, int64_t cols,
                     int64_t row_stride, cudaStream_t stream);
// DropoutBackward with din_column_sums in one pass that drops, stores and adds up (the sums as add_column_sums
// adds them); false, having run nothing, where din and dout do not go in packs (then: the dropout, then the sums).
bool dropout_gradient_with_column_sums(GpuContext & ctx, const DropoutBackward & op, cudaStream_t stream);

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
