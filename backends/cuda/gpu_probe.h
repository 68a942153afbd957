// gpu_probe.h: what a GPU runtime reports about itself and its devices, for `kosmos info` and the registry.
// The same source (gpu_probe.cu) is compiled by nvcc as kosmos::cuda::probe() and by hipcc as kosmos::rocm::probe().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kosmos {

struct GpuDeviceInfo {
  std::string name;
  int64_t memory_bytes = 0;
  std::string architecture;  // "sm_90", "gfx90a"
  int multiprocessors = 0;
};

struct GpuProbe {
  std::string runtime_version;  // "13.0"
  std::string driver_version;   // "13.0", or empty when no driver is loaded
  std::string libraries;        // "cuBLASLt 13.1.0, NCCL 2.28.9"
  std::string error;            // why no device is visible, when none is
  std::vector<GpuDeviceInfo> devices;
};

// A version numbered major * 10000 + minor * 100 + patch (cuBLASLt's, NCCL's, cuDNN's) as "major.minor.patch".
inline std::string dotted_version(size_t version) {
  return std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
         std::to_string(version % 100);
}

namespace cuda {
GpuProbe probe();
}
namespace rocm {
GpuProbe probe();
}

}  // namespace kosmos
