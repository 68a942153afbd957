// gpu_device.h: the GPU backends' entries in the registry and the native stream behind a Stream, for the NCCL
// communicator. The device class itself is private to gpu_device.cu, which nvcc compiles as kosmos::cuda and hipcc
// as kosmos::rocm; this header is plain C++ so that g++ translation units (the registry) can include it.
#pragma once

#include <cstdint>
#include <string>

#include "backends/device.h"
#include "backends/registry.h"

namespace kosmos {

// The kernel choices of a GPU backend: the standard ones, or a variant that runs one family of ops on the other
// kernels, so that both can be checked and compared on one card.
enum class GpuVariant : uint8_t {
  kStandard,       // "cuda": cuBLASLt, mma.sync attention (WMMA for head sizes it does not take); "rocm": own GEMMs
  kOwnGemm,        // "cuda-owngemm": every Matmul on the own tiled kernel (the ROCm GEMM path)
  kWmmaAttention,  // "cuda-wmma": bf16 attention on the WMMA kernels for every head size they take
  kCudnnAttention, // "cuda-cudnn": bf16 attention on cuDNN's fused kernels where cuDNN takes it (cudnn_attention.cu)
};
constexpr GpuVariant kGpuVariants[] = {GpuVariant::kStandard, GpuVariant::kOwnGemm, GpuVariant::kWmmaAttention,
                                       GpuVariant::kCudnnAttention};

// "cuda", "cuda-owngemm", "cuda-wmma" (base "cuda"), and likewise for another base.
inline std::string gpu_backend_name(const std::string & base, GpuVariant variant) {
  switch (variant) {
    case GpuVariant::kStandard: return base;
    case GpuVariant::kOwnGemm: return base + "-owngemm";
    case GpuVariant::kWmmaAttention: return base + "-wmma";
    case GpuVariant::kCudnnAttention: return base + "-cudnn";
  }
  return base;
}

namespace cuda {
BackendEntry backend_entry(GpuVariant variant = GpuVariant::kStandard);
// The cudaStream_t of a Stream made by a CUDA device.
void * native_stream(Stream & stream);
}  // namespace cuda

namespace rocm {
BackendEntry backend_entry(GpuVariant variant = GpuVariant::kStandard);  // its GEMMs are the own kernels always
void * native_stream(Stream & stream);
}  // namespace rocm

// The GPU kernels compiled by g++ and run on the host's cores (backends/emulated), for testing their logic without a
// GPU: "emulated" (mma.sync attention) and "emulated-wmma" from the CUDA build's sources, "emulated-rocm" from the
// ROCm build's in waves of 64 lanes. The CUDA build's GEMMs on its emulated cuBLASLt, the ROCm build's on the own
// kernel; the CUDA build's collectives through the NCCL communicator on its emulated NCCL (parallel/comm_nccl.h).
namespace emulated {
BackendEntry backend_entry(GpuVariant variant = GpuVariant::kStandard);
void * native_stream(Stream & stream);
}  // namespace emulated
namespace emulated_rocm {
BackendEntry backend_entry(GpuVariant variant = GpuVariant::kStandard);
void * native_stream(Stream & stream);
}  // namespace emulated_rocm

}  // namespace kosmos
