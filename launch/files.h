// files.h: reading a small text file (a config) whole, and writing one (results), with errors that name it; and
// whether an output file can be written, asked before the work whose results go there.
#pragma once

#include <unistd.h>

#include <filesystem>
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

// Why `path` (a file, or a prefix of files) cannot be written, or "" where it can: its folder must exist and be
// writable, and the file, where it is there already, must be a writable file.
inline std::string output_path_problem(const std::string & path) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::path file(path);
  const fs::path folder = file.has_parent_path() ? file.parent_path() : fs::path(".");
  if (!fs::is_directory(folder, error))
    return "the folder " + folder.string() + " does not exist; create it, or give a path in another folder";
  if (access(folder.c_str(), W_OK) != 0)
    return "the folder " + folder.string() + " is not writable; give a path in a folder you may write";
  if (fs::is_directory(file, error)) return path + " is a folder; give a file's path";
  if (fs::exists(file, error) && access(path.c_str(), W_OK) != 0)
    return path + " exists and is not writable; give another path";
  return "";
}

// An error naming `option` where output_path_problem finds one (nothing for an empty path: an output not asked for).
inline void check_output_path(const std::string & option, const std::string & path) {
  if (path.empty()) return;
  const std::string problem = output_path_problem(path);
  KOSMOS_CHECK(problem.empty(), option, " ", path, ": ", problem);
}

}  // namespace kosmos
