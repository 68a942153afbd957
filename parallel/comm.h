// comm.h: one collective interface for every transport (MPI now; NCCL/RCCL with the GPU backends), and the
// process grid's communicators. Buffers are device views (host memory on the CPU backend); every call takes the
// stream it is ordered on. A group of one rank returns at once.
#pragma once

#include <exception>
#include <memory>
#include <string>

#include "backends/device.h"
#include "backends/error.h"
#include "parallel/grid.h"

namespace kosmos::parallel {

enum class ReduceOp : uint8_t { kSum, kMax };

// How far a transport's queued collectives have got (DeviceQueue::finished_so_far): how many have finished (they
// finish in queue order), and what the transport reports if it has failed (the rest then never will).
struct QueueState {
  int64_t finished = 0;
  std::string error;
};

// A transport's collectives that return once queued on a device and finish later (NCCL's): how the watchdog learns
// how far they have got, where it would otherwise take a hung collective for done and let the host wait for ever.
class DeviceQueue {
 public:
  virtual ~DeviceQueue() = default;
  virtual int64_t queued() const = 0;  // collectives queued so far: a count, no device call
  // Callable from any thread; it asks the device's driver, which a hung device may keep from answering, so the
  // watchdog asks from a thread of its own.
  virtual QueueState finished_so_far() = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int size() const = 0;
  virtual int rank() const = 0;
  // data = op over ranks of data (in place); f32 or i32.
  virtual void all_reduce(TensorView data, ReduceOp op, Stream & stream) = 0;
  // out [size * n] = concatenation of every rank's in [n], in rank order; in may be this rank's slot of out.
  virtual void all_gather(TensorView out, TensorView in, Stream & stream) = 0;
  // out [n] = op over ranks of this rank's n-slice of in [size * n].
  virtual void reduce_scatter(TensorView out, TensorView in, ReduceOp op, Stream & stream) = 0;
  // data on rank `root` = op over ranks of data (in place); the other ranks' data is left as it was.
  virtual void reduce(TensorView data, int root, ReduceOp op, Stream & stream) = 0;
  virtual void broadcast(TensorView data, int root, Stream & stream) = 0;
  // Point to point. Between group_begin() and group_end() they are posted together and completed together, so
  // any pattern of sends and receives (a ring, a pipeline exchange) cannot deadlock.
  // `tag` tells messages between the same two ranks apart (0 to 32767), so they may arrive in any order.
  virtual void send(TensorView data, int peer, Stream & stream, int tag = 0) = 0;
  virtual void recv(TensorView data, int peer, Stream & stream, int tag = 0) = 0;
  virtual void group_begin() = 0;
  virtual void group_end() = 0;
  // A send that returns at once; the buffer must stay untouched until wait_sends(). A pipeline posts its
  // activations and gradients this way, so no pair of stages can block each other sending.
  virtual void send_async(TensorView data, int peer, Stream & stream, int tag = 0) = 0;
  virtual void wait_sends() = 0;
  // Reductions that may run behind this rank's later work (a data-parallel gradient bucket during the rest of the
  // backward): `data` must stay untouched until wait_reductions(), which completes every one started and orders
  // `stream`'s later work after them. progress() lets a transport that moves data only inside its own calls (MPI)
  // advance them between two pieces of work. By default they are the blocking all_reduce and reduce, and
  // reduces_asynchronously() says false: a caller whose later work others wait for (a pipeline stage) then reduces
  // after it instead.
  virtual void all_reduce_async(TensorView data, ReduceOp op, Stream & stream) { all_reduce(data, op, stream); }
  virtual void reduce_async(TensorView data, int root, ReduceOp op, Stream & stream) {
    reduce(data, root, op, stream);
  }
  virtual bool reduces_asynchronously() const { return false; }
  virtual void progress() {}
  virtual void wait_reductions(Stream & stream) { (void)stream; }
  // Waits until every rank of the group arrives.
  virtual void barrier() = 0;
  // A sub-communicator of the ranks passing the same color, ordered by key (collective over this group).
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;
  // The communicator this one wraps (a staged one wraps MPI), or null: how mpi_handle() finds MPI underneath.
  virtual Comm * wrapped() { return nullptr; }
  // Its collectives' device queue where they return once queued (NCCL), living as long as this communicator; null
  // where every call's communication finishes before it returns (a staged one's copy back into device memory is
  // queued on the caller's stream, as an op is).
  virtual DeviceQueue * device_queue() { return nullptr; }
};

// The world and its tp, dp and pp sub-communicators, made once (MPI_Comm_split) and passed by reference.
class ProcessGrid {
 public:
  ProcessGrid(const GridShape & shape, std::unique_ptr<Comm> world);
  ~ProcessGrid();
  const GridShape & shape() const { return shape_; }
  const GridCoord & coord() const { return coord_; }
  Comm & world() { return *world_; }
  Comm & group(Axis axis);

 private:
  GridShape shape_;
  GridCoord coord_;
  std::unique_ptr<Comm> world_, tp_, dp_, pp_;
};

// MPI_COMM_WORLD as a Comm (MPI must be initialised; it is not finalised here).
std::unique_ptr<Comm> mpi_world();

// The error of the lowest rank of `world` that has one (every rank's `error` is empty or its message), on every
// rank; empty when no rank has one. Collective over `world`.
std::string first_error_over(Comm & world, const std::string & error, Stream & stream);

// Runs `check` on this rank (a check only some ranks make: rank 0 opens a file the others never touch), then throws
// on every rank the error of the lowest rank whose check threw (an Error, or any other std::exception, whose text it
// carries), so that each rank says what failed and how to fix it, where otherwise one rank would and the others
// would be ended by its abort. Collective over `world`.
template <typename Check>
void check_together(Comm & world, Stream & stream, Check && check) {
  std::string error;
  try {
    check();
  } catch (const Error & failure) {
    error = failure.what();
  } catch (const std::exception & failure) {
    error = std::string("unexpected failure: ") + failure.what();
  }
  error = first_error_over(world, error, stream);
  if (!error.empty()) throw Error(error);
}

}  // namespace kosmos::parallel
