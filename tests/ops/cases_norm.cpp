// cases_norm.cpp: LayerNorm and L2-normalise, forward and backward, over odd and model-sized rows; the LayerNorm
// forward that joins its input first (a dropout and residual add).
#include <gtest/gtest.h>

#include <optional>
#include <sstream>

#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

// in_dtype and out_dtype: the forward's; grad_dtype: dout's and din's (the model's pairings: f32 -> bf16 with f32
// gradients at the pre-LNs, bf16 throughout at the sub-LNs). A bf16 output or din rounds once (2^-9 relative).
// With `activation` the LayerNorm normalises act(in) (the FFN's sub-LN over its GELU) and din is the gradient at in.
// With `residual` the backward adds a residual path's f32 gradient to din (a pre-LN block's input; din f32): the
// forward's second output `skip` = in stands for that path, and its gradient is the one added. With `din_sums` the
// backward also adds up din's columns (fc1's bias gradient before the FFN's sub-LN). With `remake_out` the backward
// also writes the forward's output again (`out_again`: the reference's out, and the device forward's bit for bit).
// With `din_dtype` din has that dtype and dout grad_dtype (a pre-LN under bf16: dout bf16, as the first projection's
// input gradient, and din f32, the residual stream's).
OpCase layernorm_case(std::vector<int64_t> dims, double scale, double shift, DType in_dtype = DType::kF32,
                      DType out_dtype = DType::kF32, DType grad_dtype = DType::kF32,
                      std::optional<Activation> activation = std::nullopt, bool residual = false,
                      bool din_sums = false, bool remake_out = false, std::optional<DType> din_dtype = std::nullopt) {
  std::ostringstream name;
  name << "layernorm";
  for (int64_t size : dims) name << "_" << size;
  if (in_dtype != DType::kF32 || out_dtype != DType::kF32 || grad_dtype != DType::kF32)
    name << "_" << dtype_name(in_dtype) << "_" << dtype_name(out_dtype) << "_grads_" << dtype_name(grad_dtype);
  if (din_dtype) name << "_din_" << dtype_name(*din_dtype);
  if (activation) name << "_of_" << activation_name(*activation);
  if (residual) name << "_plus_residual";
  if (din_sums) name << "_summing_din";
  if (remake_out) name << "_remaking_out";
  const int64_t cols = dims.back();
  OpCase c;
  c.name = name.str();
  c.draw_inputs = [dims, scale, shift, in_dtype, cols] {
    std::mt19937_64 rng(cols * 17 + dims.front());
    Named in;
    in["in"] = random_tensor(rng, dims, scale);
    for (double & x : in["in"].v) x = static_cast<float>(x + shift);  // a mean far from 0 tests the variance
    if (in_dtype == DType::kBF16)
      for (double & x : in["in"].v) x = bf16_to_float(float_to_bf16(static_cast<float>(x)));
    in["weight"] = random_tensor(rng, {cols});
    in["bias"] = random_tensor(rng, {cols});
    return in;
  };
  const bool rounded = out_dtype != DType::kF32 || grad_dtype != DType::kF32;
  if (rounded) c.tolerance = 1e-5;
  c.grad_dtype = grad_dtype;
  c.differentiable = {"in", "weight", "bias"};
  c.graded_outputs = {"out"};
  if (residual) c.graded_outputs.push_back("skip");
  constexpr double kEps = 1e-5;
  // What is normalised: in, or act(in); and the gradient at in from the one at act(in).
  const auto normalised = [activation](const Tensor & x) {
    if (!activation) return x;
    return *activation == Activation::kGelu ? reference::gelu(x) : reference::quick_gelu(x);
  };
  const auto through_activation = [activation](const Tensor & grad, const Tensor & x) {
    if (!activation) return grad;
    return *activation == Activation::kGelu ? reference::gelu_backward(grad, x)
                                            : reference::quick_gelu_backward(grad, x);
  };
  c.reference_forward = [normalised, residual](const Named & in) {
    const reference::LayerNormOut r =
        reference::layernorm(normalised(in.at("in")), in.at("weight"), in.at("bias"), kEps);
    Named out{{"out", r.out}, {"mean", r.mean}, {"rstd", r.rstd}};
    if (residual) out["skip"] = in.at("in");
    return out;
  };
  c.reference_backward = [normalised, through_activation, residual, din_sums, remake_out](const Named & in,
                                                                                         const Named & grads) {
    const reference::LayerNormGrads g =
        reference::layernorm_backward(grads.at("dout"), normalised(in.at("in")), in.at("weight"), kEps);
    Tensor din = through_activation(g.din, in.at("in"));
    if (residual)
      for (size_t i = 0; i < din.v.size(); ++i) din.v[i] += grads.at("dskip").v[i];
    Named result{{"din", din}, {"dweight", g.dweight}, {"dbias", g.dbias}};
    if (din_sums) {
      const int64_t cols = din.dims.back();
      Tensor sums({cols}, 0.0);
      for (size_t i = 0; i < din.v.size(); ++i) sums.v[i % cols] += din.v[i];
      result["din_column_sums"] = sums;
    }
    if (remake_out)
      result["out_again"] = reference::layernorm(normalised(in.at("in")), in.at("weight"), in.at("bias"), kEps).out;
    return result;
  };
  c.device = [dims, cols, in_dtype, out_dtype, grad_dtype, activation, residual, din_sums, remake_out, din_dtype](
                 DeviceRun & run, const Named & in, const Named & grads) {
    int64_t rows = 1;
    for (size_t axis = 0; axis + 1 < dims.size(); ++axis) rows *= dims[axis];
    const TensorView x = run.upload(in.at("in"), in_dtype);
    const TensorView weight = run.upload(in.at("weight"), DType::kF32), bias = run.upload(in.at("bias"), DType::kF32);
    const TensorView out = run.output(dims, out_dtype);
    const TensorView mean = run.output({rows}, DType::kF32), rstd = run.output({rows}, DType::kF32);
    run.op(LayerNormForward{out, mean, rstd, x, weight, bias, static_cast<float>(kEps), activation});
    Named result{{"out", run.download(out)}, {"mean", run.download(mean)}, {"rstd", run.download(rstd)}};
    if (residual) result["skip"] = in.at("in");  // the identity path: nothing to run
    if (grads.empty()) return result;
    const TensorView dout = run.upload(grads.at("dout"), grad_dtype);
    const TensorView din = run.output(dims, din_dtype.value_or(grad_dtype));
    const TensorView dweight = run.accumulator({cols}), dbias = run.accumulator({cols});
    const TensorView residual_gradient = residual ? run.upload(grads.at("dskip"), DType::kF32) : TensorView{};
    const TensorView column_sums = din_sums ? run.accumulator({cols}) : TensorView{};
    const TensorView out_again = remake_out ? run.output(dims, out_dtype) : TensorView{};
    run.op(LayerNormBackward{din, dweight, dbias, dout, x, weight, mean, rstd, static_cast<float>(kEps), activation,
                             residual_gradient, column_sums, out_again, remake_out ? bias : TensorView{}});
    if (remake_out) {
      result["out_again"] = run.download(out_again);
      const Tensor & first = result.at("out");
      int64_t differing = 0;
      for (size_t i = 0; i < first.v.size(); ++i) differing += result.at("out_again").v[i] != first.v[i];
      EXPECT_EQ(differing, 0) << "the backward's out differs from the forward's at " << differing << " of "
                              << first.v.size() << " elements";
    }
    result["din"] = run.download(din);
    if (din_sums) result["din_column_sums"] = run.download_accumulated(column_sums);
    result["dweight"] = run.download_accumulated(dweight);
    result["dbias"] = run.download_accumulated(dbias);
    return result;
  };
  return c;
}

// A LayerNorm forward that makes its input first, in = residual + dropout(added) (`joined`, written; a sub-layer's
// end joining the residual stream before the next pre-LN), at dropout p (0: a plain residual add) and offset. The
// joined input is checked against the fp64 reference and bit for bit against the device's DropoutForward. Its
// backward is LayerNormBackward's, then DropoutBackward's, each tested on its own.
OpCase layernorm_joining_case(std::vector<int64_t> dims, float p, uint64_t offset, DType out_dtype,
                              DType added_dtype = DType::kF32) {
  std::ostringstream name;
  name << "layernorm";
  for (int64_t size : dims) name << "_" << size;
  name << "_" << dtype_name(out_dtype) << "_joining";
  if (added_dtype != DType::kF32) name << "_" << dtype_name(added_dtype);  // a bf16 projection's output
  name << "_p" << static_cast<int>(p * 100) << "_offset" << offset;
  const int64_t cols = dims.back();
  constexpr uint64_t kSeed = 23;
  OpCase c;
  c.name = name.str();
  c.draw_inputs = [dims, offset, cols, added_dtype] {
    std::mt19937_64 rng(cols * 29 + offset);
    Named in;
    in["added"] = random_tensor(rng, dims);
    if (added_dtype == DType::kBF16)
      for (double & x : in["added"].v) x = bf16_to_float(float_to_bf16(static_cast<float>(x)));
    in["residual"] = random_tensor(rng, dims, 2.0);
    in["weight"] = random_tensor(rng, {cols});
    in["bias"] = random_tensor(rng, {cols});
    return in;
  };
  if (out_dtype != DType::kF32) c.tolerance = 1e-5;
  constexpr double kEps = 1e-5;
  c.reference_forward = [p, offset](const Named & in) {
    Tensor joined = reference::dropout(in.at("added"), p, kSeed, offset);
    for (size_t i = 0; i < joined.v.size(); ++i) joined.v[i] += in.at("residual").v[i];
    const reference::LayerNormOut r = reference::layernorm(joined, in.at("weight"), in.at("bias"), kEps);
    return Named{{"out", r.out}, {"mean", r.mean}, {"rstd", r.rstd}, {"joined", joined}};
  };
  c.device = [dims, p, offset, out_dtype, added_dtype](DeviceRun & run, const Named & in, const Named &) {
    int64_t rows = 1;
    for (size_t axis = 0; axis + 1 < dims.size(); ++axis) rows *= dims[axis];
    const TensorView added = run.upload(in.at("added"), added_dtype);
    const TensorView residual = run.upload(in.at("residual"), DType::kF32);
    const TensorView weight = run.upload(in.at("weight"), DType::kF32), bias = run.upload(in.at("bias"), DType::kF32);
    const TensorView joined = run.output(dims, DType::kF32), out = run.output(dims, out_dtype);
    const TensorView mean = run.output({rows}, DType::kF32), rstd = run.output({rows}, DType::kF32);
    run.op(LayerNormForward{out, mean, rstd, joined, weight, bias, static_cast<float>(kEps), std::nullopt, added,
                            residual, {p, kSeed, offset}});
    Named result{{"out", run.download(out)}, {"mean", run.download(mean)}, {"rstd", run.download(rstd)},
                 {"joined", run.download(joined)}};
    const TensorView dropped = run.output(dims, DType::kF32);
    run.op(DropoutForward{dropped, added, residual, {p, kSeed, offset}});
    const Tensor alone = run.download(dropped);
    int64_t differing = 0;
    for (size_t i = 0; i < alone.v.size(); ++i) differing += alone.v[i] != result.at("joined").v[i];
    EXPECT_EQ(differing, 0) << "the joined input differs from DropoutForward's at " << differing << " of "
                            << alone.v.size() << " elements";
    return result;
  };
  return c;
}

OpCase l2_normalize_case(std::vector<int64_t> dims) {
  std::ostringstream name;
  name << "l2normalize";
  for (int64_t size : dims) name << "_" << size;
  OpCase c;
  c.name = name.str();
  c.draw_inputs = [dims] {
    std::mt19937_64 rng(dims.back() * 5 + dims.front());
    return Named{{"in", random_tensor(rng, dims)}};
  };
  c.differentiable = {"in"};
  c.graded_outputs = {"out"};
  constexpr double kEps = 1e-12;
  c.reference_forward = [](const Named & in) {
    const reference::L2NormalizeOut r = reference::l2_normalize(in.at("in"), kEps);
    return Named{{"out", r.out}, {"norm", r.norm}};
  };
  c.reference_backward = [](const Named & in, const Named & grads) {
    return Named{{"din", reference::l2_normalize_backward(grads.at("dout"), in.at("in"), kEps)}};
  };
  c.device = [dims](DeviceRun & run, const Named & in, const Named & grads) {
    const int64_t rows = in.at("in").rows();
    const TensorView x = run.upload(in.at("in"), DType::kF32);
    const TensorView out = run.output(dims, DType::kF32), norm = run.output({rows}, DType::kF32);
    run.op(L2NormalizeForward{out, norm, x, static_cast<float>(kEps)});
    Named result{{"out", run.download(out)}, {"norm", run.download(norm)}};
    if (grads.empty()) return result;
    const TensorView dout = run.upload(grads.at("dout"), DType::kF32), din = run.output(dims, DType::kF32);
    run.op(L2NormalizeBackward{din, dout, out, norm, static_cast<float>(kEps)});
    result["din"] = run.download(din);
    return result;
  };
  return c;
}

}  // namespace

std::vector<OpCase> norm_cases() {
  return {layernorm_case({1, 1}, 1.0, 0.0),    layernorm_case({7, 33}, 1.0, 0.0),
          layernorm_case({3, 5, 64}, 2.0, 3.0), layernorm_case({16, 1024}, 1.0, 10.0),
          layernorm_case({2, 513}, 0.01, 0.0),
          layernorm_case({100, 96}, 1.0, 1.0),   // rows over several of the GPU's 32-row blocks, the last ragged
          layernorm_case({40, 2048}, 1.0, 0.0),  // the decoder's width, over two blocks
          layernorm_case({33, 8192}, 1.0, 0.0),  // the FFN's width: every column slot of the fused backward
          layernorm_case({3, 8200}, 1.0, 0.0),   // wider than the GPU's fused backward takes (8192)
          // The GPU's forward holds 2 and 3 packs a thread here, the last thread's later packs past the row.
          layernorm_case({5, 2056}, 1.0, 1.0), layernorm_case({3, 5000}, 1.0, 0.0),
          layernorm_case({9, 256}, 1.0, 2.0, DType::kF32, DType::kBF16, DType::kF32),   // a pre-LN, bf16 out
          layernorm_case({9, 1024}, 1.0, 0.5, DType::kBF16, DType::kBF16, DType::kBF16),  // a sub-LN, bf16 throughout
          // Rows the GPU's packs do not take (33 columns), 16-bit: its fused backward's loads and stores of each dtype.
          layernorm_case({7, 33}, 1.0, 0.5, DType::kBF16, DType::kBF16, DType::kBF16),
          layernorm_case({7, 33}, 1.0, 0.5, DType::kBF16, DType::kF32, DType::kF32),
          // The FFN's sub-LN over its GELU: in the GPU's packs (bf16 as the model runs it, f32), and as its parts.
          layernorm_case({40, 2048}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu),
          layernorm_case({5, 64}, 2.0, 0.0, DType::kF32, DType::kF32, DType::kF32, Activation::kQuickGelu),
          layernorm_case({7, 33}, 1.0, 0.5, DType::kF32, DType::kF32, DType::kF32, Activation::kGelu),
          layernorm_case({3, 8200}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu),
          // ... at the model's FFN width (the GPU's backward: a row's loads ahead of the row before, the last block
          // one row), and with f32 gradients of a bf16 input (the GPU's packed backward takes GELU only where its
          // three activations share a dtype: these go through its parts).
          layernorm_case({33, 8192}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu),
          layernorm_case({9, 256}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kF32, Activation::kGelu),
          // ... adding up din's columns as well (fc1's bias gradient): in the GPU's packs at the model's dtypes
          // (bf16 throughout, and f32), and through its parts (mixed dtypes; a residual and an odd width).
          layernorm_case({40, 2048}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu, false,
                         true),
          layernorm_case({33, 1024}, 1.0, 0.5, DType::kF32, DType::kF32, DType::kF32, Activation::kGelu, false, true),
          layernorm_case({9, 256}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kF32, Activation::kGelu, false, true),
          layernorm_case({7, 33}, 1.0, 0.5, DType::kF32, DType::kF32, DType::kF32, std::nullopt, true, true),
          // ... in the packs with a residual added (no activation), and at the FFN's width (1024 threads a block).
          layernorm_case({40, 2048}, 1.0, 0.0, DType::kF32, DType::kBF16, DType::kF32, std::nullopt, true, true),
          layernorm_case({33, 8192}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu, false,
                         true),
          // ... over enough rows (65 blocks' partials) that the GPU adds its partials up in two passes, as at the
          // paper step's 16384 rows, over a partials row of three parts.
          layernorm_case({2080, 64}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu, false,
                         true),
          // ... making the forward's output again as it goes (the FFN's sub-LN when the tail is recomputed): in the
          // GPU's GELU packs (bf16 with din's sums as the model runs it, its width; f32), and by the forward run again
          // after the backward elsewhere (mixed gradient dtypes, an output of another dtype than the input's, too
          // wide, no activation with a residual at an odd width).
          layernorm_case({40, 2048}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu, false,
                         true, true),
          layernorm_case({33, 8192}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu, false,
                         false, true),
          layernorm_case({33, 1024}, 1.0, 0.5, DType::kF32, DType::kF32, DType::kF32, Activation::kGelu, false, false,
                         true),
          layernorm_case({9, 256}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kF32, Activation::kGelu, false, true,
                         true),
          layernorm_case({9, 256}, 1.0, 0.0, DType::kBF16, DType::kF32, DType::kBF16, Activation::kGelu, false, false,
                         true),
          layernorm_case({3, 8200}, 1.0, 0.0, DType::kBF16, DType::kBF16, DType::kBF16, Activation::kGelu, false,
                         false, true),
          layernorm_case({7, 33}, 1.0, 0.5, DType::kF32, DType::kF32, DType::kF32, std::nullopt, true, false, true),
          // A pre-LN's backward with the residual path's gradient added: in the GPU's packs (the model's widths and
          // dtypes), and through the other kernels then an add (an odd width, one wider than the packs).
          layernorm_case({40, 2048}, 1.0, 0.0, DType::kF32, DType::kBF16, DType::kF32, std::nullopt, true),
          layernorm_case({7, 33}, 1.0, 0.5, DType::kF32, DType::kF32, DType::kF32, std::nullopt, true),
          // ... from a bf16 dout into an f32 din, as the layers run it under bf16: in the packs, at an odd width.
          layernorm_case({40, 2048}, 1.0, 0.0, DType::kF32, DType::kBF16, DType::kBF16, std::nullopt, true, false,
                         false, DType::kF32),
          layernorm_case({7, 33}, 1.0, 0.5, DType::kF32, DType::kBF16, DType::kBF16, std::nullopt, true, false, false,
                         DType::kF32),
          layernorm_case({3, 8200}, 1.0, 0.0, DType::kF32, DType::kBF16, DType::kF32, std::nullopt, true),
          // A pre-LN that joins its input first (the FFN's, after the attention's dropout and residual add): in the
          // GPU's packs at the model's width and dtypes (1 pack a thread; 2, with an offset inside a Philox block;
          // no dropout; 4 packs a thread, the most Philox in registers), and through the dropout then the LayerNorm
          // (an odd width).
          layernorm_joining_case({40, 2048}, 0.1f, 8, DType::kBF16),
          layernorm_joining_case({4, 8192}, 0.1f, 0, DType::kBF16),
          layernorm_joining_case({3, 5, 4096}, 0.3f, 2, DType::kF32),
          layernorm_joining_case({9, 256}, 0.0f, 0, DType::kBF16),
          layernorm_joining_case({7, 33}, 0.2f, 3, DType::kF32),
          // ... from a bf16 projection's output (as the layers run under bf16): in the GPU's packs, through
          // DropoutForward first (an odd width), and without dropout (CLIP's blocks).
          layernorm_joining_case({40, 2048}, 0.1f, 8, DType::kBF16, DType::kBF16),
          layernorm_joining_case({7, 33}, 0.2f, 3, DType::kF32, DType::kBF16),
          layernorm_joining_case({9, 256}, 0.0f, 0, DType::kBF16, DType::kBF16),
          l2_normalize_case({1, 3}),
          l2_normalize_case({257, 64}),         l2_normalize_case({2, 3, 1024})};
}

}  // namespace kosmos::testing
