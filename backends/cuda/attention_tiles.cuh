// attention_tiles.cuh: what both tensor-core attention implementations share (kernels_attention_tc.cu on WMMA,
// kernels_attention_mma.cu on mma.sync): blocks of four warps owning 64 rows of one (batch, head), 16 per warp (the
// mma.sync forward's 128, 16 of each half per warp), in a 1-D grid taken in backends/attention_block_order.h's
// order, streaming the other side in steps of 64 rows; [64, D] bf16 tiles in shared memory, loaded from the
// operands; and the launch of such a kernel. CUDA only (compute capability 8.0 or newer).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "backends/attention_block_order.h"
#include "backends/cuda/attention_shape.cuh"
#include "backends/cuda/gpu_kernels.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE::attention_tiles {

using bf16 = __nv_bfloat16;

constexpr int kBlockRows = 64;   // rows a block owns
constexpr int kStepRows = 64;    // rows of the other side per step
constexpr int kWarps = 4;        // 16 of the block's rows each
constexpr int kBlockThreads = kWarps * 32;
constexpr int kLanes = 32;
// The dropout draws assume that a step is four 16-key groups of backends/attention_dropout.h and that every
// warp's 16 rows start a group.
static_assert(kStepRows == 4 * AttentionDropout::kGroup && kBlockRows % AttentionDropout::kGroup == 0 &&
                  (kBlockRows / kWarps) % AttentionDropout::kGroup == 0,
              "attention tiles and dropout groups");

// Shared-memory row lengths (elements): 16 bytes of padding per bf16 row and 16 per f32 row keep WMMA's ldm
// rules (a multiple of 8 bf16 or 4 f32) and ldmatrix's 16-byte rows, and move consecutive rows to other banks. The
// f32 score tiles and the bf16 step tiles are the WMMA kernels' (the mma.sync ones keep those in registers).
template <int D>
struct TileLayout {
  static constexpr int half_row = D + 8;                                      // a [64, D] bf16 tile
  static constexpr int score_row = (D > kStepRows ? D : kStepRows) + 4;       // [64, 64] scores or [64, D] f32
  static constexpr int step_row = kStepRows + 8;                              // [64, 64] bf16 probabilities
  static constexpr size_t half_tile = sizeof(bf16) * kBlockRows * half_row;
  static constexpr size_t score_tile = sizeof(float) * kBlockRows * score_row;
  static constexpr size_t step_tile = sizeof(bf16) * kBlockRows * step_row;
};

__device__ inline bf16 as_bf16(bf16 value) { return value; }
__device__ inline bf16 as_bf16(float value) { return __float2bfloat16(value); }
__device__ inline void store_as(float & slot, float value) { slot = value; }
__device__ inline void store_as(bf16 & slot, float value) { slot = __float2bfloat16(value); }
// Two values rounded to bf16 in one 32-bit word, the first in the low half (the lower column of an mma fragment).
__device__ inline uint32_t pack_bf16(float low, float high) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
  uint32_t word;
  memcpy(&word, &pair, sizeof word);  // one register move; a pointer cast would break strict aliasing (g++ warns)
  return word;
}

// 2^x in one instruction (the SFU's approximation, the one __expf uses; 2^-inf = 0), for exponents in base 2.
__device__ inline float exp2_approx(float x) {
#if defined(KOSMOS_GPU_EMULATION)
  return kosmos_emulation::exp2_approx(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}
constexpr float kLog2e = 1.4426950408889634f;

// A row's log-sum-exp in base 2, as exp2_approx's exponents take it: log2(e) lse, or +inf for a row that sees no
// key (lse -inf), so that 2^(score2 - lse2) is 0 for each of its entries.
__device__ inline float base2_lse(float lse) { return lse == -INFINITY ? INFINITY : lse * kLog2e; }

// The softmax in base 2 without a pass that scales the scores first: a probability is 2^(s scale2 - m2) for its
// raw score s (-inf where hidden), scale2 = log2(e) scale and m2 its row's max or lse in base 2; one fma and one ex2.
__device__ inline float probability_base2(float score, float scale2, float row_value2) {
  return exp2_approx(fmaf(score, scale2, -row_value2));
}
// The score gradient of a probability p: p (dp / (1 - p_drop) - delta), where kept_dp is its dO . v product, zeroed
// where dropout dropped the probability (kDropout), and keep_scale 1 / (1 - p_drop).
template <bool kDropout>
__device__ inline float score_gradient_of(float p, float kept_dp, float delta, float keep_scale) {
  return p * (kDropout ? fmaf(kept_dp, keep_scale, -delta) : kept_dp - delta);
}

// The WMMA kernels' backward of one probability, from its score s, its row's lse, whether the key is visible and its
// dropout factor f (0 or the keep scale): the probability as kept, p f, and the score gradient ds = p (dp f - delta).
struct ScoreGradient {
  float kept, ds;
};
__device__ inline ScoreGradient score_gradient(float score, float dp, float lse, float delta, float f, bool visible,
                                               float scale) {
  const float p = probability_base2(visible ? score : -INFINITY, scale * kLog2e, base2_lse(lse));
  return {p * f, score_gradient_of<true>(p, dp, delta, f)};
}

// Whether every row of a bf16 operand starts on 16 bytes (its base and strides), so that a tile loads in 16-byte
// vectors of 8 elements.
__device__ inline bool vector_aligned(const HeadRowsOf<const bf16> & rows) {
  return reinterpret_cast<uintptr_t>(rows.base) % 16 == 0 && rows.batch_stride % 8 == 0 && rows.head_stride % 8 == 0 &&
         rows.row_stride % 8 == 0;
}

// cp.async (compute capability 8.0): 16 bytes from global into shared memory without passing through registers;
// a thread's copies since its last commit form a group, and waiting leaves at most N of its groups in flight. What
// other threads copied is visible after a __syncthreads that follows their wait.
#if defined(KOSMOS_GPU_EMULATION)
using kosmos_emulation::commit_async_copies;
using kosmos_emulation::copy_async_16;
using kosmos_emulation::wait_async_copies;
#else
__device__ inline void copy_async_16(void * shared_target, const void * global_source) {
  const uint32_t target = static_cast<uint32_t>(__cvta_generic_to_shared(shared_target));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(target), "l"(global_source) : "memory");
}
__device__ inline void commit_async_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ inline void wait_async_copies() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
#endif

// Rows [first, first + 64) of (b, h) into a [64, D] bf16 tile, zeros past `limit`. A bf16 operand whose rows are
// 16-byte aligned moves in 16-byte vectors (the tile's rows are: their length in bytes is a multiple of 16, as is
// every tile's place in shared memory), with kAsync by cp.async (the caller commits and waits); any other is read
// and rounded element by element, at once.
template <int D, typename T, bool kAsync = false>
__device__ void load_tile(bf16 * tile, const HeadRowsOf<const T> & rows, int64_t b, int64_t h, int64_t first,
                          int64_t limit) {
  if constexpr (std::is_same_v<T, bf16>) {
    if (vector_aligned(rows)) {
      // Thread i copies vector i % per_row of rows i / per_row + k rows_apart: the addresses are worked out once
      // and then stepped, since the streaming kernels spend their issue slots on this in every step.
      constexpr int kVector = 8, kVectorsPerRow = D / kVector, kRowsApart = kBlockThreads / kVectorsPerRow;
      static_assert(kBlockThreads % kVectorsPerRow == 0 && kBlockRows % kRowsApart == 0, "a tile's vectors");
      const int r = static_cast<int>(threadIdx.x) / kVectorsPerRow;
      const int c = (static_cast<int>(threadIdx.x) % kVectorsPerRow) * kVector;
      int64_t source = rows.offset(b, h, first + r) + c;  // of the row's vector; stepped even past `limit`
      auto * target = tile + r * TileLayout<D>::half_row + c;
#pragma unroll
      for (int k = 0; k < kBlockRows / kRowsApart; ++k) {
        auto * vector = reinterpret_cast<uint4 *>(target + k * kRowsApart * TileLayout<D>::half_row);
        if (first + r + k * kRowsApart >= limit) {
          *vector = make_uint4(0u, 0u, 0u, 0u);
        } else if constexpr (kAsync) {
          copy_async_16(vector, rows.base + source);
        } else {
          *vector = *reinterpret_cast<const uint4 *>(rows.base + source);
        }
        source += kRowsApart * rows.row_stride;
      }
      return;
    }
  }
  for (int index = threadIdx.x; index < kBlockRows * D; index += kBlockThreads) {
    const int r = index / D, c = index % D;
    tile[r * TileLayout<D>::half_row + c] = first + r < limit ? as_bf16(rows.row(b, h, first + r)[c]) : as_bf16(0.0f);
  }
}

// values[64, 64] of (b, h) at rows [first, first + 64) into `target`, `fill` past `limit` (lse and delta), a row
// a thread.
static_assert(kBlockThreads >= kStepRows, "a thread per row of a step");
__device__ inline void load_row_values(float * target, const float * values, int64_t first, int64_t limit, float fill) {
  const int r = static_cast<int>(threadIdx.x);
  if (r < kStepRows) target[r] = first + r < limit ? values[first + r] : fill;
}

// Launches `kernel` with `shared` bytes of dynamic shared memory (above the 48 KiB default, which needs the opt-in).
template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, size_t shared, cudaStream_t stream, const char * name, Args... args) {
  KOSMOS_GPU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
  kernel<<<grid, kBlockThreads, shared, stream>>>(args...);
  KOSMOS_GPU_LAUNCHED(name);
}

// A 1-D grid of one block per (batch, head) and `block_rows` (64 unless a kernel takes more) of `rows` rows, taken
// in the order of backends/attention_block_order.h.
inline dim3 grid_of(int64_t rows, const AttentionShape & s, int block_rows = kBlockRows) {
  const int64_t tiles = (rows + block_rows - 1) / block_rows, blocks = s.batch * s.heads * tiles;
  KOSMOS_CHECK(rows <= 0x7FFFFFFF - block_rows && kAttentionHeadsPerGroup * tiles <= 0x7FFFFFFF,
               "tensor-core attention: ", rows, " rows, more than block_rows counts in 32 bits; use shorter sequences");
  KOSMOS_CHECK(blocks <= 0x7FFFFFFF, "tensor-core attention: ", s.batch, " x ", s.heads, " heads of ", rows,
               " rows need ", blocks, " blocks of ", block_rows, " rows, more than a grid's 2^31 - 1; use fewer or "
               "shorter sequences per micro-batch");
  return dim3(static_cast<unsigned>(blocks));
}

// The block's (batch, head) and its first row: of the query tiles (forward, dq; heavier later under a causal mask)
// or of the key tiles (dk and dv; heavier earlier), `block_rows` rows a block as grid_of laid them out.
struct BlockRows {
  int32_t head_index, b, h, first;  // in 32 bits, as grid_of's limits allow: the kernels keep them in registers
};
__device__ inline BlockRows block_rows(const AttentionShape & s, bool query_tiles, int block_rows = kBlockRows) {
  const int64_t rows = query_tiles ? s.tq : s.tk;
  const int32_t heads = static_cast<int32_t>(s.heads);
  const AttentionBlockPlace place =
      attention_block_place(static_cast<int32_t>(blockIdx.x), static_cast<int32_t>(s.batch) * heads,
                            static_cast<int32_t>((rows + block_rows - 1) / block_rows), query_tiles && s.causal);
  return {place.head_index, place.head_index / heads, place.head_index % heads, place.tile * block_rows};
}

// The forward over the query tiles (`block_rows` a block); the backward's dq kernel over the query tiles and its dk, dv
// one over the key tiles. T (f32 or bf16) is the output's dtype forward, dout's and the gradients' backward. Each
// kernel takes `extra` arguments before the shape where an implementation's has more (the mma.sync ones' dropout
// keep record, after the dk, dv kernel's dq sums).
template <typename T, typename ForwardKernel, typename... Extra>
void launch_forward(ForwardKernel kernel, size_t shared, const char * name, const AttentionForward & op,
                    const AttentionShape & s, cudaStream_t stream, int block_rows, Extra... extra) {
  launch(kernel, grid_of(s.tq, s, block_rows), shared, stream, name, head_rows_of<T>(op.out), op.lse.as<float>(),
         head_rows_of<const bf16>(op.q), head_rows_of<const bf16>(op.k), head_rows_of<const bf16>(op.v), extra..., s);
}
template <typename T, typename DqKernel, typename... Extra>
void launch_query_blocks(DqKernel dq, size_t shared, const char * name, const AttentionBackward & op,
                         const float * delta, const AttentionShape & s, cudaStream_t stream, Extra... extra) {
  launch(dq, grid_of(s.tq, s), shared, stream, name, head_rows_of<T>(op.dq), head_rows_of<const T>(op.dout),
         head_rows_of<const bf16>(op.q), head_rows_of<const bf16>(op.k), head_rows_of<const bf16>(op.v),
         op.lse.as<float>(), delta, extra..., s);
}
template <typename T, typename DkDvKernel, typename... Extra>
void launch_key_blocks(DkDvKernel dkdv, size_t shared, const char * name, const AttentionBackward & op,
                       const float * delta, const AttentionShape & s, cudaStream_t stream, Extra... extra) {
  launch(dkdv, grid_of(s.tk, s), shared, stream, name, head_rows_of<T>(op.dk), head_rows_of<T>(op.dv),
         head_rows_of<const T>(op.dout), head_rows_of<const bf16>(op.q), head_rows_of<const bf16>(op.k),
         head_rows_of<const bf16>(op.v), op.lse.as<float>(), delta, extra..., s);
}

// Calls run(std::integral_constant<int, D>{}, T{}) for the head size D among `HeadDims` and T = float where `f32`,
// else bf16: the kernels' instantiation for an op. `what` names the implementation in the error for another size.
template <int... HeadDims, typename Run>
void for_head_dim(int64_t head_dim, bool f32, const char * what, Run run) {
  bool ran = false;
  const auto try_one = [&](auto d) {
    if (ran || head_dim != decltype(d)::value) return;
    if (f32) {
      run(d, float{});
    } else {
      run(d, bf16{});
    }
    ran = true;
  };
  (try_one(std::integral_constant<int, HeadDims>{}), ...);
  KOSMOS_CHECK(ran, what, ": head_dim ", head_dim, " has no kernels (internal error: the dispatch in "
               "kernels_attention.cu admits only the sizes that have)");
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE::attention_tiles
