// cases_attention.cpp: attention (full and causal, self and cross, decoding-style Tq < Tk, rows that see no key,
// ragged tiles, Philox dropout on a head slice, strided [B, T, H, dh] operands) and xPos (up/down scale, offsets,
// strided), forward and backward.
#include <cmath>
#include <set>
#include <sstream>

#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

struct AttentionShape {
  int64_t batch, heads, tq, tk, head_dim;
  bool causal;
  float dropout_p = 0.0f;
  bool strided = false;  // operands laid out as [B, T, H, dh] (the layout of a [B, T, H*dh] activation)
  int64_t head_start = 0, heads_total = 0;
  DType dtype = DType::kF32;  // of q, k and v; bf16: values drawn exactly representable
  DType activations = DType::kF32;  // of out, dout, dq, dk and dv (bf16 activations: rounded once)
  bool deterministic = true;        // false: a GPU's bf16 backward may add dq up by atomics (AttentionParams)
  // Where the device records the dropout masks (Device::attention_keep_words), the forward writes the record and the
  // backward reads it, as the model runs them; false: none is given, and the backward draws the masks again.
  bool keep_record = true;
};

OpCase attention_case(const AttentionShape & s) {
  std::ostringstream name;
  name << "attention_" << s.batch << "x" << s.heads << "_q" << s.tq << "_k" << s.tk << "_d" << s.head_dim
       << (s.causal ? "_causal" : "_full") << (s.dropout_p > 0 ? "_dropout" : "") << (s.strided ? "_strided" : "")
       << (s.dtype != DType::kF32 ? std::string("_") + dtype_name(s.dtype) : "")
       << (s.activations != DType::kF32 ? std::string("_out_grads_") + dtype_name(s.activations) : "");
  const std::string plain_name = name.str();  // the name without the tensor-core kernels' variants
  name << (s.deterministic ? "" : "_atomic_dq") << (s.keep_record ? "" : "_drawn_again");
  OpCase c;
  c.name = name.str();
  if (!s.deterministic || !s.keep_record) c.scalar_kernels_twin = plain_name;  // if there is one (below)
  // bf16 operands: a GPU's tensor-core kernel rounds the probabilities and score gradients to bf16 (2^-9).
  c.tolerance = s.dtype == DType::kF32 && s.activations == DType::kF32 ? 1e-10 : 1e-4;
  c.grad_dtype = s.activations;
  c.draw_inputs = [s] {
    std::mt19937_64 rng(s.tq * 1000 + s.tk * 10 + s.head_dim);
    Named in;
    in["q"] = random_tensor(rng, {s.batch, s.heads, s.tq, s.head_dim}, 1.0, s.dtype);
    in["k"] = random_tensor(rng, {s.batch, s.heads, s.tk, s.head_dim}, 1.0, s.dtype);
    in["v"] = random_tensor(rng, {s.batch, s.heads, s.tk, s.head_dim}, 1.0, s.dtype);
    return in;
  };
  c.differentiable = {"q", "k", "v"};
  c.graded_outputs = {"out"};
  reference::AttentionConfig config;
  config.scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  config.causal = s.causal;
  config.dropout_p = s.dropout_p;
  config.seed = 77;
  config.first_row = 12345;
  config.head_start = s.head_start;
  config.heads_total = s.heads_total;
  c.reference_forward = [config](const Named & in) {
    const reference::AttentionOut r = reference::attention(in.at("q"), in.at("k"), in.at("v"), config);
    return Named{{"out", r.out}, {"lse", r.lse}};
  };
  c.reference_backward = [config](const Named & in, const Named & grads) {
    const reference::AttentionGrads g =
        reference::attention_backward(grads.at("dout"), in.at("q"), in.at("k"), in.at("v"), config);
    return Named{{"dq", g.dq}, {"dk", g.dk}, {"dv", g.dv}};
  };
  c.device = [s, config](DeviceRun & run, const Named & in, const Named & grads) {
    const std::vector<int> layout{0, 2, 1, 3};  // [B, H, T, dh] seen through [B, T, H, dh] memory
    auto put = [&](const Tensor & host, DType dtype) {
      return s.strided ? run.upload_permuted(host, layout, dtype) : run.upload(host, dtype);
    };
    auto fresh = [&](const std::vector<int64_t> & dims) {
      return s.strided ? run.upload_permuted(Tensor(dims, 7777.0), layout, s.activations)
                       : run.output(dims, s.activations);
    };
    AttentionParams params;
    params.scale = static_cast<float>(config.scale);
    params.causal = s.causal;
    params.dropout_p = s.dropout_p;
    params.seed = config.seed;
    params.first_row = config.first_row;
    params.head_start = s.head_start;
    params.heads_total = s.heads_total;
    params.deterministic = s.deterministic;
    // cuda-cudnn draws dropout masks of its own where cuDNN takes the op (cudnn_attention_takes: bf16 out, a head
    // size of a multiple of 8 up to 128, causal only with as many queries as keys, dq in any order); the others run
    // on the mma.sync kernels with the reference's masks. test_cudnn_attention.cpp checks cuDNN's.
    const bool cudnn_masks = s.dropout_p > 0.0f && !s.deterministic && s.activations == DType::kBF16 &&
                             s.dtype == DType::kBF16 && s.head_dim % 8 == 0 && s.head_dim <= 128 &&
                             (!s.causal || s.tq == s.tk) && s.tq > 0;
    if (run.device().backend() == "cuda-cudnn" && cudnn_masks)
      throw Unsupported{"cuDNN draws its own dropout masks, not the reference's (test_cudnn_attention.cpp checks "
                        "them)"};
    const TensorView q = put(in.at("q"), s.dtype), k = put(in.at("k"), s.dtype), v = put(in.at("v"), s.dtype);
    const TensorView out = fresh(in.at("q").dims);
    const TensorView lse = run.output({s.batch, s.heads, s.tq}, DType::kF32);
    AttentionForward forward{out, lse, q, k, v, params, TensorView{}};
    if (const int64_t words = run.device().attention_keep_words(forward); words > 0 && s.keep_record)
      forward.keep = run.output({words}, DType::kI32);  // starts as 7777s: the backward reads what the forward wrote
    run.op(forward);
    Named result{{"out", run.download(out)}, {"lse", run.download(lse)}};
    if (grads.empty()) return result;
    const TensorView dout = put(grads.at("dout"), s.activations);
    const TensorView dq = fresh(in.at("q").dims), dk = fresh(in.at("k").dims), dv = fresh(in.at("v").dims);
    run.op(AttentionBackward{dq, dk, dv, dout, q, k, v, out, lse, params, forward.keep});
    result["dq"] = run.download(dq);
    result["dk"] = run.download(dk);
    result["dv"] = run.download(dv);
    return result;
  };
  return c;
}

// How an xPos case lays out its [B, H, T, dh] tensors on the device: dense; as [B, T, H, dh] (heads side by side in
// position rows); so, in a column window of rows twice as wide again (the model's q or k in q | k | v); or as
// [H, B, T, dh] (strided, heads not in rows).
enum class XPosLayout { kDense, kHeadsInRows, kQkvWindow, kHeadsOutermost };

// dtype: of in, out and the gradients; bf16 rounds the rotated values once (2^-9 relative).
OpCase xpos_case(std::vector<int64_t> dims, int64_t offset, bool downscale, XPosLayout layout,
                 DType dtype = DType::kF32) {
  static const char * const kLayoutNames[] = {"", "_strided", "_in_qkv", "_heads_outermost"};
  std::ostringstream name;
  name << "xpos_" << dims[0] << "x" << dims[1] << "_t" << dims[2] << "_d" << dims[3] << "_offset" << offset
       << (downscale ? "_down" : "_up") << kLayoutNames[static_cast<int>(layout)]
       << (dtype == DType::kF32 ? "" : "_bf16");
  OpCase c;
  c.name = name.str();
  c.tolerance = dtype == DType::kF32 ? 1e-12 : 1e-5;
  c.grad_dtype = dtype;
  c.draw_inputs = [dims, offset, dtype] {
    std::mt19937_64 rng(dims[2] * 7 + offset);
    return Named{{"in", random_tensor(rng, dims, 1.0, dtype)}};
  };
  c.differentiable = {"in"};
  c.graded_outputs = {"out"};
  constexpr double kScaleBase = 512.0;
  c.reference_forward = [offset, downscale](const Named & in) {
    return Named{{"out", reference::xpos(in.at("in"), offset, downscale, kScaleBase)}};
  };
  c.reference_backward = [offset, downscale](const Named &, const Named & grads) {
    return Named{{"din", reference::xpos_backward(grads.at("dout"), offset, downscale, kScaleBase)}};
  };
  c.device = [dims, offset, downscale, layout, dtype](DeviceRun & run, const Named & in, const Named & grads) {
    const int64_t batch = dims[0], heads = dims[1], length = dims[2], head_dim = dims[3];
    const int64_t width = heads * head_dim;
    // [B, H, T, dh] on the host to [B T, H dh] position rows (into_rows), or back.
    const auto rearranged = [&](const Tensor & source, bool into_rows) {
      Tensor target(into_rows ? std::vector<int64_t>{batch * length, width} : dims);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t t = 0; t < length; ++t)
            for (int64_t e = 0; e < head_dim; ++e) {
              const int64_t logical = ((b * heads + h) * length + t) * head_dim + e;
              const int64_t stored = (b * length + t) * width + h * head_dim + e;
              if (into_rows)
                target.v[stored] = source.v[logical];
              else
                target.v[logical] = source.v[stored];
            }
      return target;
    };
    // The device tensor, and the view the op takes of it.
    const auto put = [&](const Tensor & host) {
      switch (layout) {
        case XPosLayout::kDense: return run.upload(host, dtype);
        case XPosLayout::kHeadsInRows: return run.upload_permuted(host, {0, 2, 1, 3}, dtype);
        case XPosLayout::kQkvWindow: return run.upload_window(rearranged(host, true), 2 * width, dtype);
        case XPosLayout::kHeadsOutermost: return run.upload_permuted(host, {1, 0, 2, 3}, dtype);
      }
      return TensorView{};
    };
    const auto as_heads = [&](TensorView view) {
      if (layout != XPosLayout::kQkvWindow) return view;
      const int64_t row_stride = view.strides[0];
      view.ndim = 4;
      view.dims = {batch, heads, length, head_dim};
      view.strides = {length * row_stride, head_dim, row_stride, 1};
      return view;
    };
    const auto get = [&](const TensorView & view) {
      return layout == XPosLayout::kQkvWindow ? rearranged(run.download(view), false) : run.download(view);
    };
    const XPosParams params{offset, downscale, static_cast<float>(kScaleBase)};
    const TensorView x = put(in.at("in")), out = put(Tensor(dims, 7777.0));
    run.op(XPosForward{as_heads(out), as_heads(x), params});
    Named result{{"out", get(out)}};
    if (grads.empty()) return result;
    const TensorView dout = put(grads.at("dout"));
    run.op(XPosBackward{as_heads(dout), as_heads(dout), params});  // in place, as the attention layer uses it
    result["din"] = get(dout);
    return result;
  };
  return c;
}

// A case whose shape is there for the tensor-core kernels' tiles and block order; `twin`: a case of the same head
// size, mask, dropout and dtypes, over which the scalar kernels run the same code.
OpCase tensor_core_geometry(OpCase c, const char * twin) {
  c.scalar_kernels_twin = twin;
  return c;
}

// A variant for the tensor-core kernels whose plain case is not in `cases` has no twin, and runs everywhere.
std::vector<OpCase> with_scalar_kernels_twins(std::vector<OpCase> cases) {
  std::set<std::string> names;
  for (const OpCase & c : cases) names.insert(c.name);
  for (OpCase & c : cases)
    if (c.is_variant_of_twin() && !names.count(c.scalar_kernels_twin)) c.scalar_kernels_twin.clear();
  return cases;
}

std::vector<OpCase> attention_and_xpos_case_list() {
  return {attention_case({1, 1, 1, 1, 8, false}),
          attention_case({2, 3, 37, 37, 16, false}),
          attention_case({2, 3, 37, 37, 16, true}),
          attention_case({1, 2, 64, 64, 64, true}),
          attention_case({1, 2, 130, 130, 64, true}),
          attention_case({2, 2, 8, 70, 32, false}),   // resampler-style cross-attention: few queries, many keys
          attention_case({1, 2, 5, 70, 24, true}),    // decoding: the last queries of a longer key sequence
          attention_case({1, 1, 10, 6, 8, true}),     // more queries than keys: the first rows see no key
          attention_case({1, 2, 0, 5, 16, false}),    // no query: no key is seen, dk and dv are zero
          attention_case({2, 2, 33, 33, 16, true, 0.2f, false, 1, 5}),
          attention_case({2, 3, 40, 40, 32, true, 0.0f, true}),
          attention_case({1, 2, 21, 50, 16, false, 0.1f, true}),
          attention_case({1, 2, 100, 150, 16, true, 0.25f}),  // several key tiles, causal Tq < Tk, dropout
          attention_case({1, 2, 150, 100, 16, true, 0.25f}),  // causal Tq > Tk over several query tiles
          // bf16 operands at the head sizes of the GPU's tensor-core kernels (32, 64, 128), ragged tiles, causal
          // and full, dropout, strided [B, T, H, dh] windows; and one the kernels do not take (24: widened to f32)
          attention_case({2, 2, 130, 130, 64, true, 0.0f, true, 0, 0, DType::kBF16}),
          attention_case({1, 3, 77, 77, 64, false, 0.0f, false, 0, 0, DType::kBF16}),
          attention_case({1, 2, 100, 150, 32, true, 0.25f, true, 1, 4, DType::kBF16}),
          attention_case({1, 1, 70, 70, 128, true, 0.1f, false, 0, 0, DType::kBF16}),
          attention_case({1, 2, 9, 40, 64, true, 0.0f, false, 0, 0, DType::kBF16}),  // decoding-style Tq < Tk
          attention_case({1, 2, 0, 40, 64, true, 0.0f, false, 0, 0, DType::kBF16}),  // no query
          attention_case({1, 2, 33, 33, 24, true, 0.0f, false, 0, 0, DType::kBF16}),
          // causal Tq > Tk (rows that see no key) with dropout, at the paper's head size
          attention_case({1, 2, 150, 100, 64, true, 0.25f, false, 0, 0, DType::kBF16}),
          // bf16 activations: the output and the gradients in bf16 too, as the model keeps them under --precision
          // bf16 (on tensor cores at 64 and 32, widened at 24)
          attention_case({2, 2, 130, 130, 64, true, 0.0f, true, 0, 0, DType::kBF16, DType::kBF16}),
          attention_case({1, 2, 100, 150, 32, true, 0.25f, true, 1, 4, DType::kBF16, DType::kBF16}),
          attention_case({2, 2, 130, 130, 64, true, 0.1f, false, 1, 4, DType::kBF16, DType::kBF16}),
          attention_case({1, 2, 33, 33, 24, true, 0.0f, false, 0, 0, DType::kBF16, DType::kBF16}),
          // whole 64-row tiles, where the last steps need no mask either (192: the mma.sync forward's second block of
          // 128 rows half empty); and 34 (batch, head) pairs, over two whole groups of 16 heads and a part of one in
          // the GPU's block order (backends/attention_block_order.h), whose 64 queries fill one forward tile
          tensor_core_geometry(attention_case({1, 3, 192, 192, 64, true, 0.1f, false, 0, 0, DType::kBF16,
                                               DType::kBF16}),
                               "attention_2x2_q130_k130_d64_causal_dropout_bf16_out_grads_bf16"),
          tensor_core_geometry(attention_case({2, 17, 64, 128, 64, false, 0.0f, false, 0, 0, DType::kBF16}),
                               "attention_1x3_q77_k77_d64_full_bf16"),
          // whole 128-row forward blocks, both tiles unmasked in the same steps: causal at 64, full with dropout at 32
          tensor_core_geometry(attention_case({1, 2, 256, 256, 64, true, 0.0f, false, 0, 0, DType::kBF16,
                                               DType::kBF16}),
                               "attention_2x2_q130_k130_d64_causal_strided_bf16_out_grads_bf16"),
          attention_case({1, 2, 128, 128, 32, false, 0.1f, false, 0, 0, DType::kBF16}),
          // the backward in one pass over the key blocks, dq added up by atomics: dropout on a head slice, strided
          // operands with causal Tq < Tk, rows that see no key (Tq > Tk)
          attention_case({2, 2, 130, 130, 64, true, 0.1f, false, 1, 4, DType::kBF16, DType::kBF16, false}),
          attention_case({1, 2, 100, 150, 32, true, 0.25f, true, 1, 4, DType::kBF16, DType::kBF16, false}),
          attention_case({1, 2, 150, 100, 64, true, 0.25f, false, 0, 0, DType::kBF16, DType::kF32, false}),
          // ... without dropout, where cuda-cudnn runs them on cuDNN: causal over strided [B, T, H, dh] windows, full
          // over ragged tiles, and at head size 32
          attention_case({2, 2, 128, 128, 64, true, 0.0f, true, 0, 0, DType::kBF16, DType::kBF16, false}),
          attention_case({1, 3, 77, 77, 64, false, 0.0f, false, 0, 0, DType::kBF16, DType::kBF16, false}),
          attention_case({1, 2, 100, 100, 32, true, 0.0f, false, 0, 0, DType::kBF16, DType::kBF16, false}),
          // dropout at and above p = 0.5: thresholds of 128 and more (the GPU's kernels compare the random bytes by
          // another rule from 128 on), in two passes and in one
          attention_case({1, 2, 130, 130, 64, true, 0.5f, false, 0, 0, DType::kBF16, DType::kBF16}),
          attention_case({1, 2, 90, 150, 32, true, 0.7f, true, 0, 0, DType::kBF16, DType::kBF16, false}),
          // queries that fit in one forward tile (its blocks of 64 rows) with dropout: the record of 128-row blocks
          attention_case({1, 2, 40, 40, 64, true, 0.2f, false, 0, 0, DType::kBF16, DType::kBF16}),
          // the backward given no record of the forward's masks, in two passes and in one: it draws them again
          attention_case({2, 2, 130, 130, 64, true, 0.1f, false, 1, 4, DType::kBF16, DType::kBF16, true, false}),
          attention_case({1, 2, 100, 150, 32, true, 0.25f, true, 1, 4, DType::kBF16, DType::kBF16, false, false}),
          attention_case({1, 2, 150, 100, 64, true, 0.25f, false, 0, 0, DType::kBF16, DType::kF32, true, false}),
          xpos_case({1, 2, 9, 8}, 0, false, XPosLayout::kDense),
          xpos_case({1, 2, 9, 8}, 0, true, XPosLayout::kDense),
          xpos_case({2, 3, 7, 64}, 5, false, XPosLayout::kDense),
          xpos_case({2, 3, 70, 64}, 0, true, XPosLayout::kHeadsInRows),
          xpos_case({1, 4, 1, 32}, 100, false, XPosLayout::kDense),
          xpos_case({2, 3, 70, 64}, 0, false, XPosLayout::kHeadsInRows, DType::kBF16),
          xpos_case({1, 2, 9, 8}, 3, true, XPosLayout::kDense, DType::kBF16),
          xpos_case({1, 3, 5, 6}, 2, false, XPosLayout::kHeadsInRows),  // a head size the 8-element packs do not fit
          // The model's q and k, windows of q | k | v: the GPU's kernel over position rows, a block of up to 8 heads'
          // threads (4 heads of 64, 5 of 32: a pack a thread; 36 heads of 64: 4 or 5 packs a thread).
          xpos_case({2, 4, 33, 64}, 0, false, XPosLayout::kQkvWindow),
          xpos_case({2, 5, 17, 32}, 0, true, XPosLayout::kQkvWindow, DType::kBF16),
          xpos_case({1, 36, 5, 64}, 3, true, XPosLayout::kQkvWindow, DType::kBF16),
          // ... more position rows (2 x 2100) than the GPU's grid has blocks (4096), as at the paper step's 16384:
          // a block takes several rows, each with its own position's factors.
          xpos_case({2, 2, 2100, 32}, 0, false, XPosLayout::kQkvWindow, DType::kBF16),
          // ... heads of 3 packs (24 threads a block, 90 heads: 270 packs a row, 11 or 12 a thread).
          xpos_case({1, 90, 3, 24}, 0, false, XPosLayout::kQkvWindow),
          // Strided, but not in position rows: the GPU's general packed kernel.
          xpos_case({2, 3, 9, 64}, 1, false, XPosLayout::kHeadsOutermost, DType::kBF16)};
}

}  // namespace

std::vector<OpCase> attention_cases() { return with_scalar_kernels_twins(attention_and_xpos_case_list()); }

}  // namespace kosmos::testing
