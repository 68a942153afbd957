// info.cpp: `kosmos info`: what this build holds and what this machine offers, for bug reports and for checking
// a cluster node before a long job.
#include <hdf5.h>
#include <mpi.h>

#include <dnnl.hpp>
#include <sstream>

#include "backends/cpu/cpu_device.h"
#include "backends/cuda/gpu_probe.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string version(text, static_cast<size_t>(length));
  const size_t end = version.find_first_of(",\n");
  return end == std::string::npos ? version : version.substr(0, end);
}

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  std::ostringstream out;
  out << major << '.' << minor << '.' << release;
#ifdef H5_HAVE_PARALLEL
  out << " (parallel)";
#else
  out << " (serial)";
#endif
  return out.str();
}

std::string onednn_version() {
  const dnnl_version_t * version = dnnl_version();
  std::ostringstream out;
  out << version->major << '.' << version->minor << '.' << version->patch << " (CPU runtime "
      << (version->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : version->cpu_runtime == DNNL_RUNTIME_SEQ ? "sequential"
                                                                                                        : "other")
      << ")";
  return out.str();
}

#if defined(KOSMOS_USE_CUDA) || defined(KOSMOS_USE_ROCM)
void print_gpu_probe(std::ostream & out, const GpuProbe & probe) {
  out << "      runtime " << (probe.runtime_version.empty() ? "?" : probe.runtime_version) << ", driver "
      << (probe.driver_version.empty() ? "none" : probe.driver_version) << ", " << probe.libraries << "\n";
  if (probe.devices.empty()) out << "      devices: none (" << (probe.error.empty() ? "0 found" : probe.error) << ")\n";
  for (size_t ordinal = 0; ordinal < probe.devices.size(); ++ordinal) {
    const GpuDeviceInfo & device = probe.devices[ordinal];
    out << "      device " << ordinal << ": " << device.name << ", " << device.architecture << ", "
        << device.multiprocessors << " multiprocessors, " << (device.memory_bytes >> 20) << " MiB\n";
  }
}
#endif

}  // namespace

void print_info(std::ostream & out, const BackendRegistry & registry) {
  out << "kosmos " << KOSMOS_VERSION << "\n";
  out << "build: " << KOSMOS_BUILD_TYPE << ", native ISA " << (KOSMOS_NATIVE_BUILD ? "on" : "off");
#ifdef KOSMOS_USE_CUDA
  out << ", CUDA on (architectures " << KOSMOS_CUDA_ARCHS << ")";
#else
  out << ", CUDA off";
#endif
#ifdef KOSMOS_USE_ROCM
  out << ", ROCm on (code objects " << KOSMOS_HIP_ARCHS_TEXT << ")";
#else
  out << ", ROCm off";
#endif
  out << "\nbackends (--backend auto picks the first available one with a device):\n";
  for (const BackendEntry & entry : registry.entries()) {
    out << "  " << entry.name << ": ";
    if (entry.available) {
      out << "available, " << entry.device_count() << " device(s)\n";
    } else {
      out << "unavailable: " << entry.unavailable_reason << "\n";
    }
#ifdef KOSMOS_USE_CUDA
    if (entry.name == "cuda") print_gpu_probe(out, cuda::probe());
#endif
#ifdef KOSMOS_USE_ROCM
    if (entry.name == "rocm") print_gpu_probe(out, rocm::probe());
#endif
    if (entry.name == "cpu") out << "      device 0: " << cpu::cpu_machine_summary() << "\n";
  }
  out << "libraries:\n";
  out << "  MPI: " << mpi_library_version() << "\n";
  out << "  HDF5: " << hdf5_version() << "\n";
  out << "  oneDNN: " << onednn_version() << "\n";
  out << "  SentencePiece: " << KOSMOS_SENTENCEPIECE_VERSION << "\n";
  out << "  CLI11: " << KOSMOS_CLI11_VERSION << "\n";
}

}  // namespace kosmos
