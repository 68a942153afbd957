// safetensors.h: reading (and writing) the safetensors format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw tensor bytes.
// The header is hostile input: its length, every offset range against the data section and against
// dtype x shape, and overlaps between tensors are checked, and each failure names the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/dtype.h"

namespace kosmos::io {

// The element types a file may hold; all read as f32 (integers exactly while they fit in 24 bits).
enum class StoredType : uint8_t { kF32, kBF16, kF16, kI32, kI64 };

struct SafetensorsEntry {
  std::string name;
  StoredType dtype = StoredType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;    // byte range within the data section
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string & path);  // maps the file and validates the whole header
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile &) = delete;
  SafetensorsFile & operator=(const SafetensorsFile &) = delete;

  const std::string & path() const { return path_; }
  const std::map<std::string, SafetensorsEntry> & entries() const { return entries_; }
  bool contains(const std::string & name) const { return entries_.count(name) != 0; }
  const SafetensorsEntry & entry(const std::string & name) const;
  // The tensor converted to f32, in row-major order.
  std::vector<float> read_f32(const std::string & name) const;
  // The header's "__metadata__" entry `key` (a string), or "" where there is none (other values are left alone).
  std::string metadata(const std::string & key) const;

 private:
  std::string path_;
  const unsigned char * mapped_ = nullptr;
  size_t size_ = 0;
  uint64_t data_start_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes f32 tensors (name -> shape and values) as a safetensors file, names in sorted order, with `metadata`
// (string -> string) as its "__metadata__" where there is any.
struct SafetensorsTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
void write_safetensors(const std::string & path, const std::map<std::string, SafetensorsTensor> & tensors,
                       const std::map<std::string, std::string> & metadata = {});

}  // namespace kosmos::io
