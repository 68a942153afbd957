// fuzz_document.cpp: libFuzzer target for a `kosmos data prepare` JSONL line (io/document.cpp): any text gives its
// segments or a kosmos::Error, never a crash; and every segment it gives is a non-empty path or a text.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "backends/error.h"
#include "io/document.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
  using kosmos::io::DocumentSegment;
  try {
    const auto segments =
        kosmos::io::parse_document_line(std::string(reinterpret_cast<const char *>(data), size), "fuzz.jsonl:1");
    if (segments.empty()) std::abort();  // a document has at least one segment
    for (const DocumentSegment & segment : segments)
      if (segment.kind == DocumentSegment::Kind::kImage && segment.value.empty()) std::abort();
  } catch (const kosmos::Error &) {
  }
  return 0;
}
