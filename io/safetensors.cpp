// safetensors.cpp: a validating safetensors reader (memory-mapped) and a writer for f32 tensors.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backends/error.h"
#include "backends/tensor.h"

namespace kosmos::io {
namespace {

using Json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // the format's own limit is 100 MB

StoredType parse_dtype(const std::string & path, const std::string & name, const std::string & text) {
  if (text == "F32") return StoredType::kF32;
  if (text == "BF16") return StoredType::kBF16;
  if (text == "F16") return StoredType::kF16;
  if (text == "I32") return StoredType::kI32;
  if (text == "I64") return StoredType::kI64;
  KOSMOS_FAIL(path, ": tensor '", name, "' has dtype ", text, "; kosmos reads F32, BF16, F16, I32 and I64 (convert "
              "the file, e.g. with safetensors in Python)");
}

const char * dtype_text(StoredType dtype) {
  switch (dtype) {
    case StoredType::kF32: return "F32";
    case StoredType::kBF16: return "BF16";
    case StoredType::kF16: return "F16";
    case StoredType::kI32: return "I32";
    case StoredType::kI64: return "I64";
  }
  KOSMOS_FAIL("safetensors: unknown dtype ", static_cast<int>(dtype));
}

size_t stored_size(StoredType dtype) {
  switch (dtype) {
    case StoredType::kF32: return 4;
    case StoredType::kBF16: return 2;
    case StoredType::kF16: return 2;
    case StoredType::kI32: return 4;
    case StoredType::kI64: return 8;
  }
  KOSMOS_FAIL("safetensors: unknown dtype ", static_cast<int>(dtype));
}

}  // namespace

int64_t SafetensorsEntry::numel() const {
  int64_t count = 1;
  for (int64_t size : shape) count *= size;
  return count;
}

SafetensorsFile::SafetensorsFile(const std::string & path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  KOSMOS_CHECK(fd >= 0, path, ": cannot open (", std::strerror(errno), "); check the path");
  struct stat info {};
  if (::fstat(fd, &info) != 0 || info.st_size < 0) {
    ::close(fd);
    KOSMOS_FAIL(path, ": cannot read its size (", std::strerror(errno), ")");
  }
  size_ = static_cast<size_t>(info.st_size);
  if (size_ > 0) {
    void * mapped = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    KOSMOS_CHECK(mapped != MAP_FAILED, path, ": cannot map ", size_, " bytes (", std::strerror(errno), ")");
    mapped_ = static_cast<const unsigned char *>(mapped);
  } else {
    ::close(fd);
  }
  try {
    KOSMOS_CHECK(size_ >= 8, path, ": ", size_, " bytes is too short for a safetensors file (8-byte header length "
                 "first); the file is truncated or not safetensors");
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | mapped_[i];
    KOSMOS_CHECK(header_bytes <= kMaxHeaderBytes && header_bytes <= size_ - 8, path, ": the header claims ",
                 header_bytes, " bytes but the file has ", size_ - 8, " after the length field; the file is "
                 "truncated or not safetensors");
    data_start_ = 8 + header_bytes;
    Json header;
    try {
      header = Json::parse(mapped_ + 8, mapped_ + 8 + header_bytes);
    } catch (const Json::exception & error) {
      KOSMOS_FAIL(path, ": the header is not valid JSON (", error.what(), ")");
    }
    KOSMOS_CHECK(header.is_object(), path, ": the header must be a JSON object of tensors");
    const uint64_t data_bytes = size_ - data_start_;
    for (const auto & item : header.items()) {
      if (item.key() == "__metadata__") {  // string -> string by the format; anything else is no metadata of ours
        if (item.value().is_object())
          for (const auto & field : item.value().items())
            if (field.value().is_string()) metadata_[field.key()] = field.value().get<std::string>();
        continue;
      }
      const std::string & name = item.key();
      const Json & value = item.value();
      SafetensorsEntry entry;
      entry.name = name;
      try {
        entry.dtype = parse_dtype(path, name, value.at("dtype").get<std::string>());
        entry.shape = value.at("shape").get<std::vector<int64_t>>();
        const auto offsets = value.at("data_offsets").get<std::vector<uint64_t>>();
        KOSMOS_CHECK(offsets.size() == 2, path, ": tensor '", name, "' data_offsets must be [begin, end]");
        entry.begin = offsets[0];
        entry.end = offsets[1];
      } catch (const Json::exception & error) {
        KOSMOS_FAIL(path, ": tensor '", name, "' has a malformed header entry ", value.dump(), " (", error.what(), ")");
      }
      uint64_t elements = 1;
      for (int64_t size : entry.shape) {
        KOSMOS_CHECK(size >= 0 && size < (int64_t{1} << 40), path, ": tensor '", name, "' has an impossible dim ", size);
        KOSMOS_CHECK(!__builtin_mul_overflow(elements, static_cast<uint64_t>(size), &elements) &&
                         elements <= (uint64_t{1} << 48),
                     path, ": tensor '", name, "' has a shape whose element count overflows; the header lies");
      }
      KOSMOS_CHECK(entry.begin <= entry.end && entry.end <= data_bytes, path, ": tensor '", name, "' claims bytes [",
                   entry.begin, ", ", entry.end, ") but the data section has ", data_bytes,
                   " bytes; the file is truncated or its header lies");
      const uint64_t expected = static_cast<uint64_t>(entry.numel()) * stored_size(entry.dtype);
      KOSMOS_CHECK(entry.end - entry.begin == expected, path, ": tensor '", name, "' is ", dtype_text(entry.dtype),
                   " shape ", describe_dims(entry.shape), " = ", expected, " bytes but its data_offsets span ", entry.end - entry.begin);
      entries_.emplace(name, entry);
    }
    std::vector<const SafetensorsEntry *> by_offset;
    for (const auto & [name, entry] : entries_) by_offset.push_back(&entry);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const SafetensorsEntry * a, const SafetensorsEntry * b) {
                return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;  // empty ones first
              });
    for (size_t i = 1; i < by_offset.size(); ++i)
      KOSMOS_CHECK(by_offset[i]->begin >= by_offset[i - 1]->end || by_offset[i - 1]->begin == by_offset[i - 1]->end,
                   path, ": tensors '", by_offset[i - 1]->name, "' and '", by_offset[i]->name,
                   "' overlap in the data section; the header lies");
  } catch (...) {
    if (mapped_) ::munmap(const_cast<unsigned char *>(mapped_), size_);
    mapped_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_) ::munmap(const_cast<unsigned char *>(mapped_), size_);
}

const SafetensorsEntry & SafetensorsFile::entry(const std::string & name) const {
  const auto found = entries_.find(name);
  KOSMOS_CHECK(found != entries_.end(), path_, ": has no tensor named '", name, "'");
  return found->second;
}

std::vector<float> SafetensorsFile::read_f32(const std::string & name) const {
  const SafetensorsEntry & e = entry(name);
  const unsigned char * data = mapped_ + data_start_ + e.begin;
  std::vector<float> values(static_cast<size_t>(e.numel()));
  for (size_t i = 0; i < values.size(); ++i) {
    switch (e.dtype) {  // little-endian on disk, as on every platform kosmos builds for
      case StoredType::kF32: std::memcpy(&values[i], data + 4 * i, 4); break;
      case StoredType::kBF16: {
        uint16_t half;
        std::memcpy(&half, data + 2 * i, 2);
        values[i] = bf16_to_float(half);
        break;
      }
      case StoredType::kF16: {
        uint16_t half;
        std::memcpy(&half, data + 2 * i, 2);
        values[i] = f16_to_float(half);
        break;
      }
      case StoredType::kI32: {
        int32_t integer;
        std::memcpy(&integer, data + 4 * i, 4);
        values[i] = static_cast<float>(integer);
        break;
      }
      case StoredType::kI64: {
        int64_t integer;
        std::memcpy(&integer, data + 8 * i, 8);
        values[i] = static_cast<float>(integer);
        break;
      }
    }
  }
  return values;
}

std::string SafetensorsFile::metadata(const std::string & key) const {
  const auto found = metadata_.find(key);
  return found == metadata_.end() ? std::string() : found->second;
}

void write_safetensors(const std::string & path, const std::map<std::string, SafetensorsTensor> & tensors,
                       const std::map<std::string, std::string> & metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto & [name, tensor] : tensors) {
    const uint64_t bytes = tensor.values.size() * 4;
    header[name] = {{"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';  // the format pads the header to 8-byte alignment with spaces
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  KOSMOS_CHECK(out, path, ": cannot open for writing");
  const uint64_t length = text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((length >> (8 * i)) & 0xff));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto & [name, tensor] : tensors)
    out.write(reinterpret_cast<const char *>(tensor.values.data()), static_cast<std::streamsize>(tensor.values.size() * 4));
  KOSMOS_CHECK(out.good(), path, ": write failed (disk full?)");
}

}  // namespace kosmos::io
