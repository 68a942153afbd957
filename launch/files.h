// files.h: reading a small text file (a config) whole, and writing one (results), with errors that name it.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "backends/error.h"

namespace kosmos {

inline std::string read_text_file(const std::string & path) {
  std::ifstream in(path, std::ios::binary);
  KOSMOS_CHECK(in, "cannot open ", path, " for reading; check the path and its permissions");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes `text` to `path` (nothing when the path is empty: an output the user did not ask for).
inline void write_text_file(const std::string & path, const std::string & text) {
  if (path.empty()) return;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  KOSMOS_CHECK(out, "cannot write ", path, "; check the folder exists and is writable");
}

}  // namespace kosmos
