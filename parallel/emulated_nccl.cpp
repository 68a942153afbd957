// emulated_nccl.cpp: the emulated GPU's NCCL (backends/emulated/shim/nccl.h): the calls comm_nccl.cpp makes,
// carried out over MPI on the emulated device memory (host memory), so that the NCCL communicator's own code runs
// with several ranks where no GPU is (`--backend emulated` under mpirun, and the NcclComm tests).
//  - A unique id names its root's MPI_COMM_WORLD rank and a nonce; ncclCommInitRank sends each member's world rank
//    to the root and the root sends the list back (tags from 2^20: above 32767, the highest the project's own
//    messages use; Open MPI's tags reach 2^31 - 1),
//    then the members make their MPI communicator with MPI_Comm_create_group (collective over them alone).
//  - Buffers must be emulated device memory, whole (as NCCL needs device memory): anything else fails with
//    ncclInvalidArgument and a message that ncclGetLastError returns.
//  - Emulated streams are synchronous, so a collective completes inside its call. Every rank must therefore issue
//    the collectives of all its communicators in one order; NCCL states the same rule (a mismatch may hang there),
//    and here a mismatch hangs in every run rather than in some.
// bf16 and f16 travel as 16-bit words and reduce through MPI operations of this file (sum and max in f32, rounded
// to nearest even once per pairwise step, as NCCL's ring does in its own order).
#include <mpi.h>

#include <climits>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "backends/dtype.h"
#include "backends/emulated/shim/nccl.h"

struct EmulatedNcclComm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  std::string last_error;
};

namespace {

constexpr uint64_t kIdMagic = 0x6b6f736d6f734e43;  // marks an id this file made
constexpr int kInitTagBase = 1 << 20;              // + the nonce's low bits: above every project tag (<= 32767)

struct IdContents {
  uint64_t magic;
  int root_world_rank;
  uint32_t nonce;
};
static_assert(sizeof(IdContents) <= sizeof(ncclUniqueId::internal), "an id's contents fit NCCL's 128 bytes");

// The last failure outside any communicator (ncclGetLastError(nullptr)), as NCCL keeps one.
std::string & library_error() {
  static std::string message;
  return message;
}

ncclResult_t fail(ncclComm_t comm, ncclResult_t result, const std::string & message) {
  (comm != nullptr ? comm->last_error : library_error()) = "emulated NCCL: " + message;
  return result;
}

size_t element_bytes(ncclDataType_t type) {
  switch (type) {
    case ncclInt32:
    case ncclFloat32: return 4;
    case ncclFloat16:
    case ncclBfloat16: return 2;
  }
  return 0;
}

// 16-bit floats reduced in f32: one MPI operation per (format, reduction).
template <bool kBf16, bool kMax>
void reduce_halves(void * in, void * inout, int * length, MPI_Datatype *) {
  const auto * a = static_cast<const uint16_t *>(in);
  auto * b = static_cast<uint16_t *>(inout);
  for (int i = 0; i < *length; ++i) {
    const float x = kBf16 ? kosmos::bf16_to_float(a[i]) : kosmos::f16_to_float(a[i]);
    const float y = kBf16 ? kosmos::bf16_to_float(b[i]) : kosmos::f16_to_float(b[i]);
    const float r = kMax ? (x > y ? x : y) : x + y;
    b[i] = kBf16 ? kosmos::float_to_bf16(r) : kosmos::float_to_f16(r);
  }
}

template <bool kBf16, bool kMax>
MPI_Op halves_op() {
  static MPI_Op op = [] {
    MPI_Op made;
    MPI_Op_create(&reduce_halves<kBf16, kMax>, 1, &made);
    return made;
  }();
  return op;
}

MPI_Datatype mpi_type(ncclDataType_t type) {
  switch (type) {
    case ncclInt32: return MPI_INT32_T;
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat16:
    case ncclBfloat16: return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ncclDataType_t type, ncclRedOp_t op) {
  const bool max = op == ncclMax;
  switch (type) {
    case ncclBfloat16: return max ? halves_op<true, true>() : halves_op<true, false>();
    case ncclFloat16: return max ? halves_op<false, true>() : halves_op<false, false>();
    case ncclInt32:
    case ncclFloat32: break;
  }
  return max ? MPI_MAX : MPI_SUM;
}

// MPI counts elements in an int: a larger count fails rather than wraps.
ncclResult_t check_count(ncclComm_t comm, const char * what, size_t count) {
  if (count <= static_cast<size_t>(INT_MAX)) return ncclSuccess;
  return fail(comm, ncclInvalidArgument, std::string(what) + ": " + std::to_string(count) +
                                             " elements, more than the emulated NCCL's MPI calls count (2^31 - 1)");
}

ncclResult_t check_comm(ncclComm_t comm, const char * what) {
  if (comm == nullptr || comm->comm == MPI_COMM_NULL)
    return fail(nullptr, ncclInvalidUsage, std::string(what) + " on a communicator that is null or destroyed");
  return ncclSuccess;
}

// Checks a call's type, reduction and buffers (each `bytes` long, emulated device memory); its communicator first.
ncclResult_t check_call(ncclComm_t comm, const char * what, ncclDataType_t type, ncclRedOp_t op,
                        std::initializer_list<std::pair<const void *, size_t>> buffers) {
  kosmos_emulation::run_queued_copies();  // the work queued before the collective
  if (element_bytes(type) == 0)
    return fail(comm, ncclInvalidArgument, std::string(what) + ": data type " + std::to_string(type) +
                                               " is not one the emulated NCCL reduces (i32, f32, f16, bf16)");
  if (op != ncclSum && op != ncclMax)
    return fail(comm, ncclInvalidArgument, std::string(what) + ": reduction " + std::to_string(op) +
                                               " is not one the emulated NCCL knows (sum, max)");
  for (const auto & [pointer, bytes] : buffers)
    if (bytes != 0 && !kosmos_emulation::is_device_range(pointer, bytes))
      return fail(comm, ncclInvalidArgument,
                  std::string(what) + ": a buffer of " + std::to_string(bytes) +
                      " bytes is not device memory (NCCL takes device buffers only; host buffers go over MPI)");
  return ncclSuccess;
}

ncclResult_t mpi_result(ncclComm_t comm, int status, const char * what) {
  if (status == MPI_SUCCESS) return ncclSuccess;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  return fail(comm, ncclSystemError, std::string(what) + ": MPI failed: " + std::string(text, length));
}

}  // namespace

ncclResult_t ncclGetVersion(int * version) {
  *version = 0;
  return ncclSuccess;
}

const char * ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
  }
  return "unknown result";
}

const char * ncclGetLastError(ncclComm_t comm) {
  if (comm != nullptr && kosmos_emulation::call_refused("ncclCommGetAsyncError"))
    return "the emulated transport was told to fail (refuse_call)";
  return comm != nullptr ? comm->last_error.c_str() : library_error().c_str();
}

// Nothing is ever outstanding, so nothing fails behind the caller's back, unless a test says so (refuse_call; then
// ncclGetLastError says that, without a write another thread could race).
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t * async_error) {
  if (comm == nullptr || async_error == nullptr) return ncclInvalidArgument;
  *async_error = kosmos_emulation::call_refused("ncclCommGetAsyncError") ? ncclSystemError : ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId * id) {
  static uint32_t nonce = 0;
  IdContents contents{kIdMagic, 0, nonce++};
  MPI_Comm_rank(MPI_COMM_WORLD, &contents.root_world_rank);
  *id = {};
  std::memcpy(id->internal, &contents, sizeof contents);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t * comm, int ranks, ncclUniqueId id, int rank) {
  IdContents contents;
  std::memcpy(&contents, id.internal, sizeof contents);
  if (contents.magic != kIdMagic)
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: the unique id was not made by ncclGetUniqueId");
  if (ranks < 1 || rank < 0 || rank >= ranks)
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: rank " + std::to_string(rank) + " of " +
                                                  std::to_string(ranks) + " ranks");
  int world_rank = 0, tag_limit_found = 0;
  int * tag_limit = nullptr;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_limit, &tag_limit_found);
  const int tag = kInitTagBase + static_cast<int>(contents.nonce % 4096);
  if (!tag_limit_found || *tag_limit < tag)
    return fail(nullptr, ncclSystemError, "ncclCommInitRank: this MPI's tags end below " + std::to_string(tag) +
                                              " (MPI_TAG_UB); run the emulated GPU under Open MPI or MPICH");
  // The members' world ranks in NCCL rank order: gathered at the root, sent back to each.
  std::vector<int> members(static_cast<size_t>(ranks), -1);
  int status = MPI_SUCCESS;
  if (world_rank == contents.root_world_rank) {
    if (rank != 0) return fail(nullptr, ncclInvalidUsage, "ncclCommInitRank: the id's maker must join as rank 0");
    members[0] = world_rank;
    for (int k = 1; k < ranks && status == MPI_SUCCESS; ++k) {
      int pair[2];  // a member's NCCL rank and world rank
      status = MPI_Recv(pair, 2, MPI_INT, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (status != MPI_SUCCESS) break;
      if (pair[0] <= 0 || pair[0] >= ranks || members[static_cast<size_t>(pair[0])] != -1)
        return fail(nullptr, ncclInvalidUsage, "ncclCommInitRank: rank " + std::to_string(pair[0]) +
                                                   " joined twice or is out of range");
      members[static_cast<size_t>(pair[0])] = pair[1];
    }
    for (int k = 1; k < ranks && status == MPI_SUCCESS; ++k)
      status = MPI_Send(members.data(), ranks, MPI_INT, members[static_cast<size_t>(k)], tag, MPI_COMM_WORLD);
  } else {
    const int pair[2] = {rank, world_rank};
    status = MPI_Send(pair, 2, MPI_INT, contents.root_world_rank, tag, MPI_COMM_WORLD);
    if (status == MPI_SUCCESS)
      status = MPI_Recv(members.data(), ranks, MPI_INT, contents.root_world_rank, tag, MPI_COMM_WORLD,
                        MPI_STATUS_IGNORE);
  }
  if (status != MPI_SUCCESS) return mpi_result(nullptr, status, "ncclCommInitRank");
  MPI_Group world_group, group;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  MPI_Group_incl(world_group, ranks, members.data(), &group);
  auto * made = new EmulatedNcclComm;
  status = MPI_Comm_create_group(MPI_COMM_WORLD, group, tag, &made->comm);
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  if (status != MPI_SUCCESS) {
    delete made;
    return mpi_result(nullptr, status, "ncclCommInitRank");
  }
  made->rank = rank;
  made->size = ranks;
  *comm = made;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclInvalidArgument;
  if (comm->comm != MPI_COMM_NULL) MPI_Comm_free(&comm->comm);
  delete comm;
  return ncclSuccess;
}

// The calls run inside their enqueueing (nothing is ever outstanding): aborting leaves the MPI communicator to
// MPI_Finalize or MPI_Abort rather than freeing it, a collective call the other ranks may never make.
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclInvalidArgument;
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void * send, void * receive, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t) {
  if (check_comm(comm, "ncclAllReduce") != ncclSuccess) return ncclInvalidUsage;
  if (check_count(comm, "ncclAllReduce", count) != ncclSuccess) return ncclInvalidArgument;
  const size_t bytes = count * element_bytes(type);
  const ncclResult_t checked = check_call(comm, "ncclAllReduce", type, op, {{send, bytes}, {receive, bytes}});
  if (checked != ncclSuccess) return checked;
  if (send != receive) std::memcpy(receive, send, bytes);
  return mpi_result(comm,
                    MPI_Allreduce(MPI_IN_PLACE, receive, static_cast<int>(count), mpi_type(type), mpi_op(type, op),
                                  comm->comm),
                    "ncclAllReduce");
}

ncclResult_t ncclAllGather(const void * send, void * receive, size_t send_count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t) {
  if (check_comm(comm, "ncclAllGather") != ncclSuccess) return ncclInvalidUsage;
  if (check_count(comm, "ncclAllGather", send_count * comm->size) != ncclSuccess) return ncclInvalidArgument;
  const size_t bytes = send_count * element_bytes(type);
  const ncclResult_t checked =
      check_call(comm, "ncclAllGather", type, ncclSum, {{send, bytes}, {receive, bytes * comm->size}});
  if (checked != ncclSuccess) return checked;
  // In place where the send buffer is this rank's slice of the receive buffer, as NCCL allows.
  const bool in_place = send == static_cast<const char *>(receive) + bytes * static_cast<size_t>(comm->rank);
  return mpi_result(comm,
                    MPI_Allgather(in_place ? MPI_IN_PLACE : send, static_cast<int>(send_count), mpi_type(type),
                                  receive, static_cast<int>(send_count), mpi_type(type), comm->comm),
                    "ncclAllGather");
}

ncclResult_t ncclReduceScatter(const void * send, void * receive, size_t receive_count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  if (check_comm(comm, "ncclReduceScatter") != ncclSuccess) return ncclInvalidUsage;
  if (check_count(comm, "ncclReduceScatter", receive_count * comm->size) != ncclSuccess) return ncclInvalidArgument;
  const size_t bytes = receive_count * element_bytes(type);
  const ncclResult_t checked =
      check_call(comm, "ncclReduceScatter", type, op, {{send, bytes * comm->size}, {receive, bytes}});
  if (checked != ncclSuccess) return checked;
  // MPI's in-place form differs from NCCL's (the result at the buffer's start): an aliased send is copied first.
  std::vector<char> copy;
  const char * source = static_cast<const char *>(send);
  const char * receive_bytes = static_cast<const char *>(receive);
  if (receive_bytes < source + bytes * comm->size && source < receive_bytes + bytes) {
    copy.assign(source, source + bytes * comm->size);
    source = copy.data();
  }
  return mpi_result(comm,
                    MPI_Reduce_scatter_block(source, receive, static_cast<int>(receive_count), mpi_type(type),
                                             mpi_op(type, op), comm->comm),
                    "ncclReduceScatter");
}

ncclResult_t ncclBroadcast(const void * send, void * receive, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t) {
  if (check_comm(comm, "ncclBroadcast") != ncclSuccess) return ncclInvalidUsage;
  if (check_count(comm, "ncclBroadcast", count) != ncclSuccess) return ncclInvalidArgument;
  const size_t bytes = count * element_bytes(type);
  const ncclResult_t checked = check_call(comm, "ncclBroadcast", type, ncclSum, {{receive, bytes}});
  if (checked != ncclSuccess) return checked;
  if (root < 0 || root >= comm->size)
    return fail(comm, ncclInvalidArgument, "ncclBroadcast: root " + std::to_string(root) + " of " +
                                               std::to_string(comm->size) + " ranks");
  if (comm->rank == root && send != receive) {
    if (!kosmos_emulation::is_device_range(send, bytes))
      return fail(comm, ncclInvalidArgument, "ncclBroadcast: the root's send buffer is not device memory");
    std::memcpy(receive, send, bytes);
  }
  return mpi_result(comm, MPI_Bcast(receive, static_cast<int>(count), mpi_type(type), root, comm->comm),
                    "ncclBroadcast");
}

ncclResult_t ncclReduce(const void * send, void * receive, size_t count, ncclDataType_t type, ncclRedOp_t op, int root,
                        ncclComm_t comm, cudaStream_t) {
  if (check_comm(comm, "ncclReduce") != ncclSuccess) return ncclInvalidUsage;
  if (check_count(comm, "ncclReduce", count) != ncclSuccess) return ncclInvalidArgument;
  if (root < 0 || root >= comm->size)
    return fail(comm, ncclInvalidArgument, "ncclReduce: root " + std::to_string(root) + " of " +
                                               std::to_string(comm->size) + " ranks");
  const size_t bytes = count * element_bytes(type);
  // The receive buffer counts on the root only, as in NCCL (elsewhere the send buffer is checked twice).
  const ncclResult_t checked =
      check_call(comm, "ncclReduce", type, op, {{send, bytes}, {comm->rank == root ? receive : send, bytes}});
  if (checked != ncclSuccess) return checked;
  if (comm->rank != root)
    return mpi_result(comm,
                      MPI_Reduce(send, nullptr, static_cast<int>(count), mpi_type(type), mpi_op(type, op), root,
                                 comm->comm),
                      "ncclReduce");
  if (send != receive) std::memcpy(receive, send, bytes);
  return mpi_result(comm,
                    MPI_Reduce(MPI_IN_PLACE, receive, static_cast<int>(count), mpi_type(type), mpi_op(type, op), root,
                               comm->comm),
                    "ncclReduce");
}
