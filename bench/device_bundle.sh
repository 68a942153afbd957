#!/usr/bin/env bash
# device_bundle.sh: prepares, on the build machine, what bench/device_check.sh needs on the GPU machine, whose image
# has the CUDA toolkit, PyTorch and CMake but none of Debian's libraries (oneDNN, Open MPI, parallel HDF5,
# SentencePiece, libpng, libjpeg): a portable build (-DKOSMOS_NATIVE=OFF, sm_90) of `kosmos`, the op tests, the MPI
# tests (NcclComm.*) and the run comparer, every shared library they load but glibc's and CUDA's, Open MPI's and PMIx's plugins, and the
# PyTorch peer. It is staged in build-device/bundle and packed as .device/bundle.tar.xz (git-ignored; about 21 MB,
# since the device call carries at most 64 MiB), beside a copy of device_check.sh, which unpacks it there.
# Usage: bench/device_bundle.sh [PEER_SCRIPT]   (default ../shared/bench/torch_kosmos.py)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-device" bundle="$root/build-device/bundle" carried="$root/.device"
peer="${1:-$root/../shared/bench/torch_kosmos.py}"
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" -DKOSMOS_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DKOSMOS_ROCM=OFF -DKOSMOS_NATIVE=OFF -DKOSMOS_BUILD_BENCH=OFF > /dev/null
cmake --build "$build" -j "$(nproc)" --target kosmos kosmos_op_tests kosmos_compare_runs \
  kosmos_mpi_tests

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/peer"
binaries=("$build/launch/kosmos" "$build/tests/kosmos_op_tests" "$build/tests/kosmos_compare_runs"
          "$build/tests/kosmos_mpi_tests")
for binary in "${binaries[@]}"; do strip -o "$bundle/bin/$(basename "$binary")" "$binary"; done
# Open MPI's components (singleton start-up needs them) and PMIx's, found through MCA parameters there.
cp -r /usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3 "$bundle/lib/openmpi3"
cp -r /usr/lib/x86_64-linux-gnu/pmix2/lib/pmix "$bundle/lib/pmix"
# Every library those load, but glibc's (the GPU image has its own, as new or newer) and CUDA's (from its toolkit).
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libcudart|libcublas|libnccl|libcuda\.so)'
for object in "$bundle"/bin/* "$bundle"/lib/openmpi3/*.so "$bundle"/lib/pmix/*.so; do
  ldd "$object" 2> /dev/null | awk '$3 ~ /^\// {print $1, $3}' | while read -r name path; do
    [[ "$name" =~ $skip ]] && continue
    [ -e "$bundle/lib/$name" ] || cp -L "$path" "$bundle/lib/$name"
  done
done
cp "$peer" "$bundle/peer/torch_kosmos.py"
rm -rf "$carried" && mkdir -p "$carried"
tar -C "$bundle" -cJf "$carried/bundle.tar.xz" .
cp "$root/bench/device_check.sh" "$carried/device_check.sh"
du -sh "$bundle" "$carried"
echo "ready: carry .device and run: bash .device/device_check.sh \$OUT"
