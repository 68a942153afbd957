// matmul.cu: Matmul on the GPU. The vendor path is cuBLASLt (fp32 compute; f32 operands in full fp32, bf16 and f16
// operands with fp32 accumulation; the bias as an epilogue), with the algorithm chosen once per shape and alignment (the
// heuristic's first, or with GEMM tuning the fastest of its first few, timed on the product itself). The own
// path is a tiled kernel for any strides, batch, transposes, alpha, beta and bias, in the same source for CUDA and
// HIP: it runs where cuBLASLt declines a case, on ROCm without hipBLASLt, and in the test that checks it on NVIDIA.
// Row-major C = op(A) op(B) is computed as column-major C^T = op(B)^T op(A)^T, so B goes first to cuBLASLt.
#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <sstream>
#include <vector>

#include "backends/cuda/gpu_kernels.h"

namespace kosmos::KOSMOS_GPU_NAMESPACE {

// One operand as the kernels see it: stored row-major with leading dimension `ld` (its stride(-2)), read
// transposed or not; logical element (row, col) of batch t is at data + t * batch_stride + row * row_stride() +
// col * col_stride().
struct GemmOperand {
  const void * data;
  DType dtype;
  int64_t batch_stride, ld;
  bool transposed;
  __host__ __device__ int64_t row_stride() const { return transposed ? 1 : ld; }
  __host__ __device__ int64_t col_stride() const { return transposed ? ld : 1; }
};

// The product in the logical (row-major, transposes applied) frame.
struct GemmProblem {
  int64_t batch, m, n, k;
  GemmOperand a, b;  // op(A) [m, k], op(B) [k, n]
  void * c;
  DType c_dtype;
  int64_t c_batch_stride, c_row_stride;
  const void * bias;  // [n] or null
  DType bias_dtype;
  float alpha, beta;
};

namespace {

GemmProblem problem_of(const Matmul & op) {
  GemmProblem p{};
  const bool batched_c = op.c.ndim == 3;
  const bool flattened = !batched_c && op.a.ndim == 3;  // [batch, M, K] x [K, N] -> [batch*M, N]
  p.batch = batched_c ? op.c.dim(0) : 1;
  p.m = op.c.dim(-2);
  p.n = op.c.dim(-1);
  p.k = op.trans_a ? op.a.dim(-2) : op.a.dim(-1);
  // A 3-D operand of batch 1 beside a batched product is broadcast (ops_validate.cpp): batch stride 0.
  const auto operand = [&](const TensorView & view, bool transposed) {
    return GemmOperand{view.data, view.dtype, view.ndim == 3 && batched_c && view.dim(0) > 1 ? view.stride(0) : 0,
                       view.stride(-2), transposed};
  };
  p.a = operand(op.a, op.trans_a);
  p.b = operand(op.b, op.trans_b);
  if (flattened) p.a.ld = op.a.stride(1);  // validated: dense batch rows
  p.c = op.c.data;
  p.c_dtype = op.c.dtype;
  p.c_batch_stride = batched_c ? op.c.stride(0) : 0;
  p.c_row_stride = op.c.stride(-2);
  p.bias = op.bias.present() ? op.bias.data : nullptr;
  p.bias_dtype = op.bias.dtype;
  p.alpha = op.alpha;
  p.beta = op.beta;
  return p;
}

// The own kernel: 64 x 64 tiles of C per block, 16-deep slices of K through shared memory, 4 x 4 per thread.
constexpr int kTileM = 64, kTileN = 64, kTileK = 16, kGemmThreads = 256;

__global__ void gemm_kernel(GemmProblem p) {
  __shared__ float a_tile[kTileK][kTileM];
  __shared__ float b_tile[kTileK][kTileN];
  const int64_t t = blockIdx.z;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTileM, col0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int thread_row = threadIdx.x / 16, thread_col = threadIdx.x % 16;  // 16 x 16 threads, 4 x 4 each
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.k; k0 += kTileK) {
    for (int e = threadIdx.x; e < kTileK * kTileM; e += kGemmThreads) {
      const int kk = e / kTileM, mm = e % kTileM;
      const int64_t row = row0 + mm, depth = k0 + kk;
      a_tile[kk][mm] = row < p.m && depth < p.k
                           ? load_float(p.a.data, p.a.dtype,
                                        t * p.a.batch_stride + row * p.a.row_stride() + depth * p.a.col_stride())
                           : 0.0f;
      const int nn = e % kTileN;
      const int64_t col = col0 + nn;
      b_tile[kk][nn] = col < p.n && depth < p.k
                           ? load_float(p.b.data, p.b.dtype,
                                        t * p.b.batch_stride + depth * p.b.row_stride() + col * p.b.col_stride())
                           : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float a_values[4], b_values[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) a_values[r] = a_tile[kk][thread_row + 16 * r];
#pragma unroll
      for (int c = 0; c < 4; ++c) b_values[c] = b_tile[kk][thread_col + 16 * c];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] += a_values[r] * b_values[c];
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t row = row0 + thread_row + 16 * r;
    if (row >= p.m) continue;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t col = col0 + thread_col + 16 * c;
      if (col >= p.n) continue;
      const int64_t index = t * p.c_batch_stride + row * p.c_row_stride + col;
      float value = p.alpha == 0.0f ? 0.0f : p.alpha * acc[r][c];  // alpha 0: no product, even of inf (as BLAS)
      if (p.beta != 0.0f) value += p.beta * load_float(p.c, p.c_dtype, index);
      if (p.bias != nullptr) value += load_float(p.bias, p.bias_dtype, col);
      store_float(p.c, p.c_dtype, index, value);
    }
  }
}

void own_gemm(const GemmProblem & p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.n + kTileN - 1) / kTileN),
                  static_cast<unsigned>((p.m + kTileM - 1) / kTileM), static_cast<unsigned>(p.batch));
  gemm_kernel<<<grid, kGemmThreads, 0, stream>>>(p);
  KOSMOS_GPU_LAUNCHED("gemm (own kernel)");
}

}  // namespace

#if defined(KOSMOS_USE_ROCM)

// Debian 12 has no hipBLASLt or rocBLAS: every product runs on the own kernel.
struct GemmPlans {};
void delete_gemm_plans(GemmPlans * plans) { std::default_delete<GemmPlans>()(plans); }
GemmPlansOwner make_gemm_plans(int) { return GemmPlansOwner(std::make_unique<GemmPlans>().release(), delete_gemm_plans); }
const char * gemm_library_name() { return "own tiled kernels (no hipBLASLt in this build)"; }
void set_gemm_tuning(GemmPlans &, int) {}  // one kernel: nothing to choose from
std::string gemm_tuning_report(const GemmPlans &) { return {}; }

void gpu_op(GpuContext &, const Matmul & op, cudaStream_t stream) {
  const GemmProblem p = problem_of(op);
  if (p.m == 0 || p.n == 0 || p.batch == 0) return;
  own_gemm(p, stream);
}

#else

// The name of a cuBLAS status (cublasGetStatusString lives in libcublas, which this backend does not link).
const char * blas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "an unnamed status (see cublas_api.h)";
  }
}

#define KOSMOS_CUBLAS_CHECK(call)                                                                              \
  do {                                                                                                         \
    const cublasStatus_t kosmos_blas_status = (call);                                                          \
    if (kosmos_blas_status != CUBLAS_STATUS_SUCCESS)                                                           \
      KOSMOS_FAIL("cuBLASLt call ", #call, " failed with status ", static_cast<int>(kosmos_blas_status), " (", \
                  blas_status_name(kosmos_blas_status), ")");                                                  \
  } while (0)

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // what Hopper's best kernels ask for

struct GemmPlans {
  cublasLtHandle_t handle = nullptr;  // its workspace is scratch (kScratchGemmWorkspace), counted with the device's
  int tuning_candidates = 1;  // set_gemm_tuning: the heuristic's algorithms a new plan times (1: its first, untimed)
  // The algorithm per (shape, strides, dtypes, alignments); `found` false: cuBLASLt declined the case;
  // `stage_bias`: the bias goes to the epilogue through scratch (with_staged_bias); `calls`: the products run on it.
  struct Plan {
    bool found = false, stage_bias = false;
    cublasLtMatmulAlgo_t algo{};
    int64_t calls = 0;
  };
  std::unordered_map<std::string, Plan> plans;
  // What tuning timed for a plan: its candidates, the one kept (0: the heuristic's first), and the medians of the
  // first and of the kept, in ms (negative: cuBLASLt declined that one at the call).
  struct Tuning {
    std::string key;
    int candidates = 0, kept = 0;
    float first_ms = 0.0f, kept_ms = 0.0f;
  };
  std::vector<Tuning> tunings;  // in the order the plans were made
};

void delete_gemm_plans(GemmPlans * plans) {
  if (plans == nullptr) return;
  if (plans->handle != nullptr) static_cast<void>(cublasLtDestroy(plans->handle));
  std::default_delete<GemmPlans>()(plans);
}
GemmPlansOwner make_gemm_plans(int ordinal) {
  KOSMOS_GPU_CHECK(cudaSetDevice(ordinal));  // the handle belongs to that device
  GemmPlansOwner plans(std::make_unique<GemmPlans>().release(), delete_gemm_plans);
  KOSMOS_CUBLAS_CHECK(cublasLtCreate(&plans->handle));
  return plans;
}
const char * gemm_library_name() {
#if defined(KOSMOS_GPU_EMULATION)
  return "cuBLASLt as emulated (backends/emulated/gemm_library.cpp)";
#else
  return "cuBLASLt";
#endif
}

void set_gemm_tuning(GemmPlans & plans, int candidates) { plans.tuning_candidates = std::max(1, candidates); }

namespace {

cudaDataType_t library_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    case DType::kI32: break;
  }
  KOSMOS_FAIL("matmul on cuda: dtype ", dtype_name(dtype), " has no cuBLASLt type (f32, bf16, f16)");
}

// The largest power of two (up to 256) that divides the address: what cuBLASLt's kernels may assume.
uint32_t alignment_of(const void * pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// RAII for the cuBLASLt descriptors of one call.
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~LtDescriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// A column-major layout of `rows` x `cols` with leading dimension `ld`, repeated `batch` times `stride` apart.
cublasLtMatrixLayout_t lt_layout(DType dtype, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  KOSMOS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, library_type(dtype), static_cast<uint64_t>(rows),
                                                 static_cast<uint64_t>(cols), ld < 1 ? 1 : ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    KOSMOS_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
    KOSMOS_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
  return layout;
}

// Whether cuBLASLt can take the case as laid out: a product to compute (k > 0, alpha != 0), and every leading
// dimension at least the stored rows of its column-major matrix (a view of one row may carry any stride).
bool runs_on_library(const GemmProblem & p) {
  const bool a_fits = p.a.ld >= (p.a.transposed ? p.m : p.k);
  const bool b_fits = p.b.ld >= (p.b.transposed ? p.k : p.n);
  return p.k > 0 && p.alpha != 0.0f && a_fits && b_fits && p.c_row_stride >= p.n;
}

// The cuBLASLt descriptors of a product. Column-major view: C^T [n, m] = op(B)^T [n, k] op(A)^T [k, m]; a
// row-major operand read as column-major is its own transpose, so each keeps its transpose flag and its leading
// dimension.
void describe(LtDescriptors & d, const GemmProblem & p) {
  KOSMOS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_first = p.b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t trans_second = p.a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  KOSMOS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_first, sizeof trans_first));
  KOSMOS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_second, sizeof trans_second));
  if (p.bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = library_type(p.bias_dtype);
    KOSMOS_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    KOSMOS_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof p.bias));
    KOSMOS_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
  }
  // Stored shapes (column-major rows x cols): B is [n, k] untransposed or [k, n] transposed; A likewise [k, m] or
  // [m, k].
  const bool b_transposed = p.b.transposed, a_transposed = p.a.transposed;
  d.a = lt_layout(p.b.dtype, b_transposed ? p.k : p.n, b_transposed ? p.n : p.k, p.b.ld, p.batch, p.b.batch_stride);
  d.b = lt_layout(p.a.dtype, a_transposed ? p.m : p.k, a_transposed ? p.k : p.m, p.a.ld, p.batch, p.a.batch_stride);
  d.c = lt_layout(p.c_dtype, p.n, p.m, p.c_row_stride, p.batch, p.c_batch_stride);
}

// What plan_key's fields are, for the messages that name a product by it.
constexpr const char * kPlanKeyFields = "(batch,m,n,k|strides|dtypes|alignments)";

// A product cuBLASLt declines (`why`) goes to the own kernel: said once per plan, since it is slower and should not
// happen for the model's products.
void warn_own_kernel(const std::string & why, const std::string & key) {
  std::fprintf(stderr, "kosmos: warning: %s for the product %s %s; the own GEMM kernel runs it, slower. Please report "
               "this.\n", why.c_str(), key.c_str(), kPlanKeyFields);
}

// What decides the plan of a product: shape, strides, dtypes, whether C is read, whether there is a product at all
// (alpha 0: the own kernel, which multiplies nothing, not even an inf), and the pointers' alignments.
std::string plan_key(const GemmProblem & p) {
  std::ostringstream key;
  key << p.batch << ',' << p.m << ',' << p.n << ',' << p.k << '|' << p.a.batch_stride << ',' << p.a.ld << ','
      << p.a.transposed << ',' << p.b.batch_stride << ',' << p.b.ld << ',' << p.b.transposed << ',' << p.c_batch_stride
      << ',' << p.c_row_stride << '|' << static_cast<int>(p.a.dtype) << static_cast<int>(p.b.dtype)
      << static_cast<int>(p.c_dtype) << (p.bias ? static_cast<int>(p.bias_dtype) : 9) << (p.beta != 0.0f)
      << (p.alpha != 0.0f) << '|'
      << alignment_of(p.a.data) << ',' << alignment_of(p.b.data) << ',' << alignment_of(p.c) << ','
      << (p.bias ? alignment_of(p.bias) : 0);
  return key.str();
}

// The heuristic's first `wanted` algorithms for the product, best first by its estimate; none where cuBLASLt
// declines it (NOT_SUPPORTED, or no result). Any other status means the descriptors are wrong, a bug of ours: the
// product is declined too (training goes on, on the own kernel, and --profile shows it), with a warning that names
// the product and the status, once per plan.
std::vector<cublasLtMatmulAlgo_t> heuristic_algorithms(GemmPlans & plans, const GemmProblem & p, int wanted) {
  LtDescriptors d;
  describe(d, p);
  KOSMOS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.preference));
  const uint64_t workspace = kWorkspaceBytes;
  KOSMOS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                           &workspace, sizeof workspace));
  const uint32_t align_first = alignment_of(p.b.data), align_second = alignment_of(p.a.data),
                 align_c = alignment_of(p.c);
  KOSMOS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                           &align_first, sizeof align_first));
  KOSMOS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                           &align_second, sizeof align_second));
  KOSMOS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                           &align_c, sizeof align_c));
  KOSMOS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                           &align_c, sizeof align_c));
  if (wanted > 1 && p.c_dtype != DType::kF32) {
    // Runners-up may split k and add the parts up in C's dtype (in place, or through the workspace in it): tuning
    // picks by time alone, so it picks among those that add the parts in f32, or split nothing.
    const uint32_t in_f32 = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    KOSMOS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        d.preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &in_f32, sizeof in_f32));
  }
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(wanted));
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(plans.handle, d.op, d.a, d.b, d.c, d.c, d.preference,
                                                               wanted, results.data(), &returned);
  if (status != CUBLAS_STATUS_SUCCESS && status != CUBLAS_STATUS_NOT_SUPPORTED)
    warn_own_kernel(std::string("cuBLASLt's heuristic answered status ") + std::to_string(static_cast<int>(status)) +
                        " (" + blas_status_name(status) + ")",
                    plan_key(p));
  std::vector<cublasLtMatmulAlgo_t> algorithms;
  if (status != CUBLAS_STATUS_SUCCESS) return algorithms;
  for (int i = 0; i < returned && i < wanted; ++i)
    if (results[static_cast<size_t>(i)].state == CUBLAS_STATUS_SUCCESS)
      algorithms.push_back(results[static_cast<size_t>(i)].algo);
  return algorithms;
}

// One cuBLASLt call of the product `q` as `d` describes it, on `algo`: D = alpha op(A) op(B) + beta C (+ bias), D over
// C, with kWorkspaceBytes of `workspace`. Returns the call's status (NOT_SUPPORTED: it declined the algorithm, before
// queueing any work).
cublasStatus_t launch_product(const GemmPlans & plans, const LtDescriptors & d, const GemmProblem & q,
                              const cublasLtMatmulAlgo_t & algo, void * workspace, cudaStream_t stream) {
  return cublasLtMatmul(plans.handle, d.op, &q.alpha, q.b.data, d.a, q.a.data, d.b, &q.beta, q.c, d.c, q.c, d.c,
                        &algo, workspace, kWorkspaceBytes, stream);
}

// A cublasLtMatmul status other than success or NOT_SUPPORTED (a decline): a failure, named with the product.
[[noreturn]] void fail_product(cublasStatus_t status, const std::string & key) {
  KOSMOS_FAIL("cuBLASLt call cublasLtMatmul failed with status ", static_cast<int>(status), " (",
              blas_status_name(status), ") for the product ", key, " ", kPlanKeyFields,
              "; --backend cuda-owngemm runs every product on the own GEMM kernel instead");
}

constexpr int kTimedRuns = 3;  // runs timed per candidate, after one untimed (its first launch loads the kernel)
// A candidate replaces the heuristic's first choice only if its median is at least 2% less: a closer call is as
// likely the clock's noise, and keeping the first then keeps a run's choices those of an untuned run.
constexpr float kTuningMargin = 0.98f;
// With beta != 0 every timed run adds to C again, so C is kept on the host meanwhile and put back: not for more than
// this (such a product keeps the heuristic's first choice).
constexpr size_t kMostKeptBytes = size_t{1} << 30;

// The bytes from C's first element to its last, gaps between rows and batches included: what a run may write.
size_t c_span_bytes(const GemmProblem & q) {
  const int64_t elements = (q.batch - 1) * q.c_batch_stride + (q.m - 1) * q.c_row_stride + q.n;
  return static_cast<size_t>(elements) * dtype_size(q.c_dtype);
}

// Timing events, destroyed however the scope ends.
struct TimingEvents {
  cudaEvent_t marks[kTimedRuns + 1] = {};
  TimingEvents() {
    for (cudaEvent_t & mark : marks) KOSMOS_GPU_CHECK(cudaEventCreateWithFlags(&mark, 0));
  }
  ~TimingEvents() {
    for (cudaEvent_t mark : marks)
      if (mark != nullptr) KOSMOS_GPU_IGNORE(cudaEventDestroy(mark));
  }
  TimingEvents(const TimingEvents &) = delete;
  TimingEvents & operator=(const TimingEvents &) = delete;
};

// The median of kTimedRuns runs of the product `key` on `algo` (ms), after one untimed, queued back to back (the
// descriptors made once, so that the host keeps ahead of all but the smallest products); -1 where cuBLASLt declines
// the algorithm at the call. Waits for the runs.
float median_ms(GpuContext & ctx, const GemmPlans & plans, const GemmProblem & q, const cublasLtMatmulAlgo_t & algo,
                const std::string & key, cudaStream_t stream) {
  void * workspace = ctx.scratch(kScratchGemmWorkspace, kWorkspaceBytes, stream);
  LtDescriptors d;
  describe(d, q);
  const auto launched = [&] {  // false: declined
    const cublasStatus_t status = launch_product(plans, d, q, algo, workspace, stream);
    if (status != CUBLAS_STATUS_SUCCESS && status != CUBLAS_STATUS_NOT_SUPPORTED) fail_product(status, key);
    return status == CUBLAS_STATUS_SUCCESS;
  };
  if (!launched()) return -1.0f;
  TimingEvents events;
  KOSMOS_GPU_CHECK(cudaEventRecord(events.marks[0], stream));
  for (int run = 1; run <= kTimedRuns; ++run) {
    if (!launched()) return -1.0f;
    KOSMOS_GPU_CHECK(cudaEventRecord(events.marks[run], stream));
  }
  KOSMOS_GPU_CHECK(cudaEventSynchronize(events.marks[kTimedRuns]));
  float times[kTimedRuns];
  for (int run = 0; run < kTimedRuns; ++run)
    KOSMOS_GPU_CHECK(cudaEventElapsedTime(&times[run], events.marks[run], events.marks[run + 1]));
  std::sort(times, times + kTimedRuns);
  return times[kTimedRuns / 2];
}

// GEMM tuning: the fastest of `algorithms` (the heuristic's, best first) on the product itself, by their medians;
// the first unless another is kTuningMargin faster. C is left as it was (with beta != 0 through a copy on the host),
// for the caller's run. Records the outcome in plans.tunings under `key`.
cublasLtMatmulAlgo_t tuned_algorithm(GpuContext & ctx, GemmPlans & plans, const GemmProblem & q,
                                     const std::vector<cublasLtMatmulAlgo_t> & algorithms, const std::string & key,
                                     cudaStream_t stream) {
  std::vector<unsigned char> kept_c;  // C's span, while the timed runs add to it
  if (q.beta != 0.0f) {
    if (c_span_bytes(q) > kMostKeptBytes) return algorithms.front();
    kept_c.resize(c_span_bytes(q));
    KOSMOS_GPU_CHECK(cudaMemcpyAsync(kept_c.data(), q.c, kept_c.size(), cudaMemcpyDefault, stream));
  }
  std::vector<float> medians;
  for (const cublasLtMatmulAlgo_t & algo : algorithms) medians.push_back(median_ms(ctx, plans, q, algo, key, stream));
  if (!kept_c.empty()) {
    KOSMOS_GPU_CHECK(cudaMemcpyAsync(q.c, kept_c.data(), kept_c.size(), cudaMemcpyDefault, stream));
    KOSMOS_GPU_CHECK(cudaStreamSynchronize(stream));  // before kept_c goes
  }
  size_t kept = 0;
  for (size_t i = 1; i < medians.size(); ++i)
    if (medians[i] >= 0.0f && (medians[kept] < 0.0f || medians[i] < medians[kept])) kept = i;
  if (medians[0] >= 0.0f && medians[kept] > kTuningMargin * medians[0]) kept = 0;
  plans.tunings.push_back(
      {key, static_cast<int>(algorithms.size()), static_cast<int>(kept), medians[0], medians[kept]});
  return algorithms[kept];
}

// Whether the epilogue takes the bias as given: in C's dtype (the bias type cublasLt.h documents for it) and
// 16-byte aligned (some epilogue kernels read it in 16-byte vectors, and the heuristic takes no alignment
// preference for it).
bool bias_as_given(const GemmProblem & p) {
  return p.bias != nullptr && p.bias_dtype == p.c_dtype && alignment_of(p.bias) >= 16;
}

// The bias as the epilogue takes it, where the given one is not so: staged in scratch (256-byte aligned) in C's
// dtype. Casting an f32 bias to a bf16 C rounds it once more before the sum, well inside bf16's own rounding of the
// result.
GemmProblem with_staged_bias(GpuContext & ctx, const GemmProblem & p, cudaStream_t stream) {
  GemmProblem staged = p;
  staged.bias = ctx.scratch(kScratchBias, dtype_size(p.c_dtype) * static_cast<size_t>(p.n), stream);
  staged.bias_dtype = p.c_dtype;
  gpu_op(ctx, Cast{make_view(const_cast<void *>(staged.bias), staged.bias_dtype, {p.n}),
                   make_view(const_cast<void *>(p.bias), p.bias_dtype, {p.n})},
         stream);
  return staged;
}

// The product as planned for it: cuBLASLt's algorithm for its shape, or the own kernel where cuBLASLt declines it.
void run_planned(GpuContext & ctx, const GemmProblem & p, cudaStream_t stream) {
  GemmPlans & plans = ctx.gemm_plans();
  const std::string key = plan_key(p);
  auto found = plans.plans.find(key);
  if (found == plans.plans.end()) {
    GemmPlans::Plan plan;
    if (runs_on_library(p)) {
      plan.stage_bias = p.bias != nullptr && !bias_as_given(p);
      const GemmProblem q = plan.stage_bias ? with_staged_bias(ctx, p, stream) : p;
      const std::vector<cublasLtMatmulAlgo_t> algorithms = heuristic_algorithms(plans, q, plans.tuning_candidates);
      plan.found = !algorithms.empty();
      if (plan.found)
        plan.algo = algorithms.size() > 1 ? tuned_algorithm(ctx, plans, q, algorithms, key, stream) : algorithms[0];
    }
    found = plans.plans.emplace(key, plan).first;
  }
  GemmPlans::Plan & plan = found->second;
  ++plan.calls;
  if (plan.found) {
    const GemmProblem q = plan.stage_bias ? with_staged_bias(ctx, p, stream) : p;
    void * workspace = ctx.scratch(kScratchGemmWorkspace, kWorkspaceBytes, stream);
    LtDescriptors d;
    describe(d, q);
    const cublasStatus_t status = launch_product(plans, d, q, plan.algo, workspace, stream);
    if (status == CUBLAS_STATUS_SUCCESS) return;
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) fail_product(status, key);
    // The call declined the algorithm the heuristic chose for these very descriptors (a status it returns before
    // queueing work): the plan goes to the own kernel, for this call and the rest of the run, as a declined
    // heuristic does.
    warn_own_kernel("cuBLASLt declined (NOT_SUPPORTED) the algorithm its heuristic chose", key);
    plan.found = false;
  }
  ctx.count_slow_path();
  own_gemm(p, stream);
}

// A dimension of kSplitFrom or more elements that is no multiple of 16 sends the whole product to cuBLASLt's slower
// kernels: on an H200, the head's three products (the vocabulary of 64007 as n, k and m) ran at 105 to 140 TFLOP/s,
// the layers' products of aligned widths at 510 to 620 (device_check.sh's ops_bench, 2026-12-04). Such a dimension
// is split into a bulk of whole 128s and the rest, a product of its own; below kSplitFrom a second launch costs more
// than the slower kernel does.
constexpr int64_t kSplitFrom = 1024;

enum class GemmAxis { kM, kN, kK };

int64_t extent_along(const GemmProblem & p, GemmAxis axis) {
  switch (axis) {
    case GemmAxis::kM: return p.m;
    case GemmAxis::kN: return p.n;
    case GemmAxis::kK: return p.k;
  }
  KOSMOS_FAIL("matmul on cuda: unknown GEMM axis ", static_cast<int>(axis));
}

// `elements` of `dtype` further on from `data`.
const void * advanced(const void * data, DType dtype, int64_t elements) {
  return static_cast<const char *>(data) + elements * static_cast<int64_t>(dtype_size(dtype));
}

// The part of the product over [first, first + count) along `axis`: rows of C and op(A) (kM); columns of C, op(B)
// and the bias (kN); the summed index, columns of op(A) and rows of op(B) (kK).
GemmProblem part_along(const GemmProblem & p, GemmAxis axis, int64_t first, int64_t count) {
  GemmProblem part = p;
  switch (axis) {
    case GemmAxis::kM:
      part.m = count;
      part.a.data = advanced(p.a.data, p.a.dtype, first * p.a.row_stride());
      part.c = const_cast<void *>(advanced(p.c, p.c_dtype, first * p.c_row_stride));
      break;
    case GemmAxis::kN:
      part.n = count;
      part.b.data = advanced(p.b.data, p.b.dtype, first * p.b.col_stride());
      part.c = const_cast<void *>(advanced(p.c, p.c_dtype, first));
      if (p.bias != nullptr) part.bias = advanced(p.bias, p.bias_dtype, first);
      break;
    case GemmAxis::kK:
      part.k = count;
      part.a.data = advanced(p.a.data, p.a.dtype, first * p.a.col_stride());
      part.b.data = advanced(p.b.data, p.b.dtype, first * p.b.row_stride());
      break;
  }
  return part;
}

// The product on cuBLASLt, its large unaligned dimensions split off first (each part has one such dimension fewer).
// Split along k, the two parts sum into one C: the rest first, reading C as the caller asked (beta) and without the
// bias, then the bulk onto it (beta 1) with the bias. A C narrower than f32 so rounds the rest's sum once more, far
// under the rounding of the whole.
void run_split(GpuContext & ctx, const GemmProblem & p, cudaStream_t stream) {
  if (runs_on_library(p)) {
    for (const GemmAxis axis : {GemmAxis::kM, GemmAxis::kN, GemmAxis::kK}) {
      const int64_t extent = extent_along(p, axis);
      if (extent < kSplitFrom || extent % 16 == 0) continue;
      const int64_t bulk = extent / 128 * 128;
      GemmProblem rest = part_along(p, axis, bulk, extent - bulk), whole_tiles = part_along(p, axis, 0, bulk);
      if (axis == GemmAxis::kK) {
        rest.bias = nullptr;
        whole_tiles.beta = 1.0f;
        run_split(ctx, rest, stream);
        run_split(ctx, whole_tiles, stream);
      } else {
        run_split(ctx, whole_tiles, stream);
        run_split(ctx, rest, stream);
      }
      return;
    }
  }
  run_planned(ctx, p, stream);
}

}  // namespace

std::string gemm_tuning_report(const GemmPlans & plans) {
  if (plans.tunings.empty()) return {};
  int changed = 0, rescued = 0;
  int64_t calls = 0;
  double first_ms = 0.0, saved_ms = 0.0;  // over every call so far of the plans whose first choice ran
  std::ostringstream changes;
  changes << std::fixed << std::setprecision(3);
  for (const GemmPlans::Tuning & tuning : plans.tunings) {
    const int64_t plan_calls = plans.plans.at(tuning.key).calls;
    if (tuning.kept != 0) {
      ++changed;
      changes << "  " << tuning.key << ": algorithm " << tuning.kept + 1 << " of " << tuning.candidates << ", "
              << tuning.kept_ms << " ms against ";
      if (tuning.first_ms >= 0.0f)
        changes << tuning.first_ms << " ms for the first";
      else
        changes << "the first, which cuBLASLt declined at the call";
      changes << " (" << plan_calls << " calls)\n";
    }
    if (tuning.first_ms < 0.0f) {
      rescued += tuning.kept != 0;
      continue;
    }
    calls += plan_calls;
    first_ms += static_cast<double>(plan_calls) * tuning.first_ms;
    saved_ms += static_cast<double>(plan_calls) * (tuning.first_ms - tuning.kept_ms);
  }
  std::ostringstream report;
  report << std::fixed << std::setprecision(1) << "GEMM tuning: " << plans.tunings.size() << " product plans "
         << kPlanKeyFields << " timed up to " << plans.tuning_candidates << " of cuBLASLt's algorithms each (the "
         << "median of " << kTimedRuns << " runs); " << changed << " kept another than the heuristic's first";
  if (rescued > 0) report << " (" << rescued << " of them because cuBLASLt declined the first at the call)";
  report << "; by those medians the " << calls << " products run so far on tuned plans took " << saved_ms
         << " ms less than the heuristic's first choices would (" << first_ms << " ms)";
  if (rescued > 0) report << ", not counting those " << rescued;
  report << "\n" << changes.str();
  return report.str();
}

void gpu_op(GpuContext & ctx, const Matmul & op, cudaStream_t stream) {
  const GemmProblem p = problem_of(op);
  if (p.m == 0 || p.n == 0 || p.batch == 0) return;
  if (ctx.gemm_path() == GemmPath::kOwnKernels) {
    own_gemm(p, stream);
    return;
  }
  run_split(ctx, p, stream);
}

#endif

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
