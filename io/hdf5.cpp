// hdf5.cpp: error causes and scalar attributes over HDF5's C API (hdf5.h).
#include "io/hdf5.h"

#include <algorithm>
#include <initializer_list>

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

// An attribute that must hold one value of a type class in `classes` ("an integer", say, in `what`), and its type.
struct OpenedAttribute {
  Handle attribute, type;
};
OpenedAttribute open_attribute(hid_t object, const char * name, std::initializer_list<H5T_class_t> classes, const char * what,
                      const std::string & path) {
  KOSMOS_CHECK(H5Aexists(object, name) > 0, path, ": no attribute '", name,
               "'; the file was not written by kosmos, or it is damaged");
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  KOSMOS_H5_CHECK(attribute.valid() ? 0 : -1, path, ": opening attribute '", name, "'");
  Handle space(H5Aget_space(attribute), H5Sclose);
  Handle type(H5Aget_type(attribute), H5Tclose);
  const H5T_class_t type_class = H5Tget_class(type);
  KOSMOS_CHECK(H5Sget_simple_extent_npoints(space) == 1 &&
                   std::find(classes.begin(), classes.end(), type_class) != classes.end(),
               path, ": attribute '", name, "' is not ", what,
               "; the file was not written by kosmos, or it is damaged");
  return {std::move(attribute), std::move(type)};
}

template <typename Number>
Number read_number(hid_t object, const char * name, hid_t type, std::initializer_list<H5T_class_t> classes,
                   const char * what, const std::string & path) {
  const OpenedAttribute opened = open_attribute(object, name, classes, what, path);
  Number value{};
  KOSMOS_H5_CHECK(H5Aread(opened.attribute, type, &value), path, ": reading attribute ", name, " as ", what);
  return value;
}

// The longest string attribute read (a run's options as TOML are a few KiB).
constexpr size_t kMaxStringAttribute = size_t{64} << 20;

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
  const OpenedAttribute opened = open_attribute(object, name, {H5T_STRING}, "one string", path);
  const size_t size = H5Tget_size(opened.type);
  KOSMOS_CHECK(H5Tis_variable_str(opened.type) == 0 && size > 0 && size <= kMaxStringAttribute, path, ": attribute '", name,
               "' is not a fixed-length string of at most ", kMaxStringAttribute,
               " bytes; the file was not written by kosmos, or it is damaged");
  std::string value(size, '\0');
  KOSMOS_H5_CHECK(H5Aread(opened.attribute, opened.type, value.data()), path, ": reading attribute ", name);
  value.erase(std::find(value.begin(), value.end(), '\0'), value.end());
  return value;
}

int64_t read_int_attribute(hid_t object, const char * name, const std::string & path) {
  return read_number<int64_t>(object, name, H5T_NATIVE_INT64, {H5T_INTEGER}, "one integer", path);
}

double read_double_attribute(hid_t object, const char * name, const std::string & path) {
  return read_number<double>(object, name, H5T_NATIVE_DOUBLE, {H5T_FLOAT, H5T_INTEGER}, "one number", path);
}

}  // namespace kosmos::io::hdf5
