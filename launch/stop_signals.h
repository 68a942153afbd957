// stop_signals.h: SIGTERM and SIGUSR1 (what Slurm sends before preemption or the time limit, and what mpirun
// forwards), and SIGINT (Ctrl-C on a run without mpirun; not where the process started with SIGINT ignored, as a
// background job of a shell script does), received by one watcher thread with sigwait, never by a compute thread.
// A handler that interrupts a thread inside oneDNN's JIT kernels corrupted its stack (seen as crashes in matmul
// under a signal storm), so the signals are blocked in every other thread and the kernels never see them.
#pragma once

#include <atomic>
#include <memory>

namespace kosmos {

class StopSignals {
 public:
  // Blocks the three signals in the calling thread, and so in every thread started after it (MPI's, OpenMP's),
  // and starts the watcher. Construct it first in main, before MPI_Init. Until catch_stops(), a signal ends the
  // process as it would by default.
  StopSignals();
  StopSignals(const StopSignals &) = delete;
  StopSignals & operator=(const StopSignals &) = delete;

  // From now on a signal asks for a stop instead: the flag takes the signal's number, the process goes on; but a
  // second SIGINT after a first ends it at once.
  void catch_stops();
  // 0 while no stop was asked for, else the signal's number.
  const std::atomic<int> & requested() const;

  struct State;

 private:
  std::shared_ptr<State> state_;  // shared with the detached watcher thread, which outlives main's objects
};

}  // namespace kosmos
