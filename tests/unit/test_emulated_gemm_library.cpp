// test_emulated_gemm_library.cpp: the emulated GPU's cuBLASLt (backends/emulated/gemm_library.cpp) computes what
// the descriptors say in cuBLASLt's column-major terms (transposes, batch strides, bias per row of D, alpha, beta),
// declines what the library documents it does not take, and refuses what would be undefined on a GPU: an attribute
// of the wrong size, shapes that disagree, an algorithm used with other descriptors, pointers less aligned than
// promised, a short workspace, host memory. matmul.cu's cuBLASLt path runs on it in every emulated op test, so a
// fake that took everything would let that path's mistakes through.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "backends/emulated/shim/cublasLt.h"

namespace {

// Device memory holding `values` (f32).
float * device_floats(const std::vector<float> & values) {
  void * data = nullptr;
  EXPECT_EQ(cudaMalloc(&data, values.size() * sizeof(float) + 64), cudaSuccess);
  std::memcpy(data, values.data(), values.size() * sizeof(float));
  return static_cast<float *>(data);
}

// One product's descriptors, all f32 unless told: D [m, n] = op(A) op(B) (+ bias), column-major.
struct Product {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  Product(uint64_t m, uint64_t n, uint64_t k, bool trans_a, cudaDataType_t ab_type = CUDA_R_32F,
          cudaDataType_t d_type = CUDA_R_32F) {
    EXPECT_EQ(cublasLtCreate(&handle), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    const cublasOperation_t op = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op, sizeof op), CUBLAS_STATUS_SUCCESS);
    const uint64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&a, ab_type, a_rows, a_cols, static_cast<int64_t>(a_rows)),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&b, ab_type, k, n, static_cast<int64_t>(k)), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&d, d_type, m, n, static_cast<int64_t>(m)), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulPreferenceCreate(&preference), CUBLAS_STATUS_SUCCESS);
    const uint64_t workspace = uint64_t{4} << 20;
    EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                   sizeof workspace),
              CUBLAS_STATUS_SUCCESS);
  }
  ~Product() {
    cublasLtMatmulPreferenceDestroy(preference);
    cublasLtMatrixLayoutDestroy(d);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(handle);
  }
  // One of a, b and d replaced by a layout of its own (the old one destroyed).
  void relayout(cublasLtMatrixLayout_t & layout, cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld) {
    cublasLtMatrixLayoutDestroy(layout);
    layout = nullptr;
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld), CUBLAS_STATUS_SUCCESS);
  }
  void set_bias(const void * bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
              CUBLAS_STATUS_SUCCESS);
  }
  cublasStatus_t heuristic(cublasLtMatmulHeuristicResult_t & result) {
    int returned = 0;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, d, d, preference, 1, &result, &returned);
    if (status == CUBLAS_STATUS_SUCCESS) {
      EXPECT_EQ(returned, 1);
    }
    return status;
  }
  cublasStatus_t run(const cublasLtMatmulHeuristicResult_t & result, const void * a_data, const void * b_data,
                     void * d_data, float beta, void * workspace, size_t workspace_bytes) {
    const float alpha = 2.0f;
    return cublasLtMatmul(handle, desc, &alpha, a_data, a, b_data, b, &beta, d_data, d, d_data, d, &result.algo,
                          workspace, workspace_bytes, nullptr);
  }
};

TEST(EmulatedCublasLt, ComputesTheColumnMajorProductWithBiasPerRowAndLeavesCUnreadWhereBetaIsZero) {
  const uint64_t m = 3, n = 2, k = 4;
  Product product(m, n, k, /*trans_a=*/true);
  // A stored k x m (read transposed), B k x n, bias [m]; D starts as the runtime's poison (NaN), unread at beta 0.
  std::vector<float> a(k * m), b(k * n), bias = {0.5f, -1.0f, 3.0f};
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 5) - 2.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 3) + 1.0f;
  float * a_data = device_floats(a);
  float * b_data = device_floats(b);
  float * bias_data = device_floats(bias);
  void * d_data = nullptr;
  void * workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&d_data, m * n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&workspace, size_t{4} << 20), cudaSuccess);
  product.set_bias(bias_data);
  cublasLtMatmulHeuristicResult_t result{};
  ASSERT_EQ(product.heuristic(result), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(product.run(result, a_data, b_data, d_data, 0.0f, workspace, size_t{4} << 20), CUBLAS_STATUS_SUCCESS);
  const float * d = static_cast<const float *>(d_data);
  for (uint64_t row = 0; row < m; ++row)
    for (uint64_t col = 0; col < n; ++col) {
      float sum = 0.0f;
      for (uint64_t depth = 0; depth < k; ++depth) sum += a[row * k + depth] * b[col * k + depth];
      EXPECT_EQ(d[col * m + row], 2.0f * sum + bias[row]) << "row " << row << " col " << col;
    }
  for (void * buffer :
       {static_cast<void *>(a_data), static_cast<void *>(b_data), static_cast<void *>(bias_data), d_data, workspace})
    cudaFree(buffer);
}

TEST(EmulatedCublasLt, ComputesBatchedBf16ProductsWithBTransposedAndCReadWhereBetaIsNotZero) {
  const uint64_t m = 2, n = 3, k = 4;
  const int32_t batch = 2;
  const int64_t a_stride = 16, b_stride = 12, d_stride = 8;  // A's batches apart by more than its m * k = 8
  Product product(m, n, k, /*trans_a=*/false, CUDA_R_16BF, CUDA_R_32F);
  product.relayout(product.b, CUDA_R_16BF, n, k, static_cast<int64_t>(n));  // B stored n x k, read transposed
  const cublasOperation_t transposed = CUBLAS_OP_T;
  ASSERT_EQ(cublasLtMatmulDescSetAttribute(product.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transposed, sizeof transposed),
            CUBLAS_STATUS_SUCCESS);
  for (auto [layout, stride] : {std::pair{product.a, a_stride}, {product.b, b_stride}, {product.d, d_stride}}) {
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                               sizeof stride),
              CUBLAS_STATUS_SUCCESS);
  }
  // Small integers: exact in bf16, so the expected values below are exact too.
  std::vector<uint16_t> a(batch * a_stride), b(batch * b_stride);
  for (size_t i = 0; i < a.size(); ++i) a[i] = kosmos::float_to_bf16(static_cast<float>(i % 7) - 3.0f);
  for (size_t i = 0; i < b.size(); ++i) b[i] = kosmos::float_to_bf16(static_cast<float>(i % 5) - 1.0f);
  std::vector<float> c(batch * d_stride);
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<float>(i) - 4.0f;
  void * a_data = nullptr;
  void * b_data = nullptr;
  void * workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&a_data, a.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&b_data, b.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&workspace, size_t{4} << 20), cudaSuccess);
  std::memcpy(a_data, a.data(), a.size() * 2);
  std::memcpy(b_data, b.data(), b.size() * 2);
  float * d_data = device_floats(c);
  cublasLtMatmulHeuristicResult_t result{};
  ASSERT_EQ(product.heuristic(result), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(product.run(result, a_data, b_data, d_data, 0.5f, workspace, size_t{4} << 20), CUBLAS_STATUS_SUCCESS);
  for (int32_t t = 0; t < batch; ++t)
    for (uint64_t row = 0; row < m; ++row)
      for (uint64_t col = 0; col < n; ++col) {
        float sum = 0.0f;
        for (uint64_t depth = 0; depth < k; ++depth)
          sum += kosmos::bf16_to_float(a[t * a_stride + depth * m + row]) *
                 kosmos::bf16_to_float(b[t * b_stride + depth * n + col]);
        const size_t at = static_cast<size_t>(t * d_stride) + col * m + row;
        EXPECT_EQ(d_data[at], 2.0f * sum + 0.5f * c[at]) << "batch " << t << " row " << row << " col " << col;
      }
  for (void * buffer : {a_data, b_data, static_cast<void *>(d_data), workspace}) cudaFree(buffer);
}

TEST(EmulatedCublasLt, DeclinesUnlistedTypesAndRefusesBadDescriptors) {
  cublasLtMatmulHeuristicResult_t result{};
  {  // bf16 operands into an f32 D are listed; an f32 bias beside a bf16 D is not (the bias has D's type).
    Product listed(8, 8, 8, false, CUDA_R_16BF, CUDA_R_32F);
    EXPECT_EQ(listed.heuristic(result), CUBLAS_STATUS_SUCCESS);
    Product f32_bias(8, 8, 8, false, CUDA_R_16BF, CUDA_R_16BF);
    f32_bias.set_bias(reinterpret_cast<const void *>(uintptr_t{256}));
    const int32_t f32 = CUDA_R_32F;
    ASSERT_EQ(cublasLtMatmulDescSetAttribute(f32_bias.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &f32, sizeof f32),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(f32_bias.heuristic(result), CUBLAS_STATUS_NOT_SUPPORTED);
    Product f16_into_bf16(8, 8, 8, false, CUDA_R_16F, CUDA_R_16BF);
    EXPECT_EQ(f16_into_bf16.heuristic(result), CUBLAS_STATUS_NOT_SUPPORTED);
  }
  Product product(4, 4, 4, false);
  const int64_t wide = 4;
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(product.a, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &wide, sizeof wide),
            CUBLAS_STATUS_INVALID_VALUE)
      << "BATCH_COUNT is int32_t";
  product.relayout(product.d, CUDA_R_32F, 4, 4, 3);
  EXPECT_EQ(product.heuristic(result), CUBLAS_STATUS_INVALID_VALUE) << "a leading dimension under the rows";
  product.relayout(product.d, CUDA_R_32F, 4, 4, 4);
  product.relayout(product.b, CUDA_R_32F, 5, 4, 5);
  EXPECT_EQ(product.heuristic(result), CUBLAS_STATUS_INVALID_VALUE) << "op(A) is 4 x 4, B 5 x 4";
}

TEST(EmulatedCublasLt, RefusesAnAlgorithmUsedOutsideWhatItWasChosenFor) {
  Product product(8, 8, 8, false);
  const uint32_t promised = 16;
  for (const auto attribute : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                               CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    ASSERT_EQ(cublasLtMatmulPreferenceSetAttribute(product.preference, attribute, &promised, sizeof promised),
              CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t result{};
  ASSERT_EQ(product.heuristic(result), CUBLAS_STATUS_SUCCESS);
  const std::vector<float> ones(80, 1.0f);
  float * a = device_floats(ones);
  float * b = device_floats(ones);
  float * d = device_floats(ones);
  void * workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&workspace, result.workspaceSize), cudaSuccess);
  EXPECT_EQ(product.run(result, a, b, d, 0.0f, workspace, result.workspaceSize), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(product.run(result, a + 1, b, d, 0.0f, workspace, result.workspaceSize), CUBLAS_STATUS_INVALID_VALUE)
      << "A 4-byte aligned where 16 was promised";
  EXPECT_EQ(product.run(result, a, b, d, 0.0f, workspace, result.workspaceSize / 2), CUBLAS_STATUS_INVALID_VALUE)
      << "half the workspace the algorithm asked for";
  const std::vector<float> host(64, 1.0f);
  EXPECT_EQ(product.run(result, host.data(), b, d, 0.0f, workspace, result.workspaceSize), CUBLAS_STATUS_INVALID_VALUE)
      << "A in host memory";
  const cublasOperation_t transposed = CUBLAS_OP_T;
  ASSERT_EQ(cublasLtMatmulDescSetAttribute(product.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transposed, sizeof transposed),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(product.run(result, a, b, d, 0.0f, workspace, result.workspaceSize), CUBLAS_STATUS_INVALID_VALUE)
      << "the algorithm was chosen for B untransposed";
  for (void * buffer : {static_cast<void *>(a), static_cast<void *>(b), static_cast<void *>(d), workspace})
    cudaFree(buffer);
}

}  // namespace
