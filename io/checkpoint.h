// checkpoint.h: the whole training state in one HDF5 file, written by every rank at once with parallel HDF5 (each
// rank its own hyperslabs, no gather) and read back under any layout. Tensors keep their full logical shapes, so
// the file does not depend on the (dp, pp, tp) that wrote it:
//   /params/<name>, /optim/m/<name>, /optim/v/<name>   f32, chunked, Fletcher32 checksums (a frozen parameter's
//                                                      moments are zeros, and are not read back; a ZeRO-1 rank
//                                                      reads the moments of its slice)
//   /meta (attributes)                                 step, seed, loss scale, data position, model config, layout,
//                                                      optimizer, tool version, the run's options (TOML)
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint_meta.h"
#include "model/parameters.h"
#include "parallel/comm.h"

namespace kosmos::io {

// Writes `path` collectively over `world`: every rank calls this with its own `parts` (Trainer::checkpoint_parts,
// one per parameter in table order), which together must cover every element once. Values and both moments.
void write_checkpoint(const std::string & path, const model::ModelState & state,
                      const std::vector<model::ParameterPart> & parts, const CheckpointInfo & info,
                      parallel::Comm & world, Stream & stream);

// Reads `path` collectively over `world` into the parameters each rank's table holds (values and, with
// `with_moments`, the AdamW moments it holds: of the trainable parameters, under ZeRO-1 of its slice), whatever
// layout wrote it. A missing, truncated or corrupt file (a checksum mismatch), or one whose parameters do not match
// the model, is an error naming the file and the dataset.
CheckpointInfo read_checkpoint(const std::string & path, model::ModelState & state, bool with_moments,
                               parallel::Comm & world, Stream & stream);

// Reads the first of `candidates` (newest first) that reads cleanly into `state`; each damaged one before it is
// skipped with a warning in `warnings` naming the file and the cause (the dataset whose checksum failed, say).
// When every one is damaged, the newest one's error. Returns the file read and its metadata.
std::pair<std::string, CheckpointInfo> read_newest_checkpoint(const std::vector<std::string> & candidates,
                                                              model::ModelState & state, bool with_moments,
                                                              parallel::Comm & world, Stream & stream,
                                                              std::vector<std::string> & warnings);

// The /meta attributes alone (one rank, no MPI-IO): for `kosmos convert` and for checking a file before a run.
CheckpointInfo read_checkpoint_info(const std::string & path);

}  // namespace kosmos::io
