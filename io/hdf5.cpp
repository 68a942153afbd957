// hdf5.cpp: error causes and scalar attributes over HDF5's C API (hdf5.h).
#include "io/hdf5.h"

#include <algorithm>

namespace kosmos::io::hdf5 {

std::string cause() {
  std::vector<std::string> messages;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t * entry, void * data) -> herr_t {
        if (entry->desc && *entry->desc) static_cast<std::vector<std::string> *>(data)->push_back(entry->desc);
        return 0;
      },
      &messages);
  H5Eclear2(H5E_DEFAULT);
  std::string text;  // the two innermost messages say what and why
  for (size_t i = messages.size() > 2 ? messages.size() - 2 : 0; i < messages.size(); ++i)
    text += (text.empty() ? "" : ": ") + messages[i];
  return text.empty() ? "no HDF5 error message" : text;
}

std::mutex & library_lock() {
  static std::mutex lock;
  return lock;
}

void silence() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {

void write_attribute(hid_t object, const char * name, hid_t type, const void * value, const std::string & path) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attribute(H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  KOSMOS_H5_CHECK(attribute.valid() ? 0 : -1, path, ": creating attribute ", name);
  KOSMOS_H5_CHECK(H5Awrite(attribute, type, value), path, ": writing attribute ", name);
}

Handle open_attribute(hid_t object, const char * name, const std::string & path) {
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  KOSMOS_H5_CHECK(attribute.valid() ? 0 : -1, path, ": no attribute '", name,
                  "'; the file was not written by kosmos, or it is damaged");
  return attribute;
}

template <typename Number>
Number read_number(hid_t object, const char * name, hid_t type, const std::string & path) {
  Handle attribute = open_attribute(object, name, path);
  Number value{};
  KOSMOS_H5_CHECK(H5Aread(attribute, type, &value), path, ": reading attribute ", name);
  return value;
}

}  // namespace

void write_string_attribute(hid_t object, const char * name, const std::string & value, const std::string & path) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  KOSMOS_H5_CHECK(H5Tset_size(type, std::max<size_t>(1, value.size())), path, ": string type for attribute ", name);
  const std::string stored = value.empty() ? std::string(1, '\0') : value;
  write_attribute(object, name, type, stored.data(), path);
}

void write_int_attribute(hid_t object, const char * name, int64_t value, const std::string & path) {
  write_attribute(object, name, H5T_NATIVE_INT64, &value, path);
}

void write_double_attribute(hid_t object, const char * name, double value, const std::string & path) {
  write_attribute(object, name, H5T_NATIVE_DOUBLE, &value, path);
}

std::string read_string_attribute(hid_t object, const char * name, const std::string & path) {
  Handle attribute = open_attribute(object, name, path);
  Handle type(H5Aget_type(attribute), H5Tclose);
  KOSMOS_CHECK(H5Tget_class(type) == H5T_STRING && !H5Tis_variable_str(type), path, ": attribute '", name,
               "' is not a fixed-length string; the file was not written by kosmos");
  std::string value(H5Tget_size(type), '\0');
  KOSMOS_H5_CHECK(H5Aread(attribute, type, value.data()), path, ": reading attribute ", name);
  value.erase(std::find(value.begin(), value.end(), '\0'), value.end());
  return value;
}

int64_t read_int_attribute(hid_t object, const char * name, const std::string & path) {
  return read_number<int64_t>(object, name, H5T_NATIVE_INT64, path);
}

double read_double_attribute(hid_t object, const char * name, const std::string & path) {
  return read_number<double>(object, name, H5T_NATIVE_DOUBLE, path);
}

}  // namespace kosmos::io::hdf5
