// gpu_probe.cu: asks the GPU runtime for its version and devices. Compiled by nvcc (kosmos::cuda::probe) and by
// hipcc through vendor/hip.h (kosmos::rocm::probe). It never throws: a machine without a driver or device is
// reported in GpuProbe::error, since `kosmos info` must work on every machine.
#include "backends/cuda/gpu_probe.h"

#if defined(KOSMOS_USE_ROCM)
#include "backends/cuda/vendor/hip.h"
#define KOSMOS_GPU_NAMESPACE rocm
#else
#include "backends/cuda/vendor/cuda.h"
#define KOSMOS_GPU_NAMESPACE cuda
#endif

#include <string>
#if !defined(KOSMOS_USE_ROCM)
#include <dlfcn.h>
#endif

namespace kosmos::KOSMOS_GPU_NAMESPACE {
namespace {

// 13000 -> "13.0" (CUDA) ; HIP encodes major*10^7 + minor*10^5 + patch.
std::string version_text(int code) {
#if defined(KOSMOS_USE_ROCM)
  return std::to_string(code / 10000000) + "." + std::to_string((code / 100000) % 100);
#else
  return std::to_string(code / 1000) + "." + std::to_string((code % 1000) / 10);
#endif
}

std::string library_versions() {
#if defined(KOSMOS_USE_ROCM)
  return "GEMMs on the own tiled kernels (no hipBLASLt or rocBLAS in this build), collectives over MPI through host "
         "memory (no RCCL)";
#else
  // cuDNN, which the backend cuda-cudnn opens at run time for its attention (cudnn_attention.cu), as it would.
  std::string cudnn = "cuda-cudnn's attention: no libcudnn.so.9 found (cuda-cudnn runs the mma.sync kernels)";
  void * library = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) library = dlopen("libcudnn.so", RTLD_NOW | RTLD_LOCAL);  // as cudnn_attention.cu looks
  if (library != nullptr) {
    if (const auto version = reinterpret_cast<size_t (*)()>(dlsym(library, "cudnnGetVersion")))
      cudnn = "cuda-cudnn's attention on cuDNN " + dotted_version(version());
    dlclose(library);
  }
  int nccl = 0;
  ncclGetVersion(&nccl);
  return "GEMMs on cuBLASLt " + dotted_version(cublasLtGetVersion()) +
         " (the own tiled kernels where it declines), NCCL " + dotted_version(static_cast<size_t>(nccl)) +
         " (the collectives of GPU buffers; point-to-point transfers over MPI through host memory), " + cudnn;
#endif
}

}  // namespace

GpuProbe probe() {
  GpuProbe result;
  int runtime = 0, driver = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) result.runtime_version = version_text(runtime);
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0) result.driver_version = version_text(driver);
  result.libraries = library_versions();
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    result.error = cudaGetErrorString(status);
    return result;
  }
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, ordinal) != cudaSuccess) continue;
    GpuDeviceInfo device;
    device.name = properties.name;
    device.memory_bytes = static_cast<int64_t>(properties.totalGlobalMem);
#if defined(KOSMOS_USE_ROCM)
    device.architecture = properties.gcnArchName;
#else
    device.architecture = "sm_" + std::to_string(properties.major) + std::to_string(properties.minor);
#endif
    device.multiprocessors = properties.multiProcessorCount;
    result.devices.push_back(device);
  }
  return result;
}

}  // namespace kosmos::KOSMOS_GPU_NAMESPACE
