// test_errors.h: what a call throws as kosmos::Error, for tests that check the message ("" when it succeeds).
#pragma once

#include <functional>
#include <string>

#include "backends/error.h"

namespace kosmos::testing {

inline std::string error_of(const std::function<void()> & action) {
  try {
    action();
  } catch (const Error & error) {
    return error.what();
  }
  return "";
}

}  // namespace kosmos::testing
