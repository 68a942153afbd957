// hdf5.h: small helpers over HDF5's C API for the checkpoint and data-shard files: an owning handle, errors that
// carry HDF5's own cause, and scalar attributes. HDF5 (Debian's parallel build) is not thread-safe: every entry
// point of kosmos that calls it (checkpoint reading and writing, data prepare, a loader's step) holds library_lock().
#pragma once

#include <hdf5.h>

#include <mutex>
#include <string>
#include <vector>

#include "backends/error.h"

namespace kosmos::io::hdf5 {

// HDF5's error stack, innermost causes last, as one line (and the stack cleared).
std::string cause();

#define KOSMOS_H5_CHECK(call, ...)                                                          \
  do {                                                                                      \
    if ((call) < 0) KOSMOS_FAIL(__VA_ARGS__, " (HDF5: ", ::kosmos::io::hdf5::cause(), ")"); \
  } while (0)

// An HDF5 identifier closed with its own close function.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(Handle && other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  Handle(const Handle &) = delete;
  Handle & operator=(const Handle &) = delete;
  Handle & operator=(Handle && other) noexcept {
    if (this != &other) {
      if (id_ >= 0) close_(id_);
      id_ = other.id_, close_ = other.close_;
      other.id_ = -1;
    }
    return *this;
  }
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// The one lock around the HDF5 library, whose state is process-wide (the data loader reads ahead on a thread).
std::mutex & library_lock();

// HDF5 prints its error stack to stderr by default; kosmos reports the cause in its own errors instead.
void silence();

// Scalar attributes of a group or dataset; `path` names the file in errors.
void write_string_attribute(hid_t object, const char * name, const std::string & value, const std::string & path);
void write_int_attribute(hid_t object, const char * name, int64_t value, const std::string & path);
void write_double_attribute(hid_t object, const char * name, double value, const std::string & path);
std::string read_string_attribute(hid_t object, const char * name, const std::string & path);
int64_t read_int_attribute(hid_t object, const char * name, const std::string & path);
double read_double_attribute(hid_t object, const char * name, const std::string & path);

}  // namespace kosmos::io::hdf5
