// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/core/threading.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

namespace {

namespace ds = dynasparse;

class ParallelFor : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { ds::set_num_threads(GetParam()); }
  void TearDown() override { ds::set_num_threads(0); }
};

TEST_P(ParallelFor, CoversEveryIndexExactlyOnce) {
  for (std::size_t n : {0u, 1u, 7u, 1000u}) {
    std::vector<std::atomic<int>> hits(n);
    ds::parallel_for(0, n, 1, [&](std::size_t lo, std::size_t hi) {
      EXPECT_LE(lo, hi);
      for (std::size_t i = lo; i < hi; ++i) hits[i].fetch_add(1);
    });
    for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST_P(ParallelFor, RespectsGrainAndOffset) {
  std::atomic<int> calls{0};
  ds::parallel_for(10, 30, 16, [&](std::size_t lo, std::size_t hi) {
    calls.fetch_add(1);
    EXPECT_GE(lo, 10u);
    EXPECT_LE(hi, 30u);
  });
  // 20 indices with a grain of 16 allow at most two chunks.
  EXPECT_LE(calls.load(), 2);
  EXPECT_GE(calls.load(), 1);
}

TEST_P(ParallelFor, RethrowsTheBodysException) {
  EXPECT_THROW(ds::parallel_for(0, 100, 1,
                                [](std::size_t lo, std::size_t) {
                                  if (lo == 0) throw std::runtime_error("boom");
                                }),
               std::runtime_error);
}

INSTANTIATE_TEST_SUITE_P(Threads, ParallelFor, ::testing::Values(1, 2, 4));

TEST(Threading, NegativeThreadCountIsAConfigError) {
  EXPECT_THROW(ds::set_num_threads(-1), ds::ConfigError);
}

TEST(Threading, ThreadCountIsSettable) {
  ds::set_num_threads(3);
#if defined(_OPENMP)
  EXPECT_EQ(ds::num_threads(), 3);
#else
  EXPECT_EQ(ds::num_threads(), 1);
#endif
  ds::set_num_threads(0);
  EXPECT_GE(ds::num_threads(), 1);
}

}  // namespace
