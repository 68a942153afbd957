// test_reserved_memory.cpp: on every backend, a reserved buffer (Device::reserve, what an activation arena grows
// in) keeps its addresses while it grows: what was written stays, each newly backed piece can be written and read
// back through the device's copies, the device counts exactly the memory behind it, and a GPU device takes it for
// its own memory (not the host's), as communicators ask. The backends without virtual memory management (ROCm's)
// answer with no buffer, and arenas then use separate ones.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "backends/error.h"
#include "tests/ops/op_harness.h"

namespace kosmos::testing {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

bool reserves_address_ranges(const std::string & backend) {
  return backend.rfind("rocm", 0) != 0 && backend.rfind("emulated-rocm", 0) != 0;
}

// `count` floats at byte `offset` of the buffer, written from the host or read back to it through the device.
std::vector<float> read_back(Device & device, Stream & stream, const Buffer & buffer, size_t offset, int64_t count) {
  std::vector<float> host(static_cast<size_t>(count));
  const TensorView from = make_view(static_cast<char *>(buffer.data()) + offset, DType::kF32, {count});
  device.copy(make_view(host.data(), DType::kF32, {count}), from, stream);
  stream.synchronize();
  return host;
}
void write(Device & device, Stream & stream, const Buffer & buffer, size_t offset, std::vector<float> values) {
  const auto count = static_cast<int64_t>(values.size());
  const TensorView to = make_view(static_cast<char *>(buffer.data()) + offset, DType::kF32, {count});
  device.copy(to, make_view(values.data(), DType::kF32, {count}), stream);
  stream.synchronize();
}

class ReservedMemoryOnBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(ReservedMemoryOnBackend, GrowsInPlaceAndCountsTheMemoryBehindIt) {
  const std::string & backend = GetParam();
  std::unique_ptr<Device> device = create_test_device(backend);
  std::unique_ptr<Stream> stream = device->create_stream();
  const size_t before = device->memory().in_use;
  Buffer buffer = device->reserve(BufferUse::kActivations);
  if (!reserves_address_ranges(backend)) {
    EXPECT_EQ(buffer.data(), nullptr) << backend << " has no virtual memory management, yet reserved a range";
    return;
  }
  ASSERT_NE(buffer.data(), nullptr) << backend << " reserved no address range";
  EXPECT_GE(buffer.capacity(), size_t{1} << 30);
  EXPECT_EQ(device->memory().in_use, before);  // addresses only

  device->grow(buffer, 3 * kMiB);
  const size_t first = buffer.bytes();
  EXPECT_GE(first, 3 * kMiB);
  EXPECT_EQ(device->memory().in_use, before + first);
  const std::vector<float> head = {1.5f, -2.0f, 3.25f, 4.0f};
  write(*device, *stream, buffer, 0, head);
  write(*device, *stream, buffer, first - 4 * sizeof(float), head);  // the last bytes backed

  const void * base = buffer.data();
  device->grow(buffer, first + 5 * kMiB);  // a second piece after the first
  const size_t second = buffer.bytes();
  EXPECT_EQ(buffer.data(), base);
  EXPECT_GE(second, first + 5 * kMiB);
  EXPECT_EQ(device->memory().in_use, before + second);
  EXPECT_EQ(read_back(*device, *stream, buffer, 0, 4), head);
  std::vector<float> across = {7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f};  // spans the two pieces
  write(*device, *stream, buffer, first - 4 * sizeof(float), across);
  EXPECT_EQ(read_back(*device, *stream, buffer, first - 4 * sizeof(float), 8), across);
  write(*device, *stream, buffer, second - 4 * sizeof(float), head);
  EXPECT_EQ(read_back(*device, *stream, buffer, second - 4 * sizeof(float), 4), head);

  if (!device->host_accessible()) {  // a communicator hands such memory to NCCL, not to MPI through the host
    EXPECT_FALSE(device->is_host_memory(static_cast<char *>(buffer.data()) + second - 1));
    EXPECT_FALSE(device->is_host_memory(static_cast<char *>(buffer.data()) + second));  // reserved, not backed
    EXPECT_TRUE(device->is_host_memory(head.data()));
  }
  device->grow(buffer, kMiB);  // never shrinks
  EXPECT_EQ(buffer.bytes(), second);
  EXPECT_THROW(device->grow(buffer, buffer.capacity() + 1), Error);
  buffer = Buffer();
  EXPECT_EQ(device->memory().in_use, before);
}

INSTANTIATE_TEST_SUITE_P(Devices, ReservedMemoryOnBackend, ::testing::ValuesIn(testable_backends()),
                         [](const auto & info) { return test_name_of_backend(info.param); });

}  // namespace
}  // namespace kosmos::testing
