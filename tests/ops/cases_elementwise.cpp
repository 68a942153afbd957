// cases_elementwise.cpp: GELU and QuickGELU (forward and backward), add (also in place, the residual), scale, cast
// between f32/bf16/f16, fill, and Philox dropout (forward and backward, whole and at an offset, with the residual
// add and a bf16 gradient, and the backward's column sums of its gradient).
#include <sstream>

#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

std::string dims_name(const std::vector<int64_t> & dims) {
  std::ostringstream name;
  for (int64_t size : dims) name << "_" << size;
  return name.str();
}

// dtype: of in, out, dout and din; bf16 rounds the output and the gradient once (2^-9 relative).
OpCase activation_case(Activation kind, std::vector<int64_t> dims, DType dtype = DType::kF32) {
  OpCase c;
  c.name = std::string(activation_name(kind)) + dims_name(dims) + (dtype == DType::kF32 ? "" : "_bf16");
  c.draw_inputs = [kind, dims, dtype] {
    std::mt19937_64 rng(dims.back() + static_cast<int>(kind));
    return Named{{"in", random_tensor(rng, dims, 3.0, dtype)}};
  };
  c.grad_dtype = dtype;
  if (dtype != DType::kF32) c.tolerance = 1e-5;
  c.differentiable = {"in"};
  c.graded_outputs = {"out"};
  c.reference_forward = [kind](const Named & in) {
    return Named{{"out", kind == Activation::kGelu ? reference::gelu(in.at("in")) : reference::quick_gelu(in.at("in"))}};
  };
  c.reference_backward = [kind](const Named & in, const Named & grads) {
    return Named{{"din", kind == Activation::kGelu ? reference::gelu_backward(grads.at("dout"), in.at("in"))
                                                   : reference::quick_gelu_backward(grads.at("dout"), in.at("in"))}};
  };
  c.device = [kind, dims, dtype](DeviceRun & run, const Named & in, const Named & grads) {
    const TensorView x = run.upload(in.at("in"), dtype), out = run.output(dims, dtype);
    run.op(ActivationForward{out, x, kind});
    Named result{{"out", run.download(out)}};
    if (grads.empty()) return result;
    const TensorView dout = run.upload(grads.at("dout"), dtype), din = run.output(dims, dtype);
    run.op(ActivationBackward{din, dout, x, kind});
    result["din"] = run.download(din);
    return result;
  };
  return c;
}

OpCase add_case(std::vector<int64_t> dims, bool in_place, DType dtype, double tolerance) {
  OpCase c;
  c.name = std::string(in_place ? "residual_add" : "add") + dims_name(dims) + "_" + dtype_name(dtype);
  c.tolerance = tolerance;
  c.draw_inputs = [dims, dtype] {
    std::mt19937_64 rng(dims.back() * 3);
    Named in;
    in["a"] = random_tensor(rng, dims, 1.0, dtype);
    in["b"] = random_tensor(rng, dims, 1.0, dtype);
    return in;
  };
  c.reference_forward = [](const Named & in) {
    Tensor out = in.at("a");
    for (int64_t i = 0; i < out.numel(); ++i) out.v[i] += in.at("b").v[i];
    return Named{{"out", out}};
  };
  c.device = [dims, in_place, dtype](DeviceRun & run, const Named & in, const Named &) {
    const TensorView a = run.upload(in.at("a"), dtype), b = run.upload(in.at("b"), dtype);
    const TensorView out = in_place ? a : run.output(dims, dtype);
    run.op(Add{out, a, b});
    return Named{{"out", run.download(out)}};
  };
  return c;
}

// b covers a's trailing dims only: added to every leading index.
OpCase broadcast_add_case(std::vector<int64_t> a_dims, std::vector<int64_t> b_dims) {
  OpCase c;
  c.name = "add_broadcast" + dims_name(a_dims) + "_by" + dims_name(b_dims);
  c.tolerance = 1e-13;
  c.draw_inputs = [a_dims, b_dims] {
    std::mt19937_64 rng(a_dims.front() * 5 + b_dims.back());
    Named in;
    in["a"] = random_tensor(rng, a_dims);
    in["b"] = random_tensor(rng, b_dims);
    return in;
  };
  c.reference_forward = [](const Named & in) {
    Tensor out = in.at("a");
    const Tensor & b = in.at("b");
    for (int64_t i = 0; i < out.numel(); ++i) out.v[i] += b.v[i % b.numel()];
    return Named{{"out", out}};
  };
  c.device = [a_dims](DeviceRun & run, const Named & in, const Named &) {
    const TensorView a = run.upload(in.at("a"), DType::kF32), b = run.upload(in.at("b"), DType::kF32);
    const TensorView out = run.output(a_dims, DType::kF32);
    run.op(Add{out, a, b});
    return Named{{"out", run.download(out)}};
  };
  return c;
}

// Copy between a strided view and a dense one, in either direction (layouts as the attention views use them).
OpCase copy_case(std::vector<int64_t> dims, bool strided_in, bool strided_out) {
  OpCase c;
  c.name = "copy" + dims_name(dims) + (strided_in ? "_stridedin" : "") + (strided_out ? "_stridedout" : "");
  c.tolerance = 0.0;
  c.draw_inputs = [dims, strided_in] {
    std::mt19937_64 rng(dims.back() * 23 + strided_in);
    return Named{{"in", random_tensor(rng, dims)}};
  };
  c.reference_forward = [](const Named & in) { return Named{{"out", in.at("in")}}; };
  c.device = [dims, strided_in, strided_out](DeviceRun & run, const Named & in, const Named &) {
    const std::vector<int> layout{0, 2, 1, 3};
    const TensorView x = strided_in ? run.upload_permuted(in.at("in"), layout) : run.upload(in.at("in"), DType::kF32);
    const TensorView out = strided_out ? run.upload_permuted(Tensor(dims, 7777.0), layout) : run.output(dims, DType::kF32);
    run.op(Copy{out, x});
    return Named{{"out", run.download(out)}};
  };
  return c;
}

OpCase patchify_case(int64_t images, int64_t channels, int64_t height, int64_t width, int64_t patch) {
  OpCase c;
  c.name = "patchify_" + std::to_string(images) + "x" + std::to_string(channels) + "x" + std::to_string(height) +
           "x" + std::to_string(width) + "_p" + std::to_string(patch);
  c.tolerance = 0.0;
  c.draw_inputs = [images, channels, height, width] {
    std::mt19937_64 rng(height * 3 + width);
    return Named{{"images", random_tensor(rng, {images, channels, height, width})}};
  };
  const int64_t across = width / patch, patches = (height / patch) * across;
  c.reference_forward = [=](const Named & in) {
    const Tensor & pixels = in.at("images");
    Tensor out({images, patches, channels * patch * patch});
    for (int64_t n = 0; n < images; ++n)
      for (int64_t i = 0; i < patches; ++i)
        for (int64_t ch = 0; ch < channels; ++ch)
          for (int64_t y = 0; y < patch; ++y)
            for (int64_t x = 0; x < patch; ++x)
              out.v[(n * patches + i) * channels * patch * patch + (ch * patch + y) * patch + x] =
                  pixels.v[((n * channels + ch) * height + (i / across) * patch + y) * width + (i % across) * patch + x];
    return Named{{"out", out}};
  };
  c.device = [=](DeviceRun & run, const Named & in, const Named &) {
    const TensorView pixels = run.upload(in.at("images"), DType::kF32);
    const TensorView out = run.output({images, patches, channels * patch * patch}, DType::kF32);
    run.op(Patchify{out, pixels, patch});
    return Named{{"out", run.download(out)}};
  };
  return c;
}

OpCase scale_case(std::vector<int64_t> dims, float alpha) {
  OpCase c;
  c.name = "scale" + dims_name(dims);
  c.draw_inputs = [dims] {
    std::mt19937_64 rng(dims.back() * 11);
    return Named{{"in", random_tensor(rng, dims)}};
  };
  c.reference_forward = [alpha](const Named & in) {
    Tensor out = in.at("in");
    for (double & x : out.v) x *= alpha;
    return Named{{"out", out}};
  };
  c.device = [dims, alpha](DeviceRun & run, const Named & in, const Named &) {
    const TensorView x = run.upload(in.at("in"), DType::kF32), out = run.output(dims, DType::kF32);
    run.op(Scale{out, x, alpha});
    return Named{{"out", run.download(out)}};
  };
  return c;
}

// A cast is exact: the reference rounds through the same IEEE formats (round to nearest even). window_pad > 0
// reads a 2-D f32 input as a column window of a wider matrix (rows window_pad elements apart beyond their width).
// permuted_out: the output as a [B, H, T, dh] view of [B, T, H, dh] memory, as the attention backward casts dq
// from its f32 sums into the heads' view of the q|k|v gradient.
OpCase cast_case(std::vector<int64_t> dims, DType from, DType to, int64_t window_pad = 0, bool permuted_out = false) {
  OpCase c;
  c.name = std::string("cast") + dims_name(dims) + "_" + dtype_name(from) + "to" + dtype_name(to) +
           (window_pad > 0 ? "_window" : "") + (permuted_out ? "_permutedout" : "");
  c.tolerance = 0.0;
  c.draw_inputs = [dims, from, to] {
    std::mt19937_64 rng(dims.back() * 13 + static_cast<int>(to));
    Tensor in = random_tensor(rng, dims, 100.0, from);
    if (from == DType::kF16)
      for (double & x : in.v) x = f16_to_float(float_to_f16(static_cast<float>(x)));
    return Named{{"in", in}};
  };
  c.reference_forward = [to](const Named & in) {
    Tensor out = in.at("in");
    for (double & x : out.v) {
      const float value = static_cast<float>(x);
      x = to == DType::kBF16 ? bf16_to_float(float_to_bf16(value))
                             : to == DType::kF16 ? f16_to_float(float_to_f16(value)) : value;
    }
    return Named{{"out", out}};
  };
  c.device = [dims, from, to, window_pad, permuted_out](DeviceRun & run, const Named & in, const Named &) {
    const TensorView x = window_pad > 0 ? run.upload_window(in.at("in"), window_pad) : run.upload(in.at("in"), from);
    const TensorView out =
        permuted_out ? run.upload_permuted(Tensor(dims, 7777.0), {0, 2, 1, 3}, to) : run.output(dims, to);
    run.op(Cast{out, x});
    return Named{{"out", run.download(out)}};
  };
  return c;
}

OpCase fill_case(std::vector<int64_t> dims, DType dtype, float value) {
  OpCase c;
  c.name = "fill" + dims_name(dims) + "_" + dtype_name(dtype);
  c.tolerance = 0.0;
  c.reference_forward = [dims, value](const Named &) { return Named{{"out", Tensor(dims, value)}}; };
  c.device = [dims, dtype, value](DeviceRun & run, const Named &, const Named &) {
    const TensorView out = run.output(dims, dtype, 5.0);
    run.op(Fill{out, value});
    return Named{{"out", run.download(out)}};
  };
  return c;
}

// With `residual` the forward adds it (out = residual + dropout(in)); din_dtype is the backward's gradient dtype;
// with `din_sums` the backward also adds up din's columns (the bias gradient before the dropout).
OpCase dropout_case(std::vector<int64_t> dims, float p, uint64_t seed, uint64_t offset, bool residual = false,
                    DType din_dtype = DType::kF32, bool din_sums = false) {
  OpCase c;
  c.name = "dropout" + dims_name(dims) + "_p" + std::to_string(static_cast<int>(p * 100)) + "_offset" +
           std::to_string(offset) + (residual ? "_residual" : "") + (din_dtype == DType::kF32 ? "" : "_bf16_din") +
           (din_sums ? "_summing_din" : "");
  if (din_dtype != DType::kF32) c.tolerance = 1e-5;  // din rounds to bf16 once
  c.draw_inputs = [dims, offset, residual] {
    std::mt19937_64 rng(dims.back() * 19 + offset);
    Named in;
    in["in"] = random_tensor(rng, dims);
    if (residual) in["residual"] = random_tensor(rng, dims);
    return in;
  };
  c.differentiable = {"in"};
  if (residual) c.differentiable.push_back("residual");
  c.graded_outputs = {"out"};
  c.reference_forward = [p, seed, offset, residual](const Named & in) {
    Tensor out = reference::dropout(in.at("in"), p, seed, offset);
    if (residual)
      for (int64_t i = 0; i < out.numel(); ++i) out.v[i] += in.at("residual").v[i];
    return Named{{"out", out}};
  };
  c.reference_backward = [p, seed, offset, residual, din_sums](const Named &, const Named & grads) {
    Named result{{"din", reference::dropout(grads.at("dout"), p, seed, offset)}};
    if (residual) result["dresidual"] = grads.at("dout");
    if (din_sums) {
      const Tensor & din = result.at("din");
      const int64_t cols = din.dims.back();
      Tensor sums({cols}, 0.0);
      for (size_t i = 0; i < din.v.size(); ++i) sums.v[i % cols] += din.v[i];
      result["din_column_sums"] = sums;
    }
    return result;
  };
  c.device = [dims, p, seed, offset, residual, din_dtype, din_sums](DeviceRun & run, const Named & in,
                                                                    const Named & grads) {
    const TensorView x = run.upload(in.at("in"), DType::kF32), out = run.output(dims, DType::kF32);
    const TensorView kept = residual ? run.upload(in.at("residual"), DType::kF32) : TensorView{};
    run.op(DropoutForward{out, x, kept, {p, seed, offset}});
    Named result{{"out", run.download(out)}};
    if (grads.empty()) return result;
    const TensorView dout = run.upload(grads.at("dout"), DType::kF32), din = run.output(dims, din_dtype);
    const TensorView column_sums = din_sums ? run.accumulator({dims.back()}) : TensorView{};
    run.op(DropoutBackward{din, dout, {p, seed, offset}, column_sums});
    result["din"] = run.download(din);
    if (din_sums) result["din_column_sums"] = run.download_accumulated(column_sums);
    if (residual) result["dresidual"] = run.download(dout);  // the residual's gradient is dout itself
    return result;
  };
  return c;
}

}  // namespace

std::vector<OpCase> elementwise_cases() {
  std::vector<OpCase> cases;
  for (Activation kind : {Activation::kGelu, Activation::kQuickGelu}) {
    for (const auto & dims : {std::vector<int64_t>{1}, {7, 13}, {4, 1000}}) cases.push_back(activation_case(kind, dims));
    cases.push_back(activation_case(kind, {5, 300}, DType::kBF16));
  }
  cases.push_back(add_case({5, 7}, false, DType::kF32, 1e-13));
  cases.push_back(add_case({3, 300}, true, DType::kF32, 1e-13));
  cases.push_back(add_case({17, 33}, false, DType::kBF16, 1e-4));  // the sum rounds to bf16
  cases.push_back(broadcast_add_case({3, 5, 7}, {5, 7}));
  cases.push_back(broadcast_add_case({4, 9}, {9}));
  cases.push_back(copy_case({2, 3, 5, 7}, true, false));
  cases.push_back(copy_case({2, 5, 3, 8}, false, true));
  cases.push_back(copy_case({1, 4, 6, 16}, true, true));
  // Rows at least a warp wide (64 lanes on ROCm) go a warp per row on a GPU.
  cases.push_back(copy_case({2, 3, 5, 72}, true, false));
  cases.push_back(copy_case({2, 5, 3, 64}, true, true));
  cases.push_back(patchify_case(2, 3, 28, 42, 14));
  cases.push_back(patchify_case(1, 1, 4, 4, 2));
  cases.push_back(scale_case({1}, -3.0f));
  cases.push_back(scale_case({9, 111}, 0.125f));
  for (DType to : {DType::kBF16, DType::kF16}) {
    cases.push_back(cast_case({7, 9}, DType::kF32, to));
    cases.push_back(cast_case({7, 9}, to, DType::kF32));
  }
  cases.push_back(cast_case({33, 65}, DType::kF32, DType::kBF16, 31));  // a q/k/v column window into a bf16 operand
  cases.push_back(cast_case({2, 3, 5, 64}, DType::kF32, DType::kBF16, 0, true));  // dq from its sums, by rows
  cases.push_back(fill_case({3, 5}, DType::kF32, 0.0f));
  cases.push_back(fill_case({11}, DType::kI32, 42.0f));
  cases.push_back(fill_case({6, 2}, DType::kBF16, -1.5f));
  cases.push_back(dropout_case({1000}, 0.1f, 5, 0));
  cases.push_back(dropout_case({13, 7}, 0.5f, 5, 3));   // an offset that starts inside a Philox block
  cases.push_back(dropout_case({64, 129}, 0.0f, 5, 0));
  cases.push_back(dropout_case({3, 5000}, 0.3f, 9, 7));  // several 4096-element chunks, each at its own offset
  cases.push_back(dropout_case({24, 100}, 0.1f, 11, 8, true, DType::kBF16));  // a sub-layer's end: packs of 8
  cases.push_back(dropout_case({5, 21}, 0.2f, 3, 2, true));  // packs that start inside a Philox block, and a tail
  // With the bias gradient: out_proj's and fc2's (chunks of rows, a column block with one pack), rows of 3 dims,
  // packs that start inside a Philox block, and widths no pack fits (the dropout, then the sums).
  cases.push_back(dropout_case({200, 264}, 0.1f, 13, 8, false, DType::kBF16, true));
  cases.push_back(dropout_case({3, 40, 96}, 0.1f, 13, 4, false, DType::kF32, true));
  cases.push_back(dropout_case({70, 24}, 0.3f, 17, 2, false, DType::kBF16, true));
  cases.push_back(dropout_case({13, 7}, 0.5f, 5, 3, false, DType::kF32, true));
  return cases;
}

}  // namespace kosmos::testing
