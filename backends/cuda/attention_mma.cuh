// attention_mma.cuh: the warp-level pieces of the mma.sync attention kernels (kernels_attention_mma.cu): the fragments
// of mma.m16n8k16 and the two products built from them (scores from a warp's rows against a streamed tile, and
// fragments times a tile read transposed), dropout's keep bits (staged per warp in the forward and written to the
// keep record, copied a step at a time in the backward) and the masks made of them, the online-softmax helpers, the
// double-buffered stream of tiles, and the backward's shared-memory layout. Compute
// capability 8.0 or newer; the emulated GPU runs the same code on its host versions of the instructions
// (backends/emulated/warp_matrices.h).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/attention_tiles.cuh"

namespace kosmos::KOSMOS_GPU_NAMESPACE::attention_mma {

using namespace attention_tiles;

// Fragments of mma.m16n8k16 over a warp's lanes (PTX ISA), with g = lane / 4 and t = lane % 4; each 32-bit
// register of A and B holds two bf16, the lower column (A) or row (B) in the low half:
//   A [16 x 16]: a0 = (g, 2t..2t+1), a1 = (g + 8, 2t..2t+1), a2 = (g, 2t+8..2t+9), a3 = (g + 8, 2t+8..2t+9);
//   B [16 x 8]:  b0 = (2t..2t+1, g), b1 = (2t+8..2t+9, g);
//   C [16 x 8]:  c0, c1 = (g, 2t), (g, 2t + 1); c2, c3 = (g + 8, 2t), (g + 8, 2t + 1).
// So the C fragments of columns [16 k, 16 k + 16) are, packed to bf16, the A fragment of depth slice k.
struct FragmentA {
  uint32_t x[4];
};
struct FragmentC {
  float x[4];
};

#if defined(KOSMOS_GPU_EMULATION)  // the instructions on the host (backends/emulated/warp_matrices.h)
__device__ inline void mma(FragmentC & c, const FragmentA & a, uint32_t b0, uint32_t b1) {
  kosmos_emulation::mma_m16n8k16_bf16(c.x, a.x, b0, b1);
}
__device__ inline void load_matrices(uint32_t (&r)[4], const bf16 * row) { kosmos_emulation::ldmatrix_x4(r, row, false); }
__device__ inline void load_matrices_transposed(uint32_t (&r)[4], const bf16 * row) {
  kosmos_emulation::ldmatrix_x4(r, row, true);
}
#else
__device__ inline void mma(FragmentC & c, const FragmentA & a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c.x[0]), "+f"(c.x[1]), "+f"(c.x[2]), "+f"(c.x[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b0), "r"(b1));
}

// ldmatrix .x4: lanes 8m to 8m + 7 give the addresses of the eight 16-byte rows of matrix m, and register m of
// lane l receives that matrix's (l / 4, 2 (l % 4) .. +1); transposed, its (2 (l % 4) .. +1, l / 4).
__device__ inline void load_matrices(uint32_t (&r)[4], const bf16 * row) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ inline void load_matrices_transposed(uint32_t (&r)[4], const bf16 * row) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
#endif

__device__ inline int lane_index() { return static_cast<int>(threadIdx.x % kLanes); }

// The rows of the fragments a lane holds: g and g + 8 of the warp's 16 (`half` 0 and 1), and its columns
// 8j + 2t + e of a step's 64.
__device__ inline int lane_row(int half) { return lane_index() / 4 + 8 * half; }
__device__ inline int lane_column(int j, int e) { return 8 * j + 2 * (lane_index() % 4) + e; }

// The warp's rows [row0, row0 + 16) of a [64, D] tile at columns 16k .. 16k + 15 as an A fragment.
template <int D>
__device__ FragmentA load_row_slice_as_a(const bf16 * tile, int row0, int k) {
  const int lane = lane_index();
  uint32_t r[4];  // matrices: rows 0-7 and 8-15 of columns 16k + 0-7, then of 16k + 8-15
  load_matrices(r, tile + (row0 + lane % 16) * TileLayout<D>::half_row + 16 * k + (lane / 16) * 8);
  return FragmentA{{r[0], r[1], r[2], r[3]}};
}

// The same rows as A fragments, one per 16 columns.
template <int D>
__device__ void load_rows_as_a(FragmentA (&a)[D / 16], const bf16 * tile, int row0) {
#pragma unroll
  for (int k = 0; k < D / 16; ++k) a[k] = load_row_slice_as_a<D>(tile, row0, k);
}

// The two products below, over M row tiles of 16 that one warp holds: each B fragment read from shared memory feeds
// M pairs of mma, so that more row tiles per warp read shared memory less per product (the forward holds two).
//
// s_m[16, 64] = a_m[16, D] times tile[64, D]^T for m < M, where s_of(m, j) is C fragment j (columns 8j .. 8j + 7) of
// s_m and a_of(m, k) the A fragment of a_m's columns 16k .. 16k + 15 (taken once per k: it may read shared memory):
// the tile's rows are the columns of s.
template <int D, int M, typename SOf, typename AOf>
__device__ void products_with_rows(SOf s_of, AOf a_of, const bf16 * tile) {
  const int lane = lane_index();
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int j = 0; j < 8; ++j) s_of(m, j) = FragmentC{{0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
  for (int k = 0; k < D / 16; ++k) {
    FragmentA a[M];
#pragma unroll
    for (int m = 0; m < M; ++m) a[m] = a_of(m, k);
#pragma unroll
    for (int pair = 0; pair < 4; ++pair) {  // columns 16 pair .. +15: C fragments 2 pair and 2 pair + 1
      uint32_t r[4];  // matrices: tile rows 16 pair + 0-7 at columns 16k + 0-7, then 16k + 8-15; rows + 8 likewise
      load_matrices(r, tile + (16 * pair + (lane / 16) * 8 + lane % 8) * TileLayout<D>::half_row + 16 * k +
                           ((lane / 8) % 2) * 8);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        mma(s_of(m, 2 * pair), a[m], r[0], r[1]);
        mma(s_of(m, 2 * pair + 1), a[m], r[2], r[3]);
      }
    }
  }
}

// acc_m[16, D] += a_m[16, 64] times tile[64, D] for m < M, where acc_of(m, n) is C fragment n of acc_m and
// a_of(m, k) the A fragment of a_m's depth slice k (columns 16k .. 16k + 15): the tile's rows are the product's
// depth, read transposed.
template <int D, int M, typename AccOf, typename AOf>
__device__ void accumulate_rows_with(AccOf acc_of, AOf a_of, const bf16 * tile) {
  const int lane = lane_index();
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    FragmentA a[M];
#pragma unroll
    for (int m = 0; m < M; ++m) a[m] = a_of(m, k);
#pragma unroll
    for (int pair = 0; pair < D / 16; ++pair) {  // output columns 16 pair .. +15
      uint32_t r[4];  // matrices: tile rows 16k + 0-7 and 16k + 8-15 at columns 16 pair + 0-7, then + 8-15
      load_matrices_transposed(r, tile + (16 * k + ((lane / 8) % 2) * 8 + lane % 8) * TileLayout<D>::half_row +
                                      16 * pair + (lane / 16) * 8);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        mma(acc_of(m, 2 * pair), a[m], r[0], r[1]);
        mma(acc_of(m, 2 * pair + 1), a[m], r[2], r[3]);
      }
    }
  }
}

// One row tile: s[16, 64] = a[16, D] times tile[64, D]^T (8 C fragments of 8 columns).
template <int D>
__device__ void product_with_rows(FragmentC (&s)[8], const FragmentA (&a)[D / 16], const bf16 * tile) {
  products_with_rows<D, 1>([&](int, int j) -> FragmentC & { return s[j]; }, [&](int, int k) { return a[k]; }, tile);
}

// One row tile: acc[16, D] (D / 8 C fragments) += a[16, 64] times tile[64, D], a_of(k) giving depth slice k.
template <int D, typename AOf>
__device__ void accumulate_with(FragmentC (&acc)[D / 8], AOf a_of, const bf16 * tile) {
  accumulate_rows_with<D, 1>([&](int, int n) -> FragmentC & { return acc[n]; }, [&](int, int k) { return a_of(k); },
                             tile);
}

// The A fragment of depth slice k of p[16, 64] given as C fragments, rounded to bf16 (the C fragments of columns
// 16k .. 16k + 15 packed are that A fragment).
__device__ inline FragmentA fragments_as_a(const FragmentC (&p)[8], int k) {
  return FragmentA{{pack_bf16(p[2 * k].x[0], p[2 * k].x[1]), pack_bf16(p[2 * k].x[2], p[2 * k].x[3]),
                    pack_bf16(p[2 * k + 1].x[0], p[2 * k + 1].x[1]), pack_bf16(p[2 * k + 1].x[2], p[2 * k + 1].x[3])}};
}

// acc[16, D] += p[16, 64] (C fragments, rounded to bf16) times tile[64, D].
template <int D>
__device__ void accumulate_product(FragmentC (&acc)[D / 8], const FragmentC (&p)[8], const bf16 * tile) {
  accumulate_with<D>(acc, [&](int k) { return fragments_as_a(p, k); }, tile);
}

// A warp's [16, 64] C fragments, rounded to bf16, as rows [row0, row0 + 16) of a [64, 64] bf16 tile (rows
// TileLayout<D>::step_row apart); each lane writes its pairs of adjacent columns as one word.
template <int D>
__device__ void store_fragments(bf16 * tile, int row0, const FragmentC (&c)[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const uint32_t word = pack_bf16(c[j].x[2 * half], c[j].x[2 * half + 1]);
      memcpy(tile + (row0 + lane_row(half)) * TileLayout<D>::step_row + lane_column(j, 0), &word, sizeof word);
    }
}

// The A fragment of depth slice k of a = tile^T: a's rows are the tile's columns [column0, column0 + 16), its depth
// the tile's rows [16k, 16k + 16) (a [64, 64] bf16 tile as store_fragments writes it), read by ldmatrix transposed.
template <int D>
__device__ FragmentA load_transposed_as_a(const bf16 * tile, int column0, int k) {
  const int lane = lane_index(), m = lane / 8;  // matrices: a's rows 0-7 | 8-15 at depth 0-7, then at depth 8-15
  uint32_t r[4];
  load_matrices_transposed(r, tile + (16 * k + 8 * (m / 2) + lane % 8) * TileLayout<D>::step_row + column0 +
                                  8 * (m % 2));
  return FragmentA{{r[0], r[1], r[2], r[3]}};
}

// A warp's [16, D] result rows (row0 + lane_row, below `limit`) times `factor` added into `target` ([rows, D] f32,
// dense) by atomics, two adjacent columns at a time where the device adds pairs (compute capability 9.0).
template <int D>
__device__ void add_rows_atomically(float * target, int64_t row0, int64_t limit, const FragmentC (&acc)[D / 8],
                                    float factor) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t row = row0 + lane_row(half);
    if (row >= limit) continue;
    float * out = target + row * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      float * pair = out + lane_column(n, 0);
#if __CUDA_ARCH__ >= 900
      atomicAdd(reinterpret_cast<float2 *>(pair),
                make_float2(factor * acc[n].x[2 * half], factor * acc[n].x[2 * half + 1]));
#else
      atomicAdd(pair, factor * acc[n].x[2 * half]);
      atomicAdd(pair + 1, factor * acc[n].x[2 * half + 1]);
#endif
    }
  }
}

template <int N>
__device__ inline void clear(FragmentC (&fragments)[N]) {
#pragma unroll
  for (int n = 0; n < N; ++n) fragments[n] = FragmentC{{0.0f, 0.0f, 0.0f, 0.0f}};
}

// The keep record (Device::attention_keep_words): the forward's keep bits, one bit a probability, for the backward,
// which reads them where it would otherwise draw them again (twice: for dq and for dk, dv). An entry is the 16 bits of
// one (row, 16-key group), at [head_index][group][row], so that the backward's steps copy whole 16-byte pieces of it
// (a step's four groups times 64 rows) beside their tiles. Bit 4t + i of an entry keeps key 2t, 2t + 1, 2t + 8 or
// 2t + 9 of the group (i = 0 to 3): nibble t holds the keys whose bits a query-row lane t reads as one keep word, and
// one multiplication widens it into that word; a key-row lane takes two rows' bits of key g and g + 8 the same way.
// Rows run to a whole number of the forward's 128-row blocks, groups to whole 64-key steps.
struct KeepRecord {
  uint16_t * bits;  // null: none
  int64_t groups, rows;
  __device__ uint16_t * column(int64_t head_index, int64_t group) const {
    return bits + (head_index * groups + group) * rows;
  }
};
constexpr int64_t kKeepRecordRows = 2 * kBlockRows;  // the mma.sync forward's block of two query tiles
inline KeepRecord keep_record_of(void * bits, const AttentionShape & s) {
  const int64_t steps = (s.tk + kStepRows - 1) / kStepRows;
  const int64_t rows = (s.tq + kKeepRecordRows - 1) / kKeepRecordRows * kKeepRecordRows;
  return {static_cast<uint16_t *>(bits), steps * (kStepRows / AttentionDropout::kGroup), rows};
}
inline int64_t keep_record_words(const AttentionShape & s) {
  const KeepRecord shape = keep_record_of(nullptr, s);
  return (s.batch * s.heads * shape.groups * shape.rows + 1) / 2;
}

// Dropout (backends/attention_dropout.h) as masks: each random byte becomes a keep bit (its bit 7, set where the
// probability is kept), and prmt's sign replication widens a keep bit into the mask that zeroes a dropped f32, or both
// halves of a pair of bf16 probabilities, in one AND. The keep scale 1 / (1 - p) multiplies the sums over keys once
// (the forward's output, dV), or is folded into the score gradient's fma, rather than each probability.

// prmt.b32 (the emulation in backends/emulated/warp_matrices.h says what it does).
__device__ inline uint32_t byte_permute(uint32_t x, uint32_t y, uint32_t selector) {
#if defined(KOSMOS_GPU_EMULATION)
  return kosmos_emulation::prmt(x, y, selector);
#else
  uint32_t result;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(result) : "r"(x), "r"(y), "r"(selector));
  return result;
#endif
}

// The keep bits of four random bytes: bit 7 of each byte set where the byte is at or above `threshold` (1 to 255),
// so that its probability is kept; the masks read bit 7 alone, and the other bits mean nothing. A subtraction with
// each byte's bit 7 set compares the bytes' low seven bits without borrowing from the next byte; bit 7 decides with
// them, by OR below a threshold of 128 and by AND from 128 on: their majority with a bit 7 that is set below 128.
__device__ inline uint32_t keep_bits(uint32_t bytes, uint32_t threshold) {
  const uint32_t low_at_least = (bytes | 0x80808080u) - (threshold & 0x7Fu) * 0x01010101u;
  const uint32_t below_128 = threshold < 128u ? 0x80808080u : 0u;
  return (bytes & low_at_least) | (bytes & below_128) | (low_at_least & below_128);
}

// prmt selectors that widen keep bits into masks: byte b's bit over all 32 bits (an f32), or byte b's over the low
// 16 and byte c's over the high 16 (a pair of bf16, the lower column in the low half).
constexpr uint32_t element_mask_selector(int b) { return 0x8888u + 0x1111u * static_cast<uint32_t>(b); }
constexpr uint32_t pair_mask_selector(int b, int c) {
  return (0x88u + 0x11u * static_cast<uint32_t>(b)) | ((0x88u + 0x11u * static_cast<uint32_t>(c)) << 8);
}
// `value` where byte b of `keep` keeps it, else 0.
__device__ inline float kept_value(float value, uint32_t keep, int b) {
  return __uint_as_float(__float_as_uint(value) & byte_permute(keep, 0u, element_mask_selector(b)));
}

// The four query-row keep words of one (row, group) from its Philox block: word t holds the bits of keys 2t, 2t + 1,
// 2t + 8 and 2t + 9 in bytes 0 to 3, those the lanes with t = lane % 4 hold of a row in the C fragments of the group
// (columns 8j + 2t + e, j = 2 group and 2 group + 1).
__device__ inline uint4 query_keep_words(const PhiloxBlock & bits, uint32_t threshold) {
  uint32_t w[4];  // keys 4i .. 4i + 3, the lower key in the lower byte
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = keep_bits(bits.lane[i], threshold);
  return make_uint4(byte_permute(w[0], w[2], 0x5410u), byte_permute(w[0], w[2], 0x7632u),
                    byte_permute(w[1], w[3], 0x5410u), byte_permute(w[1], w[3], 0x7632u));
}
// Bit 7 of each byte of a keep word, as the four low bits (byte b to bit b): the product sums the four bits into
// bits 28 to 31 with nothing else landing there.
__device__ inline uint32_t keep_nibble(uint32_t word) { return ((word & 0x80808080u) * 0x00204081u) >> 28; }
// The record entry of a (row, group) from its four query-row keep words: nibble t from word t.
__device__ inline uint16_t keep_record_entry(const uint4 & words) {
  return static_cast<uint16_t>(keep_nibble(words.x) | (keep_nibble(words.y) << 4) | (keep_nibble(words.z) << 8) |
                               (keep_nibble(words.w) << 12));
}
// Query-row keep word t (as query_keep_words makes it) from a record entry: nibble t's bit i to bit 7 of byte i.
__device__ inline uint32_t query_keep_word_of(uint32_t entry, int t) {
  return ((entry >> (4 * t)) & 0xFu) * 0x10204080u;
}
// A key-row keep word from the entries of two consecutive query rows (the lower in the low half): bytes 0 to 3 keep
// (first row, key g), (first row, g + 8), (second row, g) and (second row, g + 8). Key g's bit is `shift` =
// 4 (g / 2) + g % 2, key g + 8's two above it; the product moves the four bits to the bytes' bit 7.
__device__ inline int key_keep_shift(int g) { return 4 * (g / 2) + g % 2; }
__device__ inline uint32_t key_keep_word_of(uint32_t entries, int shift) {
  return ((entries >> shift) & 0x00050005u) * 0x2080u;
}

// The forward stages a warp's keep bits for one step in shared memory: [16 rows][4 key groups][4 words] of
// query_keep_words, rows kQueryRowBytes apart, so that a lane reads a word a row and group. Rows of 20 words put the
// 32 words a warp reads at once (8 rows, 4 lanes) in distinct banks. Lane l stages row l / 2 at the groups l % 2 and
// l % 2 + 2, and writes their record entries (to the op's keep, or to scratch where it gives none).
constexpr int kQueryRowBytes = 80;
constexpr int kWarpKeepBytes = 16 * kQueryRowBytes;
static_assert(kQueryRowBytes >= kStepRows && kQueryRowBytes % 16 == 0, "a warp's keep bits");

// The Philox counter of the first block of the row that this lane stages (row lane / 2 of the warp's 16 from
// warp_query), worked out once: the row stays the lane's from step to step.
__device__ inline uint64_t staged_row_start(const AttentionShape & s, int64_t b, int64_t h, int64_t warp_query) {
  return s.dropout.row_start(s.dropout_row(b, h, warp_query + lane_index() / 2));
}
// The record gets every entry of the forward's steps, zero past the last row and key, so that the backward (whose
// steps read no entry that the forward's do not) never reads an entry that was not written. `entries`: the record's
// entry of the lane's row in group column lane % 2 (lane_entries), worked out once.
__device__ inline uint16_t * lane_entries(const KeepRecord & record, int64_t head_index, int64_t warp_query) {
  return record.column(head_index, lane_index() % 2) + warp_query + lane_index() / 2;
}
__device__ inline void stage_query_rows(unsigned char * area, uint16_t * entries, int64_t record_rows,
                                        const AttentionShape & s, uint64_t row_start, int64_t warp_query,
                                        int64_t first_key) {
  __syncwarp();  // the warp is done reading the previous step's bits
  const int lane = lane_index(), row = lane / 2;
  const bool inside = warp_query + row < s.tq;
  uint16_t * step_entries = entries + first_key / 16 * record_rows;
#pragma unroll
  for (int g = 0; g < 2; ++g) {
    const int group = lane % 2 + 2 * g;
    uint16_t entry = 0u;
    if (inside && first_key + 16 * group < s.tk) {  // others are never read
      const uint4 words = query_keep_words(s.dropout.group_from(row_start, first_key + 16 * group),
                                           s.dropout.threshold);
      *reinterpret_cast<uint4 *>(area + row * kQueryRowBytes + 16 * group) = words;
      entry = keep_record_entry(words);
    }
    step_entries[2 * g * record_rows] = entry;
  }
}
// The lane's word of row `row` (of the warp's 16) and key group `group` (0 to 3).
__device__ inline uint32_t query_keep_word(const unsigned char * area, int row, int group) {
  return *reinterpret_cast<const uint32_t *>(area + row * kQueryRowBytes + 16 * group + 4 * (lane_index() % 4));
}
// Element (j, half, e) of a step's query-row C fragments (row lane_row(half), column lane_column(j, e)) is byte
// query_keep_byte(j, e) of query_keep_word(lane_row(half), j / 2).
constexpr int query_keep_byte(int j, int e) { return 2 * (j % 2) + e; }
// The A fragment of depth slice `group` of the warp's probabilities with the dropped ones zeroed, from the keep words
// of the lane's two rows in that group.
__device__ inline FragmentA kept_query_pairs(FragmentA a, uint32_t row0, uint32_t row8) {
  constexpr uint32_t kEven = pair_mask_selector(query_keep_byte(0, 0), query_keep_byte(0, 1));  // C fragment 2 group
  constexpr uint32_t kOdd = pair_mask_selector(query_keep_byte(1, 0), query_keep_byte(1, 1));   // and 2 group + 1
  a.x[0] &= byte_permute(row0, 0u, kEven);
  a.x[1] &= byte_permute(row8, 0u, kEven);
  a.x[2] &= byte_permute(row0, 0u, kOdd);
  a.x[3] &= byte_permute(row8, 0u, kOdd);
  return a;
}

// The backward's keep bits for one step: the record's entries of the step's four groups (the key block's, or the
// step's keys) for its 64 query rows (the step's, or the query block's), [4 groups][64 rows], copied beside the step's
// tiles (by cp.async where the rows start on 16 bytes: always but for a causal step whose first query is not a
// multiple of 8), rows past the last query zero. Thread i < 32 copies 8 rows of group i / 8.
constexpr size_t kStepKeepBytes = 4 * kStepRows * sizeof(uint16_t);
__device__ inline void copy_step_keep(uint16_t * target, const KeepRecord & record, int64_t head_index,
                                      int64_t first_group, int64_t first_row, int64_t limit) {
  const int thread = static_cast<int>(threadIdx.x);
  if (first_row % 8 == 0) {
    if (thread >= 4 * kStepRows / 8) return;
    const int group = thread / 8, row = 8 * (thread % 8);
    auto * vector = reinterpret_cast<uint4 *>(target + group * kStepRows + row);
    if (first_row + row >= limit) {
      *vector = make_uint4(0u, 0u, 0u, 0u);
    } else {
      copy_async_16(vector, record.column(head_index, first_group + group) + first_row + row);
    }
    return;
  }
  for (int index = thread; index < 4 * kStepRows; index += kBlockThreads) {
    const int group = index / kStepRows, row = index % kStepRows;
    target[index] = first_row + row < limit ? record.column(head_index, first_group + group)[first_row + row] : 0u;
  }
}
// The keep word of row `row` (of the step's 64) and group `group` for query-row lane t.
__device__ inline uint32_t step_query_keep_word(const uint16_t * step_keep, int row, int group, int t) {
  return query_keep_word_of(step_keep[group * kStepRows + row], t);
}
// The keep word of key-row C fragment j (the step's queries 8j .. 8j + 7) for the lane's keys of `group`.
__device__ inline uint32_t step_key_keep_word(const uint16_t * step_keep, int group, int j, int shift) {
  const uint32_t entries =
      *reinterpret_cast<const uint32_t *>(step_keep + group * kStepRows + 8 * j + 2 * (lane_index() % 4));
  return key_keep_word_of(entries, shift);
}
// Element (j, half, e) of a step's key-row C fragments is byte key_keep_byte(half, e) of its keep word.
constexpr int key_keep_byte(int half, int e) { return half + 2 * e; }
// The A fragment of depth slice k (C fragments 2k and 2k + 1) of the warp's probabilities with the dropped ones
// zeroed, from those fragments' keep words.
__device__ inline FragmentA kept_key_pairs(FragmentA a, uint32_t even_word, uint32_t odd_word) {
  constexpr uint32_t kRow0 = pair_mask_selector(key_keep_byte(0, 0), key_keep_byte(0, 1));  // key g
  constexpr uint32_t kRow8 = pair_mask_selector(key_keep_byte(1, 0), key_keep_byte(1, 1));  // key g + 8
  a.x[0] &= byte_permute(even_word, 0u, kRow0);
  a.x[1] &= byte_permute(even_word, 0u, kRow8);
  a.x[2] &= byte_permute(odd_word, 0u, kRow0);
  a.x[3] &= byte_permute(odd_word, 0u, kRow8);
  return a;
}

// Max and sum over the four lanes that hold a row.
__device__ inline float row_max_of(float value) {
  value = fmaxf(value, __shfl_xor_sync(0xFFFFFFFFu, value, 1));
  return fmaxf(value, __shfl_xor_sync(0xFFFFFFFFu, value, 2));
}
__device__ inline float row_sum_of(float value) {
  value += __shfl_xor_sync(0xFFFFFFFFu, value, 1);
  return value + __shfl_xor_sync(0xFFFFFFFFu, value, 2);
}

// -inf at the scores of the warp's 16 query rows (the lane's fragments) that a row does not see (the keys from
// keys_seen[half] on), on a step that the causal diagonal or the end of the rows cuts.
__device__ inline void hide_unseen_keys(FragmentC (&scores)[8], int64_t first_key, const int64_t (&keys_seen)[2]) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (first_key + lane_column(j, e) >= keys_seen[half]) scores[j].x[2 * half + e] = -INFINITY;
}

// A warp's [16, D] result rows (row0 + lane_row, up to `limit`) times `factor` into `target` (f32 or bf16); each
// row's own factor where `row_factors` is given.
template <int D, typename T>
__device__ void store_rows(const HeadRowsOf<T> & target, int64_t b, int64_t h, int64_t row0, int64_t limit,
                           const FragmentC (&acc)[D / 8], const float (&row_factors)[2]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t row = row0 + lane_row(half);
    if (row >= limit) continue;
    T * out = target.row(b, h, row);
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) store_as(out[lane_column(n, e)], acc[n].x[2 * half + e] * row_factors[half]);
  }
}

// Steps over rows [first, end) of the streamed side, 64 at a time, its two operands (k and v, or q and dout)
// double-buffered in `buffers` (four [64, D] tiles): the copies for step i + 1 are issued by cp.async right after
// step i's barrier and land while step i computes, with those of copy_more(row, buffer) (the backward's keep bits).
// Before the barrier, prepare(row, buffer) writes what the step needs besides (the forward's dropout keep bits, lse
// and delta); then compute(row, a_tile, b_tile, buffer).
template <int D, typename A, typename B, typename CopyMore, typename Prepare, typename Compute>
__device__ __forceinline__ void stream_steps(unsigned char * buffers, const HeadRowsOf<const A> & a,
                                             const HeadRowsOf<const B> & b_rows, int64_t b, int64_t h, int64_t first,
                                             int64_t end, int64_t limit, CopyMore copy_more, Prepare prepare,
                                             Compute compute) {
  const auto tile = [&](int buffer, int which) {
    return reinterpret_cast<bf16 *>(buffers + (2 * buffer + which) * TileLayout<D>::half_tile);
  };
  const auto issue = [&](int buffer, int64_t row) {
    load_tile<D, A, true>(tile(buffer, 0), a, b, h, row, limit);
    load_tile<D, B, true>(tile(buffer, 1), b_rows, b, h, row, limit);
    copy_more(row, buffer);
    commit_async_copies();
  };
  if (first < end) issue(0, first);
  int buffer = 0;
  for (int64_t row = first; row < end; row += kStepRows, buffer ^= 1) {
    wait_async_copies();
    prepare(row, buffer);
    __syncthreads();  // the step's tiles in place for every thread; every warp done with the previous step
    if (row + kStepRows < end) issue(buffer ^ 1, row + kStepRows);
    compute(row, tile(buffer, 0), tile(buffer, 1), buffer);
  }
}

// The step's values of queries [first, first + 64) into target[2][64], a thread each: their lse in base 2 (threads
// 0-63; +inf past `limit`, as base2_lse gives a row that sees no key), for probability_base2, and their delta
// (threads 64-127; 0 past `limit`). Whole warps take one or the other.
static_assert(kBlockThreads == 2 * kStepRows && kStepRows % kLanes == 0, "a thread per lse and delta of a step");
__device__ inline void load_step_values(float * target, const float * lse, const float * delta, int64_t first,
                                        int64_t limit) {
  const int r = static_cast<int>(threadIdx.x) % kStepRows;
  const bool inside = first + r < limit;
  if (static_cast<int>(threadIdx.x) < kStepRows) {
    target[r] = base2_lse(inside ? lse[first + r] : -INFINITY);
  } else {
    target[kStepRows + r] = inside ? delta[first + r] : 0.0f;
  }
}

// Shared memory: the own tiles (the forward's query tiles, two backward), the four streamed ones, the forward's
// warps' dropout keep bits, and backward two buffers of the step's keep bits (copy_step_keep) and two of its 64 lse
// and delta values, then where the dk, dv kernel also adds dq (`with_dq`) the step's [64 keys, 64 queries] score
// gradients in bf16.
template <int D>
constexpr size_t forward_shared(int query_tiles = 1) {  // the block's query tiles, each with its dropout keep bits
  return (query_tiles + 4) * TileLayout<D>::half_tile + query_tiles * kWarps * kWarpKeepBytes;
}
template <int D>
constexpr size_t backward_shared(bool with_dq = false) {
  return 6 * TileLayout<D>::half_tile + 2 * kStepKeepBytes + 4 * sizeof(float) * kStepRows +
         (with_dq ? TileLayout<D>::step_tile : 0);
}

// A backward block's shared memory as backward_shared<D>() lays it out.
template <int D>
struct BackwardShared {
  bf16 * own[2];             // q and dout (dq), k and v (dk, dv)
  unsigned char * streamed;  // the other two, twice
  uint16_t * step_keep;      // [2 buffers][4 groups][64 rows] of keep record entries
  float * step_values;       // [2 buffers][lse (base 2), delta][64] (dk, dv)
  bf16 * score_gradients;    // [64 keys, 64 queries], rows step_row apart (dk, dv adding dq)
  __device__ explicit BackwardShared(unsigned char * shared) {
    constexpr size_t tile = TileLayout<D>::half_tile;
    own[0] = reinterpret_cast<bf16 *>(shared);
    own[1] = reinterpret_cast<bf16 *>(shared + tile);
    streamed = shared + 2 * tile;
    step_keep = reinterpret_cast<uint16_t *>(shared + 6 * tile);
    step_values = reinterpret_cast<float *>(shared + 6 * tile + 2 * kStepKeepBytes);
    score_gradients = reinterpret_cast<bf16 *>(shared + backward_shared<D>(false));
  }
  __device__ uint16_t * keep_of(int buffer) const { return step_keep + buffer * (kStepKeepBytes / sizeof(uint16_t)); }
};
// ldmatrix reads 16-byte rows: the score-gradient tile starts on 16 bytes, as its rows do.
static_assert(backward_shared<32>(false) % 16 == 0 && backward_shared<64>(false) % 16 == 0 &&
                  TileLayout<32>::step_row * sizeof(bf16) % 16 == 0,
              "the score-gradient tile's alignment");

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE::attention_mma
