// main_mpi.cpp: GoogleTest's main for tests run under mpirun: MPI starts before the tests and ends after them;
// only rank 0 prints, every rank's failures count (a failing rank exits non-zero, so mpirun does).
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char ** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    ::testing::TestEventListeners & listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed && !failed) std::printf("a test failed on another rank\n");
  MPI_Finalize();
  return any_failed;
}
