// cpu_context.h: what the CPU kernels share: the oneDNN engine and stream, the cache of oneDNN primitives keyed by
// (op, shapes, strides, dtypes, attributes), reusable scratch memory, and tables kept between calls. One per
// CpuDevice; nothing global.
#pragma once

#include <dnnl.hpp>

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backends/tensor.h"

namespace kosmos::cpu {

// A created oneDNN primitive with one memory object per argument; run() points them at this call's data.
struct CachedPrimitive {
  dnnl::primitive primitive;
  std::unordered_map<int, dnnl::memory> args;  // DNNL_ARG_* -> memory with the primitive's descriptor
};

class CpuContext {
 public:
  CpuContext();

  dnnl::engine & engine() { return engine_; }
  dnnl::stream & stream() { return stream_; }

  // The primitive cached under `key`, made by make() (returning a CachedPrimitive) on first use.
  template <typename Make>
  CachedPrimitive & primitive(const std::string & key, Make && make) {
    auto found = primitives_.find(key);
    if (found == primitives_.end()) found = primitives_.emplace(key, make()).first;
    return found->second;
  }
  // Executes a cached primitive with the given data pointers (DNNL_ARG_* -> pointer) and waits for it.
  void execute(CachedPrimitive & cached, std::initializer_list<std::pair<int, void *>> data);

  // `count` floats of scratch in slot `slot` (slots let one op hold several at once); valid until the next call
  // with the same slot.
  float * scratch(int slot, size_t count);

  // `count` floats of a table that depends only on `key` (xPos's rotations, say), held in slot `slot` and made
  // again by fill(float *) only when the slot last held another key: layers that share a table make it once.
  template <typename Fill>
  const float * table(size_t slot, const std::string & key, size_t count, Fill && fill) {
    if (tables_.size() <= slot) tables_.resize(slot + 1);
    auto & [held_key, values] = tables_[slot];
    if (held_key != key || values.size() != count) {
      held_key.clear();  // a fill that throws leaves the slot empty, not holding a half-made table
      values.assign(count, 0.0f);
      fill(values.data());
      held_key = key;
    }
    return values.data();
  }

  size_t cached_primitive_count() const { return primitives_.size(); }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::unordered_map<std::string, CachedPrimitive> primitives_;
  std::vector<std::vector<float>> scratch_;
  std::vector<std::pair<std::string, std::vector<float>>> tables_;  // (key, values) per table slot
};

// oneDNN's view of a TensorView: same dims and strides, element type mapped.
dnnl::memory::desc memory_desc(const TensorView & view);
dnnl::memory::data_type dnnl_type(DType dtype);
// A cache key fragment: dtype, dims and strides.
std::string key_of(const TensorView & view);

}  // namespace kosmos::cpu
