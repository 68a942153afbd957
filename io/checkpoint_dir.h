// checkpoint_dir.h: the checkpoints of a run in one folder: step_00000100.h5, ... and `latest`, a one-line text file
// naming the newest complete one. A checkpoint is written as <name>.partial and renamed when every rank has
// closed it, and `latest` is replaced (write, then rename) after that, so a crash mid-write never leaves a file
// that looks complete.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kosmos::io {

// "DIR/step_00000100.h5".
std::string checkpoint_path(const std::string & dir, int64_t step);
// The name a checkpoint is written under until it is complete.
std::string partial_path(const std::string & final_path);

// Makes a written checkpoint visible (one rank, after every rank closed it): renames <final>.partial to <final>,
// points `latest` at it, removes leftovers of interrupted writes and all but the newest `keep` checkpoints.
void publish_checkpoint(const std::string & dir, const std::string & final_path, int64_t keep);

// What --resume asks for: "" (start fresh), "auto" (the newest complete checkpoint in `save_dir`, or a fresh start
// when it has none), or a checkpoint file or a folder of them. Returns the file, or "" for a fresh start. `option`
// names the command-line option in errors.
std::string resolve_resume(const std::string & resume, const std::string & save_dir,
                           const std::string & option = "--resume");
// The same as the files to try in order: a named file alone; for a folder or auto, the one `latest` names, then
// every complete checkpoint, newest first (a damaged newest one falls back to the one before).
std::vector<std::string> resume_candidates(const std::string & resume, const std::string & save_dir,
                                           const std::string & option = "--resume");

}  // namespace kosmos::io
