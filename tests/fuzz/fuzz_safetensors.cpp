// fuzz_safetensors.cpp: libFuzzer target for the safetensors reader (io/safetensors.cpp): any bytes as a weights
// file must give a SafetensorsFile or a kosmos::Error, never a crash, an out-of-bounds read or undefined behaviour.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "backends/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
  static const std::string path = "/tmp/kosmos_fuzz_safetensors_" + std::to_string(::getpid()) + ".safetensors";
  std::FILE * file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return 0;
  std::fwrite(data, 1, size, file);
  std::fclose(file);
  try {
    kosmos::io::SafetensorsFile weights(path);
    for (const auto & [name, entry] : weights.entries())  // every tensor converted, as the importer reads them
      if (entry.numel() <= (int64_t{1} << 22)) weights.read_f32(name);
  } catch (const kosmos::Error &) {
  }
  return 0;
}
