// checkpoint.cpp: parallel HDF5 reading and writing of the training state (layout in checkpoint.h). Each rank's
// part of a tensor is a few hyperslabs of the logical tensor, and the same blocks of the rank's local part in host
// memory (ParameterMemory: the parameter whole, or its tp shard; of the moments its ZeRO-1 slice).
#include "io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>

#include "backends/error.h"
#include "backends/tensor.h"
#include "io/hdf5.h"
#include "parallel/mpi_handle.h"

#ifndef H5_HAVE_PARALLEL
#error "kosmos needs parallel HDF5: install libhdf5-openmpi-dev"
#endif

namespace kosmos::io {
namespace {

using hdf5::Handle;
using Dims = std::vector<hsize_t>;

Dims dims_of(const std::vector<int64_t> & shape) {
  Dims dims;
  for (int64_t size : shape) dims.push_back(static_cast<hsize_t>(size));
  if (dims.empty()) dims.push_back(1);
  return dims;
}

struct Hyperslab {
  Dims start, count;
};

// The flat range [lo, hi) of the sub-tensor shape[dim..] under the fixed leading indices `prefix`, as hyperslabs:
// a partial first row, the whole rows between, a partial last row (each partial row recursively).
void flat_range_hyperslabs(const Dims & shape, size_t dim, Dims prefix, hsize_t lo, hsize_t hi,
                           std::vector<Hyperslab> & out) {
  if (lo >= hi) return;
  if (dim + 1 == shape.size()) {
    Hyperslab slab{prefix, Dims(prefix.size(), 1)};
    slab.start.push_back(lo);
    slab.count.push_back(hi - lo);
    out.push_back(slab);
    return;
  }
  hsize_t row = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d) row *= shape[d];
  const hsize_t first_whole = (lo + row - 1) / row, end_whole = hi / row;
  if (first_whole > end_whole) {  // inside one row
    Dims inner = prefix;
    inner.push_back(lo / row);
    flat_range_hyperslabs(shape, dim + 1, inner, lo % row, lo % row + (hi - lo), out);
    return;
  }
  if (lo % row != 0) {
    Dims inner = prefix;
    inner.push_back(lo / row);
    flat_range_hyperslabs(shape, dim + 1, inner, lo % row, row, out);
  }
  if (end_whole > first_whole) {
    Hyperslab slab{prefix, Dims(prefix.size(), 1)};
    slab.start.push_back(first_whole);
    slab.count.push_back(end_whole - first_whole);
    for (size_t d = dim + 1; d < shape.size(); ++d) {
      slab.start.push_back(0);
      slab.count.push_back(shape[d]);
    }
    out.push_back(slab);
  }
  if (hi % row != 0) {
    Dims inner = prefix;
    inner.push_back(end_whole);
    flat_range_hyperslabs(shape, dim + 1, inner, 0, hi % row, out);
  }
}

// A part (rows x columns of the [shape[0], rest] matrix, within a flat range) as hyperslabs of the N-d tensor.
std::vector<Hyperslab> part_hyperslabs(const model::ParameterPart & part, const Dims & shape) {
  std::vector<Hyperslab> slabs;
  if (part.empty()) return slabs;
  const int64_t columns = static_cast<int64_t>(shape.size() == 1 ? 1 : [&] {
    hsize_t rest = 1;
    for (size_t d = 1; d < shape.size(); ++d) rest *= shape[d];
    return rest;
  }());
  // Rows whose selected columns lie wholly inside the flat range, then the (at most two) rows it cuts.
  const auto floor_div = [](int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
  const int64_t whole_begin = std::max(part.row_begin, -floor_div(-(part.flat_begin - part.column_begin), columns));
  const int64_t whole_end = std::min(part.row_end, floor_div(part.flat_end - part.column_end, columns) + 1);
  const auto add_block = [&](int64_t row_begin, int64_t row_end, int64_t column_begin, int64_t column_end) {
    if (row_begin >= row_end || column_begin >= column_end) return;
    if (shape.size() == 1) {
      slabs.push_back({{static_cast<hsize_t>(row_begin)}, {static_cast<hsize_t>(row_end - row_begin)}});
    } else if (shape.size() == 2 || (column_begin == 0 && column_end == columns)) {
      Hyperslab slab{{static_cast<hsize_t>(row_begin)}, {static_cast<hsize_t>(row_end - row_begin)}};
      if (shape.size() == 2) {
        slab.start.push_back(static_cast<hsize_t>(column_begin));
        slab.count.push_back(static_cast<hsize_t>(column_end - column_begin));
      } else {
        for (size_t d = 1; d < shape.size(); ++d) {
          slab.start.push_back(0);
          slab.count.push_back(shape[d]);
        }
      }
      slabs.push_back(slab);
    } else {  // one row's partial range of an N-d (N > 2) tensor
      flat_range_hyperslabs(shape, 1, {static_cast<hsize_t>(row_begin)}, static_cast<hsize_t>(column_begin),
                            static_cast<hsize_t>(column_end), slabs);
    }
  };
  if (whole_begin < whole_end) add_block(whole_begin, whole_end, part.column_begin, part.column_end);
  std::set<int64_t> cut_rows{part.flat_begin / columns, (part.flat_end - 1) / columns};
  for (int64_t row : cut_rows) {
    if (row < part.row_begin || row >= part.row_end || (row >= whole_begin && row < whole_end)) continue;
    add_block(row, row + 1, std::max(part.column_begin, part.flat_begin - row * columns),
              std::min(part.column_end, part.flat_end - row * columns));
  }
  return slabs;
}

void select(hid_t space, const std::vector<Hyperslab> & slabs, const std::string & what) {
  if (slabs.empty()) {
    KOSMOS_H5_CHECK(H5Sselect_none(space), what, ": selecting nothing");
    return;
  }
  for (size_t i = 0; i < slabs.size(); ++i)
    KOSMOS_H5_CHECK(H5Sselect_hyperslab(space, i == 0 ? H5S_SELECT_SET : H5S_SELECT_OR, slabs[i].start.data(),
                                        nullptr, slabs[i].count.data(), nullptr),
                    what, ": selecting this rank's part");
}

// One slot of the flat buffers as host memory: the buffer itself where the host may touch it, else a copy.
class HostSlot {
 public:
  HostSlot(const model::ModelState & state, model::ModelState::Slot slot, Stream & stream, bool fetch)
      : state_(state), slot_(slot), device_view_(state.flat(slot)) {
    if (state.device().host_accessible()) {
      data_ = device_view_.as<float>();
      return;
    }
    staged_.resize(static_cast<size_t>(device_view_.numel()));
    data_ = staged_.data();
    if (fetch) {
      TensorView target = device_view_;
      target.data = data_;
      state.device().copy(target, device_view_, stream);
      stream.synchronize();
    }
  }
  float * data() const { return data_; }
  int64_t size() const { return device_view_.numel(); }
  // Sends a staged copy back to the device (nothing to do where the host wrote the buffer itself).
  void store(Stream & stream) {
    if (staged_.empty()) return;
    TensorView source = device_view_;
    source.data = data_;
    state_.device().copy(device_view_, source, stream);
    stream.synchronize();
  }

 private:
  const model::ModelState & state_;
  model::ModelState::Slot slot_;
  TensorView device_view_;
  std::vector<float> staged_;
  float * data_ = nullptr;
};

// What one rank holds of a parameter in a staged slot (its local part, ParameterSpec::local: all of it, or its
// tensor-parallel rows or columns) as host memory of the local shape: the slot's own memory where it holds every
// local element; else a copy holding the elements it has and zeros for the rest (the moments of a parameter that
// this rank's ZeRO-1 slice cuts, or of a frozen one, which has none). A part never selects an element the slot lacks.
class ParameterMemory {
 public:
  // Where the parameter's local elements lie in the slot, [first, first + local_numel), and the part of that the
  // slot holds.
  struct Location {
    int64_t first = 0, held_begin = 0, held_end = 0;
    bool holds_any() const { return held_begin < held_end; }
  };
  static Location locate(const HostSlot & host, const model::ModelState & state, model::ModelState::Slot slot,
                         const model::ParameterSpec & spec) {
    if (!spec.held) return {};  // another pipeline stage's
    const int64_t first = state.position(slot, spec.offset);
    return {first, std::clamp<int64_t>(first, 0, host.size()),
            std::clamp<int64_t>(first + spec.local_numel, 0, host.size())};
  }
  ParameterMemory(const HostSlot & host, const model::ModelState & state, model::ModelState::Slot slot,
                  const model::ParameterSpec & spec)
      : host_(host), location_(locate(host, state, slot, spec)) {
    if (location_.held_end - location_.held_begin == spec.local_numel) {
      data_ = host.data() + location_.first;
      return;
    }
    copy_.assign(static_cast<size_t>(spec.local_numel), 0.0f);
    std::copy(host.data() + location_.held_begin, host.data() + location_.held_end,
              copy_.data() + (location_.held_begin - location_.first));
    data_ = copy_.data();
  }
  float * data() const { return data_; }
  // After a read into data(): the elements the slot holds, back into it (in place already, unless copied).
  void store() const {
    if (copy_.empty()) return;
    const int64_t skipped = location_.held_begin - location_.first;  // elements before the held ones
    std::copy(copy_.data() + skipped, copy_.data() + skipped + (location_.held_end - location_.held_begin),
              host_.data() + location_.held_begin);
  }

 private:
  const HostSlot & host_;
  Location location_;
  std::vector<float> copy_;
  float * data_ = nullptr;
};

// The dataspace of a rank's local part of `spec` in host memory (ParameterMemory), with the elements `slabs` (of
// the whole parameter, inside spec.local) select: the same blocks, moved by the part's first row and column.
Handle local_memory_space(const model::ParameterSpec & spec, std::vector<Hyperslab> slabs, const std::string & what) {
  const Dims dims = dims_of(spec.local_shape);
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  for (Hyperslab & slab : slabs) {
    slab.start[0] -= static_cast<hsize_t>(spec.local.row_begin);
    if (dims.size() == 2) slab.start[1] -= static_cast<hsize_t>(spec.local.column_begin);
  }
  select(space, slabs, what);
  return space;
}

struct SlotPlace {
  model::ModelState::Slot slot;
  const char * group;
};
constexpr SlotPlace kSlots[] = {{model::ModelState::Slot::kValues, "/params"},
                                {model::ModelState::Slot::kMoment1, "/optim/m"},
                                {model::ModelState::Slot::kMoment2, "/optim/v"}};

Handle open_parallel(const std::string & path, parallel::Comm & world, bool create) {
  Handle access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  KOSMOS_H5_CHECK(H5Pset_fapl_mpio(access, parallel::mpi_handle(world), MPI_INFO_NULL), path,
                  ": setting up MPI-IO");
  if (create) {
    Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access), H5Fclose);
    KOSMOS_H5_CHECK(file.valid() ? 0 : -1, "checkpoint ", path,
                    ": cannot create it; check that the folder exists, is writable and has space");
    return file;
  }
  KOSMOS_CHECK(std::filesystem::is_regular_file(path), "checkpoint ", path,
               ": no such file; check the path (or use --resume auto with --save-dir)");
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, access), H5Fclose);
  KOSMOS_H5_CHECK(file.valid() ? 0 : -1, "checkpoint ", path,
                  ": cannot open it as HDF5; it is truncated or not a checkpoint (use an earlier one)");
  return file;
}

}  // namespace

void write_checkpoint(const std::string & path, const model::ModelState & state,
                      const std::vector<model::ParameterPart> & parts, const CheckpointInfo & info,
                      parallel::Comm & world, Stream & stream) {
  const std::vector<model::ParameterSpec> & specs = state.table().specs();
  KOSMOS_CHECK(parts.size() == specs.size(), "write_checkpoint: ", parts.size(), " parts for ", specs.size(),
               " parameters (internal error)");
  const std::lock_guard<std::mutex> hold(hdf5::library_lock());
  hdf5::silence();
  Handle file = open_parallel(path, world, true);
  for (const char * group : {"/params", "/optim", "/optim/m", "/optim/v", "/meta"}) {
    Handle made(H5Gcreate2(file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    KOSMOS_H5_CHECK(made.valid() ? 0 : -1, path, ": creating group ", group);
  }
  Handle transfer(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  KOSMOS_H5_CHECK(H5Pset_dxpl_mpio(transfer, H5FD_MPIO_COLLECTIVE), path, ": collective transfer");
  // A frozen parameter has no AdamW moments: the file holds zeros for them (ParameterMemory), the moments it would
  // start from if a later run trained it.
  for (const SlotPlace & place : kSlots) {
    const HostSlot host(state, place.slot, stream, true);
    for (size_t i = 0; i < specs.size(); ++i) {
      const model::ParameterSpec & spec = specs[i];
      const std::string dataset = std::string(place.group) + "/" + spec.name;
      const Dims dims = dims_of(spec.shape);
      Handle file_space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
      // Chunks of whole rows, about 1 MiB each, each with a Fletcher32 checksum.
      Dims chunk = dims;
      const hsize_t row = static_cast<hsize_t>(spec.numel) / dims[0];
      chunk[0] = std::clamp<hsize_t>((hsize_t{1} << 18) / std::max<hsize_t>(1, row), 1, dims[0]);
      Handle creation(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
      KOSMOS_H5_CHECK(H5Pset_chunk(creation, static_cast<int>(chunk.size()), chunk.data()), path, ": chunking ",
                      dataset);
      KOSMOS_H5_CHECK(H5Pset_fletcher32(creation), path, ": checksum filter on ", dataset);
      KOSMOS_H5_CHECK(H5Pset_fill_time(creation, H5D_FILL_TIME_NEVER), path, ": fill time of ", dataset);
      Handle data(H5Dcreate2(file, dataset.c_str(), H5T_IEEE_F32LE, file_space, H5P_DEFAULT, creation, H5P_DEFAULT),
                  H5Dclose);
      KOSMOS_H5_CHECK(data.valid() ? 0 : -1, path, ": creating dataset ", dataset);
      const std::vector<Hyperslab> slabs = part_hyperslabs(parts[i], dims);
      select(file_space, slabs, dataset);
      const Handle memory_space = local_memory_space(spec, slabs, dataset);
      // A rank with none of this parameter to write passes any valid buffer: HDF5 reads none of it.
      std::optional<ParameterMemory> memory;
      const float * source = parts[i].empty() ? host.data() : memory.emplace(host, state, place.slot, spec).data();
      KOSMOS_H5_CHECK(H5Dwrite(data, H5T_NATIVE_FLOAT, memory_space, file_space, transfer, source), path,
                      ": writing dataset ", dataset);
    }
  }
  Handle meta(H5Gopen2(file, "/meta", H5P_DEFAULT), H5Gclose);
  hdf5::write_int_attribute(meta, "step", info.step, path);
  hdf5::write_int_attribute(meta, "seed", static_cast<int64_t>(info.seed), path);
  hdf5::write_double_attribute(meta, "loss_scale", info.loss_scale, path);
  hdf5::write_int_attribute(meta, "loss_scale_finite_steps", info.loss_scale_finite_steps, path);
  hdf5::write_string_attribute(meta, "data_position", info.data_position, path);
  hdf5::write_string_attribute(meta, "model_config", info.model_config, path);
  hdf5::write_string_attribute(meta, "layout", info.layout, path);
  hdf5::write_string_attribute(meta, "optimizer", info.optimizer, path);
  hdf5::write_string_attribute(meta, "version", info.version, path);
  hdf5::write_string_attribute(meta, "run_config", info.run_config, path);
  KOSMOS_H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL), path, ": flushing the checkpoint");
}

CheckpointInfo read_checkpoint(const std::string & path, model::ModelState & state, bool with_moments,
                               parallel::Comm & world, Stream & stream) {
  const std::lock_guard<std::mutex> hold(hdf5::library_lock());
  hdf5::silence();
  Handle file = open_parallel(path, world, false);
  const CheckpointInfo info = read_checkpoint_meta(file, path);
  const std::vector<model::ParameterSpec> & specs = state.table().specs();
  for (const SlotPlace & place : kSlots) {
    if (!with_moments && place.slot != model::ModelState::Slot::kValues) continue;
    check_checkpoint_tensors(file, path, place.group, specs, info);
    HostSlot host(state, place.slot, stream, false);
    for (const model::ParameterSpec & spec : specs) {
      // Nothing to read for another stage's parameter, the moments of a frozen one, or of one outside this rank's
      // ZeRO-1 slice.
      if (!ParameterMemory::locate(host, state, place.slot, spec).holds_any()) continue;
      const ParameterMemory memory(host, state, place.slot, spec);
      const std::string dataset = std::string(place.group) + "/" + spec.name;
      Handle data(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), H5Dclose);
      KOSMOS_H5_CHECK(data.valid() ? 0 : -1, path, ": opening ", dataset);
      // This rank's rows or columns of the file's tensor (all of a replicated one) into its local memory.
      const std::vector<Hyperslab> slabs = part_hyperslabs(spec.local, dims_of(spec.shape));
      Handle file_space(H5Dget_space(data), H5Sclose);
      KOSMOS_H5_CHECK(file_space.valid() ? 0 : -1, path, ": the dataspace of ", dataset);
      select(file_space, slabs, dataset);
      const Handle memory_space = local_memory_space(spec, slabs, dataset);
      KOSMOS_H5_CHECK(H5Dread(data, H5T_NATIVE_FLOAT, memory_space, file_space, H5P_DEFAULT, memory.data()),
                      "checkpoint ", path, ": reading ", dataset,
                      " failed; the file is damaged (a checksum mismatch means flipped bits): resume from an earlier "
                      "checkpoint");
      memory.store();
    }
    host.store(stream);
  }
  return info;
}

std::pair<std::string, CheckpointInfo> read_newest_checkpoint(const std::vector<std::string> & candidates,
                                                              model::ModelState & state, bool with_moments,
                                                              parallel::Comm & world, Stream & stream,
                                                              std::vector<std::string> & warnings) {
  KOSMOS_CHECK(!candidates.empty(), "read_newest_checkpoint: no candidates (internal error)");
  std::string newest_error;
  for (const std::string & path : candidates) {
    CheckpointInfo info;
    std::string error;
    try {
      info = read_checkpoint(path, state, with_moments, world, stream);
    } catch (const Error & failure) {
      error = failure.what();
    }
    // Each rank reads the values of its stage's parameters and under ZeRO-1 only the moments of its own slice: a
    // damaged dataset may fail some ranks alone. The ranks agree, so that all take this file or all fall back to
    // the one before it.
    error = parallel::first_error_over(world, error, stream);
    if (error.empty()) return {path, info};
    if (newest_error.empty()) newest_error = error;
    warnings.push_back("checkpoint " + path + " is damaged, trying the one before it: " + error);
  }
  KOSMOS_FAIL(newest_error, candidates.size() > 1 ? " (and every older checkpoint is damaged too)" : "");
}

CheckpointInfo read_checkpoint_info(const std::string & path) {
  const std::lock_guard<std::mutex> hold(hdf5::library_lock());
  hdf5::silence();
  KOSMOS_CHECK(std::filesystem::is_regular_file(path), "checkpoint ", path, ": no such file; check the path");
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  KOSMOS_H5_CHECK(file.valid() ? 0 : -1, "checkpoint ", path,
                  ": cannot open it as HDF5; it is truncated or not a checkpoint (use an earlier one)");
  return read_checkpoint_meta(file, path);
}

}  // namespace kosmos::io
