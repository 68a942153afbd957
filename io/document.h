// document.h: one line of a `kosmos data prepare` JSONL file as its segments, before any tokenising or image
// decoding. A line is a JSON list of segments, [{"text": "..."}, {"image": "relative/path.jpg"}, ...], or an object
// {"segments": [...]} (other keys ignored). Hostile input: the fuzz target tests/fuzz/fuzz_document.cpp runs it.
#pragma once

#include <string>
#include <vector>

namespace kosmos::io {

struct DocumentSegment {
  enum class Kind { kText, kImage };
  Kind kind = Kind::kText;
  std::string value;  // the text, or the image's path relative to the JSONL file's folder
};

// The segments of `line`, in order; anything else is an error naming `where` (file:line), what it found and the form.
std::vector<DocumentSegment> parse_document_line(const std::string & line, const std::string & where);

}  // namespace kosmos::io
