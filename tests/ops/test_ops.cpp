// test_ops.cpp: the op test suites.
//  OpOnBackend.MatchesReference: every op case on every registered backend, forward and backward, against fp64 (but
//  the tensor-core attention cases on the emulated ROCm build: OpCase::scalar_kernels_twin).
//  ReferenceGradient.MatchesFiniteDifferences: each reference backward against central differences of its forward
//  (once for a case and its tensor-core variants).
//  OpValidation.*: a wrong shape or dtype in any operand of any op is refused with a message that names the op,
//  the operand's dtype and shape, and what was expected.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "backends/error.h"
#include "backends/registry.h"
#include "tests/ops/op_harness.h"
#include "tests/ops/op_fields.h"

namespace kosmos::testing {
namespace {

// Output gradients for a case: random, one per graded output, shaped like the reference output.
Named output_gradients(const OpCase & c, const Named & outputs) {
  Named grads;
  if (!c.reference_backward) return grads;
  std::mt19937_64 rng(std::hash<std::string>{}(c.name));
  for (const std::string & name : c.graded_outputs) grads["d" + name] = random_tensor(rng, outputs.at(name).dims, 1.0, c.grad_dtype);
  return grads;
}

std::vector<size_t> case_indices(bool with_backward_only = false) {
  std::vector<size_t> indices;
  for (size_t i = 0; i < all_op_cases().size(); ++i)
    if (!with_backward_only || all_op_cases()[i].reference_backward) indices.push_back(i);
  return indices;
}

class OpOnBackend : public ::testing::TestWithParam<std::tuple<std::string, size_t>> {};

TEST_P(OpOnBackend, MatchesReference) {
  const auto & [backend, index] = GetParam();
  const OpCase & c = all_op_cases()[index];
  std::unique_ptr<Device> device = create_test_device(backend);
  std::unique_ptr<Stream> stream = device->create_stream();
  const Named expected_outputs = c.reference_forward(c.inputs());
  const Named output_grads = output_gradients(c, expected_outputs);
  const Named expected_grads = c.reference_backward ? c.reference_backward(c.inputs(), output_grads) : Named{};
  DeviceRun run(*device, *stream);
  Named actual;
  try {
    actual = c.device(run, c.inputs(), output_grads);
  } catch (const Unsupported & unsupported) {
    GTEST_SKIP() << backend << " lacks " << unsupported.reason;
  }
  for (const Named * expected : {&expected_outputs, &expected_grads}) {
    for (const auto & [name, tensor] : *expected) {
      ASSERT_TRUE(actual.count(name)) << c.name << ": the device run returned no " << name;
      ASSERT_EQ(actual.at(name).dims, tensor.dims) << c.name << ": " << name;
      const double error = normalised_mse(actual.at(name), tensor);
      EXPECT_LE(error, c.tolerance) << c.name << " on " << backend << ": " << name << " differs from the fp64 "
                                    << "reference (normalised MSE " << error << ")";
    }
  }
}

// "<backend>_<case>".
std::string backend_case_name(const ::testing::TestParamInfo<std::tuple<std::string, size_t>> & info) {
  return test_name_of_backend(std::get<0>(info.param)) + "_" + all_op_cases()[std::get<1>(info.param)].name;
}

// Every case on every backend, but the tensor-core attention cases on the emulated ROCm build (OpCase says why).
std::vector<std::tuple<std::string, size_t>> backend_cases() {
  std::vector<std::tuple<std::string, size_t>> pairs;
  for (const std::string & backend : testable_backends())
    for (size_t index : case_indices())
      if (backend != "emulated-rocm" || all_op_cases()[index].scalar_kernels_twin.empty())
        pairs.emplace_back(backend, index);
  return pairs;
}

// Each case left out on the emulated ROCm build names a twin that runs there.
TEST(OpCases, TensorCoreAttentionCasesNameATwinThatRunsEverywhere) {
  std::map<std::string, const OpCase *> by_name;
  for (const OpCase & c : all_op_cases()) by_name[c.name] = &c;
  for (const OpCase & c : all_op_cases()) {
    if (c.scalar_kernels_twin.empty()) continue;
    const auto twin = by_name.find(c.scalar_kernels_twin);
    ASSERT_NE(twin, by_name.end()) << c.name << " names the twin " << c.scalar_kernels_twin << ", not a case";
    EXPECT_TRUE(twin->second->scalar_kernels_twin.empty()) << c.name << "'s twin " << twin->first
                                                           << " is itself left out on the emulated ROCm build";
    for (const char * input : {"q", "k", "v"})
      EXPECT_EQ(twin->second->inputs().at(input).dims[3], c.inputs().at(input).dims[3])
          << c.name << " and its twin " << twin->first << " differ in head size";
    EXPECT_EQ(twin->second->grad_dtype, c.grad_dtype) << c.name << " and its twin differ in activations' dtype";
    for (const char * part : {"_causal", "_dropout", "_bf16", "_out_grads_bf16"})  // mask, dropout and dtypes
      EXPECT_EQ(twin->first.find(part) != std::string::npos, c.name.find(part) != std::string::npos)
          << c.name << " and its twin " << twin->first << " differ in " << part;
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpOnBackend, ::testing::ValuesIn(backend_cases()), backend_case_name);

class ReferenceGradient : public ::testing::TestWithParam<size_t> {};

// L(inputs) = sum over graded outputs of <dout, output>; its gradient is what the reference backward returns.
double weighted_sum(const OpCase & c, const Named & inputs, const Named & output_grads) {
  const Named outputs = c.reference_forward(inputs);
  double sum = 0.0;
  for (const std::string & name : c.graded_outputs) {
    const Tensor & out = outputs.at(name);
    const Tensor & weight = output_grads.at("d" + name);
    for (int64_t i = 0; i < out.numel(); ++i) sum += out.v[i] * weight.v[i];
  }
  return sum;
}

TEST_P(ReferenceGradient, MatchesFiniteDifferences) {
  const OpCase & c = all_op_cases()[GetParam()];
  const Named output_grads = output_gradients(c, c.reference_forward(c.inputs()));
  const Named analytic = c.reference_backward(c.inputs(), output_grads);
  for (const std::string & input : c.differentiable) {
    const Tensor & gradient = analytic.at("d" + input);
    ASSERT_EQ(gradient.dims, c.inputs().at(input).dims) << c.name << ": d" << input;
    double largest = 1e-12;
    for (double g : gradient.v) largest = std::max(largest, std::abs(g));
    const int64_t count = gradient.numel();
    const int64_t step = std::max<int64_t>(1, count / 40);  // about 40 probes per input, spread over it
    for (int64_t i = 0; i < count; i += step) {
      if (c.gradient_blocked && c.gradient_blocked(input, i)) {
        EXPECT_EQ(gradient.v[i], 0.0) << c.name << ": d" << input << "[" << i << "] is blocked";
        continue;
      }
      Named shifted = c.inputs();
      const double x = shifted.at(input).v[i], h = 1e-6 * std::max(1.0, std::abs(x));
      shifted.at(input).v[i] = x + h;
      const double up = weighted_sum(c, shifted, output_grads);
      shifted.at(input).v[i] = x - h;
      const double down = weighted_sum(c, shifted, output_grads);
      const double numeric = (up - down) / (2.0 * h);
      EXPECT_NEAR(numeric, gradient.v[i], 1e-5 * largest)
          << c.name << ": d" << input << "[" << i << "] (largest |gradient| " << largest << ")";
    }
  }
}

// The cases with a backward, but a tensor-core variant of another case: the reference ignores the variant, so its
// finite differences would repeat the twin's.
std::vector<size_t> reference_gradient_cases() {
  std::vector<size_t> indices;
  for (size_t index : case_indices(true))
    if (!all_op_cases()[index].is_variant_of_twin()) indices.push_back(index);
  return indices;
}

INSTANTIATE_TEST_SUITE_P(Ops, ReferenceGradient, ::testing::ValuesIn(reference_gradient_cases()),
                         [](const ::testing::TestParamInfo<size_t> & info) { return all_op_cases()[info.param].name; });

// The first recorded instance of each op, from the ops' cases run on the CPU backend in order until `enough(ops)`
// holds for those found so far (or every case has run).
template <typename Enough>
std::vector<OpDesc> first_instances(DeviceRun & run, Enough enough) {
  std::vector<OpDesc> ops;
  std::set<std::string> seen;
  size_t looked_at = 0;
  for (const OpCase & c : all_op_cases()) {
    const Named outputs = c.reference_forward(c.inputs());
    try {
      c.device(run, c.inputs(), output_gradients(c, outputs));
    } catch (const Unsupported &) {  // e.g. bf16 on a CPU without AVX-512: the f32 cases still record the op
    }
    for (; looked_at < run.recorded().size(); ++looked_at) {
      const OpDesc & op = run.recorded()[looked_at];
      if (seen.insert(op_name(op)).second) ops.push_back(op);
    }
    if (enough(ops)) break;
  }
  return ops;
}

// One instance of every op there is.
std::vector<OpDesc> one_of_each_op(DeviceRun & run) {
  return first_instances(run,
                         [](const std::vector<OpDesc> & ops) { return ops.size() == std::variant_size_v<OpDesc>; });
}

// The first instance of Op among the cases (the cases before it run, the rest do not), or none.
template <typename Op>
std::optional<Op> first_of(DeviceRun & run) {
  const auto holds = [](const OpDesc & op) { return std::holds_alternative<Op>(op); };
  const std::vector<OpDesc> ops = first_instances(
      run, [&](const std::vector<OpDesc> & found) { return std::any_of(found.begin(), found.end(), holds); });
  const auto op = std::find_if(ops.begin(), ops.end(), holds);
  if (op == ops.end()) return std::nullopt;
  return std::get<Op>(*op);
}

// What validation (the first step of op_run) says of an op; empty when it accepts it. The op is never run: a
// wrongly shaped view would reach past its buffer.
std::string message_of(const OpDesc & op) {
  try {
    validate(op);
  } catch (const Error & error) {
    return error.what();
  }
  return "";
}

// Validation needs only descriptors over real buffers: one CPU device and the ops' cases on it.
class OpValidation : public ::testing::Test {
 protected:
  const BackendRegistry registry;
  std::unique_ptr<Device> device = registry.create("cpu", 0);
  std::unique_ptr<Stream> stream = device->create_stream();
  DeviceRun run{*device, *stream};
};

TEST_F(OpValidation, EveryOpIsCovered) {
  EXPECT_EQ(one_of_each_op(run).size(), std::variant_size_v<OpDesc>)
      << "some op in OpDesc has no test case in tests/ops";
}

TEST_F(OpValidation, LayerNormBackwardRefusesAnInputGradientOverWhatItReads) {
  const std::optional<LayerNormBackward> valid = first_of<LayerNormBackward>(run);
  ASSERT_TRUE(valid) << "no layernorm_backward among the ops' cases";
  LayerNormBackward over_dout = *valid, over_in = over_dout;
  over_dout.din = over_dout.dout;
  over_in.din = over_in.in;
  for (const auto & [op, read] : {std::pair<LayerNormBackward, std::string>{over_dout, "dout"}, {over_in, "in"}}) {
    const std::string message = message_of(op);
    EXPECT_NE(message.find("layernorm_backward: din"), std::string::npos) << message;
    EXPECT_NE(message.find("overlaps " + read), std::string::npos) << message;
  }
}

TEST_F(OpValidation, LayerNormForwardChecksWhatItJoins) {
  const std::optional<LayerNormForward> valid = first_of<LayerNormForward>(run);
  ASSERT_TRUE(valid) << "no layernorm_forward among the ops' cases";
  const LayerNormForward base = *valid;
  const int64_t count = base.in.numel();
  std::vector<float> apart(static_cast<size_t>(2 * count));  // validation reads no data
  LayerNormForward good = base;
  good.in.dtype = DType::kF32;
  good.added = make_view(apart.data(), DType::kF32, base.in.ndim, base.in.dims.data());
  good.residual = make_view(apart.data() + count, DType::kF32, base.in.ndim, base.in.dims.data());
  good.dropout = {0.1f, 3, 0};
  LayerNormForward alone = good, activated = good, narrow = good, too_likely = good, over_out = good;
  LayerNormForward out_over_added = good, stray = base, bf16_added = good, bf16_residual = good;
  alone.residual = TensorView{};
  out_over_added.out.data = good.added.data;
  stray.dropout = {0.1f, 3, 0};
  activated.activation = Activation::kGelu;
  narrow.added.dtype = DType::kF16;
  bf16_added.added.dtype = DType::kBF16;  // a bf16 projection's output: taken
  bf16_residual.residual.dtype = DType::kBF16;
  too_likely.dropout.p = 1.0f;
  over_out.in = good.out;
  over_out.in.dtype = DType::kF32;
  EXPECT_EQ(message_of(good), "");
  EXPECT_EQ(message_of(bf16_added), "");
  for (const auto & [op, expected] : {std::pair<LayerNormForward, std::string>{alone, "expected both"},
                                      {activated, "expected one or the other"},
                                      {narrow, "added"},
                                      {bf16_residual, "residual"},
                                      {too_likely, "dropout.p"},
                                      {over_out, "overlaps out"},
                                      {out_over_added, "overlaps added"},
                                      {stray, "without added"}}) {
    const std::string message = message_of(op);
    EXPECT_NE(message.find("layernorm_forward:"), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << expected << ": " << message;
  }
}

// A dropout forward onto the residual stream reads f32 or bf16 (a bf16 projection's output) into f32, never in place
// across the two dtypes.
TEST_F(OpValidation, DropoutForwardTakesABf16InputOnlyApartFromItsF32Output) {
  const std::optional<DropoutForward> valid = first_of<DropoutForward>(run);
  ASSERT_TRUE(valid) << "no dropout_forward among the ops' cases";
  const int64_t count = valid->in.numel();
  std::vector<float> apart(static_cast<size_t>(3 * count));  // validation reads no data
  const auto view_at = [&](int64_t part, DType dtype) {
    return make_view(apart.data() + part * count, dtype, valid->in.ndim, valid->in.dims.data());
  };
  DropoutForward good{view_at(0, DType::kF32), view_at(1, DType::kBF16), view_at(2, DType::kF32), {0.1f, 3, 0}};
  DropoutForward over_out = good, bf16_out = good, bf16_residual = good, f16_in = good, bf16_alone = good;
  over_out.in.data = good.out.data;
  bf16_out.out.dtype = DType::kBF16;
  bf16_residual.residual.dtype = DType::kBF16;
  f16_in.in.dtype = DType::kF16;
  bf16_alone.residual = TensorView{};
  EXPECT_EQ(message_of(good), "");
  for (const auto & [op, expected] : {std::pair<DropoutForward, std::string>{over_out, "in place works only in one"},
                                      {bf16_out, "out"},
                                      {bf16_residual, "residual"},
                                      {f16_in, "in"},
                                      {bf16_alone, "in"}}) {
    const std::string message = message_of(op);
    EXPECT_NE(message.find("dropout_forward:"), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << expected << ": " << message;
  }
}

TEST_F(OpValidation, DropoutBackwardChecksTheColumnSumsOfDin) {
  const std::optional<DropoutBackward> valid = first_of<DropoutBackward>(run);
  ASSERT_TRUE(valid) << "no dropout_backward among the ops' cases";
  const DropoutBackward base = *valid;
  const int64_t cols = base.din.dim(-1);
  std::vector<float> apart(static_cast<size_t>(cols) + 1);  // validation reads no data
  DropoutBackward good = base, bf16 = base, longer = base, over_din = base, over_dout = base;
  good.din_column_sums = make_view(apart.data(), DType::kF32, {cols});
  bf16.din_column_sums = make_view(apart.data(), DType::kBF16, {cols});
  longer.din_column_sums = make_view(apart.data(), DType::kF32, {cols + 1});
  over_din.din_column_sums = make_view(base.din.data, DType::kF32, {cols});
  over_dout.din_column_sums = make_view(base.dout.data, DType::kF32, {cols});
  EXPECT_EQ(message_of(good), "");
  for (const auto & [op, expected] : {std::pair<DropoutBackward, std::string>{bf16, "din_column_sums"},
                                      {longer, "expected [" + std::to_string(cols) + "]"},
                                      {over_din, "overlaps din"},
                                      {over_dout, "overlaps dout"}}) {
    const std::string message = message_of(op);
    EXPECT_NE(message.find("dropout_backward: din_column_sums"), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
}

TEST_F(OpValidation, LayerNormBackwardChecksTheColumnSumsOfDin) {
  const std::optional<LayerNormBackward> valid = first_of<LayerNormBackward>(run);
  ASSERT_TRUE(valid) << "no layernorm_backward among the ops' cases";
  const LayerNormBackward base = *valid;
  const int64_t cols = base.in.dim(-1);
  std::vector<float> apart(static_cast<size_t>(cols) + 1);  // validation reads no data
  LayerNormBackward good = base, bf16 = base, longer = base, over_din = base;
  good.din_column_sums = make_view(apart.data(), DType::kF32, {cols});
  bf16.din_column_sums = make_view(apart.data(), DType::kBF16, {cols});
  longer.din_column_sums = make_view(apart.data(), DType::kF32, {cols + 1});
  over_din.din_column_sums = make_view(base.din.data, DType::kF32, {cols});
  EXPECT_EQ(message_of(good), "");
  for (const auto & [op, expected] : {std::pair<LayerNormBackward, std::string>{bf16, "din_column_sums"},
                                      {longer, "expected [" + std::to_string(cols) + "]"},
                                      {over_din, "overlaps din"}}) {
    const std::string message = message_of(op);
    EXPECT_NE(message.find("layernorm_backward: din_column_sums"), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
}

// The forward's output made again by the backward needs the forward's bias with it, each of its shape, apart from
// every operand (the bias from the gradients the op writes).
TEST_F(OpValidation, LayerNormBackwardChecksTheForwardsOutputAndItsBias) {
  const std::optional<LayerNormBackward> valid = first_of<LayerNormBackward>(run);
  ASSERT_TRUE(valid) << "no layernorm_backward among the ops' cases";
  const LayerNormBackward base = *valid;
  const int64_t cols = base.in.dim(-1);
  std::vector<float> out_place(static_cast<size_t>(base.in.numel())), bias_place(static_cast<size_t>(cols) + 1);
  LayerNormBackward good = base;  // validation reads no data
  good.out = make_view(out_place.data(), DType::kF32, base.in.ndim, base.in.dims.data());
  good.bias = make_view(bias_place.data(), DType::kF32, {cols});
  LayerNormBackward no_bias = good, longer_bias = good, i32_out = good, out_over_din = good, bias_over_dbias = good;
  no_bias.bias = TensorView{};
  longer_bias.bias = make_view(bias_place.data(), DType::kF32, {cols + 1});
  i32_out.out.dtype = DType::kI32;
  out_over_din.out = make_view(base.din.data, base.din.dtype, base.in.ndim, base.in.dims.data());
  bias_over_dbias.bias = base.dbias;
  EXPECT_EQ(message_of(good), "");
  for (const auto & [op, expected] :
       {std::pair<LayerNormBackward, std::string>{no_bias, "expected both"},
        {longer_bias, "bias"},
        {i32_out, "out"},
        {out_over_din, "out " + describe(out_over_din.out) + " overlaps din"},
        {bias_over_dbias, "bias " + describe(base.dbias) + " overlaps dbias"}}) {
    const std::string message = message_of(op);
    EXPECT_NE(message.find("layernorm_backward"), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << expected << " in: " << message;
  }
}

// The GPU kernels take the scores' max before scaling them (so need a positive scale) and flush subnormals to 0.
TEST_F(OpValidation, AttentionRefusesAScaleThatIsNotAPositiveNormalNumber) {
  const std::optional<AttentionForward> valid = first_of<AttentionForward>(run);
  ASSERT_TRUE(valid) << "no attention_forward among the ops' cases";
  ASSERT_EQ(message_of(*valid), "");
  for (const float scale : {0.0f, -0.125f, 1e-40f, std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN()}) {
    AttentionForward op = *valid;
    op.params.scale = scale;
    const std::string message = message_of(op);
    EXPECT_NE(message.find("must be a positive normal number"), std::string::npos) << scale << ": " << message;
  }
}

TEST_F(OpValidation, WrongDtypeOrShapeNamesTheOpTheOperandAndTheExpectation) {
  for (const OpDesc & valid : one_of_each_op(run)) {
    const std::string name = op_name(valid);
    bool some_shape_refused = false;
    OpDesc counting = valid;
    const size_t fields = operand_fields(counting).size();
    for (size_t field = 0; field < fields; ++field) {
      OpDesc wrong_dtype = valid;
      auto [label, view] = operand_fields(wrong_dtype)[field];
      if (!view->present()) continue;
      // A dtype no operand of that role accepts: integers where floats go, floats where ids go.
      if (!(name == "fill")) {
        view->dtype = view->dtype == DType::kI32 ? DType::kF32 : DType::kI32;
        const std::string message = message_of(wrong_dtype);
        EXPECT_NE(message.find(name + ":"), std::string::npos) << name << "." << label << " as " << describe(*view)
                                                               << " gave: '" << message << "'";
        EXPECT_NE(message.find(describe(*view)), std::string::npos) << name << "." << label << ": " << message;
        EXPECT_NE(message.find("expected"), std::string::npos) << name << "." << label << ": " << message;
      }
      OpDesc wrong_shape = valid;
      auto [shape_label, shape_view] = operand_fields(wrong_shape)[field];
      if (shape_view->ndim == 0) continue;
      shape_view->dims[0] += 1;
      const std::string message = message_of(wrong_shape);
      // The only operands whose first dim is free: a vocab (table rows), the rows summed into a bias gradient,
      // and the ops that take any shape at all.
      static const std::set<std::string> free_first_dim = {"fill.out", "squared_norm.in", "bias_backward.dout",
                                                           "embedding_forward.table", "embedding_backward.dtable"};
      const std::string operand = name + "." + shape_label;
      if (free_first_dim.count(operand)) {
        EXPECT_EQ(message, "") << operand << " should accept any first dim";
        continue;
      }
      EXPECT_FALSE(message.empty()) << operand << ": a wrong first dim " << describe(*shape_view) << " was accepted";
      if (message.empty()) continue;
      some_shape_refused = true;
      EXPECT_NE(message.find(name + ":"), std::string::npos) << name << "." << shape_label << ": " << message;
      EXPECT_NE(message.find(describe(*shape_view)), std::string::npos) << name << "." << shape_label << ": "
                                                                       << message;
      EXPECT_TRUE(message.find("expected") != std::string::npos || message.find("must") != std::string::npos ||
                  message.find("differ") != std::string::npos)
          << name << "." << shape_label << ": " << message;
    }
    if (name != "fill" && name != "squared_norm") {
      EXPECT_TRUE(some_shape_refused) << name << ": no operand's shape is checked";
    }
  }
}

}  // namespace
}  // namespace kosmos::testing
