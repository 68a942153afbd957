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
  std::atomic<bool> catching{false};
  std::atomic<int> requested{0};
};

namespace {

sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGINT);
  return set;
}

void watch(const std::shared_ptr<StopSignals::State> & state) {
  const sigset_t set = stop_signal_set();
  for (;;) {
    int signal = 0;
    if (sigwait(&set, &signal) != 0) continue;
    // A second Ctrl-C does not wait for the step to end.
    if (state->catching.load() && !(signal == SIGINT && state->requested.load() == SIGINT)) {
      if (signal == SIGINT && state->requested.load() == 0) {
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
  const sigset_t set = stop_signal_set();
  const int status = pthread_sigmask(SIG_BLOCK, &set, nullptr);
  KOSMOS_CHECK(status == 0, "could not block SIGTERM, SIGUSR1 and SIGINT for the signal watcher (pthread_sigmask "
               "error ", status, ")");
  std::thread(watch, state_).detach();
}

void StopSignals::catch_stops() { state_->catching.store(true); }

const std::atomic<int> & StopSignals::requested() const { return state_->requested; }

}  // namespace kosmos
