#!/usr/bin/env bash
# install_deps.sh: installs what kosmos needs from Debian 12's packages, skipping what is already there.
#   scripts/install_deps.sh            everything: build tools, MPI, HDF5, oneDNN, SentencePiece, CLI11, GoogleTest,
#                                      Google Benchmark, libpng, libjpeg-turbo, Slurm (for its test), and hipcc for
#                                      the ROCm build (about 0.7 GiB of the 1 GiB)
#   scripts/install_deps.sh --no-rocm  the same without hipcc
# CUDA, cuBLAS(Lt) and NCCL are not Debian packages: they come from the CUDA toolkit at /usr/local/cuda, and the
# build turns CUDA off (with a message) where that is missing.
set -euo pipefail

with_rocm=1
for argument in "$@"; do
  case "$argument" in
    --no-rocm) with_rocm=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install_deps.sh: unknown option '$argument' (known: --no-rocm, --help)" >&2; exit 2 ;;
  esac
done

packages=(
  g++ cmake make pkg-config ccache
  libopenmpi-dev openmpi-bin                       # MPI
  libhdf5-openmpi-dev hdf5-tools                   # parallel HDF5 (Open MPI flavour) and h5ls/h5dump
  libdnnl-dev ocl-icd-opencl-dev                   # oneDNN 2.6; its CMake config needs the OpenCL dev files
  libsentencepiece-dev sentencepiece               # tokenizer library and spm_* tools
  libcli11-dev                                     # command line
  nlohmann-json3-dev                               # JSON: model configs, safetensors headers, metrics
  libpng-dev libjpeg62-turbo-dev                   # image decoding
  slurmctld slurmd munge                           # a single-node Slurm for the srun/sbatch test
  libgtest-dev libgmock-dev libbenchmark-dev       # tests and op benchmarks
  gnuplot-nox                                      # the PNG charts of bench/scaling.sh
  clang-15 libclang-common-15-dev                  # libFuzzer and the sanitizers for tests/fuzz
)
if [ "$with_rocm" = 1 ]; then
  packages+=(hipcc libamdhip64-dev rocm-device-libs)  # HIP compiler and runtime for the ROCm build
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install_deps.sh: all ${#packages[@]} packages are installed"
  exit 0
fi

run_as_root=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  run_as_root=(sudo)
fi
echo "install_deps.sh: installing ${missing[*]}"
"${run_as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${run_as_root[@]}" apt-get install -y -qq "${missing[@]}"
