// stop_signals.cpp: the watcher thread of StopSignals: sigwait for SIGTERM, SIGUSR1 and SIGINT, then either record a
// stop request or, before catch_stops() (and at a second SIGINT), end the process with the signal's default action.
#include "launch/stop_signals.h"

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "backends/error.h"

namespace kosmos {

struct StopSignals::State {
  sigset_t watched;  // SIGTERM, SIGUSR1, and SIGINT unless the process was started with it ignored
  std::atomic<bool> catching{false};
  std::atomic<bool> interrupted{false};  // a SIGINT came: a second one does not wait for the step to end
  std::atomic<int> requested{0};
};

namespace {

// The signals to watch. SIGINT stays out where the process was started ignoring it (a background job of a shell
// script, by POSIX's convention): a blocked signal is queued for sigwait whatever its disposition, so watching it
// would have a Ctrl-C meant for the script stop this process.
sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  struct sigaction interrupt {};
  if (sigaction(SIGINT, nullptr, &interrupt) == 0 && interrupt.sa_handler != SIG_IGN) sigaddset(&set, SIGINT);
  return set;
}

void watch(const std::shared_ptr<StopSignals::State> & state) {
  for (;;) {
    int signal = 0;
    if (sigwait(&state->watched, &signal) != 0) continue;
    if (state->catching.load() && !(signal == SIGINT && state->interrupted.load())) {
      if (signal == SIGINT) {
        state->interrupted.store(true);
        const char note[] = "\nkosmos: stopping after this step with a checkpoint; Ctrl-C again to end at once\n";
        std::fwrite(note, 1, sizeof note - 1, stderr);
      }
      state->requested.store(signal);
      continue;
    }
    // Not asked to catch stops: the default action (termination), delivered to this thread alone.
    std::signal(signal, SIG_DFL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, signal);
    pthread_sigmask(SIG_UNBLOCK, &only, nullptr);
    pthread_kill(pthread_self(), signal);
  }
}

}  // namespace

StopSignals::StopSignals() : state_(std::make_shared<State>()) {
  state_->watched = stop_signal_set();
  const int status = pthread_sigmask(SIG_BLOCK, &state_->watched, nullptr);
  KOSMOS_CHECK(status == 0, "could not block SIGTERM, SIGUSR1 and SIGINT for the signal watcher (pthread_sigmask "
               "error ", status, ")");
  std::thread(watch, state_).detach();
}

void StopSignals::catch_stops() { state_->catching.store(true); }

const std::atomic<int> & StopSignals::requested() const { return state_->requested; }

}  // namespace kosmos
