// bench_comm.cpp: `kosmos bench comm`: all-reduce, all-gather, reduce-scatter, broadcast and a pairwise exchange over
// message sizes, through this system's Comm (MPI, or staged through host memory for GPU buffers) and, interleaved
// with it, the plain MPI call it wraps, reporting time, algorithm and bus bandwidth with nccl-tests' definitions
// (all-reduce busbw = algbw 2(n-1)/n; all-gather and reduce-scatter (n-1)/n over the whole buffer; broadcast and
// the exchange busbw = algbw), the ratio to plain MPI, and the link's alpha and beta for `kosmos plan`.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backends/error.h"
#include "launch/files.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

enum class CommOp { kAllReduce, kAllGather, kReduceScatter, kBroadcast, kExchange };

struct CommOpInfo {
  CommOp op;
  const char * name;
  double bus_factor(int ranks) const {
    switch (op) {
      case CommOp::kAllReduce: return 2.0 * (ranks - 1) / ranks;
      case CommOp::kAllGather:
      case CommOp::kReduceScatter: return static_cast<double>(ranks - 1) / ranks;
      case CommOp::kBroadcast:
      case CommOp::kExchange: return 1.0;
    }
    return 1.0;
  }
};

constexpr CommOpInfo kCommOps[] = {{CommOp::kAllReduce, "all_reduce"},
                                   {CommOp::kAllGather, "all_gather"},
                                   {CommOp::kReduceScatter, "reduce_scatter"},
                                   {CommOp::kBroadcast, "broadcast"},
                                   {CommOp::kExchange, "exchange"}};

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// One message size: the device buffers for our Comm, host buffers for plain MPI, both of `count` floats in all.
struct Buffers {
  Buffer device_whole, device_part, device_receive;
  std::vector<float> host_whole, host_part, host_receive;
  TensorView whole, part, receive;  // [count], [count / ranks] and the exchange's [count] on the device
};

}  // namespace

int run_bench_comm(std::ostream & out, const BackendRegistry & registry, const CommBenchOptions & options) {
  std::unique_ptr<Device> device = registry.create_for_local_rank(options.backend, options.local_rank);
  std::unique_ptr<Stream> stream = device->create_stream();
  std::unique_ptr<parallel::Comm> world = world_for(*device);
  const int ranks = world->size(), rank = world->rank();
  KOSMOS_CHECK(ranks >= 2, "kosmos bench comm needs 2 or more ranks (mpirun -np N); it has ", ranks);
  KOSMOS_CHECK(options.min_bytes >= 4 && options.max_bytes >= options.min_bytes, "kosmos bench comm: --min-bytes ",
               options.min_bytes, " and --max-bytes ", options.max_bytes, " must satisfy 4 <= min <= max");
  const int partner = rank ^ 1;  // the exchange pairs ranks 0-1, 2-3, ...; an odd last rank sits out
  const bool paired = partner < ranks;

  std::ostringstream csv;
  csv << "op,bytes,ranks,time_us,algbw_gbs,busbw_gbs,mpi_time_us,mpi_busbw_gbs,ratio\n";
  nlohmann::json results = nlohmann::json::array();
  double small_all_reduce_us = 0.0;
  std::vector<std::pair<size_t, double>> all_reduce_busbw;  // (bytes, bus bandwidth) of every all-reduce
  if (rank == 0)
    out << "kosmos bench comm: " << ranks << " ranks, " << device->name() << " buffers, "
        << (device->host_accessible() ? "MPI" : "MPI through host memory (staged)") << "\n"
        << std::left << std::setw(16) << "op" << std::right << std::setw(12) << "bytes" << std::setw(12) << "time us"
        << std::setw(12) << "algbw GB/s" << std::setw(12) << "busbw GB/s" << std::setw(14) << "MPI busbw"
        << std::setw(9) << "ratio"
        << "\n";
  for (const CommOpInfo & info : kCommOps) {
    for (int64_t bytes = options.min_bytes; bytes <= options.max_bytes; bytes *= 2) {
      const int64_t count = std::max<int64_t>(ranks, (bytes / 4 + ranks - 1) / ranks * ranks);  // divisible by ranks
      const size_t actual_bytes = static_cast<size_t>(count) * 4;
      Buffers b;
      b.device_whole = device->allocate(actual_bytes, BufferUse::kScratch);
      b.device_part = device->allocate(actual_bytes / ranks, BufferUse::kScratch);
      b.device_receive = device->allocate(actual_bytes, BufferUse::kScratch);
      b.whole = b.device_whole.view(DType::kF32, {count});
      b.receive = b.device_receive.view(DType::kF32, {count});
      b.part = b.device_part.view(DType::kF32, {count / ranks});
      op_run(*device, Fill{b.whole, 1.0f}, *stream);
      op_run(*device, Fill{b.part, 1.0f}, *stream);
      b.host_whole.assign(static_cast<size_t>(count), 1.0f);
      b.host_part.assign(static_cast<size_t>(count / ranks), 1.0f);
      b.host_receive.assign(static_cast<size_t>(count), 0.0f);
      const int whole = static_cast<int>(count), part = static_cast<int>(count / ranks);
      auto ours = [&]() {
        switch (info.op) {
          case CommOp::kAllReduce: world->all_reduce(b.whole, parallel::ReduceOp::kSum, *stream); break;
          case CommOp::kAllGather: world->all_gather(b.whole, b.part, *stream); break;
          case CommOp::kReduceScatter: world->reduce_scatter(b.part, b.whole, parallel::ReduceOp::kSum, *stream); break;
          case CommOp::kBroadcast: world->broadcast(b.whole, 0, *stream); break;
          case CommOp::kExchange:
            if (!paired) break;
            world->group_begin();
            world->send(b.whole, partner, *stream, 1);
            world->recv(b.receive, partner, *stream, 1);
            world->group_end();
            break;
        }
        stream->synchronize();
      };
      auto plain = [&]() {
        switch (info.op) {
          case CommOp::kAllReduce:
            MPI_Allreduce(MPI_IN_PLACE, b.host_whole.data(), whole, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            break;
          case CommOp::kAllGather:
            MPI_Allgather(b.host_part.data(), part, MPI_FLOAT, b.host_whole.data(), part, MPI_FLOAT, MPI_COMM_WORLD);
            break;
          case CommOp::kReduceScatter:
            MPI_Reduce_scatter_block(b.host_whole.data(), b.host_part.data(), part, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            break;
          case CommOp::kBroadcast: MPI_Bcast(b.host_whole.data(), whole, MPI_FLOAT, 0, MPI_COMM_WORLD); break;
          case CommOp::kExchange:
            if (!paired) break;
            {  // what Comm's grouped send and receive post
              MPI_Request requests[2];
              MPI_Isend(b.host_whole.data(), whole, MPI_FLOAT, partner, 1, MPI_COMM_WORLD, &requests[0]);
              MPI_Irecv(b.host_receive.data(), whole, MPI_FLOAT, partner, 1, MPI_COMM_WORLD, &requests[1]);
              MPI_Waitall(2, requests, MPI_STATUSES_IGNORE);
              break;
            }
        }
      };
      // Interleaved repetitions, each after a barrier; the slowest rank's median is the operation's time.
      auto timed = [&](auto && run) {
        MPI_Barrier(MPI_COMM_WORLD);
        const auto start = std::chrono::steady_clock::now();
        run();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      };
      timed(ours);
      timed(plain);
      const double estimate = std::max(timed(ours), 1e-7);
      const int repetitions = static_cast<int>(std::clamp(options.seconds_per_size / (2.0 * estimate), 5.0, 200.0));
      int agreed = repetitions;  // every rank must run the same number
      MPI_Allreduce(MPI_IN_PLACE, &agreed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
      std::vector<double> ours_times, plain_times;
      for (int i = 0; i < agreed; ++i) {
        ours_times.push_back(timed(ours));
        plain_times.push_back(timed(plain));
      }
      double medians[2] = {median_of(ours_times), median_of(plain_times)};
      MPI_Allreduce(MPI_IN_PLACE, medians, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      const double algbw = static_cast<double>(actual_bytes) / medians[0] / 1e9;
      const double busbw = algbw * info.bus_factor(ranks);
      const double mpi_busbw = static_cast<double>(actual_bytes) / medians[1] / 1e9 * info.bus_factor(ranks);
      if (info.op == CommOp::kAllReduce) {
        if (small_all_reduce_us == 0.0) small_all_reduce_us = medians[0] * 1e6;
        all_reduce_busbw.emplace_back(actual_bytes, busbw);
      }
      if (rank == 0) {
        out << std::left << std::setw(16) << info.name << std::right << std::setw(12) << actual_bytes << std::fixed
            << std::setprecision(1) << std::setw(12) << medians[0] * 1e6 << std::setprecision(3) << std::setw(12)
            << algbw << std::setw(12) << busbw << std::setw(14) << mpi_busbw << std::setprecision(2) << std::setw(9)
            << busbw / mpi_busbw << "\n";
        csv << info.name << ',' << actual_bytes << ',' << ranks << ',' << medians[0] * 1e6 << ',' << algbw << ','
            << busbw << ',' << medians[1] * 1e6 << ',' << mpi_busbw << ',' << busbw / mpi_busbw << "\n";
        results.push_back({{"op", info.name},
                           {"bytes", actual_bytes},
                           {"ranks", ranks},
                           {"time_us", medians[0] * 1e6},
                           {"algbw_gbs", algbw},
                           {"busbw_gbs", busbw},
                           {"mpi_time_us", medians[1] * 1e6},
                           {"mpi_busbw_gbs", mpi_busbw},
                           {"ratio", busbw / mpi_busbw}});
      }
    }
  }
  if (rank != 0) return 0;
  // The link for `kosmos plan`: latency per ring step from the smallest all-reduce, bandwidth the median over the
  // all-reduces of 1 MiB and more (what activations and gradients are; caches make larger ones slower here).
  std::vector<double> large;
  for (const auto & [bytes, busbw] : all_reduce_busbw)
    if (bytes >= (size_t{1} << 20)) large.push_back(busbw);
  if (large.empty()) large.push_back(all_reduce_busbw.back().second);  // --max-bytes below 1 MiB: the largest
  const nlohmann::json calibration = {{"intra_alpha_us", small_all_reduce_us / (2.0 * (ranks - 1))},
                                      {"intra_gbs", median_of(large)}};
  out << "link for kosmos plan --calibration: " << calibration.dump() << "\n";
  write_text_file(options.out,
                  nlohmann::json{{"ranks", ranks}, {"buffers", device->name()}, {"results", results}}.dump(2) + "\n");
  write_text_file(options.csv, csv.str());
  write_text_file(options.calibration_out, calibration.dump(2) + "\n");
  return 0;
}

}  // namespace kosmos
