// test_xpos_vector.cpp: xPos on the test vector of kosmos-spec.md section 4.4 (D=4, len=3, scale base 512), run
// through every available backend and the fp64 reference: the published values, the q.k scores, and the decoding
// offset that must reproduce the last row; and one device following every change of xPos's parameters (a backend
// that keeps its tables between calls must make them again).
#include <gtest/gtest.h>

#include <vector>

#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

const std::vector<double> kInput = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
const std::vector<double> kUp = {1.00491, 2.00981, 3.00518, 4.00691, -2.35306, 7.46742,
                                 6.92563, 8.07657, -12.8383, 4.02221, 10.7578, 12.2176};
const std::vector<double> kDown = {0.995118, 1.99024, 2.99483, 3.9931,  -2.34158, 7.43096,
                                   6.91368,  8.06264, -12.8383, 4.02221, 10.7578, 12.2176};
const double kScores[3][3] = {{30, 65.6649, 76.4666}, {65.512, 174, 233.426}, {76.2334, 232.833, 446}};

void expect_spec_values(const Tensor & actual, const std::vector<double> & expected, const std::string & what) {
  ASSERT_EQ(actual.numel(), static_cast<int64_t>(expected.size())) << what;
  for (size_t i = 0; i < expected.size(); ++i)  // the spec prints six significant digits
    EXPECT_NEAR(actual.v[i], expected[i], 1e-5 * std::max(1.0, std::abs(expected[i]))) << what << "[" << i << "]";
}

Tensor spec_input() {
  Tensor x({1, 1, 3, 4});
  x.v = kInput;
  return x;
}

TEST(XPosVector, ReferenceMatchesTheSpec) {
  const Tensor up = reference::xpos(spec_input(), 0, false, 512.0), down = reference::xpos(spec_input(), 0, true, 512.0);
  expect_spec_values(up, kUp, "up");
  expect_spec_values(down, kDown, "down");
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      double dot = 0.0;
      for (int d = 0; d < 4; ++d) dot += up.v[i * 4 + d] * down.v[j * 4 + d];
      EXPECT_NEAR(dot, kScores[i][j], 1e-5 * kScores[i][j]) << "score " << i << "," << j;
    }
}

TEST(XPosVector, EveryBackendMatchesTheSpec) {
  for (const std::string & backend : testable_backends()) {
    std::unique_ptr<Device> device = create_test_device(backend);
    std::unique_ptr<Stream> stream = device->create_stream();
    DeviceRun run(*device, *stream);
    const TensorView x = run.upload(spec_input(), DType::kF32);
    for (bool downscale : {false, true}) {
      const TensorView out = run.output({1, 1, 3, 4}, DType::kF32);
      run.op(XPosForward{out, x, XPosParams{0, downscale, 512.0f}});
      expect_spec_values(run.download(out), downscale ? kDown : kUp, backend + (downscale ? " down" : " up"));
    }
    // Decoding: the last row alone at offset 2 equals row 2 of the full sequence.
    Tensor last({1, 1, 1, 4});
    last.v = {9, 10, 11, 12};
    const TensorView row = run.upload(last, DType::kF32), out = run.output({1, 1, 1, 4}, DType::kF32);
    run.op(XPosForward{out, row, XPosParams{2, false, 512.0f}});
    expect_spec_values(run.download(out), {-12.8383, 4.02221, 10.7578, 12.2176}, backend + " offset 2");
  }
}

// The same shape through one device with the offset, the scale base and the direction changed one at a time, and
// back: each output against the fp64 reference of its own parameters.
TEST(XPosVector, OneDeviceFollowsEveryChangeOfItsParameters) {
  const XPosParams sequence[] = {{0, false, 512.0f}, {0, false, 64.0f}, {1, false, 64.0f},
                                 {1, true, 64.0f},   {0, false, 512.0f}};
  for (const std::string & backend : testable_backends()) {
    std::unique_ptr<Device> device = create_test_device(backend);
    std::unique_ptr<Stream> stream = device->create_stream();
    DeviceRun run(*device, *stream);
    const TensorView x = run.upload(spec_input(), DType::kF32);
    for (const XPosParams & params : sequence) {
      const TensorView out = run.output({1, 1, 3, 4}, DType::kF32);
      run.op(XPosForward{out, x, params});
      const Tensor expected = reference::xpos(spec_input(), params.offset, params.downscale, params.scale_base);
      const Tensor actual = run.download(out);
      for (int64_t i = 0; i < expected.numel(); ++i)
        EXPECT_NEAR(actual.v[i], expected.v[i], 1e-5 * std::max(1.0, std::abs(expected.v[i])))
            << backend << " offset " << params.offset << " downscale " << params.downscale << " scale base "
            << params.scale_base << " [" << i << "]";
    }
  }
}

}  // namespace
}  // namespace kosmos::testing
