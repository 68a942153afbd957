// bench_ops.cpp: op micro-benchmarks. GFLOP/s of the matmuls and attention at the KOSMOS-1 shapes (d=2048, FFN
// 8192, heads of 64, sequence 2048) and at the small CPU config of shared/docs/performance-anchors.md (d=256,
// FFN 1024, 4 heads, 4 x 256 tokens), through the device interface, beside oneDNN's matmul primitive and sgemm
// called directly with nothing of ours around them. The machine and backend are printed in the context header.
#include <benchmark/benchmark.h>

#include <cmath>
#include <dnnl.hpp>
#include <random>
#include <vector>

#include "backends/cpu/cpu_device.h"
#include "backends/registry.h"

namespace kosmos {
namespace {

struct Bench {
  std::unique_ptr<Device> device = BackendRegistry().create("cpu", 0);
  std::unique_ptr<Stream> stream = device->create_stream();
  std::vector<Buffer> buffers;

  TensorView random(DType dtype, std::initializer_list<int64_t> dims) {
    int64_t count = 1;
    for (int64_t size : dims) count *= size;
    buffers.push_back(device->allocate(static_cast<size_t>(count) * dtype_size(dtype), BufferUse::kActivations));
    TensorView view = buffers.back().view(dtype, dims);
    std::mt19937 rng(static_cast<unsigned>(count));
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < count; ++i) {
      if (dtype == DType::kBF16) view.as<uint16_t>()[i] = float_to_bf16(normal(rng));
      else view.as<float>()[i] = normal(rng);
    }
    return view;
  }
};

void report_rate(benchmark::State & state, double flops_per_iteration) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// C[M, N] = A[M, K] W[N, K]^T: a linear layer, weights stored [out, in] as PyTorch does.
void BM_Matmul(benchmark::State & state, DType dtype) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Bench bench;
  const TensorView a = bench.random(dtype, {m, k}), w = bench.random(dtype, {n, k});
  const TensorView c = bench.random(DType::kF32, {m, n});
  const OpSupport support = bench.device->supports(Matmul{c, a, w, TensorView{}, false, true});
  if (!support.supported) {
    state.SkipWithError(support.reason.c_str());
    return;
  }
  for (auto _ : state) op_run(*bench.device, Matmul{c, a, w, TensorView{}, false, true}, *bench.stream);
  report_rate(state, 2.0 * m * n * k);
}

// The same product on oneDNN's matmul primitive, created once and executed in a loop: oneDNN at its best.
void BM_OneDnnMatmulDirect(benchmark::State & state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  using dims = dnnl::memory::dims;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const dnnl::memory::desc a_md(dims{m, k}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
  const dnnl::memory::desc w_md(dims{k, n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ba);
  const dnnl::memory::desc c_md(dims{m, n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
#if DNNL_VERSION_MAJOR >= 3
  const dnnl::matmul::primitive_desc pd(engine, a_md, w_md, c_md);
#else
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_md, c_md), engine);
#endif
  const dnnl::matmul matmul(pd);
  dnnl::memory a(a_md, engine), w(w_md, engine), c(c_md, engine);
  for (dnnl::memory * memory : {&a, &w}) {
    float * data = static_cast<float *>(memory->get_data_handle());
    for (size_t i = 0; i < memory->get_desc().get_size() / sizeof(float); ++i) data[i] = std::sin(0.37 * i);
  }
  for (auto _ : state) {
    matmul.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, c}});
    stream.wait();
  }
  report_rate(state, 2.0 * m * n * k);
}

// oneDNN's BLAS-style sgemm (C = A B^T, row-major), also with nothing of ours in the way.
void BM_OneDnnSgemm(benchmark::State & state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a(m * k), w(n * k), c(m * n);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.37 * i);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.21 * i);
  for (auto _ : state) dnnl::sgemm('N', 'T', m, n, k, 1.0f, a.data(), k, w.data(), k, 0.0f, c.data(), n);
  report_rate(state, 2.0 * m * n * k);
}

// Attention over [B, H, T, dh]: forward only, or forward + backward. FLOPs are counted as 2 matmuls forward and 5
// backward (the score recomputation included), halved for causal.
void BM_Attention(benchmark::State & state, bool with_backward) {
  const int64_t batch = state.range(0), heads = state.range(1), length = state.range(2), head_dim = state.range(3);
  const bool causal = state.range(4) != 0;
  Bench bench;
  const TensorView q = bench.random(DType::kF32, {batch, heads, length, head_dim});
  const TensorView k = bench.random(DType::kF32, {batch, heads, length, head_dim});
  const TensorView v = bench.random(DType::kF32, {batch, heads, length, head_dim});
  const TensorView dout = bench.random(DType::kF32, {batch, heads, length, head_dim});
  const TensorView out = bench.random(DType::kF32, {batch, heads, length, head_dim});
  const TensorView dq = bench.random(DType::kF32, {batch, heads, length, head_dim});
  const TensorView dk = bench.random(DType::kF32, {batch, heads, length, head_dim});
  const TensorView dv = bench.random(DType::kF32, {batch, heads, length, head_dim});
  const TensorView lse = bench.random(DType::kF32, {batch, heads, length});
  AttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  params.causal = causal;
  for (auto _ : state) {
    op_run(*bench.device, AttentionForward{out, lse, q, k, v, params, TensorView{}}, *bench.stream);
    if (with_backward)
      op_run(*bench.device, AttentionBackward{dq, dk, dv, dout, q, k, v, out, lse, params, TensorView{}},
             *bench.stream);
  }
  const double matmuls = with_backward ? 7.0 : 2.0;
  report_rate(state, matmuls * 2.0 * batch * heads * length * length * head_dim * (causal ? 0.5 : 1.0));
}

void square_and_model_shapes(benchmark::internal::Benchmark * b) {
  b->ArgNames({"M", "N", "K"});
  b->Args({2048, 2048, 2048});   // the 2048^3 comparison point
  b->Args({2048, 6144, 2048});   // KOSMOS-1 q/k/v projection, one 2048-token sequence
  b->Args({2048, 8192, 2048});   // KOSMOS-1 fc1
  b->Args({2048, 2048, 8192});   // KOSMOS-1 fc2
  b->Args({1024, 768, 256});     // small config q/k/v, 4 x 256 tokens
  b->Args({1024, 1024, 256});    // small config fc1
  b->Args({1024, 256, 1024});    // small config fc2
  b->Args({1024, 8000, 256});    // small config output head, vocab 8000
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_Matmul, f32, DType::kF32)->Apply(square_and_model_shapes);
BENCHMARK_CAPTURE(BM_Matmul, bf16, DType::kBF16)->Apply(square_and_model_shapes);
BENCHMARK(BM_OneDnnMatmulDirect)->Apply(square_and_model_shapes);
BENCHMARK(BM_OneDnnSgemm)->Apply(square_and_model_shapes);
void attention_shapes(benchmark::internal::Benchmark * b) {
  b->ArgNames({"B", "H", "T", "dh", "causal"});
  b->Args({4, 4, 256, 64, 1});    // the comparison shape against PyTorch (bench/attention_torch.py)
  b->Args({4, 4, 256, 64, 0});
  b->Args({1, 32, 2048, 64, 1});  // one KOSMOS-1 decoder layer's attention, one sequence
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_Attention, forward, false)->Apply(attention_shapes);
BENCHMARK_CAPTURE(BM_Attention, forward_backward, true)->Apply(attention_shapes);

}  // namespace
}  // namespace kosmos

int main(int argc, char ** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("machine", kosmos::cpu::cpu_machine_summary());
  benchmark::AddCustomContext("backend", "cpu");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
