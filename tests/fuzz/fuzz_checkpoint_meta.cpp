// fuzz_checkpoint_meta.cpp: libFuzzer target for the checks a checkpoint passes before it is read
// (io/checkpoint_meta.cpp). The input is not the file's bytes (HDF5's own format parser is the library's, not ours)
// but a recipe for a well-formed HDF5 file, built in memory, whose content is hostile: /meta and its attributes
// present or not, of any type and extent (arrays, variable-length strings, NaN), JSON texts of any form, tensor
// groups holding datasets of other shapes, types and names, or groups in their place. Every file gives its metadata
// or a kosmos::Error, never a crash.
#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backends/error.h"
#include "io/checkpoint_meta.h"

namespace {

using kosmos::model::ParameterSpec;

// The model the files are checked against: a matrix, a vector and a scalar.
std::vector<ParameterSpec> fuzz_specs() {
  std::vector<ParameterSpec> specs(3);
  specs[0].name = "layer.weight", specs[0].shape = {3, 4};
  specs[1].name = "layer.bias", specs[1].shape = {5};
  specs[2].name = "scale", specs[2].shape = {};
  return specs;
}

void write_attribute(hid_t object, const char * name, hid_t type, hid_t space, const void * value) {
  const hid_t attribute = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  if (attribute < 0) return;
  H5Awrite(attribute, type, value);
  H5Aclose(attribute);
}

// A JSON text the checks will parse: a template of the expected form with fuzzed pieces, or any text.
std::string json_text(FuzzedDataProvider & input) {
  const std::string number = input.PickValueInArray<std::string>(
      {std::to_string(input.ConsumeIntegral<int64_t>()), "-1", "1.5", "\"7\"", "null", "[]", "{}", "1e400"});
  switch (input.ConsumeIntegralInRange(0, 3)) {
    case 0: return R"({"synthetic": {"next_sample": )" + number + "}}";
    case 1:
      return R"({"dataset": {"next_sample": )" + number + R"(, "next_image": 0, "taken": {")" +
             input.ConsumeRandomLengthString(8) + "\": " + number + "}}}";
    case 2: return "{\"" + input.ConsumeRandomLengthString(8) + "\": " + number + "}";
    default: return input.ConsumeRandomLengthString(512);
  }
}

// One attribute of any kind: absent, an integer, a number (NaN and infinities included), a fixed or variable string,
// or an array.
void fuzz_attribute(FuzzedDataProvider & input, hid_t meta, const char * name) {
  const hid_t scalar = H5Screate(H5S_SCALAR);
  const hsize_t elements = input.ConsumeIntegralInRange<hsize_t>(2, 16);
  const hid_t array = H5Screate_simple(1, &elements, nullptr);
  switch (input.ConsumeIntegralInRange(0, 6)) {
    case 0: break;
    case 1: {
      const int64_t value = input.ConsumeIntegral<int64_t>();
      write_attribute(meta, name, H5T_NATIVE_INT64, scalar, &value);
      break;
    }
    case 2: {
      const uint64_t bits = input.ConsumeIntegral<uint64_t>();
      double value;
      std::memcpy(&value, &bits, sizeof value);
      write_attribute(meta, name, H5T_NATIVE_DOUBLE, scalar, &value);
      break;
    }
    case 3: {
      const std::string value = json_text(input);
      const hid_t type = H5Tcopy(H5T_C_S1);
      H5Tset_size(type, std::max<size_t>(1, value.size()));
      write_attribute(meta, name, type, scalar, value.empty() ? "" : value.data());
      H5Tclose(type);
      break;
    }
    case 4: {
      const std::string value = json_text(input);
      const char * pointer = value.c_str();
      const hid_t type = H5Tcopy(H5T_C_S1);
      H5Tset_size(type, H5T_VARIABLE);
      write_attribute(meta, name, type, scalar, &pointer);
      H5Tclose(type);
      break;
    }
    case 5: {
      const std::vector<int64_t> values(elements, input.ConsumeIntegral<int64_t>());
      write_attribute(meta, name, H5T_NATIVE_INT64, array, values.data());
      break;
    }
    default: {
      const std::string value = input.ConsumeRandomLengthString(64) + std::string(1, '\0');
      const std::string values = [&] {
        std::string all;
        for (hsize_t i = 0; i < elements; ++i) all += value;
        return all;
      }();
      const hid_t type = H5Tcopy(H5T_C_S1);
      H5Tset_size(type, value.size());
      write_attribute(meta, name, type, array, values.data());
      H5Tclose(type);
    }
  }
  H5Sclose(array);
  H5Sclose(scalar);
}

// A dataset at `name` of a fuzzed shape (rank 0 is a scalar) and element type (float, integer or string).
void fuzz_dataset(FuzzedDataProvider & input, hid_t file, const std::string & name) {
  const int rank = input.ConsumeIntegralInRange(0, 4);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  for (hsize_t & dim : dims) dim = input.ConsumeIntegralInRange<hsize_t>(0, 6);
  const hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), nullptr);
  const hid_t string = H5Tcopy(H5T_C_S1);
  H5Tset_size(string, 4);
  const hid_t type = input.PickValueInArray<hid_t>({H5T_IEEE_F32LE, H5T_IEEE_F64BE, H5T_STD_I32LE, string});
  const hid_t data = H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (data >= 0) H5Dclose(data);
  H5Tclose(string);
  H5Sclose(space);
}

// A tensor group: absent, a dataset in its place, or a group of the model's tensors, some missing, some of other
// shapes or types, some groups, and extra names.
void fuzz_tensor_group(FuzzedDataProvider & input, hid_t file, const std::string & group,
                       const std::vector<ParameterSpec> & specs) {
  const int kind = input.ConsumeIntegralInRange(0, 2);
  if (kind == 0) return;
  if (kind == 1) return fuzz_dataset(input, file, group);
  const hid_t made = H5Gcreate2(file, group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (made < 0) return;
  H5Gclose(made);
  for (const ParameterSpec & spec : specs) {
    const std::string name = group + "/" + spec.name;
    switch (input.ConsumeIntegralInRange(0, 3)) {
      case 0: break;
      case 1: {
        const hid_t inner = H5Gcreate2(file, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (inner >= 0) H5Gclose(inner);
        break;
      }
      case 2: fuzz_dataset(input, file, name); break;
      default: {  // as kosmos writes it
        std::vector<hsize_t> dims(spec.shape.begin(), spec.shape.end());
        if (dims.empty()) dims.push_back(1);
        const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
        const hid_t data =
            H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (data >= 0) H5Dclose(data);
        H5Sclose(space);
      }
    }
  }
  for (int extra = input.ConsumeIntegralInRange(0, 2); extra > 0; --extra)
    fuzz_dataset(input, file, group + "/" + input.ConsumeRandomLengthString(12));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
  static const std::vector<ParameterSpec> specs = fuzz_specs();
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  FuzzedDataProvider input(data, size);
  const hid_t access = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_core(access, 1 << 16, 0);  // in memory, never written to disk
  const hid_t file = H5Fcreate("fuzz_checkpoint.h5", H5F_ACC_TRUNC, H5P_DEFAULT, access);
  H5Pclose(access);
  if (file < 0) return 0;
  const int meta_kind = input.ConsumeIntegralInRange(0, 2);
  if (meta_kind == 1) {
    fuzz_dataset(input, file, "/meta");
  } else if (meta_kind == 2) {
    const hid_t meta = H5Gcreate2(file, "/meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (const char * name : {"step", "seed", "loss_scale", "data_position", "model_config", "layout", "optimizer",
                              "version", "run_config"})
      fuzz_attribute(input, meta, name);
    H5Gclose(meta);
  }
  fuzz_tensor_group(input, file, "/params", specs);
  kosmos::io::CheckpointInfo info;
  try {
    info = kosmos::io::read_checkpoint_meta(file, "fuzz_checkpoint.h5");
  } catch (const kosmos::Error &) {
  }
  try {
    kosmos::io::check_checkpoint_tensors(file, "fuzz_checkpoint.h5", "/params", specs, info);
  } catch (const kosmos::Error &) {
  }
  H5Fclose(file);
  return 0;
}
