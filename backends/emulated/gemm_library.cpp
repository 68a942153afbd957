// gemm_library.cpp: the emulated GPU's cuBLASLt (shim/cublasLt.h), so that matmul.cu's cuBLASLt path (its
// column-major descriptors, transposes, batch strides, bias epilogue, plan cache and workspace) runs and is checked
// where no GPU is. It answers as NVIDIA's cublasLt.h and cuBLAS guide document, and stricter where they leave the
// outcome undefined:
//  - an attribute set with a size other than its type's is refused (CUBLAS_STATUS_INVALID_VALUE);
//  - the heuristic takes CUBLAS_COMPUTE_32F with an fp32 scale and the type combinations the guide lists for it (A
//    and B alike; f32 -> f32, bf16 -> bf16 or f32, f16 -> f16 or f32), and a bias of D's type (the header's rule);
//    it declines anything else (CUBLAS_STATUS_NOT_SUPPORTED), as the library does;
//  - shapes that disagree (op(A) m x k, op(B) k x n, C and D m x n), a leading dimension under the rows of its
//    column-major matrix, or batch counts that differ are refused (INVALID_VALUE);
//  - the algorithm returned is bound to the descriptors, the alignments the preferences promised and the workspace
//    it claims (1 MiB, as a split-K kernel would): cublasLtMatmul refuses it with other descriptors, with pointers
//    less aligned than promised (up to 16 bytes, a vector load's width), or with a smaller workspace;
//  - cublasLtMatmul reads and writes device memory only (every operand's whole extent inside one buffer of
//    runtime.cpp) and reads C only where beta != 0; D = alpha op(A) op(B) + beta C (+ bias[row]), f32 accumulation;
//  - asked for more than one algorithm, the heuristic lists kListedAlgorithms, alike but for the first, which takes
//    kSlowFirstMs longer a call: cuBLASLt's first choice is its estimate, not always the fastest on the card, and
//    this gives GEMM tuning (matmul.cu) a faster one to find. Asked for one, it answers that one, without the wait.
// A refusal names its reason on standard error (as CUBLASLT_LOG_LEVEL=1 would), since a status alone says little.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backends/emulated/shim/cublasLt.h"

struct EmulatedLtContext {
  int device = 0;
};
struct EmulatedLtMatmulDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void * bias = nullptr;
  int32_t bias_type = -1;  // D's type
};
struct EmulatedLtMatrixLayout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t stride = 0;
};
struct EmulatedLtPreference {
  uint64_t max_workspace = 0;
  uint32_t align_a = 256, align_b = 256, align_c = 256, align_d = 256;
  uint32_t reduction_mask = CUBLASLT_REDUCTION_SCHEME_MASK;  // kept; no emulated algorithm splits k
};

namespace {

constexpr uint64_t kAlgoMagic = 0x6b6f736d6f734c74;  // marks an algorithm this heuristic made
constexpr size_t kClaimedWorkspace = size_t{1} << 20;
constexpr uint32_t kWidestLoad = 16;  // the alignment beyond which a kernel's pointer needs nothing more
constexpr int kListedAlgorithms = 3;    // the most one heuristic call lists
constexpr int kSlowFirstMs = 2;         // the first's extra time a call, where more than one was asked for
constexpr uint64_t kSlowMark = uint64_t{1} << 32;  // in algo.data[6], above the bias alignment: the slow first

cublasStatus_t refuse(const char * call, const std::string & why) {
  std::fprintf(stderr, "emulated cuBLASLt: %s: %s\n", call, why.c_str());
  return CUBLAS_STATUS_INVALID_VALUE;
}

template <typename Field>
cublasStatus_t store(Field & field, const void * value, size_t bytes, const char * call, const char * attribute) {
  if (value == nullptr || bytes != sizeof(Field))
    return refuse(call, std::string(attribute) + " set with " + std::to_string(bytes) + " bytes; its type has " +
                            std::to_string(sizeof(Field)));
  std::memcpy(&field, value, sizeof(Field));
  return CUBLAS_STATUS_SUCCESS;
}

size_t element_bytes(int type) {
  switch (type) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
  }
  return 0;
}

bool listed_combination(cudaDataType_t ab, cudaDataType_t cd) {
  switch (ab) {
    case CUDA_R_32F: return cd == CUDA_R_32F;
    case CUDA_R_16BF: return cd == CUDA_R_16BF || cd == CUDA_R_32F;
    case CUDA_R_16F: return cd == CUDA_R_16F || cd == CUDA_R_32F;
  }
  return false;
}

uint32_t alignment_of(const void * pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// The product the descriptors describe: D [m, n] = op(A) [m, k] op(B) [k, n], `batch` times.
struct Problem {
  uint64_t m = 0, n = 0, k = 0;
  int32_t batch = 1;
};

cublasStatus_t check_problem(const char * call, const EmulatedLtMatmulDesc * desc, const EmulatedLtMatrixLayout * a,
                             const EmulatedLtMatrixLayout * b, const EmulatedLtMatrixLayout * c,
                             const EmulatedLtMatrixLayout * d, Problem & problem) {
  if (desc == nullptr || a == nullptr || b == nullptr || c == nullptr || d == nullptr)
    return refuse(call, "a descriptor is null");
  if (desc->compute != CUBLAS_COMPUTE_32F || desc->scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if ((desc->trans_a != CUBLAS_OP_N && desc->trans_a != CUBLAS_OP_T) ||
      (desc->trans_b != CUBLAS_OP_N && desc->trans_b != CUBLAS_OP_T))
    return refuse(call, "TRANSA or TRANSB is neither CUBLAS_OP_N nor CUBLAS_OP_T");
  if (desc->epilogue != CUBLASLT_EPILOGUE_DEFAULT && desc->epilogue != CUBLASLT_EPILOGUE_BIAS)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (a->type != b->type || c->type != d->type || !listed_combination(a->type, d->type))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const int32_t bias_type = desc->bias_type == -1 ? d->type : desc->bias_type;
  if (desc->epilogue == CUBLASLT_EPILOGUE_BIAS && bias_type != d->type) return CUBLAS_STATUS_NOT_SUPPORTED;
  for (const EmulatedLtMatrixLayout * layout : {a, b, c, d}) {
    if (layout->ld < static_cast<int64_t>(std::max<uint64_t>(layout->rows, 1)))
      return refuse(call, "a leading dimension of " + std::to_string(layout->ld) + " under its matrix's " +
                              std::to_string(layout->rows) + " rows (column-major)");
    if (layout->batch != d->batch)
      return refuse(call, "batch counts differ: " + std::to_string(layout->batch) + " and D's " +
                              std::to_string(d->batch));
    if (layout->batch < 1 || layout->stride < 0) return refuse(call, "a batch count under 1 or a negative stride");
  }
  problem.m = d->rows;
  problem.n = d->cols;
  problem.batch = d->batch;
  const uint64_t a_rows = desc->trans_a == CUBLAS_OP_N ? a->rows : a->cols;
  problem.k = desc->trans_a == CUBLAS_OP_N ? a->cols : a->rows;
  const uint64_t b_rows = desc->trans_b == CUBLAS_OP_N ? b->rows : b->cols;
  const uint64_t b_cols = desc->trans_b == CUBLAS_OP_N ? b->cols : b->rows;
  if (c->rows != problem.m || c->cols != problem.n || a_rows != problem.m || b_rows != problem.k ||
      b_cols != problem.n) {
    std::ostringstream why;
    why << "shapes disagree: op(A) " << a_rows << " x " << problem.k << ", op(B) " << b_rows << " x " << b_cols
        << ", C " << c->rows << " x " << c->cols << ", D " << problem.m << " x " << problem.n;
    return refuse(call, why.str());
  }
  return CUBLAS_STATUS_SUCCESS;
}

// Everything the algorithm is bound to, except the pointers' values (their alignments are bound separately).
uint64_t fingerprint(const EmulatedLtMatmulDesc & desc, const EmulatedLtMatrixLayout & a,
                     const EmulatedLtMatrixLayout & b, const EmulatedLtMatrixLayout & c,
                     const EmulatedLtMatrixLayout & d) {
  std::ostringstream text;
  text << desc.compute << ',' << desc.scale << ',' << desc.trans_a << ',' << desc.trans_b << ',' << desc.epilogue << ','
       << desc.bias_type << '|';
  for (const EmulatedLtMatrixLayout * layout : {&a, &b, &c, &d})
    text << layout->type << ',' << layout->rows << ',' << layout->cols << ',' << layout->ld << ',' << layout->batch
         << ',' << layout->stride << '|';
  return std::hash<std::string>{}(text.str());
}

// The bytes an operand spans from its pointer: its last batch's last column's end.
size_t extent_bytes(const EmulatedLtMatrixLayout & layout) {
  if (layout.rows == 0 || layout.cols == 0) return 0;
  const uint64_t last = static_cast<uint64_t>(layout.batch - 1) * static_cast<uint64_t>(layout.stride) +
                        (layout.cols - 1) * static_cast<uint64_t>(layout.ld) + layout.rows;
  return static_cast<size_t>(last) * element_bytes(layout.type);
}

float load(const void * data, cudaDataType_t type, uint64_t index) {
  switch (type) {
    case CUDA_R_32F: return static_cast<const float *>(data)[index];
    case CUDA_R_16BF: return kosmos::bf16_to_float(static_cast<const uint16_t *>(data)[index]);
    case CUDA_R_16F: return kosmos::f16_to_float(static_cast<const uint16_t *>(data)[index]);
  }
  return 0.0f;
}

void store_value(void * data, cudaDataType_t type, uint64_t index, float value) {
  switch (type) {
    case CUDA_R_32F: static_cast<float *>(data)[index] = value; return;
    case CUDA_R_16BF: static_cast<uint16_t *>(data)[index] = kosmos::float_to_bf16(value); return;
    case CUDA_R_16F: static_cast<uint16_t *>(data)[index] = kosmos::float_to_f16(value); return;
  }
}

// Column-major element (row, col) of batch t of an operand read through `trans`.
uint64_t element(const EmulatedLtMatrixLayout & layout, int32_t trans, uint64_t t, uint64_t row, uint64_t col) {
  const uint64_t stored_row = trans == CUBLAS_OP_N ? row : col, stored_col = trans == CUBLAS_OP_N ? col : row;
  return t * static_cast<uint64_t>(layout.stride) + stored_col * static_cast<uint64_t>(layout.ld) + stored_row;
}

}  // namespace

size_t cublasLtGetVersion() { return 0; }

cublasStatus_t cublasLtCreate(cublasLtHandle_t * handle) {
  if (handle == nullptr) return refuse("cublasLtCreate", "the handle's address is null");
  *handle = new EmulatedLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t * desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (desc == nullptr) return refuse("cublasLtMatmulDescCreate", "the descriptor's address is null");
  *desc = new EmulatedLtMatmulDesc{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                                              const void * value, size_t bytes) {
  constexpr const char * call = "cublasLtMatmulDescSetAttribute";
  if (desc == nullptr) return refuse(call, "the descriptor is null");
  switch (attribute) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return store(desc->trans_a, value, bytes, call, "TRANSA");
    case CUBLASLT_MATMUL_DESC_TRANSB: return store(desc->trans_b, value, bytes, call, "TRANSB");
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return store(desc->epilogue, value, bytes, call, "EPILOGUE");
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return store(desc->bias, value, bytes, call, "BIAS_POINTER");
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return store(desc->bias_type, value, bytes, call, "BIAS_DATA_TYPE");
  }
  return refuse(call, "attribute " + std::to_string(attribute) + " is not one the emulated library knows");
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t * layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (layout == nullptr) return refuse("cublasLtMatrixLayoutCreate", "the layout's address is null");
  if (element_bytes(type) == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  *layout = new EmulatedLtMatrixLayout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attribute, const void * value,
                                                size_t bytes) {
  constexpr const char * call = "cublasLtMatrixLayoutSetAttribute";
  if (layout == nullptr) return refuse(call, "the layout is null");
  switch (attribute) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return store(layout->batch, value, bytes, call, "BATCH_COUNT");
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      return store(layout->stride, value, bytes, call, "STRIDED_BATCH_OFFSET");
  }
  return refuse(call, "attribute " + std::to_string(attribute) + " is not one the emulated library knows");
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t * preference) {
  if (preference == nullptr) return refuse("cublasLtMatmulPreferenceCreate", "the preference's address is null");
  *preference = new EmulatedLtPreference;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
  delete preference;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t preference,
                                                    cublasLtMatmulPreferenceAttributes_t attribute, const void * value,
                                                    size_t bytes) {
  constexpr const char * call = "cublasLtMatmulPreferenceSetAttribute";
  if (preference == nullptr) return refuse(call, "the preference is null");
  switch (attribute) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return store(preference->max_workspace, value, bytes, call, "MAX_WORKSPACE_BYTES");
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
      return store(preference->reduction_mask, value, bytes, call, "REDUCTION_SCHEME_MASK");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      return store(preference->align_a, value, bytes, call, "MIN_ALIGNMENT_A_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      return store(preference->align_b, value, bytes, call, "MIN_ALIGNMENT_B_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      return store(preference->align_c, value, bytes, call, "MIN_ALIGNMENT_C_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return store(preference->align_d, value, bytes, call, "MIN_ALIGNMENT_D_BYTES");
  }
  return refuse(call, "attribute " + std::to_string(attribute) + " is not one the emulated library knows");
}

// algo.data: [0] the magic, [1] the descriptors' fingerprint, [2..5] the alignments of A, B, C and D it assumes,
// [6] the bias's (with kSlowMark on the slow first of a list), [7] the workspace it needs.
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t preference, int requested,
                                              cublasLtMatmulHeuristicResult_t * results, int * returned) {
  constexpr const char * call = "cublasLtMatmulAlgoGetHeuristic";
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (preference == nullptr || results == nullptr || returned == nullptr || requested <= 0)
    return refuse(call, "a null preference or result, or a requested count under 1");
  *returned = 0;
  Problem problem;
  const cublasStatus_t status = check_problem(call, desc, a, b, c, d, problem);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  const auto assumed = [](uint32_t promised) { return std::min(promised, kWidestLoad); };
  const int listed = std::min(requested, kListedAlgorithms);
  for (int i = 0; i < listed; ++i) {
    cublasLtMatmulHeuristicResult_t & result = results[i];
    result = {};
    result.algo.data[0] = kAlgoMagic;
    result.algo.data[1] = fingerprint(*desc, *a, *b, *c, *d);
    result.algo.data[2] = assumed(preference->align_a);
    result.algo.data[3] = assumed(preference->align_b);
    result.algo.data[4] = assumed(preference->align_c);
    result.algo.data[5] = assumed(preference->align_d);
    result.algo.data[6] = (desc->epilogue == CUBLASLT_EPILOGUE_BIAS ? assumed(alignment_of(desc->bias)) : 1) |
                          (i == 0 && listed > 1 ? kSlowMark : 0);
    result.workspaceSize = std::min<uint64_t>(preference->max_workspace, kClaimedWorkspace);
    result.algo.data[7] = result.workspaceSize;
    result.state = CUBLAS_STATUS_SUCCESS;
    result.wavesCount = 1.0f;
  }
  *returned = listed;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void * alpha, const void * a,
                              cublasLtMatrixLayout_t a_layout, const void * b, cublasLtMatrixLayout_t b_layout,
                              const void * beta, const void * c, cublasLtMatrixLayout_t c_layout, void * d,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t * algo, void * workspace,
                              size_t workspace_bytes, cudaStream_t) {
  constexpr const char * call = "cublasLtMatmul";
  kosmos_emulation::run_queued_copies();  // the work queued before the product
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (alpha == nullptr || beta == nullptr || algo == nullptr) return refuse(call, "alpha, beta or algo is null");
  if (kosmos_emulation::call_refused(call)) return CUBLAS_STATUS_NOT_SUPPORTED;
  Problem problem;
  const cublasStatus_t status = check_problem(call, desc, a_layout, b_layout, c_layout, d_layout, problem);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  if (algo->data[0] != kAlgoMagic || algo->data[1] != fingerprint(*desc, *a_layout, *b_layout, *c_layout, *d_layout))
    return refuse(call, "the algorithm was chosen for other descriptors (types, transposes, epilogue or layouts)");
  const bool with_bias = desc->epilogue == CUBLASLT_EPILOGUE_BIAS;
  const float alpha_value = *static_cast<const float *>(alpha), beta_value = *static_cast<const float *>(beta);
  struct Operand {
    const char * name;
    const void * data;
    const EmulatedLtMatrixLayout * layout;
    uint64_t assumed_alignment;
    bool read;
  };
  const Operand operands[] = {{"A", a, a_layout, algo->data[2], true},
                              {"B", b, b_layout, algo->data[3], true},
                              {"C", c, c_layout, algo->data[4], beta_value != 0.0f},
                              {"D", d, d_layout, algo->data[5], true}};
  for (const Operand & operand : operands) {
    if (!operand.read) continue;
    if (alignment_of(operand.data) < operand.assumed_alignment)
      return refuse(call, std::string(operand.name) + " is " + std::to_string(alignment_of(operand.data)) +
                              "-byte aligned; the preference promised " + std::to_string(operand.assumed_alignment));
    const size_t bytes = extent_bytes(*operand.layout);
    if (bytes != 0 && !kosmos_emulation::is_device_range(operand.data, bytes))
      return refuse(call, std::string(operand.name) + "'s " + std::to_string(bytes) +
                              " bytes do not lie inside one device buffer (host memory, or past a buffer's end)");
  }
  if (c == d && !(c_layout->type == d_layout->type && c_layout->ld == d_layout->ld &&
                  c_layout->stride == d_layout->stride))
    return refuse(call, "C and D are one buffer but their layouts differ");
  const uint64_t bias_alignment = algo->data[6] % kSlowMark;
  if (with_bias) {
    if (alignment_of(desc->bias) < bias_alignment)
      return refuse(call, "the bias is " + std::to_string(alignment_of(desc->bias)) +
                              "-byte aligned; the algorithm was chosen for " + std::to_string(bias_alignment));
    if (!kosmos_emulation::is_device_range(desc->bias, problem.m * element_bytes(d_layout->type)))
      return refuse(call, "the bias vector of " + std::to_string(problem.m) + " is not inside one device buffer");
  }
  if (algo->data[7] != 0 && (workspace == nullptr || workspace_bytes < algo->data[7] ||
                             !kosmos_emulation::is_device_range(workspace, algo->data[7])))
    return refuse(call, "the algorithm needs " + std::to_string(algo->data[7]) + " bytes of device workspace; " +
                            std::to_string(workspace_bytes) + " were given");

  if (algo->data[6] >= kSlowMark) std::this_thread::sleep_for(std::chrono::milliseconds(kSlowFirstMs));
  // Per batch: op(A) as rows of k and op(B) as columns of k, widened to f32 once, then each element of D one dot.
  const cudaDataType_t bias_type = d_layout->type;
  std::vector<float> a_rows(problem.m * problem.k), b_columns(problem.n * problem.k);
  for (uint64_t t = 0; t < static_cast<uint64_t>(problem.batch); ++t) {
    for (uint64_t row = 0; row < problem.m; ++row)
      for (uint64_t depth = 0; depth < problem.k; ++depth)
        a_rows[row * problem.k + depth] = load(a, a_layout->type, element(*a_layout, desc->trans_a, t, row, depth));
    for (uint64_t col = 0; col < problem.n; ++col)
      for (uint64_t depth = 0; depth < problem.k; ++depth)
        b_columns[col * problem.k + depth] = load(b, b_layout->type, element(*b_layout, desc->trans_b, t, depth, col));
    for (uint64_t col = 0; col < problem.n; ++col)
      for (uint64_t row = 0; row < problem.m; ++row) {
        const float * a_row = a_rows.data() + row * problem.k;
        const float * b_column = b_columns.data() + col * problem.k;
        float sum = 0.0f;
        for (uint64_t depth = 0; depth < problem.k; ++depth) sum += a_row[depth] * b_column[depth];
        float value = alpha_value * sum;
        if (beta_value != 0.0f)
          value += beta_value * load(c, c_layout->type, element(*c_layout, CUBLAS_OP_N, t, row, col));
        if (with_bias) value += load(desc->bias, bias_type, row);
        store_value(d, d_layout->type, element(*d_layout, CUBLAS_OP_N, t, row, col), value);
      }
  }
  return CUBLAS_STATUS_SUCCESS;
}
