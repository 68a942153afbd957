// error.h: kosmos::Error and the KOSMOS_CHECK / KOSMOS_FAIL macros.
// Every user-facing failure is an Error whose text names where it happened, the values involved and the fix.
// Only launch/ catches these; library code never exits or asserts on user input.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace kosmos {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string & message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Parts>
std::string concat(const Parts &... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
[[noreturn]] void throw_error(const char * file, int line, const std::string & message);
}  // namespace detail

}  // namespace kosmos

// KOSMOS_FAIL("attention_forward: unsupported head dim ", d, " (supported: 64, 128)");
#define KOSMOS_FAIL(...) ::kosmos::detail::throw_error(__FILE__, __LINE__, ::kosmos::detail::concat(__VA_ARGS__))

// KOSMOS_CHECK(cond, "what went wrong, with values, and the fix");
#define KOSMOS_CHECK(cond, ...)  \
  do {                           \
    if (!(cond)) {               \
      KOSMOS_FAIL(__VA_ARGS__);  \
    }                            \
  } while (0)
