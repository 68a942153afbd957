// comm_nccl.h: collectives between NVIDIA GPUs with NCCL: the Comm interface on device buffers without host copies.
// NCCL's unique id travels over the host communicator, which also carries what NCCL does not: buffers in host
// memory (the trainer's scalars), point-to-point (tagged messages, which NCCL cannot match out of order; through
// host memory as StagedComm does), barriers and the bookkeeping of split(). Each collective runs on the
// communicator's own CUDA stream: it starts after the work the caller queued on its stream (an event) and the
// caller's later work waits for it (another event), so the host never blocks and work on other streams overlaps.
// The data-parallel reductions then run beside the tensor-parallel collectives of another communicator: NCCL may
// hang where ranks issue the collectives of several communicators in different orders, and the trainer issues them
// in one order on every rank (the same schedule, the same buckets).
// Built with CUDA (KOSMOS_CUDA, which requires NCCL; KOSMOS_USE_NCCL is defined for those who link it);
// `kosmos info` prints the NCCL version. Built a second time for the emulated GPU (KOSMOS_GPU_EMULATOR;
// KOSMOS_USE_EMULATED_NCCL), over its NCCL of MPI calls (parallel/emulated_nccl.cpp), so that this code runs on
// several ranks in every test run.
#pragma once

#include <memory>
#include <string>

#include "parallel/comm.h"

namespace kosmos::parallel {

// The backends whose devices nccl_comm takes: "cuda" and its variants ("cuda-owngemm", "cuda-wmma", "cuda-cudnn").
inline bool takes_nccl(const std::string & backend) { return backend == "cuda" || backend.rfind("cuda-", 0) == 0; }
// Those emulated_nccl_comm takes: the emulated GPU's CUDA build ("emulated-rocm" stages, as ROCm does).
inline bool takes_emulated_nccl(const std::string & backend) {
  return backend == "emulated" || backend == "emulated-wmma";
}

// An NCCL communicator over the ranks of `host` (collective over them: every rank calls it), for buffers of
// `device` (a CUDA device, the same one each call's stream belongs to; it must outlive the result). `host` is a
// communicator that accepts `device`'s buffers, e.g. staged_comm(mpi_world(), device).
std::unique_ptr<Comm> nccl_comm(std::unique_ptr<Comm> host, Device & device);
// The same communicator for a device of the emulated GPU's CUDA build.
std::unique_ptr<Comm> emulated_nccl_comm(std::unique_ptr<Comm> host, Device & device);

}  // namespace kosmos::parallel
