// shim/nccl.h: what parallel/comm_nccl.cpp's #include <nccl.h> finds when it is compiled for the emulated GPU: the
// part of NCCL it calls (unique id, communicator and its abort, the four collectives, errors), with NCCL's names and
// values.
// parallel/emulated_nccl.cpp carries the calls out over MPI on the emulated device memory (backends/ knows no MPI).
#pragma once

#include <cstddef>

#include "backends/emulated/cuda_surface.h"

enum ncclResult_t : int {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
};
enum ncclRedOp_t : int { ncclSum = 0, ncclMax = 2 };
enum ncclDataType_t : int { ncclInt32 = 2, ncclFloat16 = 6, ncclFloat32 = 7, ncclBfloat16 = 9 };

struct ncclUniqueId {
  char internal[128];
};
struct EmulatedNcclComm;
using ncclComm_t = EmulatedNcclComm *;

ncclResult_t ncclGetVersion(int * version);
ncclResult_t ncclGetUniqueId(ncclUniqueId * id);
ncclResult_t ncclCommInitRank(ncclComm_t * comm, int ranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
const char * ncclGetErrorString(ncclResult_t result);
const char * ncclGetLastError(ncclComm_t comm);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t * async_error);

ncclResult_t ncclAllReduce(const void * send, void * receive, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllGather(const void * send, void * receive, size_t send_count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream);
ncclResult_t ncclReduceScatter(const void * send, void * receive, size_t receive_count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void * send, void * receive, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduce(const void * send, void * receive, size_t count, ncclDataType_t type, ncclRedOp_t op, int root,
                        ncclComm_t comm, cudaStream_t stream);
