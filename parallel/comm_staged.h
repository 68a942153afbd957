// comm_staged.h: collectives for a device whose memory the host cannot touch (a GPU), over a host communicator
// (MPI). Each call copies the device buffers it is given into host memory, runs the host collective, and copies
// the results back; buffers already in host memory (the trainer's scalars) go straight through. It is the
// transport of the ROCm build (Debian has no RCCL) and of CUDA until the NCCL communicator; slower than a GPU
// collective by the two copies, but any layout trains.
#pragma once

#include <memory>

#include "parallel/comm.h"

namespace kosmos::parallel {

// `device` must outlive the result and every communicator split from it.
std::unique_ptr<Comm> staged_comm(std::unique_ptr<Comm> host, Device & device);

}  // namespace kosmos::parallel
