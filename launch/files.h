// files.h: reading a small text file (a config) whole, with an error that names it.
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

}  // namespace kosmos
