// block_runner.h: runs a GPU kernel's grid on the host, for the emulated GPU backend (the CUDA kernel sources
// compiled by g++, so that their logic is tested where no GPU is). Blocks run one after another; a block's threads
// run as fibers (block_runner.cpp) on the calling thread and switch only where a thread waits: at __syncthreads, at
// __syncwarp and at the warp-collective instructions (shuffles, ldmatrix, mma), which exchange lane values through
// the warp's slots. A fault (a misaligned ldmatrix, a barrier some threads never reach, a bad launch) is recorded
// and ends the block; the runtime reports it where CUDA reports a kernel's failure (cudaGetLastError).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace kosmos_emulation {

struct Index3 {
  unsigned x, y, z;
};

// The running thread's coordinates (threadIdx, blockIdx, blockDim, gridDim of the kernel source).
const Index3 & thread_index();
const Index3 & block_index();
const Index3 & block_dims();
const Index3 & grid_dims();
int lane();  // the thread's lane in its warp (of 32 lanes as on NVIDIA, or 64 as on CDNA: run_grid's warp_lanes)

// __syncthreads and __syncwarp. A barrier counts the threads that have not returned yet (as Volta and later do).
void block_barrier();
void warp_barrier();

// Warp exchange: every lane of the warp puts kSlotWords words into its slots, waits for the others
// (begin_exchange), reads any lane's, and ends it (finish_exchange: the next exchange writes the other bank of slots,
// so a lane never overwrites what another still reads, without a second wait).
constexpr int kSlotWords = 8;
uint64_t * exchange_slots(int lane);  // the current warp's slots of `lane`, in this exchange's bank
void begin_exchange();                // after putting one's own words: wait for the warp
void finish_exchange();               // after reading

// The block's dynamic shared memory (extern __shared__), poisoned with 0xff bytes (NaN as f32, bf16 and f16)
// at the start of each block, and whether a pointer lies inside it.
unsigned char * dynamic_shared();
bool in_dynamic_shared(const void * pointer, size_t bytes);

// Ends the calling thread with a fault: the launch fails with `message`. A kernel's access to memory that is not
// mapped (past a device buffer's end, into its guard page) faults so too, with describe_address's words for it.
[[noreturn]] void fault(const std::string & message);
std::string describe_address(const void * address);  // runtime.cpp: where the address lies among device buffers

// 16-byte copies that cp.async started: in blocks 0 and 1 of every four done at the thread's wait (or when it
// returns), so that a read of a target before the wait sees the old bytes; in blocks 2 and 3 done at once, so that a
// copy into bytes other threads still read shows. The hardware may land them anywhere between the two.
void start_copy_16(void * target, const void * source);
void complete_copies();

// Shared-memory banks as ldmatrix meets them: each 8 x 8 matrix it loads is one 128-byte request of 8 row
// addresses, which the hardware serves in as many passes as the most distinct 4-byte words any of the 32 banks
// holds (one where the rows fall in distinct banks). Counted over every launch since the last reset.
struct BankCounts {
  int64_t requests = 0;    // matrices loaded
  int64_t conflicted = 0;  // of them, those that took more than one pass
  int worst = 0;           // the most passes one took
};
void count_bank_passes(int passes);
BankCounts bank_counts();
void reset_bank_counts();

// Runs `body` once per thread of the grid, in warps of `warp_lanes`. Returns the fault's message (a bad launch
// shape, or the first thread's fault), or an empty string. Launches from several host threads take turns.
std::string run_grid(Index3 grid, Index3 block, size_t dynamic_shared_bytes, int warp_lanes,
                     const std::function<void()> & body);

}  // namespace kosmos_emulation
