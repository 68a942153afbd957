// cudnn_attention.cu: bf16 attention on cuDNN's fused flash-attention engines, for the backend variant cuda-cudnn
// (AttentionKernels::kCudnn). cuDNN 9's backend API takes the attention as a graph of operations, which its runtime
// fusion engine recognises and runs as one kernel each way. The graphs are the ones cudnn-frontend 1.x lowers its
// sdpa and sdpa_backward nodes to on a cuDNN 9.19 backend (its one-node SDPA descriptors take no causal mask or
// dropout before 9.21):
//   forward:  S = Q K^T, S *= scale, the causal mask (row and column indices, row >= column, else -inf), the softmax
//             as max, subtract, exp, sum, log, add (lse, kept for the backward), divide; dropout (a Bernoulli draw
//             of the keep probability, times 1/keep); O = P V.
//   backward: dropout's draw again, delta = rowsum(dO O) (times keep with dropout), S from Q K^T, P = exp(S scale -
//             lse) masked, dV = P'^T dO, dP = dO V^T, dS = P (dP' - delta) scale, dK = dS^T Q, dQ = dS K in f32
//             (cuDNN adds it up in any order), then dQ in bf16.
// cuDNN is opened at run time (dlopen), so neither the build nor a machine without it needs it; where it is
// missing, or declines a case, the mma.sync kernels run the attention, with a warning. Its dropout masks come from
// its own generator, seeded from AttentionParams, so they are not the CPU's (nor the same over tensor-parallel
// layouts), and its backward adds dq up in any order: it takes only ops that allow both, those with
// AttentionParams::deterministic false (`--attention-backward atomic`). CUDA only: the emulated and ROCm builds
// leave this file out.
#include <dlfcn.h>

#include <cudnn_graph.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <vector>

#include "backends/cuda/cudnn_attention.h"
#include "backends/cuda/gpu_kernels.h"
#include "backends/cuda/gpu_probe.h"
#include "backends/splitmix.h"

namespace kosmos::cuda {
namespace {

// cuDNN's entry points, looked up in the library opened at run time.
struct CudnnLibrary {
  void * library = nullptr;
  decltype(&cudnnGetVersion) get_version = nullptr;
  decltype(&cudnnGetErrorString) error_string = nullptr;
  decltype(&cudnnGetLastErrorString) last_error = nullptr;
  decltype(&cudnnCreate) create = nullptr;
  decltype(&cudnnDestroy) destroy = nullptr;
  decltype(&cudnnSetStream) set_stream = nullptr;
  decltype(&cudnnBackendCreateDescriptor) create_descriptor = nullptr;
  decltype(&cudnnBackendDestroyDescriptor) destroy_descriptor = nullptr;
  decltype(&cudnnBackendSetAttribute) set_attribute = nullptr;
  decltype(&cudnnBackendGetAttribute) get_attribute = nullptr;
  decltype(&cudnnBackendFinalize) finalize = nullptr;
  decltype(&cudnnBackendExecute) execute = nullptr;
};

// A cuDNN call that failed while a graph or plan was built: the case is declined (its message says why).
struct CudnnDeclined : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// cuDNN's message about its last failure ("" where it gives none).
std::string last_message(const CudnnLibrary & lib) {
  char detail[512] = "";
  lib.last_error(detail, sizeof detail);
  return detail;
}

std::string status_text(const CudnnLibrary & lib, cudnnStatus_t status) {
  const std::string detail = last_message(lib);
  return lib.error_string(status) + (detail.empty() ? "" : " (" + detail + ")");
}

void declined_unless_success(const CudnnLibrary & lib, cudnnStatus_t status, const char * what) {
  if (status != CUDNN_STATUS_SUCCESS) throw CudnnDeclined(std::string(what) + ": " + status_text(lib, status));
}

// 9.10.2: cudnn-frontend refuses bf16 attention on 9.10.0 and 9.10.1 for known bugs.
constexpr size_t kOldestCudnn = 91002;
// Before 9.16 the backward needs a padding mask when the keys are not a multiple of 128 (cudnn-frontend works around
// a bug so): such layouts are left to the mma.sync kernels there.
constexpr size_t kWholeKeyTilesBefore = 91600;

// Opens cuDNN 9 as the loader finds libraries (LD_LIBRARY_PATH, then the system's); "" or why not.
std::string open_library(CudnnLibrary & lib) {
  for (const char * name : {"libcudnn.so.9", "libcudnn.so"})
    if ((lib.library = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
  const auto loader_error = [] {
    const char * error = dlerror();
    return std::string(error != nullptr ? error : "no message");
  };
  if (lib.library == nullptr)
    return "cannot open libcudnn.so.9 (" + loader_error() + "); put the folder of cuDNN 9's libraries on "
           "LD_LIBRARY_PATH";
  const auto find = [&](auto & entry, const char * symbol) {
    entry = reinterpret_cast<std::remove_reference_t<decltype(entry)>>(dlsym(lib.library, symbol));
    return entry != nullptr;
  };
  const bool found = find(lib.get_version, "cudnnGetVersion") && find(lib.error_string, "cudnnGetErrorString") &&
                     find(lib.last_error, "cudnnGetLastErrorString") && find(lib.create, "cudnnCreate") &&
                     find(lib.destroy, "cudnnDestroy") && find(lib.set_stream, "cudnnSetStream") &&
                     find(lib.create_descriptor, "cudnnBackendCreateDescriptor") &&
                     find(lib.destroy_descriptor, "cudnnBackendDestroyDescriptor") &&
                     find(lib.set_attribute, "cudnnBackendSetAttribute") &&
                     find(lib.get_attribute, "cudnnBackendGetAttribute") &&
                     find(lib.finalize, "cudnnBackendFinalize") && find(lib.execute, "cudnnBackendExecute");
  if (!found) return "the cuDNN library found lacks the backend API of cuDNN 9 (" + loader_error() + ")";
  // The graphs are cudnn-frontend's for cuDNN 9.10 and later: before 9.10 its mask fills with the lowest f32 rather
  // than -inf, and before 9.6 it zeroes dq's f32 sums itself.
  const size_t version = lib.get_version();
  if (version < kOldestCudnn)
    return "cuDNN " + dotted_version(version) + " is older than 9.10.2, which these graphs need; put a newer cuDNN "
           "9's libraries on LD_LIBRARY_PATH";
  return "";
}

// Where an execution's pointers go: one slot for each tensor a graph may give memory to or pass by value.
enum Binding : int {
  kQ, kK, kV, kOut, kLse, kDout, kDq, kDk, kDv,  // the op's tensors
  kSeed, kOffset,                                 // dropout's generator state (device int64s)
  kDeltaScratch, kDqSums,                         // the backward's f32 scratch
  kScale, kNegativeInfinity, kDropScale, kKeep,   // host f32 scalars, by value
  kBindings
};

// One op's sizes and strides (in elements), as its graph is built for them: a plan's key, with the direction.
struct GraphLayout {
  int64_t batch, heads, tq, tk, head_dim;
  std::array<int64_t, 4> q, k, v, out, dout, dq, dk, dv;
  bool causal;
  float dropout_p;
  std::vector<int64_t> key(bool backward) const {
    std::vector<int64_t> key{backward, batch, heads, tq, tk, head_dim, causal, 0};
    std::memcpy(&key.back(), &dropout_p, sizeof dropout_p);
    for (const auto * strides : {&q, &k, &v, &out, &dout, &dq, &dk, &dv})
      if (backward || strides == &q || strides == &k || strides == &v || strides == &out)
        key.insert(key.end(), strides->begin(), strides->end());
    return key;
  }
};

using Dims = std::array<int64_t, 4>;

// A plan and every descriptor of its graph (kept while the plan lives), the uids of the tensors it binds, and its
// workspace.
struct Plan {
  explicit Plan(const CudnnLibrary & lib) : lib(lib) {}
  Plan(const Plan &) = delete;
  Plan & operator=(const Plan &) = delete;
  ~Plan() {
    for (auto it = descriptors.rbegin(); it != descriptors.rend(); ++it) lib.destroy_descriptor(*it);
  }
  const CudnnLibrary & lib;
  std::vector<cudnnBackendDescriptor_t> descriptors;
  cudnnBackendDescriptor_t execution = nullptr;
  std::vector<Binding> bound;   // what each tensor given memory or a value at execution is
  std::vector<int64_t> uids;    // and its uid, in the same order
  int64_t workspace_bytes = 0;
};

// What cuDNN's heuristics and engines answered for one graph.
struct PlanAttempt {
  int64_t engines_offered = 0;
  std::vector<cudnnStatus_t> refusals;  // of the engines that made no plan, in order
  std::string reasons;                  // their statuses and cuDNN's messages
};

// Builds one graph's descriptors into a Plan: tensors, then operations in order, then the plan.
class GraphBuilder {
 public:
  GraphBuilder(const CudnnLibrary & lib, Plan & plan) : lib_(lib), plan_(plan) {}

  // A tensor the plan gives memory to at execution (`binding`), or an intermediate of the graph.
  cudnnBackendDescriptor_t bound(Binding binding, cudnnDataType_t type, const Dims & dims, const Dims & strides) {
    const cudnnBackendDescriptor_t tensor = make_tensor(type, dims, strides, false, false);
    plan_.bound.push_back(binding);
    plan_.uids.push_back(next_uid_ - 1);
    return tensor;
  }
  cudnnBackendDescriptor_t virtual_tensor(cudnnDataType_t type, const Dims & dims, const Dims & strides) {
    return make_tensor(type, dims, strides, true, false);
  }
  // A host f32 scalar passed by value.
  cudnnBackendDescriptor_t scalar(Binding binding) {
    const cudnnBackendDescriptor_t tensor = make_tensor(CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
    plan_.bound.push_back(binding);
    plan_.uids.push_back(next_uid_ - 1);
    return tensor;
  }

  // y = mode(x[, b][, t]) elementwise (GEN_INDEX along `axis`), computed in `precision`.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t precision, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y, cudnnBackendDescriptor_t t = nullptr,
                 int64_t axis = -1) {
    const cudnnBackendDescriptor_t math = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set(math, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set(math, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision);
    if (axis >= 0) set(math, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    finalize(math, "a pointwise descriptor");
    const cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    link(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, math);
    link(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
    if (b != nullptr) link(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
    if (t != nullptr) link(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t);
    link(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
    const float one = 1.0f;
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
    add_operation(op, "a pointwise operation");
  }
  // c = a b over the last two dimensions, in f32.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    const cudnnBackendDescriptor_t math = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    set(math, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    finalize(math, "a matmul descriptor");
    const cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    link(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a);
    link(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b);
    link(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c);
    link(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, math);
    add_operation(op, "a matmul operation");
  }
  // y = the max or sum of x over the dimensions where y has size 1, in f32.
  void reduce(cudnnReduceTensorOp_t how, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    const cudnnBackendDescriptor_t math = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    set(math, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    set(math, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &how);
    finalize(math, "a reduction descriptor");
    const cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    link(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x);
    link(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
    link(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, math);
    add_operation(op, "a reduction operation");
  }
  // y: x seen through other dimensions and strides (a transpose).
  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    const cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    link(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x);
    link(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y);
    add_operation(op, "a reshape operation");
  }
  // y: 1 with probability `keep`, else 0, from Philox at (seed, offset).
  void bernoulli(cudnnBackendDescriptor_t y, cudnnBackendDescriptor_t seed, cudnnBackendDescriptor_t offset,
                 double keep) {
    const cudnnBackendDescriptor_t draw = make(CUDNN_BACKEND_RNG_DESCRIPTOR);
    const cudnnRngDistribution_t distribution = CUDNN_RNG_DISTRIBUTION_BERNOULLI;
    set(draw, CUDNN_ATTR_RNG_DISTRIBUTION, CUDNN_TYPE_RNG_DISTRIBUTION, 1, &distribution);
    set(draw, CUDNN_ATTR_RNG_BERNOULLI_DIST_PROBABILITY, CUDNN_TYPE_DOUBLE, 1, &keep);
    finalize(draw, "a Bernoulli generator");
    const cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_RNG_DESCRIPTOR);
    link(op, CUDNN_ATTR_OPERATION_RNG_YDESC, y);
    link(op, CUDNN_ATTR_OPERATION_RNG_SEED, seed);
    link(op, CUDNN_ATTR_OPERATION_RNG_DESC, draw);
    link(op, CUDNN_ATTR_OPERATION_RNG_OFFSET_DESC, offset);
    add_operation(op, "a random-number operation");
  }

  // The operation graph of the operations so far (with the handle where there is one: a machine without a GPU has
  // none, and builds the graph only).
  cudnnBackendDescriptor_t graph(cudnnHandle_t handle) {
    const cudnnBackendDescriptor_t graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    if (handle != nullptr) set(graph, kGraphHandle, CUDNN_TYPE_HANDLE, 1, &handle);
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(operations_.size()),
        operations_.data());
    finalize(graph, "the operation graph");
    return graph;
  }
  // The graph, the engines cuDNN's heuristics offer for it in their order, and the first of them that makes a plan
  // (Plan::execution, with its workspace): for the device of `handle`, or for the one `device_json` describes (cuDNN's
  // JSON of device properties: plans made without the device, as cuDNN 9.8 and later allow). What each engine that
  // made none answered, in order, in the returned PlanAttempt.
  PlanAttempt try_plans(cudnnHandle_t handle, const std::string & device_json = "") {
    cudnnBackendDescriptor_t device = nullptr;
    if (!device_json.empty()) {
      device = make(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
      set(device, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
          static_cast<int64_t>(device_json.size()), device_json.data());
      finalize(device, "the device's properties");
    }
    const cudnnBackendDescriptor_t graph = this->graph(handle);
    const cudnnBackendDescriptor_t heuristics = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    link(heuristics, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    set(heuristics, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (device != nullptr) link(heuristics, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, device);
    finalize(heuristics, "the heuristics query");
    int64_t offered = 0;
    declined_unless_success(lib_, lib_.get_attribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                      CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &offered, nullptr),
                            "counting the engines offered");
    std::vector<cudnnBackendDescriptor_t> configs(static_cast<size_t>(offered));
    for (cudnnBackendDescriptor_t & config : configs) config = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    if (offered > 0)  // the count asked for may exceed the engines that take the graph: `offered` becomes those
      declined_unless_success(lib_, lib_.get_attribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, offered, &offered,
                                                        configs.data()),
                              "reading the engines offered");
    PlanAttempt attempt;
    attempt.engines_offered = offered;
    for (int64_t i = 0; i < offered; ++i) {
      const cudnnBackendDescriptor_t candidate = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      if (handle != nullptr) set(candidate, kPlanHandle, CUDNN_TYPE_HANDLE, 1, &handle);
      if (device != nullptr)
        link(candidate, CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, device);
      link(candidate, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[i]);
      const cudnnStatus_t status = lib_.finalize(candidate);
      if (status == CUDNN_STATUS_SUCCESS) {
        plan_.execution = candidate;
        declined_unless_success(lib_, lib_.get_attribute(candidate, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                          CUDNN_TYPE_INT64, 1, nullptr, &plan_.workspace_bytes),
                                "reading the plan's workspace size");
        return attempt;
      }
      attempt.refusals.push_back(status);
      attempt.reasons += (attempt.reasons.empty() ? "" : "; ") + status_text(lib_, status);
    }
    if (offered == 0) attempt.reasons = "cuDNN's heuristics offer no engine for the graph: " + last_error();
    return attempt;
  }
  // The same on `handle`'s device, declined where no engine makes a plan.
  void finish(cudnnHandle_t handle) {
    const PlanAttempt attempt = try_plans(handle);
    if (plan_.execution == nullptr)
      throw CudnnDeclined(attempt.engines_offered == 0 ? attempt.reasons
                                                       : "none of the " + std::to_string(attempt.engines_offered) +
                                                             " engines offered makes a plan: " + attempt.reasons);
  }

 private:
  // The handle attributes cuDNN 9 marks deprecated and cudnn-frontend still sets.
  static constexpr auto kGraphHandle = static_cast<cudnnBackendAttributeName_t>(800);  // OPERATIONGRAPH_HANDLE
  static constexpr auto kPlanHandle = static_cast<cudnnBackendAttributeName_t>(400);   // EXECUTION_PLAN_HANDLE

  std::string last_error() const {
    const std::string detail = last_message(lib_);
    return detail.empty() ? "(cuDNN gives no reason; CUDNN_LOGLEVEL_DBG=2 prints its log)" : detail;
  }
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t descriptor = nullptr;
    declined_unless_success(lib_, lib_.create_descriptor(type, &descriptor), "creating a descriptor");
    plan_.descriptors.push_back(descriptor);
    return descriptor;
  }
  void set(cudnnBackendDescriptor_t descriptor, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
           int64_t count, const void * values) {
    const cudnnStatus_t status = lib_.set_attribute(descriptor, name, type, count, values);
    if (status != CUDNN_STATUS_SUCCESS)
      throw CudnnDeclined("setting attribute " + std::to_string(static_cast<int>(name)) + ": " +
                          status_text(lib_, status));
  }
  // An attribute whose value is another descriptor.
  void link(cudnnBackendDescriptor_t descriptor, cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t target) {
    set(descriptor, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &target);
  }
  void finalize(cudnnBackendDescriptor_t descriptor, const char * what) {
    declined_unless_success(lib_, lib_.finalize(descriptor), what);
  }
  void add_operation(cudnnBackendDescriptor_t op, const char * what) {
    finalize(op, what);
    operations_.push_back(op);
  }
  cudnnBackendDescriptor_t make_tensor(cudnnDataType_t type, const Dims & dims, const Dims & strides, bool is_virtual,
                                       bool by_value) {
    const cudnnBackendDescriptor_t tensor = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t uid = next_uid_++, alignment = 16;
    set(tensor, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    set(tensor, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
    set(tensor, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
    set(tensor, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set(tensor, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    if (is_virtual) set(tensor, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) set(tensor, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    finalize(tensor, "a tensor descriptor");
    return tensor;
  }

  const CudnnLibrary & lib_;
  Plan & plan_;
  std::vector<cudnnBackendDescriptor_t> operations_;
  int64_t next_uid_ = 1;
};

Dims dense(const Dims & dims) { return {dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1}; }
Dims transposed(const Dims & dims) { return {dims[0], dims[1], dims[3], dims[2]}; }  // also strides

// The graph's pieces both directions share.
struct Common {
  Dims scores, scores_strides, row_stats, row_stats_strides;
  cudnnBackendDescriptor_t scale, negative_infinity, seed, offset, drop_scale;
};

Common common_tensors(GraphBuilder & g, const GraphLayout & l) {
  Common c;
  c.scores = {l.batch, l.heads, l.tq, l.tk};
  c.scores_strides = dense(c.scores);
  c.row_stats = {l.batch, l.heads, l.tq, 1};
  c.row_stats_strides = dense(c.row_stats);
  c.scale = g.scalar(kScale);
  c.negative_infinity = l.causal ? g.scalar(kNegativeInfinity) : nullptr;
  const bool dropout = l.dropout_p > 0.0f;
  c.seed = dropout ? g.bound(kSeed, CUDNN_DATA_INT64, {1, 1, 1, 1}, {1, 1, 1, 1}) : nullptr;
  c.offset = dropout ? g.bound(kOffset, CUDNN_DATA_INT64, {1, 1, 1, 1}, {1, 1, 1, 1}) : nullptr;
  c.drop_scale = dropout ? g.scalar(kDropScale) : nullptr;
  return c;
}

// The causal mask on scores x (query i sees the keys j <= i): -inf elsewhere.
cudnnBackendDescriptor_t causal_masked(GraphBuilder & g, const Common & c, cudnnBackendDescriptor_t x) {
  const cudnnBackendDescriptor_t row = g.virtual_tensor(CUDNN_DATA_INT32, c.scores, c.scores_strides);
  const cudnnBackendDescriptor_t column = g.virtual_tensor(CUDNN_DATA_INT32, c.scores, c.scores_strides);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, x, nullptr, row, nullptr, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, x, nullptr, column, nullptr, 3);
  const cudnnBackendDescriptor_t seen = g.virtual_tensor(CUDNN_DATA_BOOLEAN, c.scores, c.scores_strides);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, column, seen);
  const cudnnBackendDescriptor_t y = g.virtual_tensor(CUDNN_DATA_FLOAT, c.scores, c.scores_strides);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, x, c.negative_infinity, y, seen);
  return y;
}

// The keep mask of the dropout, as a [B, H, Tq, Tk] f32 of 0s and 1s.
cudnnBackendDescriptor_t keep_mask(GraphBuilder & g, const Common & c, const GraphLayout & l) {
  const cudnnBackendDescriptor_t mask = g.virtual_tensor(CUDNN_DATA_FLOAT, c.scores, c.scores_strides);
  g.bernoulli(mask, c.seed, c.offset, 1.0 - static_cast<double>(l.dropout_p));
  return mask;
}

void build_forward(GraphBuilder & g, const GraphLayout & l) {
  const Dims queries{l.batch, l.heads, l.tq, l.head_dim}, keys{l.batch, l.heads, l.tk, l.head_dim};
  const Common c = common_tensors(g, l);
  const bool dropout = l.dropout_p > 0.0f;
  const auto q = g.bound(kQ, CUDNN_DATA_BFLOAT16, queries, l.q);
  const auto k_t = g.bound(kK, CUDNN_DATA_BFLOAT16, transposed(keys), transposed(l.k));
  const auto v = g.bound(kV, CUDNN_DATA_BFLOAT16, keys, l.v);
  const auto out = g.bound(kOut, CUDNN_DATA_BFLOAT16, queries, l.out);
  const auto lse = g.bound(kLse, CUDNN_DATA_FLOAT, c.row_stats, c.row_stats_strides);
  const auto scores = [&](cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    return g.virtual_tensor(type, c.scores, c.scores_strides);
  };
  const auto row_values = [&] { return g.virtual_tensor(CUDNN_DATA_FLOAT, c.row_stats, c.row_stats_strides); };
  const auto raw = scores(), scaled = scores();
  g.matmul(q, k_t, raw);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, raw, c.scale, scaled);
  const auto seen = l.causal ? causal_masked(g, c, scaled) : scaled;
  const auto row_max = row_values(), shifted = scores(), exponents = scores(), row_sum = row_values(),
             log_sum = row_values();
  g.reduce(CUDNN_REDUCE_TENSOR_MAX, seen, row_max);
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, seen, row_max, shifted);
  g.pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, shifted, nullptr, exponents);
  g.reduce(CUDNN_REDUCE_TENSOR_ADD, exponents, row_sum);
  g.pointwise(CUDNN_POINTWISE_LOG, CUDNN_DATA_FLOAT, row_sum, nullptr, log_sum);
  g.pointwise(CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, row_max, log_sum, lse);
  // The second product's A operand in bf16 (cuDNN's engines take it in the operands' dtype).
  const auto probabilities = scores(dropout ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16);
  g.pointwise(CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, exponents, row_sum, probabilities);
  cudnnBackendDescriptor_t weights = probabilities;
  if (dropout) {
    const auto kept = scores(), rescaled = scores(CUDNN_DATA_BFLOAT16);
    g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, probabilities, keep_mask(g, c, l), kept);
    g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, kept, c.drop_scale, rescaled);
    weights = rescaled;
  }
  g.matmul(weights, v, out);
}

void build_backward(GraphBuilder & g, const GraphLayout & l) {
  const Dims queries{l.batch, l.heads, l.tq, l.head_dim}, keys{l.batch, l.heads, l.tk, l.head_dim};
  const Common c = common_tensors(g, l);
  const bool dropout = l.dropout_p > 0.0f;
  const auto q = g.bound(kQ, CUDNN_DATA_BFLOAT16, queries, l.q);
  const auto k_t = g.bound(kK, CUDNN_DATA_BFLOAT16, transposed(keys), transposed(l.k));
  const auto v_t = g.bound(kV, CUDNN_DATA_BFLOAT16, transposed(keys), transposed(l.v));
  const auto out = g.bound(kOut, CUDNN_DATA_BFLOAT16, queries, l.out);
  const auto dout = g.bound(kDout, CUDNN_DATA_BFLOAT16, queries, l.dout);
  const auto lse = g.bound(kLse, CUDNN_DATA_FLOAT, c.row_stats, c.row_stats_strides);
  const auto dq = g.bound(kDq, CUDNN_DATA_BFLOAT16, queries, l.dq);
  const auto dk = g.bound(kDk, CUDNN_DATA_BFLOAT16, keys, l.dk);
  const auto dv = g.bound(kDv, CUDNN_DATA_BFLOAT16, keys, l.dv);
  const auto delta = g.bound(kDeltaScratch, CUDNN_DATA_FLOAT, c.row_stats, c.row_stats_strides);
  const auto dq_sums = g.bound(kDqSums, CUDNN_DATA_FLOAT, queries, dense(queries));
  const auto keep = g.scalar(kKeep);  // 1 without dropout, as cudnn-frontend's graph has it
  const auto scores = [&](cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    return g.virtual_tensor(type, c.scores, c.scores_strides);
  };
  // The scores' transposes ([B, H, Tk, Tq] over the same memory), in bf16 as the products' A operands.
  const auto scores_transposed = [&] {
    const Dims strides{c.scores_strides[0], c.scores_strides[1], 1, l.tk};
    return g.virtual_tensor(CUDNN_DATA_BFLOAT16, {l.batch, l.heads, l.tk, l.tq}, strides);
  };
  const cudnnBackendDescriptor_t mask = dropout ? keep_mask(g, c, l) : nullptr;
  // delta = rowsum(dO O) times the keep probability (the kept probabilities' scale undone; 1 without dropout).
  const auto products = g.virtual_tensor(CUDNN_DATA_FLOAT, queries, dense(queries));
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dout, out, products);
  const auto sums = g.virtual_tensor(CUDNN_DATA_FLOAT, c.row_stats, c.row_stats_strides);
  g.reduce(CUDNN_REDUCE_TENSOR_ADD, products, sums);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, sums, keep, delta);
  // P again, from the saved lse.
  const auto raw = scores(), scaled = scores(), centred = scores(), probabilities = scores();
  g.matmul(q, k_t, raw);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, raw, c.scale, scaled);
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, scaled, lse, centred);
  const auto seen = l.causal ? causal_masked(g, c, centred) : centred;
  g.pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, seen, nullptr, probabilities);
  // dV = (P dropped)^T dO.
  cudnnBackendDescriptor_t weights = probabilities;
  if (dropout) {
    const auto kept = scores(), rescaled = scores();
    g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, probabilities, mask, kept);
    g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, kept, c.drop_scale, rescaled);
    weights = rescaled;
  }
  const auto weights_t = scores_transposed();
  g.reshape(weights, weights_t);
  g.matmul(weights_t, dout, dv);
  // dS = P (dP' - delta) scale, where dP' is dO V^T through the same dropout.
  const auto dweights = scores();
  g.matmul(dout, v_t, dweights);
  cudnnBackendDescriptor_t dprobabilities = dweights;
  if (dropout) {
    dprobabilities = scores();
    g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dweights, mask, dprobabilities);
  }
  const auto centred_grads = scores(), weighted = scores(), dscores = scores();
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, dprobabilities, delta, centred_grads);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, centred_grads, probabilities, weighted);
  cudnnBackendDescriptor_t unscaled = weighted;
  if (dropout) {
    unscaled = scores();
    g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, weighted, c.drop_scale, unscaled);
  }
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, unscaled, c.scale, dscores);
  // dK = dS^T Q; dQ = dS K in f32, then in bf16.
  const auto dscores_t = scores_transposed();
  g.reshape(dscores, dscores_t);
  g.matmul(dscores_t, q, dk);
  const auto k = g.virtual_tensor(CUDNN_DATA_FLOAT, keys, l.k);
  g.reshape(k_t, k);
  g.matmul(dscores, k, dq_sums);
  g.pointwise(CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, dq_sums, nullptr, dq);
}

__global__ void write_generator_state_kernel(int64_t * words, int64_t seed, int64_t offset) {
  words[0] = seed;
  words[2] = offset;  // each tensor on 16 bytes, as their descriptors say
}

Dims strides_of(const TensorView & view) { return {view.stride(0), view.stride(1), view.stride(2), view.stride(3)}; }

bool fits(const TensorView & view, DType dtype) {  // 16-byte rows of a bf16 [B, H, T, dh] view
  if (view.dtype != dtype || view.ndim != 4 || view.stride(3) != 1) return false;
  if (reinterpret_cast<uintptr_t>(view.data) % 16 != 0) return false;
  for (int d = 0; d < 3; ++d)
    if (view.stride(d) % 8 != 0) return false;
  return true;
}

}  // namespace

// The library, the handle and the plans of one device (GpuContext::cudnn_attention).
struct CudnnAttention {
  CudnnAttention() { unavailable = open_library(lib); }
  CudnnAttention(const CudnnAttention &) = delete;
  CudnnAttention & operator=(const CudnnAttention &) = delete;
  ~CudnnAttention() {
    plans.clear();  // their descriptors before the handle and the library
    if (handle != nullptr) lib.destroy(handle);
    if (lib.library != nullptr) dlclose(lib.library);
  }
  // The plan for `layout` one way, built on first use; null where cuDNN declined it (warned once).
  Plan * plan(const GraphLayout & layout, bool backward) {
    const std::vector<int64_t> key = layout.key(backward);
    const auto found = plans.find(key);
    if (found != plans.end()) return found->second.get();
    std::unique_ptr<Plan> made;  // kept only whole: declined (null) or made
    try {
      if (handle == nullptr) declined_unless_success(lib, lib.create(&handle), "creating a cuDNN handle");
      made = std::make_unique<Plan>(lib);
      GraphBuilder builder(lib, *made);
      backward ? build_backward(builder, layout) : build_forward(builder, layout);
      builder.finish(handle);
    } catch (const CudnnDeclined & declined) {
      made.reset();
      std::fprintf(stderr,
                   "kosmos: warning: cuDNN declined the attention %s [%lld, %lld, %lld x %lld, %lld]%s%s: %s; the "
                   "mma.sync kernels run it\n",
                   backward ? "backward" : "forward", static_cast<long long>(layout.batch),
                   static_cast<long long>(layout.heads), static_cast<long long>(layout.tq),
                   static_cast<long long>(layout.tk), static_cast<long long>(layout.head_dim),
                   layout.causal ? " causal" : "", layout.dropout_p > 0.0f ? " with dropout" : "", declined.what());
    }
    return (plans[key] = std::move(made)).get();
  }

  CudnnLibrary lib;
  std::string unavailable;  // why cuDNN cannot run here ("" where it can)
  bool warned = false;      // the warning that says so, given
  cudnnHandle_t handle = nullptr;
  std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;
  // The lse of each forward that last ran here with dropout (its backward must run here: only cuDNN draws its masks
  // again); a forward elsewhere into the same lse takes it off.
  std::set<const void *> masked_forwards;
};

void delete_cudnn_attention(CudnnAttention * state) { delete state; }

CudnnGraphCheck check_cudnn_attention_graph(int64_t batch, int64_t heads, int64_t length, int64_t head_dim, bool causal,
                                            float dropout_p, bool backward, const std::string & device_json) {
  CudnnLibrary lib;
  CudnnGraphCheck check;
  check.refused = open_library(lib);
  if (!check.refused.empty()) return check;
  {
    GraphLayout layout{};
    layout.batch = batch;
    layout.heads = heads;
    layout.tq = layout.tk = length;
    layout.head_dim = head_dim;
    const int64_t row = 3 * heads * head_dim;
    layout.q = layout.k = layout.v = layout.dq = layout.dk = layout.dv = {length * row, head_dim, row, 1};
    layout.out = layout.dout = {length * heads * head_dim, head_dim, heads * head_dim, 1};
    layout.causal = causal;
    layout.dropout_p = dropout_p;
    Plan plan(lib);
    GraphBuilder builder(lib, plan);
    try {
      backward ? build_backward(builder, layout) : build_forward(builder, layout);
      if (device_json.empty()) {
        builder.graph(nullptr);
      } else {
        const PlanAttempt attempt = builder.try_plans(nullptr, device_json);
        check.engines_offered = attempt.engines_offered;
        check.plan_made = plan.execution != nullptr;
        for (const cudnnStatus_t status : attempt.refusals)
          ++(status == CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER ? check.compiled_unloaded : check.other_refusals);
        check.reasons = attempt.reasons;
      }
    } catch (const CudnnDeclined & declined) {
      check.refused = declined.what();
    }
  }
  dlclose(lib.library);
  return check;
}

namespace {

CudnnAttention & state_of(const GpuContext & ctx) {
  CudnnAttentionOwner & owner = ctx.cudnn_attention();
  if (owner == nullptr) owner = CudnnAttentionOwner(new CudnnAttention(), delete_cudnn_attention);
  return *owner;
}

GraphLayout layout_of(const AttentionForward & op) {
  GraphLayout l{};
  l.batch = op.q.dim(0);
  l.heads = op.q.dim(1);
  l.tq = op.q.dim(2);
  l.tk = op.k.dim(2);
  l.head_dim = op.q.dim(3);
  l.q = strides_of(op.q);
  l.k = strides_of(op.k);
  l.v = strides_of(op.v);
  l.out = l.dout = strides_of(op.out);
  l.dq = l.q;  // the backward as the model runs it: gradients laid out as their tensors (checked again there)
  l.dk = l.k;
  l.dv = l.v;
  l.causal = op.params.causal;
  l.dropout_p = op.params.dropout_p;
  return l;
}

// The forward-side fields of a backward, as the forward saw them.
AttentionForward forward_of(const AttentionBackward & op) {
  return AttentionForward{op.out, op.lse, op.q, op.k, op.v, op.params, op.keep};
}

// What a call binds: the op's pointers, the scratch's, and the host scalars (which outlive the call).
struct Bindings {
  explicit Bindings(const AttentionParams & p)
      : scale(p.scale), keep(1.0f - p.dropout_p), drop_scale(1.0f / (1.0f - p.dropout_p)) {
    pointers[kScale] = &scale;
    pointers[kNegativeInfinity] = &negative_infinity;
    pointers[kDropScale] = &drop_scale;
    pointers[kKeep] = &keep;
  }
  Bindings(const Bindings &) = delete;
  Bindings & operator=(const Bindings &) = delete;
  std::array<void *, kBindings> pointers{};
  float scale, keep, drop_scale, negative_infinity = -INFINITY;
};

// The next 256-byte-aligned piece of scratch.
void * carve(char *& cursor, size_t bytes) {
  void * start = cursor;
  cursor += (bytes + 255) / 256 * 256;
  return start;
}

// Runs `plan` on `stream` with the bindings, the generator's state (dropout) and scratch: the backward's delta and
// dq sums (`query_rows` rows of delta, each of head_dim dq sums; 0 in the forward) and cuDNN's workspace.
void execute(GpuContext & ctx, CudnnAttention & state, const Plan & plan, Bindings & bindings,
             const AttentionParams & params, int64_t query_rows, int64_t head_dim, cudaStream_t stream) {
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(query_rows);
  const size_t bytes = 256 + (row_bytes + 255) / 256 * 256 +
                       (row_bytes * static_cast<size_t>(head_dim) + 255) / 256 * 256 +
                       static_cast<size_t>(plan.workspace_bytes);
  char * cursor = static_cast<char *>(ctx.scratch(kScratchCudnn, bytes, stream));
  auto * words = static_cast<int64_t *>(carve(cursor, 4 * sizeof(int64_t)));  // seed, offset 16 bytes apart
  bindings.pointers[kSeed] = words;
  bindings.pointers[kOffset] = words + 2;
  if (query_rows > 0) {
    bindings.pointers[kDeltaScratch] = carve(cursor, row_bytes);
    bindings.pointers[kDqSums] = carve(cursor, row_bytes * static_cast<size_t>(head_dim));
  }
  void * workspace = plan.workspace_bytes > 0 ? carve(cursor, static_cast<size_t>(plan.workspace_bytes)) : nullptr;
  if (params.dropout_p > 0.0f) {  // the same in the forward and its backward: the same masks
    // The generator's seed from the op's seed, first row and head slice: layers, micro-batches and slices draw apart.
    const uint64_t slice = splitmix64_mix(params.first_row ^ splitmix64_mix(static_cast<uint64_t>(params.head_start)));
    const uint64_t seed = splitmix64_mix(params.seed ^ slice);
    write_generator_state_kernel<<<1, 1, 0, stream>>>(words, static_cast<int64_t>(seed >> 1), 0);  // non-negative
    KOSMOS_GPU_LAUNCHED("write_generator_state");
  }
  std::vector<void *> pointers;  // in the order of plan.uids
  for (const Binding binding : plan.bound) pointers.push_back(bindings.pointers[binding]);
  const CudnnLibrary & lib = state.lib;
  const auto check = [&](cudnnStatus_t status, const char * call) {
    KOSMOS_CHECK(status == CUDNN_STATUS_SUCCESS, "cuDNN's ", call, " failed for the attention: ",
                 status_text(lib, status), " (rerun with CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG=stderr for its log, "
                 "or with --backend cuda)");
  };
  check(lib.set_stream(state.handle, stream), "cudnnSetStream");
  cudnnBackendDescriptor_t pack = nullptr;
  check(lib.create_descriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack), "cudnnBackendCreateDescriptor");
  cudnnStatus_t status = lib.set_attribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                                           static_cast<int64_t>(plan.uids.size()), plan.uids.data());
  if (status == CUDNN_STATUS_SUCCESS)
    status = lib.set_attribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                               static_cast<int64_t>(pointers.size()), pointers.data());
  if (status == CUDNN_STATUS_SUCCESS)
    status = lib.set_attribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  if (status == CUDNN_STATUS_SUCCESS) status = lib.finalize(pack);
  if (status == CUDNN_STATUS_SUCCESS) status = lib.execute(state.handle, plan.execution, pack);
  lib.destroy_descriptor(pack);
  check(status, "cudnnBackendExecute");
}

}  // namespace

bool cudnn_attention_takes(const GpuContext & ctx, const AttentionForward & op) {
  if (ctx.attention_kernels() != AttentionKernels::kCudnn || op.params.deterministic) return false;
  const int64_t head_dim = op.q.dim(3);
  if (!fits(op.q, DType::kBF16) || !fits(op.k, DType::kBF16) || !fits(op.v, DType::kBF16) ||
      !fits(op.out, DType::kBF16) || head_dim % 8 != 0 || head_dim > 128 || op.q.dim(2) == 0 || op.k.dim(2) == 0)
    return false;
  if (op.params.causal && op.q.dim(2) != op.k.dim(2)) return false;  // cuDNN's mask starts at the first key
  if (op.q.dim(2) == 1 && op.k.dim(2) == 1) return false;  // cudnn-frontend refuses a backward of one query and key
  if (op.lse.dtype != DType::kF32 || !op.lse.is_contiguous() || reinterpret_cast<uintptr_t>(op.lse.data) % 16 != 0)
    return false;
  CudnnAttention & state = state_of(ctx);
  if (!state.unavailable.empty()) {
    if (!state.warned)
      std::fprintf(stderr, "kosmos: warning: --backend cuda-cudnn: %s; the mma.sync kernels run the attention\n",
                   state.unavailable.c_str());
    state.warned = true;
    return false;
  }
  if (state.lib.get_version() < kWholeKeyTilesBefore && op.k.dim(2) % 128 != 0) return false;
  // Both ways, so that a forward that ran here (whose dropout masks only cuDNN draws) has its backward.
  const GraphLayout layout = layout_of(op);
  return state.plan(layout, false) != nullptr && state.plan(layout, true) != nullptr;
}

bool cudnn_attention_forward(GpuContext & ctx, const AttentionForward & op, cudaStream_t stream) {
  if (ctx.attention_kernels() != AttentionKernels::kCudnn) return false;
  CudnnAttention & state = state_of(ctx);
  const bool here = cudnn_attention_takes(ctx, op);
  if (here && op.params.dropout_p > 0.0f)
    state.masked_forwards.insert(op.lse.data);
  else
    state.masked_forwards.erase(op.lse.data);
  if (!here) return false;
  const Plan * plan = state.plan(layout_of(op), false);
  KOSMOS_CHECK(plan != nullptr, "cudnn_attention_forward: an op cudnn_attention_takes declined");
  Bindings bindings(op.params);
  bindings.pointers[kQ] = op.q.data;
  bindings.pointers[kK] = op.k.data;
  bindings.pointers[kV] = op.v.data;
  bindings.pointers[kOut] = op.out.data;
  bindings.pointers[kLse] = op.lse.data;
  execute(ctx, state, *plan, bindings, op.params, 0, 0, stream);
  return true;
}

bool cudnn_attention_backward(GpuContext & ctx, const AttentionBackward & op, cudaStream_t stream) {
  if (ctx.attention_kernels() != AttentionKernels::kCudnn) return false;
  CudnnAttention & state = state_of(ctx);
  // Its forward ran here with dropout: so must it (only cuDNN draws those masks again). With dropout and a forward
  // elsewhere, it must not (those masks are the kernels' own).
  const bool must = op.params.dropout_p > 0.0f && state.masked_forwards.count(op.lse.data) > 0;
  if (op.params.dropout_p > 0.0f && !must) return false;
  const AttentionForward forward = forward_of(op);
  const bool views_fit = cudnn_attention_takes(ctx, forward);
  const bool gradients_fit = fits(op.dout, DType::kBF16) && fits(op.dq, DType::kBF16) &&
                             fits(op.dk, DType::kBF16) && fits(op.dv, DType::kBF16);
  const Plan * plan = nullptr;
  if (views_fit && gradients_fit) {
    GraphLayout layout = layout_of(forward);
    layout.dout = strides_of(op.dout);
    layout.dq = strides_of(op.dq);
    layout.dk = strides_of(op.dk);
    layout.dv = strides_of(op.dv);
    plan = state.plan(layout, true);
  }
  if (plan == nullptr) {
    KOSMOS_CHECK(!must, "--backend cuda-cudnn: the attention forward ran on cuDNN with dropout, but cuDNN cannot run "
                 "its backward (", !views_fit ? "it does not take the q, k, v, out and lse the backward was given" :
                 gradients_fit ? "it declined the gradients' layout, warned above" :
                 "the gradients are not bf16 [B, H, T, dh] views with 16-byte rows", "), and only cuDNN draws its "
                 "masks again; run with --backend cuda");
    return false;
  }
  Bindings bindings(op.params);
  bindings.pointers[kQ] = op.q.data;
  bindings.pointers[kK] = op.k.data;
  bindings.pointers[kV] = op.v.data;
  bindings.pointers[kOut] = op.out.data;
  bindings.pointers[kLse] = op.lse.data;
  bindings.pointers[kDout] = op.dout.data;
  bindings.pointers[kDq] = op.dq.data;
  bindings.pointers[kDk] = op.dk.data;
  bindings.pointers[kDv] = op.dv.data;
  execute(ctx, state, *plan, bindings, op.params, op.q.dim(0) * op.q.dim(1) * op.q.dim(2), op.q.dim(3), stream);
  return true;
}

}  // namespace kosmos::cuda
