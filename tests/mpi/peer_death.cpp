// SPDX-License-Identifier: Apache-2.0
// A job in which one rank dies mid-run, for tests/mpi/peer_death_test.sh: rank 1 ends its
// process (exit code 3, or SIGKILL) after the first forward pass of a 2-stage pipeline (2
// ranks) or a 2 x 2 hybrid (4 ranks); the others start the second pass and wait on it. They
// must end with an error naming rank 1 and a non-zero exit, never hang.
//   dynasparse_mpi_tests --peer-death <exit|kill> <timeout ms>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dynasparse/core/threading.hpp"
#include "dynasparse/parallel/executor.hpp"
#include "dynasparse/parallel/mpi_communicator.hpp"
#include "dynasparse/parallel/partitioner.hpp"
#include "parallel/random_model.hpp"

namespace ds = dynasparse;
namespace par = dynasparse::parallel;

namespace dynasparse_test {

// Called by main.cpp with the MPI environment up and one thread per rank; argv[0] is
// "--peer-death".
int peer_death_run(int argc, char** argv) {
  const std::string how = argc > 1 ? argv[1] : "exit";
  const std::chrono::milliseconds timeout(argc > 2 ? std::atoi(argv[2]) : 2000);
  par::MpiCommunicator world(MPI_COMM_WORLD, timeout);
  par::run_or_abort(world, [&] {
    const ds::ModelConfig cfg = dynasparse_test::small_config();
    const std::vector<std::uint8_t> bytes = dynasparse_test::write_model(cfg);
    const auto file = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
    const std::vector<std::int32_t> tokens = dynasparse_test::test_tokens(16, cfg.vocab);
    const par::Plan plan = world.size() == 4 ? par::fixed_plan(cfg, 2, 2) : par::fixed_plan(cfg, 1, world.size());
    const par::ModelShard shard = par::ModelShard::load(file, plan, world.rank());
    par::Executor ex(shard, world);
    par::ExecutorOptions opt;
    opt.micro_batches = 2;
    opt.logits_on_every_rank = true;  // every pass ends in a broadcast from the last stage
    std::vector<float> logits(tokens.size() * cfg.vocab);
    ds::Workspace ws;
    for (int pass = 0; pass < 3; ++pass) {
      ex.forward(tokens.data(), tokens.size(), ds::MatrixView(logits.data(), tokens.size(), cfg.vocab), ws, opt);
      if (pass == 0) {
        std::printf("rank %zu: first pass done\n", world.rank());
        std::fflush(stdout);
        if (world.rank() == 1) {
          if (how == "kill") std::raise(SIGKILL);
          std::_Exit(3);  // no MPI_Finalize, no destructors: as a crash would leave it
        }
      }
    }
  });
  std::printf("rank %zu: finished without rank 1\n", world.rank());
  return 0;
}

}  // namespace dynasparse_test
