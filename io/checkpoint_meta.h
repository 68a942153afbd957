// checkpoint_meta.h: what a checkpoint says about itself, checked before any of it is trusted: the /meta attributes
// (each present, scalar, of its type; the JSON ones objects of the expected form; step and loss scale in range) and
// every tensor group (exactly the model's names, each f32 of the model's shape). Serial HDF5 calls on a file that
// is already open, so the same checks serve the MPI-IO reader (checkpoint.cpp), `kosmos convert`, and the fuzz
// target tests/fuzz/fuzz_checkpoint_meta.cpp, which runs them on in-memory files.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/parameters.h"

namespace kosmos::io {

struct CheckpointInfo {
  int64_t step = 0;            // optimizer steps done; the learning-rate schedule resumes from here
  uint64_t seed = 0;           // with the step, the whole random state (Philox keys: dropout, data order)
  double loss_scale = 1.0;     // the loss scale the next step uses (model::LossScale)
  int64_t loss_scale_finite_steps = 0;  // finite steps since it last changed (0 in files without the attribute)
  std::string data_position;   // JSON: where each data stream continues
  std::string model_config;    // JSON (config_to_json)
  std::string layout;          // the grid that wrote it, e.g. "dp 1 x pp 2 x tp 2, ZeRO-1 off" (for the reader)
  std::string optimizer;       // JSON: lr, warm-up, total steps, betas, eps, weight decay, clip
  std::string version;         // kosmos version that wrote it
  std::string run_config;      // the command's effective options as TOML (kosmos --print-config), if known
};

// The /meta group of an open checkpoint, checked; anything missing, of another type or out of range is an error
// naming `path`, the attribute and the fix.
CheckpointInfo read_checkpoint_meta(hid_t file, const std::string & path);

// Checks that `group` ("/params", "/optim/m" or "/optim/v") holds exactly the tensors of `specs`, each a f32 dataset
// of its shape. `info` (the file's metadata) describes the model that wrote it in the error.
void check_checkpoint_tensors(hid_t file, const std::string & path, const std::string & group,
                              const std::vector<model::ParameterSpec> & specs, const CheckpointInfo & info);

}  // namespace kosmos::io
