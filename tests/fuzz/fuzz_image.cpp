// fuzz_image.cpp: libFuzzer target for image decoding (io/image.cpp: PNG through libpng, JPEG through libjpeg-turbo)
// and the CLIP preprocessing after it: any bytes give an image or a kosmos::Error, never a crash.
#include <cstdint>
#include <vector>

#include "backends/error.h"
#include "io/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
  try {
    const kosmos::io::RgbImage image = kosmos::io::decode_image(std::vector<uint8_t>(data, data + size), "fuzz input");
    if (image.width * image.height <= 4096 * 4096) kosmos::io::clip_preprocess(image, 28);
  } catch (const kosmos::Error &) {
  }
  return 0;
}
