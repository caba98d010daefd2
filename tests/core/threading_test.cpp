// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/core/threading.hpp"

#include <atomic>
#include <cstddef>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#if defined(__unix__)
#include <sys/wait.h>
#include <unistd.h>
#endif

#include <gtest/gtest.h>

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

TEST_P(ParallelFor, SplitsEvenlyInIndexOrder) {
  // One call's parts, as (lo, hi): with the pool free and the range long enough, as many
  // parts as threads, contiguous and each n / parts long (rounded), part p on its own thread.
  std::mutex m;
  std::set<std::pair<std::size_t, std::size_t>> parts;
  std::set<std::thread::id> ids;
  ds::parallel_for(5, 1005, 1, [&](std::size_t lo, std::size_t hi) {
    std::lock_guard<std::mutex> lock(m);
    parts.emplace(lo, hi);
    ids.insert(std::this_thread::get_id());
  });
  const std::size_t want = static_cast<std::size_t>(ds::num_threads());
  ASSERT_EQ(parts.size(), want);
  EXPECT_EQ(ids.size(), want);
  std::size_t p = 0, next = 5;
  for (const auto& [lo, hi] : parts) {
    EXPECT_EQ(lo, next);
    EXPECT_EQ(hi, 5 + 1000 * (p + 1) / want);
    next = hi;
    ++p;
  }
}

TEST_P(ParallelFor, NestedCallsRunTheirWholeRangeOnTheCaller) {
  std::vector<std::atomic<int>> hits(64 * 64);
  ds::parallel_for(0, 64, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) {
      const std::thread::id outer = std::this_thread::get_id();
      ds::parallel_for(0, 64, 1, [&](std::size_t l2, std::size_t h2) {
        // The pool is held by the outer call, so the inner one does not split.
        EXPECT_EQ(l2, 0u);
        EXPECT_EQ(h2, 64u);
        EXPECT_EQ(std::this_thread::get_id(), outer);
        for (std::size_t j = l2; j < h2; ++j) hits[i * 64 + j].fetch_add(1);
      });
    }
  });
  for (std::size_t k = 0; k < hits.size(); ++k) ASSERT_EQ(hits[k].load(), 1) << "k=" << k;
}

TEST_P(ParallelFor, ConcurrentCallersEachCoverTheirRange) {
  // Host threads sharing one pool (sessions served in parallel): whichever holds it splits,
  // the others run serially; every call still covers its range once. Run under TSan in CI.
  constexpr std::size_t callers = 3, rounds = 200, n = 97;
  std::vector<std::vector<int>> sums(callers, std::vector<int>(n, 0));
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      for (std::size_t r = 0; r < rounds; ++r) {
        ds::parallel_for(0, n, 1, [&](std::size_t lo, std::size_t hi) {
          for (std::size_t i = lo; i < hi; ++i) sums[c][i] += 1;  // disjoint parts: no race
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t c = 0; c < callers; ++c) {
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_EQ(sums[c][i], static_cast<int>(rounds)) << c << " " << i;
  }
}

TEST_P(ParallelFor, ManyShortCallsBackToBack) {
  // The decoding pattern: thousands of tiny calls. Each part's writes are visible to the
  // caller when parallel_for returns.
  std::vector<long> v(8, 0);
  for (int r = 0; r < 5000; ++r) {
    ds::parallel_for(0, v.size(), 1, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) v[i] += static_cast<long>(i);
    });
  }
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], 5000L * static_cast<long>(i));
}

INSTANTIATE_TEST_SUITE_P(Threads, ParallelFor, ::testing::Values(1, 2, 4));

#if defined(__unix__)
TEST(Threading, AForkedChildRunsParallelForWithoutThePoolsWorkers) {
  // The child of fork() has the pool's bookkeeping but none of its threads.
  ds::set_num_threads(2);
  ds::parallel_for(0, 100, 1, [](std::size_t, std::size_t) {});  // the worker exists now
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(20);  // a hang ends the child with SIGALRM instead of stalling the suite
    std::size_t covered = 0;
    ds::parallel_for(0, 100, 1, [&](std::size_t lo, std::size_t hi) { covered += hi - lo; });
    _exit(covered == 100 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ds::set_num_threads(0);
  ASSERT_TRUE(WIFEXITED(status)) << "child ended by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
#endif

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
