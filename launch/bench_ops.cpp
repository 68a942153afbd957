// bench_ops.cpp: `kosmos bench ops`: the time of every op family at a preset's shapes on one backend, as GFLOP/s
// for the matmuls and attention and as GB/s (bytes read and written) for the memory-bound rest, the median of
// repetitions after a warm-up; a table, CSV and JSON. Its rates feed `kosmos plan --calibration`.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "backends/error.h"
#include "backends/splitmix.h"
#include "launch/files.h"
#include "launch/launch.h"
#include "model/config.h"
#include "model/kosmos.h"
#include "model/layers.h"

namespace kosmos {
namespace {

struct OpTiming {
  std::string name, shape;
  double flops = 0.0, bytes = 0.0;  // per call: FLOPs (matmuls, attention) or bytes moved (the rest)
  std::function<void()> run;
};

class OpBench {
 public:
  OpBench(Device & device, Stream & stream) : device_(device), stream_(stream) {}
  // A device tensor of pseudo-random values, uniform in [-1, 1). Not a constant: a GPU runs matrix products on
  // constant or zero operands measurably faster than on the model's data (fewer bits switch, so the card holds
  // higher clocks under its power limit; Horace He, "Strangely, Matrix Multiplications on GPUs Run Faster When
  // Given 'Predictable' Data!", 2024), which would overstate the rates `kosmos plan --calibration` takes from here.
  TensorView tensor(DType dtype, std::initializer_list<int64_t> dims) {
    KOSMOS_CHECK(dtype != DType::kI32, "bench ops: an i32 tensor holds indices; give it a value");
    const TensorView view = allocate(dtype, dims);
    // 2^20 values drawn (splitmix64's sequence, its top 24 bits as the fraction) and copied over the tensor again
    // and again: a period far longer than any kernel's tile, and no host copy of the head's 131M-element tables.
    const size_t element = dtype_size(dtype), count = static_cast<size_t>(view.numel());
    const size_t drawn = std::min<size_t>(count, size_t{1} << 20);
    std::vector<unsigned char> host(drawn * element);
    uint64_t state = 0x5EED0000ull + buffers_.size();
    for (size_t index = 0; index < drawn; ++index)
      store_from_float(host.data(), dtype, static_cast<int64_t>(index),
                       static_cast<float>(splitmix64_next(state) >> 40) * 0x1p-23f - 1.0f);
    for (size_t done = 0; done < count; done += drawn) {
      const int64_t part = static_cast<int64_t>(std::min(drawn, count - done));
      // A copy from host memory has taken its source when it returns, so `host` may be used again at once.
      device_.copy(make_view(static_cast<unsigned char *>(view.data) + done * element, dtype, {part}),
                   make_view(host.data(), dtype, {part}), stream_);
    }
    return view;
  }
  // A device tensor that holds `value` everywhere: indices, and the inputs that must be valid (a variance).
  TensorView tensor(DType dtype, std::initializer_list<int64_t> dims, float value) {
    const TensorView view = allocate(dtype, dims);
    op_run(device_, Fill{view, value}, stream_);
    return view;
  }
  void op(const OpDesc & desc) { op_run(device_, desc, stream_); }
  Device & device() { return device_; }
  Stream & stream() { return stream_; }

 private:
  Device & device_;
  Stream & stream_;
  std::vector<Buffer> buffers_;

  TensorView allocate(DType dtype, std::initializer_list<int64_t> dims) {
    int64_t count = 1;
    for (int64_t size : dims) count *= size;
    buffers_.push_back(device_.allocate(static_cast<size_t>(count) * dtype_size(dtype), BufferUse::kScratch));
    return buffers_.back().view(dtype, dims);
  }
};

double median_seconds(OpBench & bench, const std::function<void()> & run, double budget) {
  run();
  bench.stream().synchronize();
  std::vector<double> times;
  const auto begin = std::chrono::steady_clock::now();
  while (
      times.size() < 3 ||
      (times.size() < 50 && std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() < budget)) {
    const auto start = std::chrono::steady_clock::now();
    run();
    bench.stream().synchronize();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int run_bench_ops(std::ostream & out, const BackendRegistry & registry, const OpsBenchOptions & options) {
  const model::KosmosConfig config = model::preset(options.preset);
  std::unique_ptr<Device> device = registry.create_for_local_rank(options.backend, options.local_rank);
  std::unique_ptr<Stream> stream = device->create_stream();
  OpBench bench(*device, *stream);
  const int64_t d = config.decoder.embed_dim, ffn = config.decoder.ffn_dim, heads = config.decoder.heads;
  const int64_t dh = d / heads, vocab = config.decoder.vocab_size;
  const int64_t batch = options.batch, length = options.length, tokens = batch * length;
  const double f = 4.0;  // bytes of an f32 element

  const auto dims = [](const std::vector<int64_t> & shape) { return describe_dims(shape); };  // "[4, 7]"
  // [tokens, vocab] logits (or their gradient) in rows padded to `alignment` bytes as the model's head pads them
  // (KosmosModel::head_row_pitch).
  const auto logits_rows = [&](DType dtype, size_t alignment) {
    const int64_t pitch = model::KosmosModel::head_row_pitch(vocab, dtype, alignment);
    return slice(bench.tensor(dtype, {tokens, pitch}), 1, 0, vocab);
  };
  std::vector<OpTiming> timings;
  const auto linear = [&](const std::string & name, int64_t in, int64_t width) {
    const TensorView x = bench.tensor(DType::kF32, {tokens, in}), w = bench.tensor(DType::kF32, {width, in});
    const TensorView y = bench.tensor(DType::kF32, {tokens, width});
    timings.push_back({name, dims({tokens, in}) + " x " + dims({width, in}) + "^T", 2.0 * tokens * in * width, 0.0,
                       [&bench, y, x, w] {
                         bench.op(Matmul{y, x, w, TensorView{}, false, true});
                       }});
  };
  linear("matmul qkv", d, 3 * d);
  linear("matmul fc1", d, ffn);
  linear("matmul fc2", ffn, d);
  linear("matmul head", d, vocab);
  // The products as the mixed-precision trainer runs them (--precision bf16): bf16 operands, the biases in f32, q|k|v,
  // fc1 and the head into bf16, fc2 into f32; in the backward, the gradients (bf16) times the weights into f32 (dx)
  // and the gradients' transpose times the inputs added onto f32 (dw). The head's logits and their gradient with
  // dense rows, and with rows padded to 16 bytes (KosmosModel::head_row_pitch), as the model lays them out where the
  // device asks for it (Device::matmul_row_alignment): the two show what the padding gains or costs on this device.
  const auto bf16_linear = [&](const std::string & name, int64_t in, int64_t width, DType out_dtype) {
    const TensorView x = bench.tensor(DType::kBF16, {tokens, in}), w = bench.tensor(DType::kBF16, {width, in});
    const TensorView bias = bench.tensor(DType::kF32, {width}), y = bench.tensor(out_dtype, {tokens, width});
    const TensorView dy = bench.tensor(DType::kBF16, {tokens, width}), dx = bench.tensor(DType::kF32, {tokens, in});
    const TensorView dw = bench.tensor(DType::kF32, {width, in});
    const double flops = 2.0 * tokens * in * width;
    timings.push_back({name + " bf16", dims({tokens, in}) + " x " + dims({width, in}) + "^T", flops, 0.0,
                       [&bench, y, x, w, bias] {
                         bench.op(Matmul{y, x, w, bias, false, true});
                       }});
    timings.push_back({name + " dx bf16", dims({tokens, width}) + " x " + dims({width, in}), flops, 0.0,
                       [&bench, dx, dy, w] {
                         bench.op(Matmul{dx, dy, w, TensorView{}, false, false});
                       }});
    timings.push_back({name + " dw bf16", dims({tokens, width}) + "^T x " + dims({tokens, in}), flops, 0.0,
                       [&bench, dw, dy, x] {
                         bench.op(Matmul{dw, dy, x, TensorView{}, true, false, 1.0f, 1.0f});
                       }});
  };
  bf16_linear("matmul qkv", d, 3 * d, DType::kBF16);
  bf16_linear("matmul fc1", d, ffn, DType::kBF16);
  bf16_linear("matmul fc2", ffn, d, DType::kF32);
  for (const bool padded : {false, true}) {
    const size_t alignment = padded ? 16 : 1;
    const std::string suffix = padded ? " bf16 padded" : " bf16";
    const TensorView normed = bench.tensor(DType::kBF16, {tokens, d}), table = bench.tensor(DType::kBF16, {vocab, d});
    const TensorView logits = logits_rows(DType::kBF16, alignment), d_logits = logits_rows(DType::kBF16, alignment);
    const TensorView d_normed = bench.tensor(DType::kF32, {tokens, d}), d_table = bench.tensor(DType::kF32, {vocab, d});
    const double flops = 2.0 * tokens * d * vocab;
    timings.push_back({"matmul head" + suffix, dims({tokens, d}) + " x " + dims({vocab, d}) + "^T", flops, 0.0,
                       [&bench, logits, normed, table] {
                         bench.op(Matmul{logits, normed, table, TensorView{}, false, true});
                       }});
    timings.push_back({"matmul head dx" + suffix, dims({tokens, vocab}) + " x " + dims({vocab, d}), flops, 0.0,
                       [&bench, d_normed, d_logits, table] {
                         bench.op(Matmul{d_normed, d_logits, table, TensorView{}, false, false});
                       }});
    timings.push_back({"matmul head dw" + suffix, dims({tokens, vocab}) + "^T x " + dims({tokens, d}), flops, 0.0,
                       [&bench, d_table, d_logits, normed] {
                         bench.op(Matmul{d_table, d_logits, normed, TensorView{}, true, false, 1.0f, 1.0f});
                       }});
  }
  // Attention with f32 operands, and with the bf16 ones mixed precision hands it (tensor cores on a GPU); bf16 also
  // with the preset's attention dropout, as a training step runs it.
  for (const DType operands : {DType::kF32, DType::kBF16}) {
    const TensorView q = bench.tensor(operands, {batch, heads, length, dh}),
                     k = bench.tensor(operands, {batch, heads, length, dh});
    // The output and the gradients in the operands' dtype, as the layers keep them (bf16 under --precision bf16).
    const TensorView v = bench.tensor(operands, {batch, heads, length, dh}),
                     o = bench.tensor(operands, {batch, heads, length, dh});
    const TensorView lse = bench.tensor(DType::kF32, {batch, heads, length});
    const TensorView dq = bench.tensor(operands, {batch, heads, length, dh}),
                     dk = bench.tensor(operands, {batch, heads, length, dh});
    const TensorView dv = bench.tensor(operands, {batch, heads, length, dh}),
                     dout = bench.tensor(operands, {batch, heads, length, dh});
    const double causal_flops = 4.0 * batch * heads * length * length * dh / 2.0;
    const std::string shape = dims({batch, heads, length, dh}) + " causal";
    std::vector<float> dropouts{0.0f};
    if (operands == DType::kBF16 && config.decoder.attention_dropout > 0.0)
      dropouts.push_back(static_cast<float>(config.decoder.attention_dropout));
    for (const float dropout_p : dropouts) {
      AttentionParams params;
      params.scale = 1.0f / std::sqrt(static_cast<float>(dh));
      params.causal = true;
      params.dropout_p = dropout_p;
      params.seed = 7;
      const std::string suffix =
          std::string(operands == DType::kF32 ? "" : " bf16") + (dropout_p > 0.0f ? " dropout" : "");
      // With the record of the dropout masks where the device keeps one, as the layers run them (the forward's
      // timing runs first and writes it).
      AttentionForward forward{o, lse, q, k, v, params, TensorView{}};
      if (const int64_t words = bench.device().attention_keep_words(forward); words > 0)
        forward.keep = bench.tensor(DType::kI32, {words}, 0.0f);
      timings.push_back({"attention forward" + suffix, shape, causal_flops, 0.0, [&bench, forward] {
                           bench.op(forward);
                         }});
      const AttentionBackward backward{dq, dk, dv, dout, q, k, v, o, lse, params, forward.keep};
      timings.push_back({"attention backward" + suffix, shape, 2.5 * causal_flops, 0.0, [&bench, backward] {
                           bench.op(backward);
                         }});
      if (forward.keep.present()) {  // what the record saves: the backward given none draws the masks again
        AttentionBackward redrawn = backward;
        redrawn.keep = TensorView{};
        timings.push_back({"attention backward" + suffix + " redrawn", shape, 2.5 * causal_flops, 0.0,
                           [&bench, redrawn] { bench.op(redrawn); }});
      }
      if (operands == DType::kBF16) {  // --attention-backward atomic: one pass, dq added up by atomics
        AttentionBackward atomic = backward;
        atomic.params.deterministic = false;
        timings.push_back({"attention backward" + suffix + " atomic", shape, 2.5 * causal_flops, 0.0,
                           [&bench, atomic] { bench.op(atomic); }});
        // ... and its forward: cuDNN's on cuda-cudnn, elsewhere the kernels of the forward above.
        AttentionForward any_order = forward;
        any_order.params.deterministic = false;
        timings.push_back({"attention forward" + suffix + " atomic", shape, causal_flops, 0.0,
                           [&bench, any_order] { bench.op(any_order); }});
      }
    }
    if (operands == DType::kF32)
      timings.push_back({"xpos forward", dims({batch, heads, length, dh}), 0.0, 2.0 * f * q.numel(), [&bench, q] {
                           bench.op(XPosForward{q, q, XPosParams{}});
                         }});
  }
  {  // xPos as the layers run it at bf16: in place on q, a column window of the q | k | v rows
    const TensorView qkv = bench.tensor(DType::kBF16, {tokens, 3 * d});
    const TensorView q = model::heads_view(slice(qkv, 1, 0, d), batch, length, heads);
    timings.push_back({"xpos forward bf16 in qkv", dims({batch, heads, length, dh}), 0.0, 2.0 * 2.0 * q.numel(),
                       [&bench, q] { bench.op(XPosForward{q, q, XPosParams{}}); }});
  }
  {
    const TensorView x = bench.tensor(DType::kF32, {tokens, d}), y = bench.tensor(DType::kF32, {tokens, d});
    const TensorView dx = bench.tensor(DType::kF32, {tokens, d}), w = bench.tensor(DType::kF32, {d}, 1.0f);
    const TensorView b = bench.tensor(DType::kF32, {d}), dw = bench.tensor(DType::kF32, {d}),
                     db = bench.tensor(DType::kF32, {d});
    const TensorView mean = bench.tensor(DType::kF32, {tokens}), rstd = bench.tensor(DType::kF32, {tokens}, 1.0f);
    const double bytes = f * tokens * d;
    timings.push_back({"layernorm forward", dims({tokens, d}), 0.0, 2.0 * bytes, [&bench, y, mean, rstd, x, w, b] {
                         bench.op(LayerNormForward{y, mean, rstd, x, w, b});
                       }});
    timings.push_back(
        {"layernorm backward", dims({tokens, d}), 0.0, 3.0 * bytes, [&bench, dx, dw, db, y, x, w, mean, rstd] {
           bench.op(LayerNormBackward{dx, dw, db, y, x, w, mean, rstd});
         }});
    const TensorView residual = bench.tensor(DType::kF32, {tokens, d});  // a pre-LN's: the residual path's gradient
    timings.push_back({"layernorm backward + residual", dims({tokens, d}), 0.0, 4.0 * bytes,
                       [&bench, dx, dw, db, y, x, w, mean, rstd, residual] {
                         bench.op(LayerNormBackward{dx, dw, db, y, x, w, mean, rstd, 1e-5f, std::nullopt, residual});
                       }});
    timings.push_back({"add", dims({tokens, d}), 0.0, 3.0 * bytes, [&bench, y, x] { bench.op(Add{y, y, x}); }});
    timings.push_back({"dropout forward", dims({tokens, d}), 0.0, 2.0 * bytes, [&bench, y, x] {
                         bench.op(DropoutForward{y, x, TensorView{}, DropoutParams{0.1f, 7, 0}});
                       }});
    timings.push_back({"dropout + residual", dims({tokens, d}), 0.0, 3.0 * bytes, [&bench, y, x] {
                         bench.op(DropoutForward{y, x, y, DropoutParams{0.1f, 7, 0}});
                       }});
    // The FFN's pre-LN joining its input first (the attention's dropout and residual add) into a bf16 output, as
    // the layers run it, instead of "dropout + residual" then a LayerNorm.
    const TensorView h = bench.tensor(DType::kBF16, {tokens, d}), joined = bench.tensor(DType::kF32, {tokens, d});
    timings.push_back({"layernorm forward bf16 joining dropout + residual", dims({tokens, d}), 0.0,
                       3.5 * bytes, [&bench, h, mean, rstd, joined, w, b, x, y] {
                         bench.op(LayerNormForward{h, mean, rstd, joined, w, b, 1e-5f, std::nullopt, x, y,
                                                   DropoutParams{0.1f, 7, 0}});
                       }});
    // out_proj's and fc2's output gradients at bf16 activations, and their bias gradients: after the dropout's
    // backward, or added up in its pass, as the layers have it do.
    const TensorView d_projected = bench.tensor(DType::kBF16, {tokens, d});
    const double mixed = 6.0 * tokens * d;  // f32 read, bf16 written
    timings.push_back({"dropout backward bf16", dims({tokens, d}), 0.0, mixed, [&bench, d_projected, x] {
                         bench.op(DropoutBackward{d_projected, x, DropoutParams{0.1f, 7, 0}});
                       }});
    timings.push_back({"bias backward bf16", dims({tokens, d}), 0.0, 2.0 * tokens * d, [&bench, db, d_projected] {
                         bench.op(BiasBackward{db, d_projected});
                       }});
    timings.push_back({"dropout backward bf16 + bias sums", dims({tokens, d}), 0.0, mixed,
                       [&bench, d_projected, x, db] {
                         bench.op(DropoutBackward{d_projected, x, DropoutParams{0.1f, 7, 0}, db});
                       }});
  }
  {
    const TensorView h = bench.tensor(DType::kF32, {tokens, ffn}), g = bench.tensor(DType::kF32, {tokens, ffn});
    const TensorView dh_ = bench.tensor(DType::kF32, {tokens, ffn});
    const double bytes = f * tokens * ffn;
    timings.push_back({"gelu forward", dims({tokens, ffn}), 0.0, 2.0 * bytes, [&bench, g, h] {
                         bench.op(ActivationForward{g, h, Activation::kGelu});
                       }});
    timings.push_back({"gelu backward", dims({tokens, ffn}), 0.0, 3.0 * bytes, [&bench, dh_, g, h] {
                         bench.op(ActivationBackward{dh_, g, h, Activation::kGelu});
                       }});
  }
  {  // the same at bf16 activations (--precision bf16), and the bias gradient of fc1 from them
    const TensorView h = bench.tensor(DType::kBF16, {tokens, ffn}), g = bench.tensor(DType::kBF16, {tokens, ffn});
    const TensorView dh_ = bench.tensor(DType::kBF16, {tokens, ffn}), dbias = bench.tensor(DType::kF32, {ffn});
    const double bytes = 2.0 * tokens * ffn;
    timings.push_back({"gelu forward bf16", dims({tokens, ffn}), 0.0, 2.0 * bytes, [&bench, g, h] {
                         bench.op(ActivationForward{g, h, Activation::kGelu});
                       }});
    timings.push_back({"gelu backward bf16", dims({tokens, ffn}), 0.0, 3.0 * bytes, [&bench, dh_, g, h] {
                         bench.op(ActivationBackward{dh_, g, h, Activation::kGelu});
                       }});
    timings.push_back({"bias backward bf16", dims({tokens, ffn}), 0.0, bytes, [&bench, dbias, h] {
                         bench.op(BiasBackward{dbias, h});
                       }});
    // The FFN's sub-LN over its GELU in one pass, as the layers run it at bf16.
    const TensorView w = bench.tensor(DType::kF32, {ffn}, 1.0f), b = bench.tensor(DType::kF32, {ffn});
    const TensorView dw = bench.tensor(DType::kF32, {ffn}), db = bench.tensor(DType::kF32, {ffn});
    const TensorView mean = bench.tensor(DType::kF32, {tokens}), rstd = bench.tensor(DType::kF32, {tokens}, 1.0f);
    timings.push_back({"layernorm forward gelu bf16", dims({tokens, ffn}), 0.0, 2.0 * bytes,
                       [&bench, g, mean, rstd, h, w, b] {
                         bench.op(LayerNormForward{g, mean, rstd, h, w, b, 1e-5f, Activation::kGelu});
                       }});
    timings.push_back({"layernorm backward gelu bf16", dims({tokens, ffn}), 0.0, 3.0 * bytes,
                       [&bench, dh_, dw, db, g, h, w, mean, rstd] {
                         bench.op(LayerNormBackward{dh_, dw, db, g, h, w, mean, rstd, 1e-5f, Activation::kGelu});
                       }});
    // ... adding up fc1's bias gradient as the layers have it do (instead of the "bias backward bf16" pass).
    timings.push_back({"layernorm backward gelu bf16 + din sums", dims({tokens, ffn}), 0.0, 3.0 * bytes,
                       [&bench, dh_, dw, db, g, h, w, mean, rstd, dbias] {
                         bench.op(LayerNormBackward{dh_, dw, db, g, h, w, mean, rstd, 1e-5f, Activation::kGelu,
                                                    TensorView{}, dbias});
                       }});
    // ... and making the sub-LN's output again as the layers do with --recompute ffn (fc2's input, which they do not
    // keep), instead of running "layernorm forward gelu bf16" once more.
    const TensorView remade = bench.tensor(DType::kBF16, {tokens, ffn});
    timings.push_back({"layernorm backward gelu bf16 + din sums + out", dims({tokens, ffn}), 0.0, 4.0 * bytes,
                       [&bench, dh_, dw, db, g, h, w, mean, rstd, dbias, remade, b] {
                         bench.op(LayerNormBackward{dh_, dw, db, g, h, w, mean, rstd, 1e-5f, Activation::kGelu,
                                                    TensorView{}, dbias, remade, b});
                       }});
  }
  {
    // The loss over logits laid out as the model lays them out (rows padded as the device's products want them,
    // KosmosModel::head_row_pitch): f32 as an f32 head gives them, with the gradient f32 or bf16 (an f16 head's takes
    // as long), and bf16 as a bf16 head gives them (--precision bf16), its gradient stored over them.
    const size_t alignment = bench.device().matmul_row_alignment();
    const TensorView logits = logits_rows(DType::kF32, alignment), dlogits = logits_rows(DType::kF32, alignment);
    const TensorView dlogits_bf16 = logits_rows(DType::kBF16, alignment),
                     logits_bf16 = logits_rows(DType::kBF16, alignment);
    const TensorView targets = bench.tensor(DType::kI32, {tokens}, 1.0f),
                     weights = bench.tensor(DType::kF32, {tokens}, 1.0f);
    const TensorView loss = bench.tensor(DType::kF32, {1}), lse = bench.tensor(DType::kF32, {tokens});
    const double bytes = f * tokens * vocab;
    timings.push_back(
        {"cross_entropy forward", dims({tokens, vocab}), 0.0, bytes, [&bench, loss, lse, logits, targets, weights] {
           bench.op(CrossEntropyForward{loss, lse, logits, targets, weights});
         }});
    timings.push_back({"cross_entropy backward", dims({tokens, vocab}), 0.0, 2.0 * bytes,
                       [&bench, dlogits, logits, targets, weights, lse] {
                         bench.op(CrossEntropyBackward{dlogits, logits, targets, weights, lse});
                       }});
    timings.push_back({"cross_entropy backward bf16", dims({tokens, vocab}), 0.0, 1.5 * bytes,
                       [&bench, dlogits_bf16, logits, targets, weights, lse] {
                         bench.op(CrossEntropyBackward{dlogits_bf16, logits, targets, weights, lse});
                       }});
    timings.push_back({"cross_entropy forward bf16 logits", dims({tokens, vocab}), 0.0, 0.5 * bytes,
                       [&bench, loss, lse, logits_bf16, targets, weights] {
                         bench.op(CrossEntropyForward{loss, lse, logits_bf16, targets, weights});
                       }});
    // Over the logits (what it reads then is the gradient of the run before: the same work and bytes).
    timings.push_back({"cross_entropy backward bf16 logits in place", dims({tokens, vocab}), 0.0, bytes,
                       [&bench, logits_bf16, targets, weights, lse] {
                         bench.op(CrossEntropyBackward{logits_bf16, logits_bf16, targets, weights, lse});
                       }});
    const TensorView table = bench.tensor(DType::kF32, {vocab, d}), embedded = bench.tensor(DType::kF32, {tokens, d});
    timings.push_back(
        {"embedding forward", dims({tokens, d}), 0.0, 2.0 * f * tokens * d, [&bench, embedded, targets, table] {
           bench.op(EmbeddingForward{embedded, targets, table});
         }});
    timings.push_back(
        {"embedding backward", dims({tokens, d}), 0.0, 3.0 * f * tokens * d, [&bench, table, embedded, targets] {
           bench.op(EmbeddingBackward{table, embedded, targets});
         }});
  }
  {
    const int64_t count = options.optimizer_elements;
    const TensorView p = bench.tensor(DType::kF32, {count}), m = bench.tensor(DType::kF32, {count});
    const TensorView v = bench.tensor(DType::kF32, {count}, 0.01f), g = bench.tensor(DType::kF32, {count});
    timings.push_back({"adamw step", dims({count}), 0.0, 7.0 * f * count, [&bench, p, m, v, g] {
                         AdamWStep step{p, m, v, g};
                         bench.op(step);
                       }});
    // As the mixed-precision trainer runs it: the bf16 compute copy written in the same pass.
    const TensorView copy = bench.tensor(DType::kBF16, {count});
    timings.push_back({"adamw step + bf16 copy", dims({count}), 0.0, (7.0 * f + 2.0) * count,
                       [&bench, p, m, v, g, copy] {
                         AdamWStep step{p, m, v, g};
                         step.compute_param = copy;
                         bench.op(step);
                       }});
  }

  size_t name_width = 40;  // the longest op name and a space
  for (const OpTiming & timing : timings) name_width = std::max(name_width, timing.name.size() + 1);
  const int names = static_cast<int>(name_width);
  out << "kosmos bench ops: " << options.preset << " shapes (" << batch << " x " << length << " tokens) on "
      << device->name() << " (" << device->description() << ")\n"
      << std::left << std::setw(names) << "op" << std::setw(36) << "shape" << std::right << std::setw(11) << "ms"
      << std::setw(12) << "GFLOP/s" << std::setw(10) << "GB/s"
      << "\n";
  std::ostringstream csv;
  csv << "op,shape,ms,gflops,gbs\n";
  nlohmann::json results = nlohmann::json::array();
  // The planner's matmul rate (of the f32 products: the bf16 ones run on other units where a CPU has AMX, and
  // only f32 training is planned on a CPU) and memory bandwidth.
  double best_matmul = 0.0, best_bandwidth = 0.0;
  for (const OpTiming & timing : timings) {
    const double seconds = median_seconds(bench, timing.run, options.seconds_per_op);
    const double gflops = timing.flops / seconds / 1e9, gbs = timing.bytes / seconds / 1e9;
    const bool bf16 = timing.name.find(" bf16") != std::string::npos;
    if (timing.name.rfind("matmul", 0) == 0 && !bf16) best_matmul = std::max(best_matmul, gflops);
    if (timing.name == "adamw step") best_bandwidth = gbs;  // the largest stream: memory, not cache
    out << std::left << std::setw(names) << timing.name << std::setw(36) << timing.shape << std::right << std::fixed
        << std::setprecision(3) << std::setw(11) << seconds * 1e3 << std::setprecision(1) << std::setw(12)
        << (timing.flops > 0 ? gflops : 0.0) << std::setw(10) << (timing.bytes > 0 ? gbs : 0.0) << "\n";
    csv << timing.name << ",\"" << timing.shape << "\"," << seconds * 1e3 << ',' << gflops << ',' << gbs << "\n";
    results.push_back(
        {{"op", timing.name}, {"shape", timing.shape}, {"ms", seconds * 1e3}, {"gflops", gflops}, {"gbs", gbs}});
  }
  const nlohmann::json rates = {{"matmul_tflops", best_matmul / 1e3}, {"memory_gbs", best_bandwidth}};
  out << "rates for kosmos plan --calibration: " << rates.dump() << "\n";
  write_text_file(
      options.out,
      nlohmann::json{{"backend", device->name()}, {"preset", options.preset}, {"results", results}, {"rates", rates}}
              .dump(2) +
          "\n");
  write_text_file(options.csv, csv.str());
  write_text_file(options.calibration_out, rates.dump(2) + "\n");
  return 0;
}

}  // namespace kosmos
