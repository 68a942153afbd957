// npy.cpp: the .npy reader and writer (header: magic, version, a Python dict literal with descr, fortran_order and
// shape, padded to 64 bytes; then the data).
#include "io/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "backends/error.h"

namespace kosmos::io {

NpyArray read_npy(const std::string & path) {
  std::ifstream in(path, std::ios::binary);
  KOSMOS_CHECK(in, path, ": cannot open; check the path");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  KOSMOS_CHECK(bytes.size() >= 10 && bytes.compare(0, 6, "\x93NUMPY") == 0, path,
               ": not a NumPy .npy file (no \\x93NUMPY magic); save it with numpy.save");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_length = 0, header_start = 0;
  if (major == 1) {
    header_length = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    header_start = 10;
  } else {
    KOSMOS_CHECK(bytes.size() >= 12, path, ": truncated .npy header");
    for (int i = 3; i >= 0; --i) header_length = (header_length << 8) | static_cast<unsigned char>(bytes[8 + i]);
    header_start = 12;
  }
  KOSMOS_CHECK(header_length <= 10000, path, ": the .npy header claims ", header_length,
               " bytes; numpy itself reads at most 10000 (is the file corrupt?)");
  KOSMOS_CHECK(header_start + header_length <= bytes.size(), path, ": the .npy header runs past the end of the file");
  const std::string header = bytes.substr(header_start, header_length);
  std::smatch match;
  KOSMOS_CHECK(std::regex_search(header, match, std::regex("'descr':\\s*'([<|>]?[a-z][0-9]+)'")), path,
               ": no dtype in the .npy header: ", header);
  const std::string descr = match[1];
  KOSMOS_CHECK(header.find("'fortran_order': False") != std::string::npos, path,
               ": Fortran-ordered arrays are not read; save with numpy.ascontiguousarray first");
  KOSMOS_CHECK(std::regex_search(header, match, std::regex("'shape':\\s*\\(([^)]*)\\)")), path,
               ": no shape in the .npy header: ", header);
  NpyArray array;
  std::stringstream dims(match[1].str());
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    if (dim.find_first_not_of(" ") == std::string::npos) continue;
    try {
      array.shape.push_back(std::stoll(dim));
    } catch (const std::exception &) {
      KOSMOS_FAIL(path, ": the .npy shape entry '", dim, "' is not a number");
    }
  }
  int64_t count = 1;
  for (int64_t size : array.shape)
    KOSMOS_CHECK(size >= 0 && !__builtin_mul_overflow(count, size, &count) && count <= (int64_t{1} << 40), path,
                 ": the .npy shape is impossible (a negative dim, or too many elements)");
  const std::string type = descr[0] == '<' || descr[0] == '|' ? descr.substr(1) : descr;
  KOSMOS_CHECK(descr[0] != '>', path, ": big-endian arrays are not read; convert with .astype('<f4')");
  const size_t element = type == "f4" || type == "i4" ? 4 : type == "f8" || type == "i8" ? 8 : 0;
  KOSMOS_CHECK(element != 0, path, ": dtype ", descr, " is not read; use float32 (or float64, int32, int64)");
  const size_t data_start = header_start + header_length;
  KOSMOS_CHECK(bytes.size() - data_start >= static_cast<size_t>(count) * element, path, ": holds ",
               bytes.size() - data_start, " data bytes but its shape needs ", count * static_cast<int64_t>(element),
               "; the file is truncated");
  array.values.resize(static_cast<size_t>(count));
  const char * data = bytes.data() + data_start;
  for (int64_t i = 0; i < count; ++i) {
    if (type == "f4") {
      std::memcpy(&array.values[i], data + 4 * i, 4);
    } else if (type == "f8") {
      double value;
      std::memcpy(&value, data + 8 * i, 8);
      array.values[i] = static_cast<float>(value);
    } else if (type == "i4") {
      int32_t value;
      std::memcpy(&value, data + 4 * i, 4);
      array.values[i] = static_cast<float>(value);
    } else {
      int64_t value;
      std::memcpy(&value, data + 8 * i, 8);
      array.values[i] = static_cast<float>(value);
    }
  }
  return array;
}

void write_npy(const std::string & path, const std::vector<int64_t> & shape, const std::vector<float> & values) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int64_t size : shape) header += std::to_string(size) + ", ";
  header += "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  KOSMOS_CHECK(out, path, ": cannot open for writing");
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(header.size() & 0xff));
  out.put(static_cast<char>((header.size() >> 8) & 0xff));
  out << header;
  out.write(reinterpret_cast<const char *>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
  KOSMOS_CHECK(out.good(), path, ": write failed (disk full?)");
}

}  // namespace kosmos::io
