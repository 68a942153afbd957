// simd.h: the small vector toolkit of the CPU kernels: a float vector type (GCC/Clang vector extensions, so the
// compiler maps it to AVX-512, AVX2 or SSE as the target allows), a register-blocked tile GEMM, a block transpose,
// and an exp that vectorizes inside `omp simd` loops (Cephes polynomial, about 2 ulp).
#pragma once

#include <cstdint>
#include <cstring>

namespace kosmos::cpu {

// The widest float vector the target has: 16 lanes with AVX-512, else 8 (AVX2; SSE splits it in two). The tile
// GEMM's register block follows: 4 rows x 4 vectors with AVX-512's 32 registers, 6 rows x 2 vectors with AVX2's 16.
#if defined(__AVX512F__)
constexpr int kLanes = 16, kBlockRows = 4, kBlockVectors = 4;
#else
constexpr int kLanes = 8, kBlockRows = 6, kBlockVectors = 2;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef float VecUnaligned __attribute__((vector_size(kLanes * sizeof(float)), aligned(4)));

inline Vec vec_load(const float * source) { return *reinterpret_cast<const VecUnaligned *>(source); }
inline void vec_store(float * target, Vec value) { *reinterpret_cast<VecUnaligned *>(target) = value; }

typedef int32_t IntVec __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline Vec vec_broadcast(float value) { return Vec{} + value; }

// A vector from the first `count` (< kLanes) floats at `source`, the other lanes set to `fill`; and the reverse.
inline Vec vec_load_partial(const float * source, int64_t count, float fill) {
  Vec result = vec_broadcast(fill);
  for (int64_t lane = 0; lane < count; ++lane) result[lane] = source[lane];
  return result;
}
inline void vec_store_partial(float * target, Vec value, int64_t count) {
  for (int64_t lane = 0; lane < count; ++lane) target[lane] = value[lane];
}

// e^x, lane by lane: x = n ln2 + r with |r| <= ln2/2, e^r by Cephes' degree-6 polynomial, 2^n through the exponent
// bits. Relative error about 2 ulp; inputs are clamped to [-87, 88] (no infinities, no subnormals).
inline Vec exp_vec(Vec x) {
  const Vec low = vec_broadcast(-87.0f), high = vec_broadcast(88.0f);
  x = x < low ? low : x;
  x = x > high ? high : x;
  const Vec t = x * 1.44269504088896341f;
  const Vec half = t >= vec_broadcast(0.0f) ? vec_broadcast(0.5f) : vec_broadcast(-0.5f);
  const IntVec n = __builtin_convertvector(t + half, IntVec);  // round to nearest (truncation of t +- 0.5)
  const Vec nf = __builtin_convertvector(n, Vec);
  Vec r = x - nf * 0.693359375f;  // ln2 split in two parts for accuracy
  r = r + nf * 2.12194440e-4f;
  Vec p = vec_broadcast(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Vec y = p * r * r + r + 1.0f;
  const IntVec bits = (n + 127) << 23;
  return y * __builtin_bit_cast(Vec, bits);
}

inline float exp_fast(float x) { return exp_vec(vec_broadcast(x))[0]; }

// The largest of values[0 .. count).
inline float max_of(const float * values, int64_t count) {
  Vec best = vec_broadcast(-__builtin_inff());
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    const Vec v = vec_load(values + i);
    best = v > best ? v : best;
  }
  if (i < count) {
    const Vec v = vec_load_partial(values + i, count - i, -__builtin_inff());
    best = v > best ? v : best;
  }
  float result = best[0];
  for (int lane = 1; lane < kLanes; ++lane) result = best[lane] > result ? best[lane] : result;
  return result;
}

// out[i] = scale * e^(in[i] - shift) (out may be in, or null to only sum); returns the sum of e^(in[i] - shift).
inline float exp_shift(const float * in, float * out, int64_t count, float shift, float scale = 1.0f) {
  Vec sum{};
  const Vec offset = vec_broadcast(shift);
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    const Vec e = exp_vec(vec_load(in + i) - offset);
    if (out) vec_store(out + i, e * scale);
    sum += e;
  }
  float total = 0.0f;
  for (int lane = 0; lane < kLanes; ++lane) total += sum[lane];
  if (i < count) {
    const Vec e = exp_vec(vec_load_partial(in + i, count - i, 0.0f) - offset);
    if (out) vec_store_partial(out + i, e * scale, count - i);
    for (int64_t lane = 0; lane < count - i; ++lane) total += e[lane];
  }
  return total;
}

// R rows x V vectors of C (+)= A[R x K] * B[K x kLanes*V]; the accumulators stay in registers.
template <int R, int V>
inline void tile_gemm_block(int64_t k_count, const float * a, int64_t lda, const float * b, int64_t ldb, float * c,
                            int64_t ldc, bool accumulate) {
  Vec acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = accumulate ? vec_load(c + r * ldc + kLanes * v) : Vec{};
  for (int64_t k = 0; k < k_count; ++k) {
    Vec row[V];
    for (int v = 0; v < V; ++v) row[v] = vec_load(b + k * ldb + kLanes * v);
    for (int r = 0; r < R; ++r) {
      const float scalar = a[r * lda + k];
      for (int v = 0; v < V; ++v) acc[r][v] += scalar * row[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) vec_store(c + r * ldc + kLanes * v, acc[r][v]);
}

// R rows x `cols` (< kLanes) columns, scalar: the ragged right edge of odd sizes.
template <int R>
inline void tile_gemm_edge(int64_t k_count, int64_t cols, const float * a, int64_t lda, const float * b, int64_t ldb,
                           float * c, int64_t ldc, bool accumulate) {
  for (int r = 0; r < R; ++r) {
    for (int64_t col = 0; col < cols; ++col) {
      float sum = accumulate ? c[r * ldc + col] : 0.0f;
      for (int64_t k = 0; k < k_count; ++k) sum += a[r * lda + k] * b[k * ldb + col];
      c[r * ldc + col] = sum;
    }
  }
}

template <int R>
inline void tile_gemm_rows(int64_t n, int64_t k_count, const float * a, int64_t lda, const float * b, int64_t ldb,
                           float * c, int64_t ldc, bool accumulate) {
  constexpr int64_t kWide = kLanes * kBlockVectors;
  int64_t col = 0;
  for (; col + kWide <= n; col += kWide)
    tile_gemm_block<R, kBlockVectors>(k_count, a, lda, b + col, ldb, c + col, ldc, accumulate);
  for (; col + kLanes <= n; col += kLanes)
    tile_gemm_block<R, 1>(k_count, a, lda, b + col, ldb, c + col, ldc, accumulate);
  if (col < n) tile_gemm_edge<R>(k_count, n - col, a, lda, b + col, ldb, c + col, ldc, accumulate);
}

// The last m % kBlockRows rows, one template instance per possible count.
template <int R>
inline void tile_gemm_tail(int64_t rows, int64_t n, int64_t k, const float * a, int64_t lda, const float * b,
                           int64_t ldb, float * c, int64_t ldc, bool accumulate) {
  if constexpr (R > 0) {
    if (rows == R) tile_gemm_rows<R>(n, k, a, lda, b, ldb, c, ldc, accumulate);
    else tile_gemm_tail<R - 1>(rows, n, k, a, lda, b, ldb, c, ldc, accumulate);
  }
}

// C[m x n] (+)= A[m x k] * B[k x n], all row-major with the given row strides (no transposes: callers lay out
// their operands so that every tile product is of this form).
inline void tile_gemm(int64_t m, int64_t n, int64_t k, const float * a, int64_t lda, const float * b, int64_t ldb,
                      float * c, int64_t ldc, bool accumulate) {
  int64_t row = 0;
  for (; row + kBlockRows <= m; row += kBlockRows)
    tile_gemm_rows<kBlockRows>(n, k, a + row * lda, lda, b, ldb, c + row * ldc, ldc, accumulate);
  tile_gemm_tail<kBlockRows - 1>(m - row, n, k, a + row * lda, lda, b, ldb, c + row * ldc, ldc, accumulate);
}

// target[c][r] = source[r][c] for an rows x cols block, in 16 x 16 tiles: each tile's 16 source rows and 16 target
// rows stay in cache while it is copied (a whole column at a time would step through memory at the row stride,
// which for strides of a power of two evicts its own lines).
inline void transpose_block(const float * source, int64_t source_stride, int64_t rows, int64_t cols, float * target,
                            int64_t target_stride) {
  constexpr int64_t kSide = 16;
  for (int64_t first_row = 0; first_row < rows; first_row += kSide) {
    const int64_t end_row = first_row + kSide < rows ? first_row + kSide : rows;
    for (int64_t first_col = 0; first_col < cols; first_col += kSide) {
      const int64_t end_col = first_col + kSide < cols ? first_col + kSide : cols;
      for (int64_t c = first_col; c < end_col; ++c)
        for (int64_t r = first_row; r < end_row; ++r) target[c * target_stride + r] = source[r * source_stride + c];
    }
  }
}

}  // namespace kosmos::cpu
