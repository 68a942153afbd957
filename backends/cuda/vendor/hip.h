// vendor/hip.h: the AMD side of the shared CUDA/HIP sources. Aliases only: each CUDA name used in backends/cuda
// maps to its HIP twin, so a kernel file is written once. Add an alias here when a .cu file uses a new CUDA name.
// The AMD-only differences live here and nowhere else: the wave size (64 on CDNA) and the unmasked shuffles.
#pragma once

#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>

#define KOSMOS_GPU_VENDOR "ROCm"
#define KOSMOS_WARP_SIZE 64
#define KOSMOS_SHFL_XOR(value, mask) __shfl_xor((value), (mask))
// HIP 5.2's pointer attributes name the memory type in another field.
#define KOSMOS_ATTRIBUTES_NAME_DEVICE(attributes) ((attributes).memoryType == hipMemoryTypeDevice || (attributes).isManaged)

#define cudaDeviceProp hipDeviceProp_t
#define cudaEventCreateWithFlags hipEventCreateWithFlags
#define cudaEventDestroy hipEventDestroy
#define cudaEventDisableTiming hipEventDisableTiming
#define cudaEventRecord hipEventRecord
#define cudaEventSynchronize hipEventSynchronize
#define cudaEventElapsedTime hipEventElapsedTime
#define cudaEvent_t hipEvent_t
#define cudaFree hipFree
#define cudaFreeHost hipHostFree
#define cudaHostAlloc hipHostMalloc
#define cudaHostAllocDefault hipHostMallocDefault
#define cudaMalloc hipMalloc
#define cudaMemGetInfo hipMemGetInfo
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemcpyDefault hipMemcpyDefault
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaMemsetAsync hipMemsetAsync
#define cudaPointerAttributes hipPointerAttribute_t
#define cudaPointerGetAttributes hipPointerGetAttributes
#define cudaSetDevice hipSetDevice
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamDestroy hipStreamDestroy
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamQuery hipStreamQuery
#define cudaErrorNotReady hipErrorNotReady
#define cudaDeviceSynchronize hipDeviceSynchronize
#define cudaStreamWaitEvent hipStreamWaitEvent
#define cudaDriverGetVersion hipDriverGetVersion
#define cudaError_t hipError_t
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaGetErrorString hipGetErrorString
#define cudaGetLastError hipGetLastError
#define cudaRuntimeGetVersion hipRuntimeGetVersion
#define cudaStream_t hipStream_t
#define cudaSuccess hipSuccess
