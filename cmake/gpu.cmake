# gpu.cmake: the GPU build options. KOSMOS_CUDA defaults to ON where nvcc is found (CUDA 13 at /usr/local/cuda
# here), KOSMOS_ROCM where hipcc is found (Debian's hipcc 5.2); either can be forced OFF, or ON to fail loudly.
# CUDA architectures default to 80;90 (A100; H100/H200). ROCm code objects default to gfx90a;gfx940 (MI200, MI300A
# early silicon): Debian 12's clang-15 hipcc cannot target gfx942 (MI300X).

include(CheckLanguage)

if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
check_language(CUDA)
set(kosmos_cuda_default OFF)
if(CMAKE_CUDA_COMPILER)
  set(kosmos_cuda_default ON)
endif()
option(KOSMOS_CUDA "build the CUDA sources (needs nvcc; the CUDA toolkit at /usr/local/cuda)" ${kosmos_cuda_default})

find_program(KOSMOS_HIPCC hipcc)
set(kosmos_rocm_default OFF)
if(KOSMOS_HIPCC)
  set(kosmos_rocm_default ON)
endif()
option(KOSMOS_ROCM "build the ROCm (HIP) sources with hipcc (apt-get install hipcc libamdhip64-dev rocm-device-libs)"
       ${kosmos_rocm_default})
set(KOSMOS_HIP_ARCHS "gfx90a;gfx940" CACHE STRING "AMD GPU code objects to build (--offload-arch list)")

if(KOSMOS_CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "KOSMOS_CUDA=ON but no nvcc was found: install the CUDA toolkit at /usr/local/cuda, "
                        "or configure with -DKOSMOS_CUDA=OFF")
  endif()
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)   # must be set before enable_language(CUDA)
  endif()
  enable_language(CUDA)
  # The oldest toolkit the sources are written for: the one-pass attention backward's pair-wise atomicAdd(float2 *)
  # on sm_90 (crt/sm_90_rt.h) is, by the kaldi-asr project's note, CUDA 12.1's (sm_90 code itself needs 11.8); only
  # 13.0 has been built here.
  if(CMAKE_CUDA_COMPILER_VERSION VERSION_LESS 12.1)
    message(FATAL_ERROR "KOSMOS_CUDA=ON needs nvcc from CUDA 12.1 or newer, but ${CMAKE_CUDA_COMPILER} is "
                        "${CMAKE_CUDA_COMPILER_VERSION}: point CMAKE_CUDA_COMPILER at a newer toolkit's nvcc, "
                        "or configure with -DKOSMOS_CUDA=OFF")
  endif()
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  find_path(KOSMOS_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(KOSMOS_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(NOT KOSMOS_NCCL_LIBRARY OR NOT KOSMOS_NCCL_INCLUDE_DIR)
    message(FATAL_ERROR "KOSMOS_CUDA=ON but NCCL (nccl.h, libnccl.so) is not in ${CUDAToolkit_LIBRARY_DIR}: "
                        "install NCCL into the CUDA toolkit, or configure with -DKOSMOS_CUDA=OFF")
  endif()
  add_library(kosmos_nccl UNKNOWN IMPORTED)
  set_target_properties(kosmos_nccl PROPERTIES IMPORTED_LOCATION ${KOSMOS_NCCL_LIBRARY}
                                               INTERFACE_INCLUDE_DIRECTORIES ${KOSMOS_NCCL_INCLUDE_DIR})
  message(STATUS "kosmos: CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}, "
                 "NCCL ${KOSMOS_NCCL_LIBRARY}")
else()
  message(STATUS "kosmos: CUDA disabled (no nvcc, or -DKOSMOS_CUDA=OFF): install the CUDA toolkit at /usr/local/cuda")
endif()

if(KOSMOS_ROCM)
  if(NOT KOSMOS_HIPCC)
    message(FATAL_ERROR "KOSMOS_ROCM=ON but hipcc was not found: apt-get install hipcc libamdhip64-dev "
                        "rocm-device-libs, or configure with -DKOSMOS_ROCM=OFF")
  endif()
  find_package(hip CONFIG QUIET)
  if(NOT hip_FOUND)
    message(FATAL_ERROR "KOSMOS_ROCM=ON but the HIP runtime's CMake package is missing: "
                        "apt-get install libamdhip64-dev, or configure with -DKOSMOS_ROCM=OFF")
  endif()
  message(STATUS "kosmos: ROCm via ${KOSMOS_HIPCC}, code objects ${KOSMOS_HIP_ARCHS}")
else()
  message(STATUS "kosmos: ROCm disabled (no hipcc, or -DKOSMOS_ROCM=OFF): apt-get install hipcc libamdhip64-dev "
                 "rocm-device-libs")
endif()
