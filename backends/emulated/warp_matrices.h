// warp_matrices.h: the tensor-core instructions of the attention kernels, emulated per the PTX ISA on the warp's
// exchange slots (block_runner.h), with the hardware's preconditions checked (a fault, not a wrong answer, where one
// fails): mma.sync m16n8k16 bf16 -> f32, ldmatrix .x4 (plain and .trans; its shared-memory bank conflicts counted),
// cp.async 16 bytes with its commit and wait, ex2.approx, prmt; and nvcuda::wmma's 16x16x16 fragments, whose
// element-to-lane mapping CUDA leaves opaque: here every lane holds the whole tile, and a store writes only the
// lane's share; none of them waits for the other lanes, so that memory one lane reads before a __syncwarp after
// other lanes' stores is stale, as it may be on the hardware. Included by cuda_surface.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace kosmos_emulation {

inline float bf16_half(uint32_t word, int half) {
  return kosmos::bf16_to_float(static_cast<uint16_t>(half == 0 ? word & 0xffffu : word >> 16));
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: c[16 x 8] += a[16 x 16] b[16 x 8]. With g = lane / 4 and
// t = lane % 4 (the PTX ISA's "groupID" and "threadID_in_group"), lane holds
//   a: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..2t+1), a[2] = (g, 2t+8..2t+9), a[3] = (g+8, 2t+8..2t+9), low half first;
//   b: b0 = rows 2t..2t+1 of column g, b1 = rows 2t+8..2t+9 of column g;
//   c: c[0], c[1] = (g, 2t), (g, 2t+1); c[2], c[3] = (g+8, 2t), (g+8, 2t+1).
inline void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const int own = lane();
  uint64_t * mine = exchange_slots(own);
  for (int r = 0; r < 4; ++r) mine[r] = a[r];
  mine[4] = b0;
  mine[5] = b1;
  begin_exchange();
  const auto a_at = [](int row, int k) {  // element (row, k) of a, from the lane that holds it
    const uint64_t * slots = exchange_slots((row % 8) * 4 + (k % 8) / 2);
    return bf16_half(static_cast<uint32_t>(slots[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)]), k % 2);
  };
  const auto b_at = [](int k, int column) {
    const uint64_t * slots = exchange_slots(column * 4 + (k % 8) / 2);
    return bf16_half(static_cast<uint32_t>(slots[k >= 8 ? 5 : 4]), k % 2);
  };
  const int g = own / 4, t = own % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), column = 2 * t + e % 2;
    float sum = c[e];
    for (int k = 0; k < 16; ++k) sum += a_at(row, k) * b_at(k, column);
    c[e] = sum;
  }
  finish_exchange();
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8m .. 8m+7 give the addresses of rows 0-7 of matrix m
// (16 bytes each, 16-byte aligned, in shared memory); register m of lane l receives elements (l / 4, 2 (l % 4))
// and (l / 4, 2 (l % 4) + 1) of matrix m, or with .trans (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4).
inline void ldmatrix_x4(uint32_t (&r)[4], const void * row, bool transposed) {
  const int own = lane();
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0 || !in_dynamic_shared(row, 16))
    fault(std::string("ldmatrix: a row address ") + (reinterpret_cast<uintptr_t>(row) % 16 != 0 ? "not 16-byte aligned"
                                                                                                 : "outside shared memory"));
  std::memcpy(exchange_slots(own), &row, sizeof row);
  begin_exchange();
  if (own == 0) {  // each matrix's 8 rows of 4 words (16-byte aligned): the passes its banks take (block_runner.h)
    for (int m = 0; m < 4; ++m) {
      int words_in_bank[32] = {}, passes = 1;
      uintptr_t rows[8];
      for (int i = 0; i < 8; ++i) {
        std::memcpy(&rows[i], exchange_slots(8 * m + i), sizeof rows[i]);
        bool repeated = false;  // rows at one address are read once
        for (int before = 0; before < i; ++before) repeated = repeated || rows[before] == rows[i];
        if (repeated) continue;
        for (uintptr_t word = rows[i] / 4; word < rows[i] / 4 + 4; ++word) {
          const int bank = static_cast<int>(word % 32);
          passes = std::max(passes, ++words_in_bank[bank]);
        }
      }
      count_bank_passes(passes);
    }
  }
  const auto element = [](int matrix, int i, int j) {
    const uint16_t * address;
    std::memcpy(&address, exchange_slots(8 * matrix + i), sizeof address);
    return static_cast<uint32_t>(address[j]);
  };
  for (int m = 0; m < 4; ++m) {
    const int i = own / 4, j = 2 * (own % 4);
    r[m] = transposed ? element(m, j, i) | (element(m, j + 1, i) << 16) : element(m, i, j) | (element(m, i, j + 1) << 16);
  }
  finish_exchange();
}

// cp.async.cg.shared.global 16 bytes: landing at the latest the thread's wait (wait_group 0); block_runner.h says when.
inline void copy_async_16(void * shared_target, const void * global_source) {
  if (reinterpret_cast<uintptr_t>(shared_target) % 16 != 0 || reinterpret_cast<uintptr_t>(global_source) % 16 != 0)
    fault("cp.async of 16 bytes: source and target must be 16-byte aligned");
  if (!in_dynamic_shared(shared_target, 16)) fault("cp.async: the target is not in shared memory");
  start_copy_16(shared_target, global_source);
}
inline void commit_async_copies() {}
inline void wait_async_copies() { complete_copies(); }

// ex2.approx.ftz.f32 (2^x; the hardware's is approximate, this one is exact to f32).
inline float exp2_approx(float x) { return std::exp2(x); }

// prmt.b32 in its default mode: byte n of the result is byte (s & 7) of the eight bytes of {y, x} (x's bytes 0-3,
// y's 4-7), where s is nibble n of the selector; with s's bit 3 set, that byte's sign bit fills all eight bits.
inline uint32_t prmt(uint32_t x, uint32_t y, uint32_t selector) {
  const uint64_t bytes = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t result = 0;
  for (int n = 0; n < 4; ++n) {
    const uint32_t s = (selector >> (4 * n)) & 0xFu;
    uint32_t byte = static_cast<uint32_t>(bytes >> (8 * (s & 7u))) & 0xFFu;
    if (s & 8u) byte = (byte & 0x80u) ? 0xFFu : 0u;
    result |= byte << (8 * n);
  }
  return result;
}

}  // namespace kosmos_emulation

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// A 16 x 16 tile, whole in every lane: x[row * 16 + column] (for matrix_b, row is the depth).
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation has the 16 x 16 x 16 shape only");
  static constexpr int num_elements = 256;
  T x[256];
};

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout> & f, float value) {
  for (T & element : f.x) element = T(value);
}

inline void check_operand(const void * pointer, unsigned ldm, size_t element_bytes, const char * what) {
  if (reinterpret_cast<uintptr_t>(pointer) % 32 != 0)
    kosmos_emulation::fault(std::string("wmma::") + what + ": the pointer is not 256-bit (32-byte) aligned");
  if ((ldm * element_bytes) % 16 != 0)
    kosmos_emulation::fault(std::string("wmma::") + what + ": ldm " + std::to_string(ldm) +
                            " is not a multiple of 16 bytes");
}

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout> & f, const T * p, unsigned ldm) {
  check_operand(p, ldm, sizeof(T), "load_matrix_sync");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = std::is_same_v<Layout, col_major> ? p[c * ldm + r] : p[r * ldm + c];
}

template <typename T>
void store_matrix_sync(T * p, const fragment<accumulator, 16, 16, 16, T, void> & f, unsigned ldm, layout_t layout) {
  check_operand(p, ldm, sizeof(T), "store_matrix_sync");
  for (int e = kosmos_emulation::lane(); e < 256; e += 32) {  // the lane's share only
    const int r = e / 16, c = e % 16;
    (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[e];
  }
}

template <typename LayoutA, typename LayoutB, typename In>
void mma_sync(fragment<accumulator, 16, 16, 16, float, void> & d, const fragment<matrix_a, 16, 16, 16, In, LayoutA> & a,
              const fragment<matrix_b, 16, 16, 16, In, LayoutB> & b,
              const fragment<accumulator, 16, 16, 16, float, void> & c) {
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) {
      float sum = c.x[r * 16 + col];
      for (int k = 0; k < 16; ++k) sum += static_cast<float>(a.x[r * 16 + k]) * static_cast<float>(b.x[k * 16 + col]);
      d.x[r * 16 + col] = sum;
    }
}

}  // namespace nvcuda::wmma
