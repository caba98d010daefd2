// SPDX-License-Identifier: Apache-2.0
// GoogleTest main for the MPI tests: every rank runs every test (each test makes its own
// MpiCommunicator, so a test that breaks one leaves the others alone); rank 0 prints the
// usual report, the other ranks only their failures; all ranks exit with the worst status.
#include <cstdio>
#include <cstring>

#include <gtest/gtest.h>

#include "dynasparse/core/threading.hpp"
#include "dynasparse/parallel/mpi_communicator.hpp"

namespace dynasparse_test {
int peer_death_run(int argc, char** argv);  // peer_death.cpp
}

namespace {

// Prints a failed assertion of a rank other than 0, prefixed with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed()) {
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                   r.summary());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  dynasparse::parallel::MpiEnvironment env(&argc, &argv);
  // One thread per rank: the tests run more ranks than the machine has cores.
  dynasparse::set_num_threads(1);
  // The same binary is the program of tests/mpi/peer_death_test.sh: one Model-heavy
  // translation unit less to compile.
  if (argc > 1 && std::strcmp(argv[1], "--peer-death") == 0)
    return dynasparse_test::peer_death_run(argc - 1, argv + 1);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  int status = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
