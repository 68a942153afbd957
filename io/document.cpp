// document.cpp: a JSONL line as its text and image segments (document.h).
#include "io/document.h"

#include <nlohmann/json.hpp>

#include "backends/error.h"

namespace kosmos::io {
namespace {

constexpr const char * kForm = R"([{"text": "..."}, {"image": "relative/path.jpg"}])";

// The start of a value as JSON, for errors: the first 80 characters (a huge or deeply nested value is not dumped
// whole: dumping recurses once per level).
std::string preview(const nlohmann::json & value) {
  if (value.is_structured()) return value.is_array() ? "a list of " + std::to_string(value.size()) + " values"
                                                     : "an object with " + std::to_string(value.size()) + " keys";
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).substr(0, 80);
}

// "text" or "image" with a string value, as a segment; `i` numbers it in errors.
DocumentSegment segment_of(const nlohmann::json & segment, size_t i, const std::string & where) {
  const bool single = segment.is_object() && segment.size() == 1;
  const auto key = single ? segment.begin().key() : std::string();
  KOSMOS_CHECK(single && (key == "text" || key == "image") && segment.begin()->is_string(), where, ": segment ", i,
               " is ", single ? "{\"" + key + "\": " + preview(*segment.begin()) + "}" : preview(segment),
               "; a segment is {\"text\": \"...\"} or {\"image\": \"path\"}");
  const std::string & value = segment.begin()->get_ref<const std::string &>();
  if (key == "text") return {DocumentSegment::Kind::kText, value};
  KOSMOS_CHECK(!value.empty() && value.find('\0') == std::string::npos, where, ": segment ", i,
               " names an image path that is empty or holds a NUL character; give the image file's path");
  return {DocumentSegment::Kind::kImage, value};
}

}  // namespace

std::vector<DocumentSegment> parse_document_line(const std::string & line, const std::string & where) {
  const nlohmann::json parsed = nlohmann::json::parse(line, nullptr, false);
  KOSMOS_CHECK(!parsed.is_discarded(), where, ": not valid JSON; each line is one document, a list of segments like ",
               kForm);
  const nlohmann::json & segments = parsed.is_object() && parsed.contains("segments") ? parsed.at("segments") : parsed;
  KOSMOS_CHECK(segments.is_array() && !segments.empty(), where,
               ": a document is a non-empty list of segments (or {\"segments\": [...]}) like ", kForm, ", got ",
               preview(segments));
  std::vector<DocumentSegment> out;
  out.reserve(segments.size());
  for (size_t i = 0; i < segments.size(); ++i) out.push_back(segment_of(segments[i], i, where));
  return out;
}

}  // namespace kosmos::io
