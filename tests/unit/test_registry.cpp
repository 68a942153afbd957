// test_registry.cpp: choosing a backend at run time, and the errors for names that are wrong or not built.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "backends/error.h"
#include "backends/registry.h"

namespace kosmos {
namespace {

std::string error_of(const BackendRegistry & registry, const std::string & choice, int ordinal) {
  try {
    registry.create(choice, ordinal);
  } catch (const Error & error) {
    return error.what();
  }
  return "";
}

// The CPU is always there, after the GPU backends; only the emulated GPU comes after it, so that --backend auto
// takes a real GPU, else the CPU, never the emulator.
TEST(Registry, CpuIsAlwaysAvailableAndAutoNeverTakesTheEmulator) {
  const BackendRegistry registry;
  const auto & entries = registry.entries();
  const auto cpu = std::find_if(entries.begin(), entries.end(), [](const BackendEntry & e) { return e.name == "cpu"; });
  ASSERT_NE(cpu, entries.end());
  EXPECT_TRUE(cpu->available);
  for (auto after = cpu + 1; after != entries.end(); ++after)
    EXPECT_EQ(after->name.rfind("emulated", 0), 0u) << after->name << " comes after the CPU";
  EXPECT_EQ(registry.create("cpu", 0)->backend(), "cpu");
  const std::unique_ptr<Device> automatic = registry.create("auto", 0);
  ASSERT_NE(automatic, nullptr);
  EXPECT_EQ(automatic->backend().rfind("emulated", 0), std::string::npos) << automatic->backend();
}

TEST(Registry, UnavailableBackendSaysWhyAndWhatIsAvailable) {
  const BackendRegistry registry;
  for (const BackendEntry & entry : registry.entries()) {
    if (entry.available) continue;
    const std::string message = error_of(registry, entry.name, 0);
    EXPECT_NE(message.find("--backend " + entry.name + " is not available"), std::string::npos) << message;
    EXPECT_NE(message.find(entry.unavailable_reason), std::string::npos) << message;
    EXPECT_NE(message.find("(available: "), std::string::npos) << message;
    EXPECT_NE(message.find("cpu"), std::string::npos) << message;
  }
}

TEST(Registry, UnknownNameAndBadOrdinalAreErrors) {
  const BackendRegistry registry;
  const std::string unknown = error_of(registry, "tpu", 0);
  EXPECT_NE(unknown.find("--backend tpu is not a backend name; choose auto, cpu, cuda or rocm"), std::string::npos)
      << unknown;
  const std::string ordinal = error_of(registry, "cpu", 3);
  EXPECT_NE(ordinal.find("--device 3"), std::string::npos) << ordinal;
  EXPECT_NE(error_of(registry, "cpu", -1).find("negative"), std::string::npos);
}

}  // namespace
}  // namespace kosmos
