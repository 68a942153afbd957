// gpu_device.h: the GPU backends' entries in the registry and the native stream behind a Stream, for the NCCL
// communicator. The device class itself is private to gpu_device.cu, which nvcc compiles as kosmos::cuda and hipcc
// as kosmos::rocm; this header is plain C++ so that g++ translation units (the registry) can include it.
#pragma once

#include "backends/device.h"
#include "backends/registry.h"

namespace kosmos {

namespace cuda {
// own_gemm_only: every Matmul on the project's own tiled kernel instead of cuBLASLt (the ROCm GEMM path, checked on
// NVIDIA hardware by the op tests under the backend name "cuda-owngemm").
BackendEntry backend_entry(bool own_gemm_only = false);
// The cudaStream_t of a Stream made by a CUDA device.
void * native_stream(Stream & stream);
}  // namespace cuda

namespace rocm {
BackendEntry backend_entry(bool own_gemm_only = true);
void * native_stream(Stream & stream);
}  // namespace rocm

}  // namespace kosmos
