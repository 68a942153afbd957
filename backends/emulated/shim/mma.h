// shim/mma.h: what the kernel sources' #include <mma.h> finds in the emulated GPU build: the emulated CUDA surface
// (its nvcuda::wmma, in warp_matrices.h).
#pragma once
#include "backends/emulated/cuda_surface.h"
