// comm_mpi.cpp: Comm over MPI (host buffers). Errors come back as kosmos::Error with the MPI error string
// (MPI_ERRORS_RETURN on every communicator), never as an abort inside MPI.
#include <mpi.h>

#include <cstring>
#include <vector>

#include "backends/error.h"
#include "parallel/comm.h"
#include "parallel/mpi_handle.h"

#define KOSMOS_MPI_CHECK(call)                                                                       \
  do {                                                                                               \
    const int kosmos_mpi_status = (call);                                                            \
    if (kosmos_mpi_status != MPI_SUCCESS) {                                                          \
      char kosmos_mpi_text[MPI_MAX_ERROR_STRING];                                                    \
      int kosmos_mpi_length = 0;                                                                     \
      MPI_Error_string(kosmos_mpi_status, kosmos_mpi_text, &kosmos_mpi_length);                      \
      KOSMOS_FAIL("MPI call ", #call, " failed: ", std::string(kosmos_mpi_text, kosmos_mpi_length)); \
    }                                                                                                \
  } while (0)

namespace kosmos::parallel {
namespace {

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
  }
  KOSMOS_FAIL("MPI: unknown reduce op ", static_cast<int>(op), " (known: sum, max)");
}

void check_dense(const TensorView & view, const char * what) {
  KOSMOS_CHECK(view.is_contiguous(), what, ": ", describe(view), " must be dense for a collective");
}

// A view as an MPI element type and count (elements, not bytes, so a 3 GB f32 shard is still one message).
struct Transfer {
  MPI_Datatype type;
  int count;
};
Transfer transfer_of(const TensorView & view) {
  KOSMOS_CHECK(view.numel() < (int64_t{1} << 31), "MPI: ", describe(view), " has ", view.numel(),
               " elements, more than one MPI call carries (2^31); split it");
  const int count = static_cast<int>(view.numel());
  switch (view.dtype) {
    case DType::kF32: return {MPI_FLOAT, count};
    case DType::kI32: return {MPI_INT32_T, count};
    case DType::kBF16:
    case DType::kF16: return {MPI_UINT16_T, count};
  }
  KOSMOS_FAIL("MPI: unknown dtype ", static_cast<int>(view.dtype));
}
// The same for a reduction, which needs arithmetic on the elements: f32 or i32 only.
Transfer reduction_of(const TensorView & view, const char * what) {
  KOSMOS_CHECK(view.dtype == DType::kF32 || view.dtype == DType::kI32, what,
               ": MPI reductions take f32 or i32, got ", describe(view), "; reduce in f32");
  return transfer_of(view);
}

class MpiComm final : public Comm {
 public:
  MpiComm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    KOSMOS_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    KOSMOS_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    KOSMOS_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  }
  ~MpiComm() override {
    if (owned_) MPI_Comm_free(&comm_);
  }
  int size() const override { return size_; }
  int rank() const override { return rank_; }

  void all_reduce(TensorView data, ReduceOp op, Stream & stream) override {
    stream.synchronize();  // MPI reads host memory: the stream's work on it must be done
    check_dense(data, "all_reduce");
    if (size_ == 1) return;
    const Transfer t = reduction_of(data, "all_reduce");
    KOSMOS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data, t.count, t.type, mpi_op(op), comm_));
  }

  void all_reduce_async(TensorView data, ReduceOp op, Stream & stream) override {
    stream.synchronize();
    check_dense(data, "all_reduce_async");
    if (size_ == 1) return;
    const Transfer t = reduction_of(data, "all_reduce_async");
    MPI_Request request;  // kept once posted: a failed call leaves no request behind to wait for
    KOSMOS_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data.data, t.count, t.type, mpi_op(op), comm_, &request));
    reductions_.push_back(request);
  }

  void reduce(TensorView data, int root, ReduceOp op, Stream & stream) override {
    const auto [send, receive, t] = reduce_arguments(data, root, stream, "reduce");
    if (size_ > 1) KOSMOS_MPI_CHECK(MPI_Reduce(send, receive, t.count, t.type, mpi_op(op), root, comm_));
  }
  void reduce_async(TensorView data, int root, ReduceOp op, Stream & stream) override {
    const auto [send, receive, t] = reduce_arguments(data, root, stream, "reduce_async");
    if (size_ == 1) return;
    MPI_Request request;
    KOSMOS_MPI_CHECK(MPI_Ireduce(send, receive, t.count, t.type, mpi_op(op), root, comm_, &request));
    reductions_.push_back(request);
  }
  bool reduces_asynchronously() const override { return true; }

  void progress() override {
    if (reductions_.empty()) return;
    int done = 0;
    KOSMOS_MPI_CHECK(MPI_Testall(static_cast<int>(reductions_.size()), reductions_.data(), &done, MPI_STATUSES_IGNORE));
    if (done) reductions_.clear();
  }
  void wait_reductions(Stream &) override {
    if (reductions_.empty()) return;
    KOSMOS_MPI_CHECK(MPI_Waitall(static_cast<int>(reductions_.size()), reductions_.data(), MPI_STATUSES_IGNORE));
    reductions_.clear();
  }

  void all_gather(TensorView out, TensorView in, Stream & stream) override {
    stream.synchronize();
    check_dense(out, "all_gather out");
    check_dense(in, "all_gather in");
    KOSMOS_CHECK(out.dtype == in.dtype && out.numel() == in.numel() * size_, "all_gather: out ", describe(out),
                 " must hold ", size_, " x in ", describe(in));
    const Transfer t = transfer_of(in);
    const size_t bytes = static_cast<size_t>(in.numel()) * dtype_size(in.dtype);
    // In place when `in` is this rank's own slot of `out` (ZeRO-1 gathers updated slices that way).
    const bool in_place = in.data == static_cast<char *>(out.data) + static_cast<size_t>(rank_) * bytes;
    if (size_ == 1) {
      if (!in_place) std::memmove(out.data, in.data, bytes);
      return;
    }
    KOSMOS_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : in.data, t.count, t.type, out.data, t.count, t.type, comm_));
  }

  void reduce_scatter(TensorView out, TensorView in, ReduceOp op, Stream & stream) override {
    stream.synchronize();
    check_dense(out, "reduce_scatter out");
    check_dense(in, "reduce_scatter in");
    KOSMOS_CHECK(out.dtype == in.dtype && in.numel() == out.numel() * size_, "reduce_scatter: in ", describe(in),
                 " must hold ", size_, " x out ", describe(out));
    if (size_ == 1) {
      std::memcpy(out.data, in.data, static_cast<size_t>(out.numel()) * dtype_size(out.dtype));
      return;
    }
    const Transfer t = reduction_of(out, "reduce_scatter");
    KOSMOS_MPI_CHECK(MPI_Reduce_scatter_block(in.data, out.data, t.count, t.type, mpi_op(op), comm_));
  }

  void broadcast(TensorView data, int root, Stream & stream) override {
    stream.synchronize();
    check_dense(data, "broadcast");
    KOSMOS_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not one of the ", size_, " ranks");
    if (size_ == 1) return;
    const Transfer t = transfer_of(data);
    KOSMOS_MPI_CHECK(MPI_Bcast(data.data, t.count, t.type, root, comm_));
  }

  void send(TensorView data, int peer, Stream & stream, int tag) override {
    finish_or_queue(post(data, peer, stream, tag, "send", false));
  }

  void recv(TensorView data, int peer, Stream & stream, int tag) override {
    finish_or_queue(post(data, peer, stream, tag, "recv", true));
  }

  void send_async(TensorView data, int peer, Stream & stream, int tag) override {
    outstanding_.push_back(post(data, peer, stream, tag, "send_async", false));
  }

  void wait_sends() override {
    if (outstanding_.empty()) return;
    KOSMOS_MPI_CHECK(MPI_Waitall(static_cast<int>(outstanding_.size()), outstanding_.data(), MPI_STATUSES_IGNORE));
    outstanding_.clear();
  }

  void group_begin() override {
    KOSMOS_CHECK(!grouped_, "group_begin: a group is already open; close it with group_end first");
    grouped_ = true;
  }

  void group_end() override {
    KOSMOS_CHECK(grouped_, "group_end without group_begin");
    grouped_ = false;
    if (pending_.empty()) return;
    KOSMOS_MPI_CHECK(MPI_Waitall(static_cast<int>(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE));
    pending_.clear();
  }

  void barrier() override { KOSMOS_MPI_CHECK(MPI_Barrier(comm_)); }

  MPI_Comm handle() const { return comm_; }

  std::unique_ptr<Comm> split(int color, int key) override {
    MPI_Comm part;
    KOSMOS_MPI_CHECK(MPI_Comm_split(comm_, color, key, &part));
    return std::make_unique<MpiComm>(part, true);
  }

 private:
  static void check_tag(int tag) {
    KOSMOS_CHECK(tag >= 0 && tag <= 32767, "p2p: tag ", tag, " is outside [0, 32767], what every MPI allows");
  }
  void check_peer(int peer, const char * what) const {
    KOSMOS_CHECK(peer >= 0 && peer < size_ && peer != rank_, what, ": peer ", peer, " is not another of the ", size_,
                 " ranks (this is rank ", rank_, ")");
  }
  // A reduction to `root` in place: the root's buffer receives (its send side MPI_IN_PLACE), the others' only send.
  struct ReduceArguments {
    const void * send;
    void * receive;
    Transfer transfer;
  };
  ReduceArguments reduce_arguments(const TensorView & data, int root, Stream & stream, const char * what) const {
    stream.synchronize();  // MPI reads host memory: the stream's work on it must be done
    check_dense(data, what);
    KOSMOS_CHECK(root >= 0 && root < size_, what, ": root ", root, " is not one of the ", size_, " ranks");
    const Transfer t = reduction_of(data, what);
    return rank_ == root ? ReduceArguments{MPI_IN_PLACE, data.data, t} : ReduceArguments{data.data, nullptr, t};
  }
  // Posts a non-blocking send or receive after checking its arguments.
  MPI_Request post(TensorView data, int peer, Stream & stream, int tag, const char * what, bool receive) {
    stream.synchronize();  // MPI reads host memory: the stream's work on it must be done
    check_dense(data, what);
    check_peer(peer, what);
    check_tag(tag);
    const Transfer t = transfer_of(data);
    MPI_Request request;
    if (receive)
      KOSMOS_MPI_CHECK(MPI_Irecv(data.data, t.count, t.type, peer, tag, comm_, &request));
    else
      KOSMOS_MPI_CHECK(MPI_Isend(data.data, t.count, t.type, peer, tag, comm_, &request));
    return request;
  }
  void finish_or_queue(MPI_Request request) {
    if (grouped_) {
      pending_.push_back(request);
    } else {
      KOSMOS_MPI_CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE));
    }
  }

  MPI_Comm comm_;
  bool owned_;
  int size_ = 1, rank_ = 0;
  bool grouped_ = false;
  std::vector<MPI_Request> pending_, outstanding_;
  std::vector<MPI_Request> reductions_;  // all_reduce_async's and reduce_async's, until wait_reductions
};

}  // namespace

MPI_Comm mpi_handle(Comm & comm) {
  Comm * innermost = &comm;
  while (innermost->wrapped() != nullptr) innermost = innermost->wrapped();
  const MpiComm * mpi = dynamic_cast<const MpiComm *>(innermost);
  KOSMOS_CHECK(mpi, "mpi_handle: this communicator is not an MPI one (internal error: parallel HDF5 needs MPI)");
  return mpi->handle();
}

std::unique_ptr<Comm> mpi_world() {
  int initialised = 0;
  MPI_Initialized(&initialised);
  KOSMOS_CHECK(initialised, "mpi_world: MPI is not initialised (internal: launch/ starts MPI first)");
  return std::make_unique<MpiComm>(MPI_COMM_WORLD, false);
}

ProcessGrid::ProcessGrid(const GridShape & shape, std::unique_ptr<Comm> world) : shape_(shape), world_(std::move(world)) {
  KOSMOS_CHECK(shape.world() == world_->size(), "process grid: ", describe(shape), " needs ", shape.world(),
               " ranks but ", world_->size(), " were launched; match --dp x --pp x --tp to the rank count");
  coord_ = coord_of(shape, world_->rank());
  // Each split groups the ranks that agree on the other two coordinates, ordered along its own axis.
  tp_ = world_->split(coord_.dp + shape.dp * coord_.pp, coord_.tp);
  dp_ = world_->split(coord_.tp + shape.tp * coord_.pp, coord_.dp);
  pp_ = world_->split(coord_.tp + shape.tp * coord_.dp, coord_.pp);
}

ProcessGrid::~ProcessGrid() = default;

Comm & ProcessGrid::group(Axis axis) {
  switch (axis) {
    case Axis::kTensor: return *tp_;
    case Axis::kData: return *dp_;
    case Axis::kPipeline: return *pp_;
  }
  KOSMOS_FAIL("ProcessGrid::group: unknown axis ", static_cast<int>(axis));
}

}  // namespace kosmos::parallel
