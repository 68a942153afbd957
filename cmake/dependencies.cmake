# dependencies.cmake: every package kosmos builds against, found the Debian 12 way (see shared build notes).
# A missing required package stops configure naming the Debian package; a missing optional one turns its feature
# off with a one-line message naming the package. scripts/install_deps.sh installs all of them.

function(kosmos_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR "kosmos needs ${what}: install it with `apt-get install ${package}` "
                        "(or run scripts/install_deps.sh)")
  endif()
endfunction()

find_package(MPI COMPONENTS C)
kosmos_require(MPI_C_FOUND "MPI (Open MPI)" "libopenmpi-dev openmpi-bin")

set(HDF5_PREFER_PARALLEL ON)   # picks the Open MPI flavour even when serial HDF5 is installed beside it
find_package(HDF5 COMPONENTS C)
kosmos_require(HDF5_FOUND "parallel HDF5" "libhdf5-openmpi-dev")
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "kosmos needs parallel HDF5 but found a serial one (${HDF5_INCLUDE_DIRS}): "
                      "install it with `apt-get install libhdf5-openmpi-dev`")
endif()

find_package(dnnl CONFIG QUIET)
kosmos_require(dnnl_FOUND "oneDNN" "libdnnl-dev ocl-icd-opencl-dev")

find_package(OpenMP COMPONENTS CXX)
kosmos_require(OpenMP_CXX_FOUND "OpenMP" "libgomp1 (part of g++)")

find_package(PkgConfig)
kosmos_require(PKG_CONFIG_FOUND "pkg-config" "pkg-config")
pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
kosmos_require(SENTENCEPIECE_FOUND "SentencePiece" "libsentencepiece-dev")

find_package(PNG QUIET)
kosmos_require(PNG_FOUND "libpng" "libpng-dev")
find_package(JPEG QUIET)
kosmos_require(JPEG_FOUND "libjpeg-turbo" "libjpeg62-turbo-dev")

find_package(nlohmann_json CONFIG QUIET)
kosmos_require(nlohmann_json_FOUND "nlohmann JSON" "nlohmann-json3-dev")

find_package(CLI11 CONFIG QUIET)
kosmos_require(CLI11_FOUND "CLI11" "libcli11-dev")

if(KOSMOS_BUILD_TESTS)
  find_package(GTest QUIET)
  if(NOT GTest_FOUND)
    message(STATUS "kosmos: tests disabled: install libgtest-dev libgmock-dev")
    set(KOSMOS_BUILD_TESTS OFF)
  endif()
endif()

if(KOSMOS_BUILD_BENCH)
  find_package(benchmark QUIET)
  if(NOT benchmark_FOUND)
    message(STATUS "kosmos: op benchmarks disabled: install libbenchmark-dev")
    set(KOSMOS_BUILD_BENCH OFF)
  endif()
endif()

message(STATUS "kosmos: MPI ${MPI_C_VERSION}, HDF5 ${HDF5_VERSION} (parallel), oneDNN ${dnnl_VERSION}, "
               "SentencePiece ${SENTENCEPIECE_VERSION}, CLI11 ${CLI11_VERSION}")
