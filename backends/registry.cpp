// registry.cpp: the build's backend list: CUDA (and its kernel variants) and ROCm where they were built (the same
// kernel sources, through nvcc and hipcc), the CPU always; a backend that was not built is listed with the reason
// and the fix.
#include "backends/registry.h"

#include "backends/cpu/cpu_device.h"
#include "backends/cuda/gpu_device.h"
#include "backends/error.h"

namespace kosmos {
namespace {

#if !defined(KOSMOS_USE_CUDA) || !defined(KOSMOS_USE_ROCM)
BackendEntry absent_gpu_backend(const std::string & name, const std::string & built, const std::string & option) {
  BackendEntry entry;
  entry.name = name;
  entry.available = false;
  entry.unavailable_reason =
      "built without " + built + "; reconfigure with -D" + option + "=ON where its compiler is installed";
  entry.device_count = [] { return 0; };
  return entry;
}
#endif

std::string join(const std::vector<std::string> & names) {
  std::string text;
  for (const std::string & name : names) text += (text.empty() ? "" : ", ") + name;
  return text.empty() ? "none" : text;
}

}  // namespace

BackendRegistry::BackendRegistry() {
  for (const GpuVariant variant : kGpuVariants) {  // "cuda" first: --backend auto takes the standard kernels
#ifdef KOSMOS_USE_CUDA
    entries_.push_back(cuda::backend_entry(variant));
#else
    entries_.push_back(absent_gpu_backend(gpu_backend_name("cuda", variant), "cuda", "KOSMOS_CUDA"));
#endif
  }
#ifdef KOSMOS_USE_ROCM
  entries_.push_back(rocm::backend_entry());
#else
  entries_.push_back(absent_gpu_backend("rocm", "rocm", "KOSMOS_ROCM"));
#endif
  entries_.push_back(cpu::cpu_backend_entry());
#ifdef KOSMOS_USE_GPU_EMULATION  // after the CPU: --backend auto never takes it
  entries_.push_back(emulated::backend_entry(GpuVariant::kStandard));
  entries_.push_back(emulated::backend_entry(GpuVariant::kWmmaAttention));
  entries_.push_back(emulated_rocm::backend_entry());
#endif
}

std::vector<std::string> BackendRegistry::available_names() const {
  std::vector<std::string> names;
  for (const BackendEntry & entry : entries_)
    if (entry.available) names.push_back(entry.name);
  return names;
}

const BackendEntry & BackendRegistry::resolve(const std::string & choice) const {
  if (choice == "auto") {
    for (const BackendEntry & entry : entries_)
      if (entry.available && entry.device_count() > 0) return entry;
    KOSMOS_FAIL("--backend auto: no available backend sees a device (available: ", join(available_names()), ")");
  }
  for (const BackendEntry & entry : entries_) {
    if (entry.name != choice) continue;
    KOSMOS_CHECK(entry.available, "--backend ", choice, " is not available: ", entry.unavailable_reason,
                 " (available: ", join(available_names()), ")");
    return entry;
  }
  KOSMOS_FAIL("--backend ", choice, " is not a backend name; choose auto, cpu, cuda or rocm (or cuda's kernel "
              "variants cuda-owngemm, cuda-wmma and cuda-cudnn; available here: ", join(available_names()), ")");
}

std::unique_ptr<Device> BackendRegistry::create(const std::string & choice, int ordinal) const {
  KOSMOS_CHECK(ordinal >= 0, "--device ", ordinal, " is negative; device ordinals count from 0");
  const BackendEntry & entry = resolve(choice);
  const int count = entry.device_count();
  KOSMOS_CHECK(count > 0, "--backend ", choice, " sees no device on this machine; run where it sees one, or choose "
               "another backend (available here: ", join(available_names()), ")");
  if (choice == "auto") return entry.create(ordinal % count);
  KOSMOS_CHECK(ordinal < count, "--backend ", choice, " --device ", ordinal, ": only ", count,
               " device(s) are visible; choose an ordinal below ", count);
  return entry.create(ordinal);
}

std::unique_ptr<Device> BackendRegistry::create_for_local_rank(const std::string & choice, int local_rank) const {
  const BackendEntry & entry = resolve(choice);
  KOSMOS_CHECK(entry.device_count() > 0, "--backend ", entry.name, " sees no device on this node");
  return entry.create(local_rank % entry.device_count());
}

}  // namespace kosmos
