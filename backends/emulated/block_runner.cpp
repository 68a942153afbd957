// block_runner.cpp: the emulated GPU's scheduler: a block's threads as fibers, round-robin, each running until it
// waits at a barrier or returns; barriers released when every live thread of the group has arrived; a pass in which
// no thread moves is a deadlock (a barrier some threads never reach) and faults. A fiber is a stack that runs
// thread after thread (of this block, the next, the next launch): it starts once through makecontext/setcontext and
// switches with GCC's __builtin_setjmp/__builtin_longjmp from then on, which keep the stack and frame pointers and the
// resume address only (the function around the setjmp saves what registers it needs). glibc's _setjmp/_longjmp,
// used before, saved every callee-saved register (pointer-mangled) and on each jump ran the cancellation cleanups'
// unwinding and the saved mask's check: a fifth of the emulator's time.
#include "backends/emulated/block_runner.h"

#include <signal.h>
#include <ucontext.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

namespace kosmos_emulation {
namespace {

constexpr size_t kFiberStack = size_t{256} << 10;  // the WMMA fragments' whole tiles per lane fit many times
constexpr size_t kMaxThreads = 1024;

// Where a fiber switch resumes: __builtin_setjmp's five words.
using JumpBuffer = void * [5];

// Resumes the __builtin_setjmp that filled `buffer` (which returns 1 there). Its own function, as GCC does not take
// __builtin_longjmp in the function that calls __builtin_setjmp; opaque to GCC's analysis of its callers (noipa), as
// glibc's _longjmp was: the other threads that run before a switch returns change memory that the caller may hold in
// registers (a barrier's generation, read again after each yield), and a call GCC could see through would not say so.
[[noreturn, gnu::noipa]] void jump_to(JumpBuffer & buffer) { __builtin_longjmp(buffer, 1); }

struct PendingCopy {
  void * target;
  const void * source;
};

// One pool slot: a stack and where its thread stopped. Its loop (fiber_loop) outlives the threads it runs.
struct Fiber {
  std::unique_ptr<char[]> stack;  // default-initialised: pages are touched only as the stack grows
  bool started = false;           // false: (re)start the loop on the stack (new, or its thread faulted)
  JumpBuffer resume{};
  Index3 index{};
  int warp = 0;
  unsigned exchanges = 0;  // warp exchanges the thread has finished: its bank of slots is the parity
  bool finished = false;
  std::vector<PendingCopy> copies;
};

// A barrier's group: the block, or one warp.
struct Group {
  int arrived = 0;
  uint64_t generation = 0;
  int members = 0;  // threads of the group that have not returned
};

struct BlockRun {
  Index3 grid{}, block{}, block_index{};
  int warp_lanes = 32;
  size_t live = 0;
  Group whole;
  std::vector<Group> warps;
  std::vector<uint64_t> slots;  // [2 banks][warps][warp_lanes][kSlotWords]
  std::vector<unsigned char> shared;
  unsigned char * shared_begin = nullptr;
  size_t shared_bytes = 0;
  bool copies_land_at_issue = false;  // cp.async's copies: at once, or at the thread's wait
  JumpBuffer scheduler{};
  Fiber * current = nullptr;
  bool moved = false;  // whether any thread arrived, left a barrier or returned in this pass
  std::string fault;
  const std::function<void()> * body = nullptr;
};

thread_local BlockRun * active = nullptr;
thread_local bool in_kernel = false;  // whether this host thread runs a kernel's thread now (not the scheduler)
struct sigaction previous_segv_action {};
thread_local std::vector<Fiber> pool;  // the fibers of this host thread, reused by every launch from it
std::mutex launches;                   // one grid at a time: kernels' __shared__ arrays are static storage

BlockRun & run() { return *active; }

// Back to the scheduler; returns when the scheduler resumes this thread.
void yield() {
  if (__builtin_setjmp(run().current->resume) == 0) jump_to(run().scheduler);
}

// Releases `group` when every live member has arrived.
void release_if_complete(Group & group) {
  if (group.arrived > 0 && group.arrived >= group.members) {
    group.arrived = 0;
    ++group.generation;
    run().moved = true;
  }
}

void wait_at(Group & group) {
  const uint64_t generation = group.generation;
  ++group.arrived;
  run().moved = true;
  release_if_complete(group);
  while (group.generation == generation) {
    yield();
  }
}

void finish_thread() {
  BlockRun & r = run();
  Fiber & fiber = *r.current;
  if (r.warps[fiber.warp].arrived > 0)  // undefined on the hardware: the waiting lanes may hang or read garbage
    fault("a thread returned while other lanes of its warp wait for it at __syncwarp or a warp-collective "
          "instruction (shuffle, ldmatrix, mma)");
  complete_copies();
  fiber.finished = true;
  --r.live;
  r.moved = true;
  --r.whole.members;
  --r.warps[fiber.warp].members;
  release_if_complete(r.whole);
  release_if_complete(r.warps[fiber.warp]);
}

// A fiber's whole life: the thread it is given, then the next; it never returns.
void fiber_loop() {
  for (;;) {
    (*run().body)();
    finish_thread();
    yield();  // resumed only with the next thread to run
  }
}

// SIGSEGV in a kernel's thread (an access past a buffer's end, into its guard page) faults the launch; anywhere
// else it goes to the handler that was there before (Open MPI's, or the default), by returning into the faulting
// instruction with that handler back in place.
void on_segmentation_fault(int, siginfo_t * info, void *) {
  if (!in_kernel) {
    sigaction(SIGSEGV, &previous_segv_action, nullptr);
    return;
  }
  char address[32];
  std::snprintf(address, sizeof address, "%p", info->si_addr);
  fault(std::string("illegal memory access at ") + address + " (" + describe_address(info->si_addr) + ")");
}

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = on_segmentation_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;  // NODEFER: leaving by the fault's jump leaves SIGSEGV unblocked
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous_segv_action);
  });
}

// Runs `fiber`'s thread until it waits or returns.
void resume(BlockRun & r, Fiber & fiber) {
  r.current = &fiber;
  in_kernel = true;
  if (__builtin_setjmp(r.scheduler) != 0) {
    in_kernel = false;
    return;
  }
  if (fiber.started) jump_to(fiber.resume);
  fiber.started = true;
  ucontext_t start{};
  getcontext(&start);
  start.uc_stack.ss_sp = fiber.stack.get();
  start.uc_stack.ss_size = kFiberStack;
  start.uc_link = nullptr;  // fiber_loop never returns
  makecontext(&start, fiber_loop, 0);
  setcontext(&start);
}

}  // namespace

const Index3 & thread_index() { return run().current->index; }
const Index3 & block_index() { return run().block_index; }
const Index3 & block_dims() { return run().block; }
const Index3 & grid_dims() { return run().grid; }

int lane() {
  const Index3 & t = thread_index();
  const Index3 & b = block_dims();
  const unsigned linear = t.x + b.x * (t.y + b.y * t.z);
  return static_cast<int>(linear % static_cast<unsigned>(run().warp_lanes));
}

void block_barrier() { wait_at(run().whole); }
void warp_barrier() { wait_at(run().warps[run().current->warp]); }

// Exchanges alternate between two banks of slots, so that a lane may start the next exchange while others still
// read this one: the one after next, which reuses this bank, waits for every lane to arrive at the next.
uint64_t * exchange_slots(int source_lane) {
  BlockRun & r = run();
  const size_t bank = r.current->exchanges % 2, warps = r.warps.size();
  return r.slots.data() +
         ((bank * warps + static_cast<size_t>(r.current->warp)) * r.warp_lanes + source_lane) * kSlotWords;
}
void begin_exchange() {
  if (run().warps[run().current->warp].members != run().warp_lanes)
    fault("a warp-collective instruction (shuffle, ldmatrix, mma) ran in a warp of " +
          std::to_string(run().warps[run().current->warp].members) + " live lanes; they need all " +
          std::to_string(run().warp_lanes) + " (a partial warp, or lanes that returned early)");
  warp_barrier();
}
void finish_exchange() { ++run().current->exchanges; }

unsigned char * dynamic_shared() { return run().shared_begin; }
bool in_dynamic_shared(const void * pointer, size_t bytes) {
  const auto * p = static_cast<const unsigned char *>(pointer);
  return p >= run().shared_begin && p + bytes <= run().shared_begin + run().shared_bytes;
}

void fault(const std::string & message) {
  BlockRun & r = run();
  if (r.fault.empty())
    r.fault = message + " (block (" + std::to_string(r.block_index.x) + ", " + std::to_string(r.block_index.y) +
              ", " + std::to_string(r.block_index.z) + "), thread (" + std::to_string(r.current->index.x) + ", " +
              std::to_string(r.current->index.y) + ", " + std::to_string(r.current->index.z) + "))";
  r.current->started = false;  // its stack holds this thread's frames: the next thread starts the loop afresh
  jump_to(r.scheduler);
}

namespace {
std::atomic<int64_t> bank_requests{0}, bank_conflicted{0};
std::atomic<int> bank_worst{0};
}  // namespace

void count_bank_passes(int passes) {
  ++bank_requests;
  if (passes > 1) ++bank_conflicted;
  int worst = bank_worst.load();
  while (passes > worst && !bank_worst.compare_exchange_weak(worst, passes)) {
  }
}
BankCounts bank_counts() { return {bank_requests.load(), bank_conflicted.load(), bank_worst.load()}; }
void reset_bank_counts() {
  bank_requests = 0;
  bank_conflicted = 0;
  bank_worst = 0;
}

void start_copy_16(void * target, const void * source) {
  if (run().copies_land_at_issue)
    std::memcpy(target, source, 16);
  else
    run().current->copies.push_back({target, source});
}
void complete_copies() {
  for (const PendingCopy & copy : run().current->copies) std::memcpy(copy.target, copy.source, 16);
  run().current->copies.clear();
}

std::string run_grid(Index3 grid, Index3 block, size_t dynamic_shared_bytes, int warp_lanes,
                     const std::function<void()> & body) {
  const size_t threads = size_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64)
    return "invalid block of " + std::to_string(block.x) + " x " + std::to_string(block.y) + " x " +
           std::to_string(block.z) + " threads (at most 1024 in all, z at most 64)";
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    return "invalid grid of " + std::to_string(grid.x) + " x " + std::to_string(grid.y) + " x " +
           std::to_string(grid.z) + " blocks (each at least 1; y and z at most 65535)";
  const std::lock_guard<std::mutex> lock(launches);
  install_fault_handler();
  while (pool.size() < threads) {
    pool.emplace_back();
    pool.back().stack.reset(new char[kFiberStack]);
  }

  BlockRun r;
  r.grid = grid;
  r.block = block;
  r.body = &body;
  r.warp_lanes = warp_lanes;
  const size_t warps = (threads + warp_lanes - 1) / warp_lanes;
  r.slots.assign(2 * warps * warp_lanes * kSlotWords, 0);
  r.shared.resize(dynamic_shared_bytes + 128);
  r.shared_begin = r.shared.data() + (128 - reinterpret_cast<uintptr_t>(r.shared.data()) % 128) % 128;
  r.shared_bytes = dynamic_shared_bytes;
  BlockRun * const outer = active;
  active = &r;
  for (unsigned bz = 0; bz < grid.z && r.fault.empty(); ++bz)
    for (unsigned by = 0; by < grid.y && r.fault.empty(); ++by)
      for (unsigned bx = 0; bx < grid.x && r.fault.empty(); ++bx) {
        r.block_index = {bx, by, bz};
        std::memset(r.shared_begin, 0xff, dynamic_shared_bytes);
        r.whole = Group{0, 0, static_cast<int>(threads)};
        r.warps.assign(warps, Group{});
        for (size_t t = 0; t < threads; ++t) {
          Fiber & fiber = pool[t];
          fiber.index = {static_cast<unsigned>(t % block.x), static_cast<unsigned>(t / block.x % block.y),
                         static_cast<unsigned>(t / (size_t{block.x} * block.y))};
          fiber.warp = static_cast<int>(t / warp_lanes);
          fiber.finished = false;
          fiber.exchanges = 0;
          fiber.copies.clear();
          ++r.warps[fiber.warp].members;
        }
        r.live = threads;
        // Passes alternate between ascending and descending thread order, starting one way in even blocks and the
        // other in odd ones: two threads that share memory without a barrier between them run in both orders
        // somewhere in a grid of two blocks or more, so a missing barrier shows as a wrong result.
        bool descending = (bx + by + bz) % 2 == 1;
        // cp.async's copies land at the latest (at the wait) in blocks 0 and 1 of every four, and at the earliest
        // (at issue) in blocks 2 and 3: a read of a target before its wait shows in the first, and a copy issued into
        // shared memory that other threads still read (a missing barrier before refilling a buffer) in the second,
        // with the threads in either order.
        r.copies_land_at_issue = (bx + by + bz) / 2 % 2 == 1;
        while (r.live > 0 && r.fault.empty()) {
          r.moved = false;
          for (size_t i = 0; i < threads; ++i) {
            const size_t t = descending ? threads - 1 - i : i;
            if (pool[t].finished) continue;
            resume(r, pool[t]);
            if (!r.fault.empty()) break;
          }
          descending = !descending;
          if (r.live > 0 && !r.moved && r.fault.empty())
            r.fault = "deadlock: " + std::to_string(r.live) + " of " + std::to_string(threads) +
                      " threads wait at a barrier (__syncthreads, __syncwarp or a warp-collective instruction) that "
                      "the others never reach";
        }
      }
  if (!r.fault.empty())  // the block's other threads stopped inside the kernel: their loops start afresh
    for (size_t t = 0; t < threads; ++t)
      if (!pool[t].finished) pool[t].started = false;
  active = outer;
  return r.fault;
}

}  // namespace kosmos_emulation
