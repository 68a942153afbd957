// fuzz_model_config.cpp: libFuzzer target for the JSON model config (model/config.cpp: peer key names over a preset,
// then every constraint): any text gives a config or a kosmos::Error, never a crash.
#include <cstdint>
#include <string>

#include "backends/error.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
  static const kosmos::model::KosmosConfig tiny = kosmos::model::preset("tiny");
  try {
    kosmos::model::config_from_json(std::string(reinterpret_cast<const char *>(data), size), tiny, "fuzz.json");
  } catch (const kosmos::Error &) {
  }
  return 0;
}
