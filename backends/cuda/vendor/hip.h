// vendor/hip.h: the AMD side of the shared CUDA/HIP sources. Aliases only: each CUDA name used in backends/cuda
// maps to its HIP twin, so a kernel file is written once. Add an alias here when a .cu file uses a new CUDA name.
#pragma once

#include <hip/hip_runtime.h>

#define KOSMOS_GPU_VENDOR "ROCm"

#define cudaDeviceProp hipDeviceProp_t
#define cudaDriverGetVersion hipDriverGetVersion
#define cudaError_t hipError_t
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaGetErrorString hipGetErrorString
#define cudaRuntimeGetVersion hipRuntimeGetVersion
#define cudaSuccess hipSuccess
