// registry.h: which backends this build holds, and choosing one at run time (--backend auto|cpu|cuda|rocm).
// The list is fixed at build time (no static self-registration); a backend that is absent carries the reason and
// the fix, so `--backend cuda` on a CPU-only build says how to get CUDA instead of failing vaguely.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/device.h"

namespace kosmos {

struct BackendEntry {
  std::string name;                     // "cpu", "cuda", "rocm"
  bool available = false;               // in the registry: its ops are implemented in this build
  std::string unavailable_reason;       // why not, and the fix
  std::function<int()> device_count;    // devices it sees now
  std::function<std::unique_ptr<Device>(int ordinal)> create;
};

class BackendRegistry {
 public:
  BackendRegistry();  // GPU backends first, CPU last
  const std::vector<BackendEntry> & entries() const { return entries_; }
  std::vector<std::string> available_names() const;
  // choice: "auto" (the first available backend that sees a device) or a backend name.
  std::unique_ptr<Device> create(const std::string & choice, int ordinal) const;
  // The device of the rank with `local_rank` on its node: that ordinal modulo the devices the backend sees (one GPU
  // per rank when a node runs as many ranks as it has GPUs; every rank shares the one CPU device).
  std::unique_ptr<Device> create_for_local_rank(const std::string & choice, int local_rank) const;

 private:
  // The entry `choice` names ("auto": the first available one that sees a device), or an error naming the choices.
  const BackendEntry & resolve(const std::string & choice) const;
  std::vector<BackendEntry> entries_;
};

}  // namespace kosmos
