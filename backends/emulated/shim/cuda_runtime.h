// shim/cuda_runtime.h: what parallel/comm_nccl.cpp's #include <cuda_runtime.h> finds when it is compiled for the
// emulated GPU: the emulated CUDA surface (its runtime: events, streams, errors).
#pragma once
#include "backends/emulated/cuda_surface.h"
