// vendor/hip.h: the AMD side of the shared CUDA/HIP sources. Aliases only: each CUDA name used in backends/cuda
// maps to its HIP twin, so a kernel file is written once. Add an alias here when a .cu file uses a new CUDA name.
// The AMD-only differences live here and nowhere else: the wave size (64 on CDNA) and the unmasked shuffles.
#pragma once

#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>

#define KOSMOS_GPU_VENDOR "ROCm"
#define KOSMOS_WARP_SIZE 64
#define KOSMOS_SHFL_XOR(value, mask) __shfl_xor((value), (mask))

#define cudaDeviceProp hipDeviceProp_t
#define cudaDriverGetVersion hipDriverGetVersion
#define cudaError_t hipError_t
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaGetErrorString hipGetErrorString
#define cudaGetLastError hipGetLastError
#define cudaRuntimeGetVersion hipRuntimeGetVersion
#define cudaStream_t hipStream_t
#define cudaSuccess hipSuccess
