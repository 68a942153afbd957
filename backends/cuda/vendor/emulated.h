// vendor/emulated.h: the emulated GPU's side of the shared kernel sources (backends/emulated, g++ on the host): its
// CUDA surface, the warp width it was built for (32, or 64 for the ROCm build's sources), masked shuffles, and its
// cuBLASLt (backends/emulated/gemm_library.cpp; the ROCm build's sources use none, as on AMD).
#pragma once

#include <cublasLt.h>

#include "backends/emulated/cuda_surface.h"

#define KOSMOS_GPU_VENDOR "emulated GPU"
#define KOSMOS_WARP_SIZE KOSMOS_EMULATED_WARP_SIZE
#define KOSMOS_SHFL_XOR(value, mask) __shfl_xor_sync(0xffffffffu, (value), (mask))
#define KOSMOS_ATTRIBUTES_NAME_DEVICE(attributes) ((attributes).type == cudaMemoryTypeDevice)
