// vendor/cuda.h: the NVIDIA side of the shared CUDA/HIP sources: the CUDA runtime, cuBLASLt and NCCL headers.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <nccl.h>

#define KOSMOS_GPU_VENDOR "CUDA"
