// vendor/cuda.h: the NVIDIA side of the shared CUDA/HIP sources: the CUDA runtime, 16-bit float, cuBLASLt and NCCL
// headers, the driver's types (its calls are reached through the runtime's entry points, reserved_memory.cu), and
// the few spellings that differ from HIP (the warp size, warp shuffles).
#pragma once

#include <cublasLt.h>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#define KOSMOS_GPU_VENDOR "CUDA"
#define KOSMOS_WARP_SIZE 32
#define KOSMOS_SHFL_XOR(value, mask) __shfl_xor_sync(0xffffffffu, (value), (mask))
// Whether cudaPointerGetAttributes' answer names device (or managed) memory.
#define KOSMOS_ATTRIBUTES_NAME_DEVICE(attributes) \
  ((attributes).type == cudaMemoryTypeDevice || (attributes).type == cudaMemoryTypeManaged)
