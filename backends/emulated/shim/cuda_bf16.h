// shim/cuda_bf16.h: what the kernel sources' #include <cuda_bf16.h> finds in the emulated GPU build: the emulated
// CUDA surface (its __nv_bfloat16 and conversions).
#pragma once
#include "backends/emulated/cuda_surface.h"
