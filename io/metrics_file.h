// metrics_file.h: the --metrics file of `kosmos train`, a JSON line a step. A fresh run starts it empty. A resumed
// run keeps the lines of the steps up to the one it resumed from and appends its own after them, so that a run
// stopped and resumed, as a requeued Slurm job is (launch/slurm/kosmos.sbatch), keeps its whole history in one file,
// and the steps a stopped or crashed run logged after its last checkpoint, which the resumed run trains again, are
// not there twice.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace kosmos::io {

// Opens `path` for a run's lines: emptied where `resumed_step` is 0 (a fresh run), else holding only its lines whose
// "step" is at most resumed_step (a line that is no such JSON object, as the last line of a run killed while writing
// it, is dropped too), with the stream at their end. Returns how many lines it kept in `kept` where given.
std::ofstream open_metrics(const std::string & path, int64_t resumed_step, int64_t * kept = nullptr);

}  // namespace kosmos::io
