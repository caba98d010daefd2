// SPDX-License-Identifier: Apache-2.0
// The parallel executors across MPI processes: every plan of the world size gives the logits
// of Model::forward on one device (the in-process tests' budgets), and the very bits of the
// same plan on in-process threads (both communicators add in rank order).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "dynasparse/parallel/executor.hpp"
#include "dynasparse/parallel/mpi_communicator.hpp"
#include "dynasparse/parallel/partitioner.hpp"
#include "parallel/random_model.hpp"

namespace {

namespace ds = dynasparse;
namespace par = dynasparse::parallel;
using dynasparse_test::relative_error;

// The FP32 budget of tests/parallel/executor_test.cpp (see there): reordered tensor-parallel
// sums, ~100 ulp of the logits.
constexpr double kFp32Rel = 1e-5;

struct Shape {
  std::size_t tp, pp, micro;
};
std::string name(const Shape& s) {
  return "tp=" + std::to_string(s.tp) + " pp=" + std::to_string(s.pp) + " micro=" + std::to_string(s.micro);
}

// The plans of the issue that fill `world` ranks (tp x pp = world, one replica), with and
// without micro-batches, and one with two replicas (dp = 2).
std::vector<Shape> shapes_for(std::size_t world) {
  if (world == 2) return {{2, 1, 1}, {1, 2, 1}, {1, 2, 4}};
  if (world == 4) return {{4, 1, 1}, {1, 4, 1}, {2, 2, 1}, {2, 2, 4}, {1, 4, 4}};
  return {};
}

class MpiExecutor : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = dynasparse_test::small_config();
    bytes_ = dynasparse_test::write_model(cfg_);
    file_ = ds::io::SafetensorsFile::from_bytes(bytes_.data(), bytes_.size(), "random");
    tokens_ = dynasparse_test::test_tokens(19, cfg_.vocab);
  }

  std::vector<float> one_device(const ds::LoadOptions& opt = {}) const {
    ds::Model m = ds::Model::from_file(file_, opt);
    std::vector<float> logits(tokens_.size() * m.vocab());
    ds::Workspace ws;
    m.forward(tokens_.data(), tokens_.size(), ds::MatrixView(logits.data(), tokens_.size(), m.vocab()), ws);
    return logits;
  }

  // The plan on this process's MPI rank; logits broadcast to every rank of the replica.
  std::vector<float> on_mpi(const par::Plan& plan, std::size_t micro, const ds::LoadOptions& opt = {}) const {
    par::MpiCommunicator world(MPI_COMM_WORLD, std::chrono::seconds(60));
    const par::ModelShard shard = par::ModelShard::load(file_, plan, world.rank(), opt);
    par::Executor ex(shard, world);
    par::ExecutorOptions eo;
    eo.micro_batches = micro;
    eo.logits_on_every_rank = true;
    std::vector<float> logits(tokens_.size() * cfg_.vocab);
    ds::Workspace ws;
    ex.forward(tokens_.data(), tokens_.size(), ds::MatrixView(logits.data(), tokens_.size(), cfg_.vocab), ws, eo);
    return logits;
  }

  std::vector<float> on_threads(const par::Plan& plan, std::size_t micro, const ds::LoadOptions& opt = {}) const {
    par::RunOptions ro;
    ro.exec.micro_batches = micro;
    ro.load = opt;
    return par::run_forward(file_, plan, tokens_, ro);
  }

  void expect_every_plan_matches(const ds::LoadOptions& opt, double budget_vs_one_device) {
    int world = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    const auto ref = one_device(opt);
    const auto shapes = shapes_for(static_cast<std::size_t>(world));
    ASSERT_FALSE(shapes.empty()) << "run with mpirun -np 2 or -np 4";
    for (const Shape& s : shapes) {
      const par::Plan plan = par::fixed_plan(cfg_, s.tp, s.pp);
      const auto got = on_mpi(plan, s.micro, opt);
      ASSERT_EQ(got.size(), ref.size()) << name(s);
      EXPECT_LE(relative_error(got, ref), budget_vs_one_device) << name(s);
      const auto threads = on_threads(plan, s.micro, opt);
      EXPECT_EQ(std::memcmp(got.data(), threads.data(), got.size() * sizeof(float)), 0)
          << name(s) << ": MPI and in-process threads differ";
    }
  }

  ds::LoadOptions every_layer(const std::string& format, double prune) const {
    ds::LoadOptions o;
    o.prune = prune;
    for (std::size_t l = 0; l < cfg_.layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      for (const char* n : {"attn.attention.q_proj", "attn.attention.k_proj", "attn.attention.v_proj",
                            "attn.attention.out_proj", "attn.gate.0", "ffn.up", "ffn.down"}) {
        o.formats[p + n] = format;
      }
    }
    return o;
  }

  ds::ModelConfig cfg_;
  std::vector<std::uint8_t> bytes_;
  ds::io::SafetensorsFile file_;
  std::vector<std::int32_t> tokens_;
};

TEST_F(MpiExecutor, EveryPlanOfTheWorldMatchesOneDeviceFp32) { expect_every_plan_matches({}, kFp32Rel); }

TEST_F(MpiExecutor, GroupSparseFloatMatchesOneDevice) {
  // Pruned on the whole matrix, then sliced along whole blocks: the float budget applies.
  expect_every_plan_matches(every_layer("gsparse_f32", 0.5), kFp32Rel);
}

TEST_F(MpiExecutor, DenseInt8MatchesThreadsAndStaysWithinItsQuantizationError) {
  // Row-split INT8 layers quantize their input slice with its own dynamic alpha (see
  // tests/parallel/executor_test.cpp): within twice the one-device INT8 error of FP32, and
  // bit-identical to the same plan on threads.
  ds::LoadOptions opt;
  opt.int8 = true;
  const auto fp32 = one_device();
  const double quant_error = relative_error(one_device(opt), fp32);
  ASSERT_GT(quant_error, 1e-4);
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  for (const Shape& s : shapes_for(static_cast<std::size_t>(world))) {
    const par::Plan plan = par::fixed_plan(cfg_, s.tp, s.pp);
    const auto got = on_mpi(plan, s.micro, opt);
    EXPECT_LE(relative_error(got, fp32), 2.0 * quant_error) << name(s);
    const auto threads = on_threads(plan, s.micro, opt);
    EXPECT_EQ(std::memcmp(got.data(), threads.data(), got.size() * sizeof(float)), 0) << name(s);
  }
}

TEST_F(MpiExecutor, TwoReplicasEachMatchOneDevice) {
  // dp = 2: each half of the world runs the whole plan on its own.
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const par::Plan plan = par::fixed_plan(cfg_, static_cast<std::size_t>(world) / 2, 1, 2);
  EXPECT_LE(relative_error(on_mpi(plan, 1), one_device()), kFp32Rel);
}

TEST_F(MpiExecutor, CachedDecodingMatchesModelDecode) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const std::size_t tp = 2, pp = static_cast<std::size_t>(world) / 2;
  const ds::Model m = ds::Model::from_file(file_);
  ds::Session s = m.new_session(24);
  const std::size_t n = 12, v = cfg_.vocab;
  std::vector<float> ref(n * v), got(n * v);
  m.decode(tokens_.data(), 5, s, ds::MatrixView(ref.data(), 5, v));
  for (std::size_t t = 5; t < n; ++t) m.decode(tokens_.data() + t, 1, s, ds::MatrixView(ref.data() + t * v, 1, v));
  par::MpiCommunicator comm;
  const auto shard = par::ModelShard::load(file_, par::fixed_plan(cfg_, tp, pp), comm.rank());
  par::Executor ex(shard, comm);
  par::ShardSession session = ex.new_session(24);
  ds::Workspace ws;
  par::ExecutorOptions eo;
  eo.logits_on_every_rank = true;
  ex.decode(tokens_.data(), 5, session, ds::MatrixView(got.data(), 5, v), ws, eo);
  for (std::size_t t = 5; t < n; ++t) ex.decode(tokens_.data() + t, 1, session, ds::MatrixView(got.data() + t * v, 1, v), ws, eo);
  EXPECT_LE(relative_error(got, ref), kFp32Rel);
}

TEST_F(MpiExecutor, APlanForAnotherWorldSizeIsAnErrorOnEveryRank) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  par::MpiCommunicator comm;
  const par::Plan plan = par::fixed_plan(cfg_, 1, 1);  // one rank
  const auto shard = par::ModelShard::load(file_, plan, 0);
  try {
    par::Executor ex(shard, comm);
    ADD_FAILURE() << "no error";
  } catch (const ds::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("plan does not match the world size; expected 1 ranks (tp=1 pp=1 dp=1), got " +
                                         std::to_string(world) + " ranks"),
              std::string::npos)
        << e.what();
  }
  comm.barrier();
}

}  // namespace
