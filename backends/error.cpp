// error.cpp: the one place that turns a failed check into a kosmos::Error (with the source location).
#include "backends/error.h"

#include <cstring>

namespace kosmos::detail {

void throw_error(const char * file, int line, const std::string & message) {
  const char * base = std::strrchr(file, '/');
  throw Error(message + " [" + (base ? base + 1 : file) + ":" + std::to_string(line) + "]");
}

}  // namespace kosmos::detail
