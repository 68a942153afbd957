// launcher.cpp: the launcher's view of the job (Open MPI's mpirun, Slurm's srun, MPICH's hydra) checked against
// MPI's, and this rank's place on its node. The launcher variables are read only to diagnose a mismatch: srun
// without --mpi=pmix, say, starts N singleton processes that would each train alone and overwrite each other.
#include <mpi.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "backends/error.h"
#include "launch/launch.h"
#include "parallel/comm_nccl.h"
#include "parallel/comm_staged.h"

namespace kosmos {
namespace {

int environment_int(const char * name) {
  const char * value = std::getenv(name);
  return value ? std::atoi(value) : 0;
}

}  // namespace

LaunchPlace check_launch() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  // Who started us, and how many tasks it started (0: not that launcher).
  struct Launcher {
    const char * variable;
    const char * name;
    const char * fix;
  };
  const Launcher launchers[] = {
      {"OMPI_COMM_WORLD_SIZE", "mpirun (Open MPI)", "check that kosmos was built against the same Open MPI"},
      {"PMI_SIZE", "the PMI launcher (MPICH hydra)", "run kosmos with the mpirun of the MPI it was built with"},
      {"SLURM_STEP_NUM_TASKS", "srun",
       "use `srun --mpi=pmix` (Debian's Open MPI speaks PMIx only), or set MpiDefault=pmix in slurm.conf"},
  };
  for (const Launcher & launcher : launchers) {
    const int tasks = environment_int(launcher.variable);
    if (tasks == 0) continue;
    KOSMOS_CHECK(tasks == world, launcher.name, " started ", tasks, " tasks (", launcher.variable, "=", tasks,
                 ") but MPI sees ", world, " rank(s) in its world; ",
                 world == 1 ? "each task would run alone: " : "", launcher.fix);
    break;  // the innermost launcher speaks for the job (mpirun inside an sbatch allocation, say)
  }
  // The ranks that share this node (shared memory), and this one's index among them.
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  LaunchPlace place;
  MPI_Comm_rank(node, &place.local_rank);
  MPI_Comm_size(node, &place.local_size);
  MPI_Comm_free(&node);
  return place;
}

std::unique_ptr<parallel::Comm> world_for(Device & device) {
  std::unique_ptr<parallel::Comm> world = parallel::mpi_world();
  if (device.host_accessible()) return world;
  std::unique_ptr<parallel::Comm> staged = parallel::staged_comm(std::move(world), device);
#ifdef KOSMOS_USE_NCCL
  if (parallel::takes_nccl(device.backend())) return parallel::nccl_comm(std::move(staged), device);
#endif
#ifdef KOSMOS_USE_EMULATED_NCCL
  if (parallel::takes_emulated_nccl(device.backend())) return parallel::emulated_nccl_comm(std::move(staged), device);
#endif
  return staged;
}

std::string default_watchdog_dir() {
  std::string job;
  if (const char * pmix = std::getenv("PMIX_NAMESPACE")) job = pmix;
  else if (const char * slurm = std::getenv("SLURM_JOB_ID"))
    job = std::string(slurm) + "." + (std::getenv("SLURM_STEP_ID") ? std::getenv("SLURM_STEP_ID") : "0");
  else job = "launcher" + std::to_string(::getppid());
  for (char & c : job)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  return (std::filesystem::temp_directory_path() / ("kosmos-watchdog-" + job)).string();
}

}  // namespace kosmos
