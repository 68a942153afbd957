// cases_embedding.cpp: embedding gather and scatter-add backward (repeated ids, padding_idx, a vocab slice as the
// vocab-parallel embedding uses), fairseq sinusoidal positions, and the fused softmax cross-entropy with loss
// weights, ignored rows and a vocab slice.
#include <limits>
#include <sstream>

#include "backends/error.h"
#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

std::vector<int32_t> random_ids(std::mt19937_64 & rng, int64_t count, int32_t low, int32_t high) {
  std::uniform_int_distribution<int32_t> pick(low, high - 1);
  std::vector<int32_t> ids(count);
  for (int32_t & id : ids) id = pick(rng);
  return ids;
}

OpCase embedding_case(int64_t count, int64_t vocab, int64_t width, int64_t vocab_start, int64_t table_rows,
                      int64_t padding_idx, double tolerance = 1e-13) {
  std::ostringstream name;
  name << "embedding_n" << count << "_v" << vocab << "_d" << width << "_slice" << vocab_start << "_" << table_rows
       << "_pad" << (padding_idx < 0 ? std::string("none") : std::to_string(padding_idx));
  OpCase c;
  c.name = name.str();
  c.tolerance = tolerance;
  c.draw_inputs = [count, vocab, width, table_rows, padding_idx] {
    std::mt19937_64 rng(count * 3 + vocab);
    std::vector<int32_t> ids = random_ids(rng, count, 0, static_cast<int32_t>(vocab));
    if (padding_idx >= 0) ids[0] = static_cast<int32_t>(padding_idx);
    Named in;
    in["ids"] = from_ints(ids);
    in["table"] = random_tensor(rng, {table_rows, width});
    return in;
  };
  c.differentiable = {"table"};
  c.graded_outputs = {"out"};
  c.gradient_blocked = [=](const std::string &, int64_t index) {  // the padding row is frozen, as in PyTorch
    return padding_idx >= 0 && index / width == padding_idx - vocab_start;
  };
  c.reference_forward = [vocab_start](const Named & in) {
    return Named{{"out", reference::embedding(to_ints(in.at("ids")), in.at("table"), vocab_start)}};
  };
  c.reference_backward = [vocab_start, table_rows, padding_idx](const Named & in, const Named & grads) {
    return Named{{"dtable", reference::embedding_backward(grads.at("dout"), to_ints(in.at("ids")), table_rows,
                                                          vocab_start, padding_idx)}};
  };
  c.device = [count, width, vocab_start, table_rows, padding_idx](DeviceRun & run, const Named & in,
                                                                  const Named & grads) {
    const TensorView ids = run.upload(in.at("ids"), DType::kI32), table = run.upload(in.at("table"), DType::kF32);
    const TensorView out = run.output({count, width}, DType::kF32);
    run.op(EmbeddingForward{out, ids, table, vocab_start, padding_idx});
    Named result{{"out", run.download(out)}};
    if (grads.empty()) return result;
    const TensorView dout = run.upload(grads.at("dout"), DType::kF32), dtable = run.accumulator({table_rows, width});
    run.op(EmbeddingBackward{dtable, dout, ids, vocab_start, padding_idx});
    result["dtable"] = run.download_accumulated(dtable);
    return result;
  };
  return c;
}

OpCase sinusoidal_case(std::vector<int32_t> positions, int64_t width, int64_t padding_idx) {
  OpCase c;
  c.name = "sinusoidal_n" + std::to_string(positions.size()) + "_d" + std::to_string(width);
  c.tolerance = 1e-13;
  c.draw_inputs = [positions] { return Named{{"positions", from_ints(positions)}}; };
  c.reference_forward = [width, padding_idx](const Named & in) {
    return Named{{"out", reference::sinusoidal_positions(to_ints(in.at("positions")), width, padding_idx)}};
  };
  c.device = [width, padding_idx](DeviceRun & run, const Named & in, const Named &) {
    const TensorView positions = run.upload(in.at("positions"), DType::kI32);
    const TensorView out = run.output({positions.dim(0), width}, DType::kF32);
    run.op(SinusoidalPositions{out, positions, padding_idx});
    return Named{{"out", run.download(out)}};
  };
  return c;
}

// dlogits_dtype bf16 or f16: a 16-bit head's gradient, rounded once (2^-9 or 2^-12 relative).
// `masked`: every fifth column (1, 6, 11, ...) is -inf, as a vocabulary mask would set it: it adds nothing to the
// sums and gets no gradient (also where it is the first column a GPU thread reads); no target falls on one.
// `logits_pad`, `dlogits_pad`: logits and dlogits with their rows that many elements further apart than the
// vocabulary, as a GPU's head pads them, each by its own dtype (the padding must stay untouched).
// `logits_dtype` bf16: a bf16 head's logits (drawn exact in bf16). `in_place`: dlogits is logits itself, as the model
// has it where the two dtypes agree (dlogits_pad must then be logits_pad).
OpCase cross_entropy_case(int64_t rows, int64_t vocab, int64_t vocab_start, int64_t vocab_total, double scale,
                          DType dlogits_dtype = DType::kF32, bool masked = false, int64_t logits_pad = 0,
                          int64_t dlogits_pad = 0, DType logits_dtype = DType::kF32, bool in_place = false) {
  KOSMOS_CHECK(!in_place || (dlogits_dtype == logits_dtype && dlogits_pad == logits_pad),
               "cross_entropy_case: in place needs dlogits in logits' dtype and padding");
  std::ostringstream name;
  name << "cross_entropy_n" << rows << "_v" << vocab << "_slice" << vocab_start << "_of" << vocab_total;
  if (logits_dtype != DType::kF32) name << "_" << dtype_name(logits_dtype) << "_logits";
  if (dlogits_dtype != DType::kF32) name << "_" << dtype_name(dlogits_dtype) << "_grad";
  if (in_place) name << "_in_place";
  if (masked) name << "_masked";
  if (logits_pad > 0 || dlogits_pad > 0) name << "_rows_padded" << logits_pad << "_" << dlogits_pad;
  OpCase c;
  c.name = name.str();
  const auto is_masked = [masked](int64_t column) { return masked && column % 5 == 1; };
  c.draw_inputs = [rows, vocab, vocab_start, vocab_total, scale, is_masked, logits_dtype] {
    std::mt19937_64 rng(rows * 7 + vocab);
    Named in;
    in["logits"] = random_tensor(rng, {rows, vocab}, scale, logits_dtype);
    std::vector<int32_t> targets = random_ids(rng, rows, 0, static_cast<int32_t>(vocab_total));
    for (int64_t i = 0; i < rows * vocab; ++i)
      if (is_masked(i % vocab)) in["logits"].v[i] = -std::numeric_limits<double>::infinity();
    for (int32_t & target : targets)
      if (is_masked(target - vocab_start)) --target;
    in["targets"] = from_ints(targets);
    Tensor weights({rows}, 1.0);
    for (int64_t n = 2; n < rows; n += 3) weights.v[n] = 0.0;  // masked rows: no loss, no gradient
    if (rows > 1) weights.v[1] = 0.5;
    in["weights"] = weights;
    return in;
  };
  if (masked) c.gradient_blocked = [is_masked, vocab](const std::string &, int64_t i) { return is_masked(i % vocab); };
  c.differentiable = {"logits"};
  c.graded_outputs = {"loss"};
  if (dlogits_dtype != DType::kF32) c.tolerance = 1e-5;
  const double loss_scale = 1.0 / static_cast<double>(rows);
  c.reference_forward = [vocab_start, loss_scale](const Named & in) {
    const reference::CrossEntropyOut r = reference::cross_entropy(in.at("logits"), to_ints(in.at("targets")),
                                                                  in.at("weights"), vocab_start, loss_scale);
    return Named{{"loss", Tensor({1}, r.loss)}, {"lse", r.lse}};
  };
  c.reference_backward = [vocab_start, loss_scale](const Named & in, const Named & grads) {
    return Named{{"dlogits", reference::cross_entropy_backward(in.at("logits"), to_ints(in.at("targets")),
                                                               in.at("weights"), vocab_start, loss_scale,
                                                               grads.at("dloss").v[0])}};
  };
  c.device = [rows, vocab, vocab_start, vocab_total, loss_scale, dlogits_dtype, logits_pad, dlogits_pad, logits_dtype,
              in_place](DeviceRun & run, const Named & in, const Named & grads) {
    const TensorView logits = logits_pad > 0 ? run.upload_window(in.at("logits"), logits_pad, logits_dtype)
                                             : run.upload(in.at("logits"), logits_dtype);
    const TensorView targets = run.upload(in.at("targets"), DType::kI32);
    const TensorView weights = run.upload(in.at("weights"), DType::kF32);
    const TensorView loss = run.output({1}, DType::kF32), lse = run.output({rows}, DType::kF32);
    const float scale = static_cast<float>(loss_scale);
    run.op(CrossEntropyForward{loss, lse, logits, targets, weights, vocab_start, vocab_total, scale});
    Named result{{"loss", run.download(loss)}, {"lse", run.download(lse)}};
    if (grads.empty()) return result;
    const TensorView dlogits = in_place          ? logits
                               : dlogits_pad > 0 ? run.upload_window(Tensor({rows, vocab}, 7777.0), dlogits_pad,
                                                                     dlogits_dtype)
                                                 : run.output({rows, vocab}, dlogits_dtype);
    run.op(CrossEntropyBackward{dlogits, logits, targets, weights, lse, vocab_start, vocab_total, scale,
                                static_cast<float>(grads.at("dloss").v[0])});
    result["dlogits"] = run.download(dlogits);
    return result;
  };
  return c;
}

}  // namespace

std::vector<OpCase> embedding_cases() {
  return {embedding_case(1, 5, 3, 0, 5, -1),
          embedding_case(40, 11, 17, 0, 11, 1),      // repeated ids; padding row 1 gets no gradient
          embedding_case(64, 100, 70, 30, 40, -1),  // this rank's slice [30, 70) of a 100-token vocab
          embedding_case(300, 1000, 128, 0, 1000, 0),
          // Rows of about 1700 tokens each: the GPU orders each row's tokens through shared memory 1024 at a time.
          // f32 sums of that many terms carry about 1e-6 relative error, as the CPU's do.
          embedding_case(5000, 3, 8, 0, 3, -1, 1e-10),
          sinusoidal_case({2, 3, 4, 1, 100, 2047}, 16, 1),
          sinusoidal_case({0, 5, 9}, 2048, -1),
          cross_entropy_case(1, 2, 0, 2, 1.0),
          cross_entropy_case(37, 101, 0, 101, 3.0),
          cross_entropy_case(16, 5000, 0, 5000, 10.0),  // large logits: the max subtraction matters
          cross_entropy_case(20, 64, 32, 128, 1.0),     // a vocab slice: out-of-slice targets pick nothing here
          cross_entropy_case(24, 3001, 0, 3001, 4.0, DType::kBF16),  // a bf16 head: an odd vocab, rows unaligned
          cross_entropy_case(9, 700, 0, 700, 2.0, DType::kF32, true),
          cross_entropy_case(13, 301, 0, 301, 3.0, DType::kF32, false, 3, 3),      // both rows 304 apart
          cross_entropy_case(11, 301, 0, 301, 3.0, DType::kBF16, false, 3, 11),  // a bf16 head's: 304 and 312
          cross_entropy_case(10, 301, 0, 301, 3.0, DType::kF16, false, 3, 3),    // an f16 head's: 304 both
          // A bf16 head's logits: rows unaligned (3001 columns); rows of 304 in 16-byte packs with the gradient over
          // them (the model's way); a vocab slice, and -inf columns, with f32 gradients; an f32 head's in place.
          cross_entropy_case(24, 3001, 0, 3001, 4.0, DType::kBF16, false, 0, 0, DType::kBF16),
          cross_entropy_case(11, 301, 0, 301, 3.0, DType::kBF16, false, 3, 3, DType::kBF16, true),
          cross_entropy_case(20, 64, 32, 128, 1.0, DType::kF32, false, 0, 0, DType::kBF16),
          cross_entropy_case(9, 700, 0, 700, 2.0, DType::kF32, true, 0, 0, DType::kBF16),
          cross_entropy_case(13, 301, 0, 301, 3.0, DType::kF32, false, 3, 3, DType::kF32, true)};
}

}  // namespace kosmos::testing
