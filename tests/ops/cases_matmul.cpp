// cases_matmul.cpp: Matmul (with its backward, MatmulBackward) over shapes from 1x1x1 to odd and tile-sized ones,
// every transpose combination, batched and broadcast operands, alpha/beta/bias, and bf16 and f16 inputs.
#include <sstream>

#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

struct MatmulShape {
  int64_t batch;    // 0: 2-D operands (with batch > 0 and batched_a false: a is shared, broadcast over the batch)
  bool batched_b;   // b has the batch dim too (else it is shared)
  bool flat_c;      // c is 2-D [batch*M, N] while a is 3-D (linear layers over [B, T, d])
  int64_t m, n, k;
  bool trans_a, trans_b, bias;
  float alpha, beta;
  DType dtype, out_dtype;
  bool batched_a = true;
  int64_t row_pad = 0;  // 2-D a and c as column windows of wider matrices (rows row_pad elements further apart)
  bool unit_batch = false;  // the shared operand as 3-D [1, ...], broadcast over the batch like a 2-D one
};

std::vector<int64_t> with_batch(int64_t batch, std::vector<int64_t> dims) {
  if (batch > 0) dims.insert(dims.begin(), batch);
  return dims;
}

OpCase matmul_case(const MatmulShape & s, double tolerance) {
  std::ostringstream name;
  name << "matmul_" << (s.batch ? std::to_string(s.batch) + "x" : "") << s.m << "x" << s.n << "x" << s.k
       << (s.trans_a ? "_ta" : "") << (s.trans_b ? "_tb" : "") << (s.bias ? "_bias" : "")
       << (s.batch && !s.batched_b ? "_sharedb" : "") << (s.flat_c ? "_flatc" : "")
       << (s.alpha != 1.0f || s.beta != 0.0f ? "_alphabeta" : "") << (s.batched_a ? "" : "_shareda")
       << (s.row_pad ? "_windows" : "") << (s.unit_batch ? "_unit_batch" : "") << "_" << dtype_name(s.dtype)
       << (s.out_dtype != s.dtype ? std::string("to") + dtype_name(s.out_dtype) : "");
  OpCase c;
  c.name = name.str();
  c.tolerance = tolerance;
  c.grad_dtype = s.dtype;  // dC reaches the backward in the operands' dtype (Linear casts it so with bf16 weights)
  const int64_t shared_batch = s.unit_batch ? 1 : 0;
  const std::vector<int64_t> c_dims = s.flat_c ? std::vector<int64_t>{s.batch * s.m, s.n} : with_batch(s.batch, {s.m, s.n});
  c.draw_inputs = [s, shared_batch, c_dims] {
    std::mt19937_64 rng(s.m * 131 + s.n * 7 + s.k);
    const std::vector<int64_t> a_dims = s.trans_a ? std::vector<int64_t>{s.k, s.m} : std::vector<int64_t>{s.m, s.k};
    const std::vector<int64_t> b_dims = s.trans_b ? std::vector<int64_t>{s.n, s.k} : std::vector<int64_t>{s.k, s.n};
    Named in;
    in["a"] = random_tensor(rng, with_batch(s.batched_a ? s.batch : shared_batch, a_dims), 1.0, s.dtype);
    in["b"] = random_tensor(rng, with_batch(s.batched_b ? s.batch : shared_batch, b_dims), 1.0, s.dtype);
    if (s.bias) in["bias"] = random_tensor(rng, {s.n});
    if (s.beta != 0.0f) in["c_old"] = random_tensor(rng, c_dims, 1.0, s.out_dtype);
    return in;
  };
  c.differentiable = {"a", "b"};
  if (s.bias) c.differentiable.push_back("bias");
  c.graded_outputs = {"c"};
  c.reference_forward = [s, c_dims](const Named & in) {
    const Tensor * bias = s.bias ? &in.at("bias") : nullptr;
    const Tensor * c_old = s.beta != 0.0f ? &in.at("c_old") : nullptr;
    Tensor out = reference::matmul(in.at("a"), in.at("b"), bias, s.trans_a, s.trans_b, s.alpha, s.beta, c_old);
    out.dims = c_dims;
    return Named{{"c", out}};
  };
  c.reference_backward = [s](const Named & in, const Named & grads) {
    Tensor dc = grads.at("dc");
    if (s.flat_c) dc.dims = {s.batch, s.m, s.n};
    const reference::MatmulGrads g = reference::matmul_backward(dc, in.at("a"), in.at("b"), s.trans_a, s.trans_b,
                                                                s.alpha);
    Named out{{"da", g.da}, {"db", g.db}};
    if (s.bias) out["dbias"] = g.dbias;
    return out;
  };
  c.device = [s, c_dims](DeviceRun & run, const Named & in, const Named & grads) {
    const TensorView a =
        s.row_pad ? run.upload_window(in.at("a"), s.row_pad, s.dtype) : run.upload(in.at("a"), s.dtype);
    const TensorView b = run.upload(in.at("b"), s.dtype);
    const TensorView bias = s.bias ? run.upload(in.at("bias"), DType::kF32) : TensorView{};
    const TensorView out = s.row_pad ? run.upload_window(Tensor(c_dims, 7777.0), s.row_pad, s.out_dtype)
                           : s.beta != 0.0f ? run.upload(in.at("c_old"), s.out_dtype)
                                            : run.output(c_dims, s.out_dtype);
    run.op(Matmul{out, a, b, bias, s.trans_a, s.trans_b, s.alpha, s.beta});
    Named result{{"c", run.download(out)}};
    if (grads.empty()) return result;
    const TensorView dc =
        s.row_pad ? run.upload_window(grads.at("dc"), s.row_pad, s.dtype) : run.upload(grads.at("dc"), s.dtype);
    const TensorView da = run.output(in.at("a").dims, DType::kF32);
    const TensorView db = run.accumulator(in.at("b").dims);
    const TensorView dbias = s.bias ? run.accumulator({s.n}) : TensorView{};
    run.matmul_backward(MatmulBackward{da, db, dbias, dc, a, b, s.trans_a, s.trans_b, s.alpha});
    result["da"] = run.download(da);
    result["db"] = run.download_accumulated(db);
    if (s.bias) result["dbias"] = run.download_accumulated(dbias);
    return result;
  };
  return c;
}

// BiasBackward on its own (matmul_backward uses it for the bias): dbias += column sums of dout, a dtype's values
// (f32 or bf16), its rows `pad` elements apart beyond their width (a column window of a wider gradient; f32 only).
OpCase bias_backward_case(int64_t rows, int64_t cols, DType dtype = DType::kF32, int64_t pad = 0) {
  OpCase c;
  c.name = "bias_backward_" + std::to_string(rows) + "x" + std::to_string(cols) +
           (dtype == DType::kF32 ? "" : "_" + std::string(dtype_name(dtype))) +
           (pad == 0 ? "" : "_window" + std::to_string(pad));
  c.tolerance = 1e-13;
  c.draw_inputs = [rows, cols, dtype] {
    std::mt19937_64 rng(rows * 3 + cols);
    return Named{{"dout", random_tensor(rng, {rows, cols}, 1.0, dtype)}};
  };
  c.reference_forward = [](const Named & in) {
    const Tensor & dout = in.at("dout");
    Tensor sums({dout.dim(1)});
    for (int64_t r = 0; r < dout.dim(0); ++r)
      for (int64_t col = 0; col < dout.dim(1); ++col) sums.v[col] += dout.v[r * dout.dim(1) + col];
    return Named{{"dbias", sums}};
  };
  c.device = [cols, dtype, pad](DeviceRun & run, const Named & in, const Named &) {
    const TensorView dout = pad == 0 ? run.upload(in.at("dout"), dtype) : run.upload_window(in.at("dout"), pad);
    const TensorView dbias = run.accumulator({cols});
    run.op(BiasBackward{dbias, dout});
    return Named{{"dbias", run.download_accumulated(dbias)}};
  };
  return c;
}

}  // namespace

std::vector<OpCase> matmul_cases() {
  // The GPU sums rows of 8-column packs in chunks where the shape allows (whole packs, more than 64 rows), else
  // column by column: both, from f32 and bf16, and from a column window.
  std::vector<OpCase> cases{bias_backward_case(1, 1), bias_backward_case(1000, 300), bias_backward_case(1000, 304),
                            bias_backward_case(700, 264, DType::kBF16), bias_backward_case(500, 136, DType::kF32, 24)};
  const DType f32 = DType::kF32, bf16 = DType::kBF16, f16 = DType::kF16;
  // 2-D: every transpose combination over tiny, odd and tile-sized shapes.
  for (const auto & [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 5, 3}, {33, 17, 65},
                                 {64, 64, 64}, {130, 96, 80}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        cases.push_back(matmul_case({0, false, false, m, n, k, ta, tb, (m + ta) % 2 == 1, 1.0f, 0.0f, f32, f32}, 1e-11));
  // alpha, beta and bias together (the linear backward accumulating into a gradient).
  cases.push_back(matmul_case({0, false, false, 19, 23, 29, false, true, true, 0.5f, 0.75f, f32, f32}, 1e-11));
  cases.push_back(matmul_case({0, false, false, 19, 23, 29, true, false, false, -2.0f, 1.0f, f32, f32}, 1e-11));
  // Batched, with B per entry or shared (broadcast), and a 3-D A feeding a 2-D C.
  cases.push_back(matmul_case({3, true, false, 9, 11, 13, false, false, false, 1.0f, 0.0f, f32, f32}, 1e-11));
  cases.push_back(matmul_case({3, true, false, 9, 11, 13, true, true, true, 1.0f, 0.0f, f32, f32}, 1e-11));
  cases.push_back(matmul_case({4, false, false, 5, 12, 7, false, true, true, 1.0f, 0.0f, f32, f32}, 1e-11));
  cases.push_back(matmul_case({4, false, false, 5, 12, 7, true, false, false, 1.0f, 0.0f, f32, f32}, 1e-11));
  cases.push_back(matmul_case({4, false, true, 6, 10, 8, false, true, true, 1.0f, 0.0f, f32, f32}, 1e-11));
  // A shared (broadcast) A with a batched B, both transpose settings: its gradient sums over the batch.
  cases.push_back(matmul_case({3, true, false, 7, 5, 6, false, false, false, 1.0f, 0.0f, f32, f32, false}, 1e-11));
  cases.push_back(matmul_case({3, true, false, 7, 5, 6, true, true, false, 1.0f, 0.0f, f32, f32, false}, 1e-11));
  // The shared operand as [1, ...]: batch stride 0, whatever its stride(0) says.
  cases.push_back(matmul_case({4, false, false, 5, 12, 7, false, true, true, 1.0f, 0.0f, f32, f32, true, 0, true},
                              1e-11));
  cases.push_back(matmul_case({3, true, false, 7, 5, 6, true, false, false, 1.0f, 0.0f, f32, f32, false, 0, true},
                              1e-11));
  // Column windows (strided rows) for a, c and dc, as q/k/v slices of a fused [N, 3d] buffer are; with a bias.
  cases.push_back(matmul_case({0, false, false, 21, 24, 16, false, true, true, 1.0f, 0.0f, f32, f32, true, 40},
                              1e-11));
  // The output head's shapes: bf16 operands, an odd vocabulary (n), and the logits (c) and their gradient (dc) in
  // rows padded to a multiple of 8 elements (16 bytes) as a GPU's head pads them; a is padded by as much.
  cases.push_back(matmul_case({0, false, false, 21, 37, 16, false, true, false, 1.0f, 0.0f, bf16, f32, true, 3},
                              1e-11));
  // Dimensions of 1024 or more that are no multiple of 16, which the GPU splits into whole 128s and the rest
  // (matmul.cu): the head's odd vocabulary as n here, and as k (da) and m (db) in the backward; then m and k odd
  // together (nested splits; the backward's da has m and n odd) with alpha, beta and a bias (the k split sums the
  // rest first, with beta, then the bulk with the bias).
  cases.push_back(matmul_case({0, false, false, 21, 1031, 16, false, true, false, 1.0f, 0.0f, bf16, f32, true, 1},
                              1e-11));
  // ... and the head's logits in bf16, as --precision bf16 keeps them (rows of 1032 and 40 bf16: 16-byte padded).
  cases.push_back(matmul_case({0, false, false, 21, 1031, 16, false, true, false, 1.0f, 0.0f, bf16, bf16, true, 1},
                              1e-4));
  cases.push_back(matmul_case({0, false, false, 21, 37, 16, false, true, false, 1.0f, 0.0f, bf16, bf16, true, 3},
                              1e-4));
  cases.push_back(matmul_case({0, false, false, 1030, 12, 1033, false, false, true, 0.5f, 0.75f, f32, f32}, 1e-9));
  // ... and batched (each part keeps the batch strides), with a bias split along n.
  cases.push_back(matmul_case({2, true, false, 3, 1031, 8, false, true, true, 1.0f, 0.0f, f32, f32}, 1e-11));
  // bf16 inputs (exactly representable), f32 or bf16 output; bf16 output rounds to 8 bits of mantissa.
  cases.push_back(matmul_case({0, false, false, 48, 40, 72, false, true, false, 1.0f, 0.0f, bf16, f32}, 1e-11));
  cases.push_back(matmul_case({0, false, false, 33, 17, 65, false, false, false, 1.0f, 0.0f, bf16, bf16}, 1e-4));
  // The mixed-precision linear layer: bf16 operands with an f32 bias, into bf16 (cuBLASLt's epilogue takes the bias
  // in C's dtype: the GPU stages it so) and into f32.
  cases.push_back(matmul_case({0, false, false, 33, 17, 65, false, true, true, 1.0f, 0.0f, bf16, bf16}, 1e-4));
  cases.push_back(matmul_case({0, false, false, 48, 40, 72, false, true, true, 1.0f, 0.0f, bf16, f32}, 1e-11));
  // f16 likewise (11 bits of mantissa), with a bias in the f16 output's case.
  cases.push_back(matmul_case({0, false, false, 48, 40, 72, false, true, false, 1.0f, 0.0f, f16, f32}, 1e-11));
  cases.push_back(matmul_case({0, false, false, 33, 17, 65, false, false, true, 1.0f, 0.0f, f16, f16}, 1e-4));
  return cases;
}

}  // namespace kosmos::testing
