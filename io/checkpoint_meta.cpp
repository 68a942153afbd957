// checkpoint_meta.cpp: the checks of a checkpoint's metadata and tensor list (checkpoint_meta.h).
#include "io/checkpoint_meta.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "backends/error.h"
#include "backends/tensor.h"
#include "io/hdf5.h"
#include "model/trainer.h"

namespace kosmos::io {
namespace {

using hdf5::Handle;

// The stored model config on one line, shortened, for errors about a checkpoint of another model.
std::string config_summary(const std::string & config) {
  const nlohmann::json parsed = nlohmann::json::parse(config, nullptr, false);
  const std::string line = parsed.is_discarded() ? config : parsed.dump();
  return line.size() > 240 ? line.substr(0, 240) + "..." : line;
}

// A JSON attribute's text as an object, or an error naming it.
nlohmann::json json_object(const std::string & text, const char * name, const std::string & path) {
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, false);
  KOSMOS_CHECK(!parsed.is_discarded() && parsed.is_object(), "checkpoint ", path, ": attribute /meta/", name,
               " is not a JSON object (it starts '", text.substr(0, 60),
               "'); the file is damaged or was not written by kosmos: use an earlier checkpoint");
  return parsed;
}

// `object[key]` as a count (an integer >= 0), or an error naming the attribute and the key.
void check_count(const nlohmann::json & object, const char * key, const std::string & path) {
  KOSMOS_CHECK(object.is_object() && object.contains(key) &&
                   (object.at(key).is_number_unsigned() ||
                    (object.at(key).is_number_integer() && object.at(key).get<int64_t>() >= 0)),
               "checkpoint ", path, ": /meta/data_position has no count '", key,
               "' (an integer >= 0); the file is damaged: use an earlier checkpoint");
}

// Where the data continues: {"synthetic": {"next_sample": n}} or {"dataset": {"next_sample": n, "next_image": n,
// "taken": {"<stream>": n, ...}}}, as train.cpp and DataLoader::restore read it.
void check_data_position(const std::string & text, const std::string & path) {
  const nlohmann::json position = json_object(text, "data_position", path);
  if (position.contains("synthetic")) {
    check_count(position.at("synthetic"), "next_sample", path);
    return;
  }
  KOSMOS_CHECK(position.contains("dataset"), "checkpoint ", path,
               ": /meta/data_position names neither the synthetic set nor a dataset; the file is damaged: use an "
               "earlier checkpoint");
  const nlohmann::json & dataset = position.at("dataset");
  check_count(dataset, "next_sample", path);
  check_count(dataset, "next_image", path);
  KOSMOS_CHECK(dataset.contains("taken") && dataset.at("taken").is_object(), "checkpoint ", path,
               ": /meta/data_position has no 'taken' object; the file is damaged: use an earlier checkpoint");
  for (const auto & stream : dataset.at("taken").items()) check_count(dataset.at("taken"), stream.key().c_str(), path);
}

}  // namespace

CheckpointInfo read_checkpoint_meta(hid_t file, const std::string & path) {
  KOSMOS_CHECK(H5Lexists(file, "/meta", H5P_DEFAULT) > 0, "checkpoint ", path,
               ": no /meta group; this is not a kosmos checkpoint");
  Handle meta(H5Gopen2(file, "/meta", H5P_DEFAULT), H5Gclose);
  KOSMOS_H5_CHECK(meta.valid() ? 0 : -1, path, ": /meta is not a group; this is not a kosmos checkpoint");
  CheckpointInfo info;
  info.step = hdf5::read_int_attribute(meta, "step", path);
  info.seed = static_cast<uint64_t>(hdf5::read_int_attribute(meta, "seed", path));  // stored as its int64 bits
  info.loss_scale = hdf5::read_double_attribute(meta, "loss_scale", path);
  if (H5Aexists(meta, "loss_scale_finite_steps") > 0)
    info.loss_scale_finite_steps = hdf5::read_int_attribute(meta, "loss_scale_finite_steps", path);
  info.data_position = hdf5::read_string_attribute(meta, "data_position", path);
  info.model_config = hdf5::read_string_attribute(meta, "model_config", path);
  info.layout = hdf5::read_string_attribute(meta, "layout", path);
  info.optimizer = hdf5::read_string_attribute(meta, "optimizer", path);
  info.version = hdf5::read_string_attribute(meta, "version", path);
  if (H5Aexists(meta, "run_config") > 0) info.run_config = hdf5::read_string_attribute(meta, "run_config", path);
  KOSMOS_CHECK(info.step >= 0, "checkpoint ", path, ": /meta/step is ", info.step,
               "; the file is damaged: use an earlier checkpoint");
  KOSMOS_CHECK(model::is_power_of_two(info.loss_scale) && info.loss_scale_finite_steps >= 0,
               "checkpoint ", path, ": /meta/loss_scale is ", info.loss_scale, " after ", info.loss_scale_finite_steps,
               " finite steps (a loss scale is a power of two, the steps >= 0); the file is damaged: use an earlier "
               "checkpoint");
  check_data_position(info.data_position, path);
  json_object(info.model_config, "model_config", path);
  json_object(info.optimizer, "optimizer", path);
  return info;
}

void check_checkpoint_tensors(hid_t file, const std::string & path, const std::string & group,
                              const std::vector<model::ParameterSpec> & specs, const CheckpointInfo & info) {
  const std::string another_model = "; it was written for another model (its config: " +
                                    config_summary(info.model_config) +
                                    "); train with the same preset and --model-config";
  KOSMOS_CHECK(H5Lexists(file, group.c_str(), H5P_DEFAULT) > 0, "checkpoint ", path, ": no group ", group,
               "; this is not a kosmos checkpoint");
  hsize_t stored = 0;
  {
    Handle opened(H5Gopen2(file, group.c_str(), H5P_DEFAULT), H5Gclose);
    KOSMOS_H5_CHECK(opened.valid() ? 0 : -1, path, ": ", group, " is not a group; this is not a kosmos checkpoint");
    H5G_info_t group_info;
    KOSMOS_H5_CHECK(H5Gget_info(opened, &group_info), path, ": listing ", group);
    stored = group_info.nlinks;
  }
  KOSMOS_CHECK(stored == specs.size(), "checkpoint ", path, " holds ", stored, " tensors in ", group,
               " but the model has ", specs.size(), " parameters", another_model);
  for (const model::ParameterSpec & spec : specs) {
    const std::string dataset = group + "/" + spec.name;
    KOSMOS_CHECK(H5Lexists(file, dataset.c_str(), H5P_DEFAULT) > 0, "checkpoint ", path, " has no ", dataset,
                 another_model);
    Handle data(H5Oopen(file, dataset.c_str(), H5P_DEFAULT), H5Oclose);  // a group or a datatype in its place?
    KOSMOS_H5_CHECK(data.valid() ? 0 : -1, path, ": opening ", dataset);
    KOSMOS_CHECK(H5Iget_type(data) == H5I_DATASET, "checkpoint ", path, ": ", dataset,
                 " is not a dataset; the file is damaged or was not written by kosmos: use an earlier checkpoint");
    Handle type(H5Dget_type(data), H5Tclose);
    KOSMOS_CHECK(H5Tget_class(type) == H5T_FLOAT, "checkpoint ", path, ": ", dataset,
                 " does not hold floating-point numbers; the file is damaged or was not written by kosmos: use an "
                 "earlier checkpoint");
    Handle space(H5Dget_space(data), H5Sclose);
    KOSMOS_CHECK(H5Sget_simple_extent_type(space) == H5S_SIMPLE, "checkpoint ", path, ": ", dataset,
                 " is not an array; the file is damaged: use an earlier checkpoint");
    std::vector<hsize_t> dims(static_cast<size_t>(std::max(0, H5Sget_simple_extent_ndims(space))));
    H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    std::vector<int64_t> expected = spec.shape;
    if (expected.empty()) expected.push_back(1);  // a scalar is stored as [1]
    KOSMOS_CHECK(std::vector<int64_t>(dims.begin(), dims.end()) == expected, "checkpoint ", path, ": ", dataset,
                 " has shape ", describe_dims(std::vector<int64_t>(dims.begin(), dims.end())), " but the model's ",
                 spec.name, " is ", describe_dims(spec.shape), another_model);
  }
}

}  // namespace kosmos::io
