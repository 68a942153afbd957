// schedule.cpp: GPipe, 1F1B, interleaved 1F1B and ZB-H1 as action lists, and the dependency simulator.
#include "parallel/schedule.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <tuple>

#include "backends/error.h"

namespace kosmos::parallel {
namespace {

void check_shape(const char * name, int stages, int stage, int micros) {
  KOSMOS_CHECK(stages >= 1 && stage >= 0 && stage < stages, name, ": stage ", stage, " of ", stages,
               " does not exist; stages count from 0");
  KOSMOS_CHECK(micros >= 1, name, ": ", micros, " micro-batches; a step needs at least one");
}

PipeAction forward(int micro, int chunk = 0) { return {PassKind::kForward, micro, chunk}; }
PipeAction backward(int micro, int chunk = 0) { return {PassKind::kBackward, micro, chunk}; }

}  // namespace

const char * schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kGPipe: return "gpipe";
    case ScheduleKind::kOneFOneB: return "1f1b";
    case ScheduleKind::kInterleaved: return "interleaved";
    case ScheduleKind::kZeroBubbleH1: return "zb-h1";
  }
  KOSMOS_FAIL("schedule_name: unknown schedule ", static_cast<int>(kind));
}

ScheduleKind schedule_from_name(const std::string & name) {
  for (ScheduleKind kind : {ScheduleKind::kGPipe, ScheduleKind::kOneFOneB, ScheduleKind::kInterleaved,
                            ScheduleKind::kZeroBubbleH1})
    if (name == schedule_name(kind)) return kind;
  KOSMOS_FAIL("--schedule ", name, " is not a schedule; choose gpipe, 1f1b, interleaved or zb-h1");
}

std::vector<PipeAction> schedule_gpipe(int stages, int stage, int micros) {
  check_shape("gpipe", stages, stage, micros);
  std::vector<PipeAction> actions;
  for (int m = 0; m < micros; ++m) actions.push_back(forward(m));
  for (int m = 0; m < micros; ++m) actions.push_back(backward(m));
  return actions;
}

std::vector<PipeAction> schedule_1f1b(int stages, int stage, int micros) {
  check_shape("1f1b", stages, stage, micros);
  const int warmup = std::min(stages - stage - 1, micros);
  std::vector<PipeAction> actions;
  for (int m = 0; m < warmup; ++m) actions.push_back(forward(m));  // warm-up
  for (int m = 0; m < micros - warmup; ++m) {                      // steady state: one forward, one backward
    actions.push_back(forward(warmup + m));
    actions.push_back(backward(m));
  }
  for (int m = micros - warmup; m < micros; ++m) actions.push_back(backward(m));  // cool-down
  return actions;
}

std::vector<PipeAction> schedule_interleaved(int stages, int stage, int micros, int chunks) {
  check_shape("interleaved", stages, stage, micros);
  KOSMOS_CHECK(chunks >= 1, "interleaved: ", chunks, " model chunks per stage; give at least 1");
  KOSMOS_CHECK(micros % stages == 0, "interleaved: ", micros, " micro-batches is not a multiple of the ", stages,
               " pipeline stages; use --micro-batches ", (micros / stages + 1) * stages, " or another schedule");
  const int total = micros * chunks;
  // The k-th forward runs micro-batches in groups of `stages`, one chunk after the other; backwards mirror it.
  auto micro_of = [&](int k) { return (k / (stages * chunks)) * stages + k % stages; };
  auto forward_chunk = [&](int k) { return (k / stages) % chunks; };
  auto backward_chunk = [&](int k) { return chunks - 1 - (k / stages) % chunks; };
  const int warmup = std::min((stages - stage - 1) * 2 + (chunks - 1) * stages, total);
  std::vector<PipeAction> actions;
  for (int k = 0; k < warmup; ++k) actions.push_back(forward(micro_of(k), forward_chunk(k)));
  for (int k = 0; k < total - warmup; ++k) {
    actions.push_back(forward(micro_of(warmup + k), forward_chunk(warmup + k)));
    actions.push_back(backward(micro_of(k), backward_chunk(k)));
  }
  for (int k = total - warmup; k < total; ++k) actions.push_back(backward(micro_of(k), backward_chunk(k)));
  return actions;
}

std::vector<PipeAction> schedule_zb_h1(int stages, int stage, int micros) {
  check_shape("zb-h1", stages, stage, micros);
  // Built by list scheduling over all stages with unit pass costs (F = B = W), in the manner of the zero-bubble
  // paper's schedules. A stage that is free runs, in order of preference:
  //   1. an input-gradient pass B whose gradient has arrived (B is on the critical path back to stage 0);
  //   2. the next forward, if fewer than stages - s micro-batches sit between their F and their B (1F1B's bound)
  //      and fewer than 2 (stages - s) between their F and their W;
  //   3. a pending weight-gradient pass W (filling what would otherwise be a bubble).
  // Otherwise it waits for the next pass to finish anywhere. At p = 4, m = 8 this idles (p-1)(F+B)-ish per stage
  // against 1F1B's (p-1)(F+B+W) (tests/unit/test_schedule.cpp); the paper's hand-made ZB-H1 reaches (p-1)(F+B-W).
  const int p = stages;
  std::vector<std::vector<PipeAction>> order(static_cast<size_t>(p));
  std::vector<int> next_forward(p, 0), next_backward(p, 0), next_weight(p, 0);
  std::vector<double> free_at(p, 0.0);
  // finish times: forward[s][m], input gradient[s][m]; -1 while not run
  std::vector<std::vector<double>> forward_done(p, std::vector<double>(micros, -1.0));
  std::vector<std::vector<double>> backward_done(p, std::vector<double>(micros, -1.0));
  int remaining = 3 * p * micros;
  double now = 0.0;
  const double horizon = 4.0 * remaining + 16.0;  // a serial run of every pass takes `remaining` time steps
  while (remaining > 0) {
    KOSMOS_CHECK(now <= horizon, "zb-h1: list scheduling made no progress for p = ", p, ", m = ", micros,
                 " (internal error; use 1f1b)");
    bool ran = false;
    for (int s = 0; s < p; ++s) {
      if (free_at[s] > now) continue;
      const int b = next_backward[s];
      const double gradient_ready = b >= micros ? -1.0 : (s == p - 1 ? forward_done[s][b] : backward_done[s + 1][b]);
      const int f = next_forward[s];
      const double input_ready = f >= micros ? -1.0 : (s == 0 ? 0.0 : forward_done[s - 1][f]);
      const bool backward_ok = gradient_ready >= 0.0 && gradient_ready <= now;
      const bool forward_ok = input_ready >= 0.0 && input_ready <= now && f - next_backward[s] < p - s &&
                              f - next_weight[s] < 2 * (p - s);
      const bool weight_ok = next_weight[s] < next_backward[s];
      if (backward_ok) {
        order[s].push_back({PassKind::kBackwardInput, b, 0});
        backward_done[s][b] = now + 1.0;
        ++next_backward[s];
      } else if (forward_ok) {
        order[s].push_back(forward(f));
        forward_done[s][f] = now + 1.0;
        ++next_forward[s];
      } else if (weight_ok) {
        order[s].push_back({PassKind::kBackwardWeight, next_weight[s]++, 0});
      } else {
        continue;
      }
      free_at[s] = now + 1.0;
      --remaining;
      ran = true;
    }
    if (!ran || remaining > 0) now += ran ? 0.0 : 1.0;  // unit costs: events fall on whole time steps
    if (ran) {
      bool any_free = false;
      for (int s = 0; s < p; ++s) any_free = any_free || free_at[s] <= now;
      if (!any_free) now += 1.0;
    }
  }
  return order[static_cast<size_t>(stage)];
}

std::vector<PipeAction> make_schedule(ScheduleKind kind, int stages, int stage, int micros, int chunks) {
  switch (kind) {
    case ScheduleKind::kGPipe: return schedule_gpipe(stages, stage, micros);
    case ScheduleKind::kOneFOneB: return schedule_1f1b(stages, stage, micros);
    case ScheduleKind::kInterleaved: return schedule_interleaved(stages, stage, micros, chunks);
    case ScheduleKind::kZeroBubbleH1: return schedule_zb_h1(stages, stage, micros);
  }
  KOSMOS_FAIL("make_schedule: unknown schedule ", static_cast<int>(kind), " (known: gpipe, 1f1b, interleaved, zb-h1)");
}

std::string describe(const std::vector<PipeAction> & actions) {
  std::ostringstream out;
  bool chunked = false;
  for (const PipeAction & action : actions) chunked = chunked || action.chunk != 0;
  for (size_t i = 0; i < actions.size(); ++i) {
    const PipeAction & a = actions[i];
    const char * letter = a.kind == PassKind::kForward ? "F" : a.kind == PassKind::kBackward ? "B"
                          : a.kind == PassKind::kBackwardInput ? "B" : "W";
    out << (i ? " " : "") << letter << a.micro;
    if (chunked) out << "." << a.chunk;
  }
  return out.str();
}

MicroBatchesHeld::MicroBatchesHeld(int micros, int chunks)
    : chunks_(chunks), chunks_finished_(static_cast<size_t>(micros), 0), holding_(static_cast<size_t>(micros), false) {}

bool MicroBatchesHeld::ran(const PipeAction & action) {
  KOSMOS_CHECK(action.micro >= 0 && action.micro < static_cast<int>(holding_.size()), "pipeline: micro-batch ",
               action.micro, " of ", holding_.size(), " (internal error)");
  const auto micro = static_cast<size_t>(action.micro);
  if (action.kind == PassKind::kForward) {
    if (!holding_[micro]) ++held_;
    holding_[micro] = true;
    return false;
  }
  if (action.kind == PassKind::kBackwardInput || ++chunks_finished_[micro] < chunks_) return false;
  if (holding_[micro]) --held_;
  holding_[micro] = false;
  return true;
}

int peak_micro_batches_held(const std::vector<PipeAction> & actions, int chunks) {
  int micros = 0;
  for (const PipeAction & action : actions) micros = std::max(micros, action.micro + 1);
  MicroBatchesHeld held(micros, chunks);
  int peak = 0;
  for (const PipeAction & action : actions) {
    held.ran(action);
    peak = std::max(peak, held.held());
  }
  return peak;
}

SimulatedStep simulate(const std::vector<std::vector<PipeAction>> & stages, int micros, int chunks,
                       const PassCosts & costs) {
  const int count = static_cast<int>(stages.size());
  const int virtual_stages = count * chunks;
  // Finish times of passes, keyed by (kind group, micro, virtual stage): forward 0, input gradient 1, weight 2.
  std::map<std::tuple<int, int, int>, double> done;
  std::vector<size_t> next(static_cast<size_t>(count), 0);
  std::vector<double> free_at(static_cast<size_t>(count), 0.0), busy(static_cast<size_t>(count), 0.0);
  const double scale = 1.0 / chunks;  // a chunk holds 1/chunks of the stage's layers
  auto finished = [&](int group, int micro, int vs, double * at) {
    const auto found = done.find({group, micro, vs});
    if (found == done.end()) return false;
    *at = found->second;
    return true;
  };
  size_t remaining = 0;
  for (const auto & list : stages) remaining += list.size();
  while (remaining > 0) {
    bool progressed = false;
    for (int s = 0; s < count; ++s) {
      while (next[s] < stages[s].size()) {
        const PipeAction & a = stages[s][next[s]];
        const int vs = a.chunk * count + s;
        double ready = 0.0;
        bool can = true;
        double cost = 0.0;
        int group = 0;
        switch (a.kind) {
          case PassKind::kForward:
            group = 0, cost = costs.forward;
            can = vs == 0 || finished(0, a.micro, vs - 1, &ready);
            break;
          case PassKind::kBackward:
          case PassKind::kBackwardInput:
            group = 1;
            cost = a.kind == PassKind::kBackward ? costs.backward_input + costs.backward_weight : costs.backward_input;
            can = vs == virtual_stages - 1 ? finished(0, a.micro, vs, &ready) : finished(1, a.micro, vs + 1, &ready);
            break;
          case PassKind::kBackwardWeight:
            group = 2, cost = costs.backward_weight;
            can = finished(1, a.micro, vs, &ready);
            break;
        }
        if (!can) break;
        const double start = std::max(ready, free_at[s]), end = start + cost * scale;
        KOSMOS_CHECK(done.emplace(std::make_tuple(group, a.micro, vs), end).second, "simulate: stage ", s,
                     " runs pass ", describe({a}), " of virtual stage ", vs, " twice");
        if (a.kind == PassKind::kBackward) done.emplace(std::make_tuple(2, a.micro, vs), end);
        free_at[s] = end;
        busy[s] += cost * scale;
        ++next[s];
        --remaining;
        progressed = true;
      }
    }
    if (!progressed) {
      std::string blocked;
      for (int s = 0; s < count; ++s)
        if (next[s] < stages[s].size()) blocked += " stage " + std::to_string(s) + ": " + describe({stages[s][next[s]]});
      KOSMOS_FAIL("simulate: the schedules deadlock; blocked at", blocked);
    }
  }
  for (int m = 0; m < micros; ++m)
    for (int vs = 0; vs < virtual_stages; ++vs)
      for (int group = 0; group < 3; ++group)
        KOSMOS_CHECK(done.count({group, m, vs}), "simulate: micro-batch ", m, " never runs its ",
                     group == 0 ? "forward" : group == 1 ? "backward" : "weight gradient", " on virtual stage ", vs);
  SimulatedStep step;
  for (double end : free_at) step.makespan = std::max(step.makespan, end);
  double idle = 0.0;
  for (int s = 0; s < count; ++s) {
    step.idle.push_back(step.makespan - busy[s]);
    idle += step.idle.back();
  }
  step.bubble = idle / (count * step.makespan);
  return step;
}

}  // namespace kosmos::parallel
