// SPDX-License-Identifier: Apache-2.0
// MpiCommunicator under mpirun -np 2 and -np 4: the Communicator contract (the semantics
// tests/parallel/thread_communicator_test.cpp pins for threads), the build check, and
// failures that end in an error naming rank and operation, not a hang.
#include "dynasparse/parallel/mpi_communicator.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "dynasparse/parallel/thread_communicator.hpp"

namespace {

namespace ds = dynasparse;
namespace par = dynasparse::parallel;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Short enough to keep the failure tests quick, long enough for oversubscribed ranks.
constexpr milliseconds kShortTimeout{300};

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ds::Error& e) {
    return e.what();
  }
  return "no error";
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

TEST(MpiCommunicator, AllReduceSumGivesEveryRankTheSameBitsAsThreads) {
  par::MpiCommunicator c;
  const std::size_t p = c.size();
  // 1e8 on rank 0, then small values: the order of addition decides the rounding, so the
  // same bits as the in-process group prove the same (rank) order.
  auto values = [](std::size_t r, std::size_t n) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = r == 0 ? 1e8f : static_cast<float>(r + i) * 0.1f;
    return v;
  };
  for (std::size_t n : {1u, 3u, 37u, 1000u}) {
    std::vector<float> got = values(c.rank(), n);
    c.all_reduce_sum(got.data(), n);
    par::ThreadGroup group(p);
    std::vector<float> ref;
    group.run([&](par::Communicator& t) {
      auto v = values(t.rank(), n);
      t.all_reduce_sum(v.data(), n);
      if (t.rank() == 0) ref = v;
    });
    ASSERT_EQ(got.size(), ref.size());
    EXPECT_EQ(std::memcmp(got.data(), ref.data(), n * sizeof(float)), 0) << n << " floats";
    // And every rank holds the same bits.
    std::vector<float> all(p * n);
    c.all_gather(got.data(), n, all.data());
    for (std::size_t r = 1; r < p; ++r) EXPECT_EQ(std::memcmp(all.data() + r * n, all.data(), n * sizeof(float)), 0);
  }
}

TEST(MpiCommunicator, SendRecvGatherBroadcastBarrierAndSplit) {
  par::MpiCommunicator c;
  const std::size_t p = c.size(), r = c.rank();
  // Ring, two tags, received in reverse tag order; sends return before the receives exist.
  const float a = static_cast<float>(r), b = static_cast<float>(10 + r);
  c.send(&a, 1, (r + 1) % p, 1);
  c.send(&b, 1, (r + 1) % p, 2);
  float x = 0, y = 0;
  c.recv(&y, 1, (r + p - 1) % p, 2);
  c.recv(&x, 1, (r + p - 1) % p, 1);
  EXPECT_EQ(x, static_cast<float>((r + p - 1) % p));
  EXPECT_EQ(y, static_cast<float>(10 + (r + p - 1) % p));
  // Same source and tag: messages arrive in send order.
  if (r == 0) {
    for (int i = 0; i < 5; ++i) {
      const float v = static_cast<float>(i);
      c.send(&v, 1, 1, 7);
    }
  } else if (r == 1) {
    for (int i = 0; i < 5; ++i) {
      float v = -1;
      c.recv(&v, 1, 0, 7);
      EXPECT_EQ(v, static_cast<float>(i));
    }
  }
  // A large message (past Open MPI's eager limit) and an empty one.
  std::vector<float> big(300000, static_cast<float>(r)), got_big(300000);
  c.send_all(big, (r + 1) % p, 3);
  c.recv_all(got_big, (r + p - 1) % p, 3);
  EXPECT_EQ(got_big.front(), static_cast<float>((r + p - 1) % p));
  EXPECT_EQ(got_big.back(), static_cast<float>((r + p - 1) % p));
  c.send(nullptr, 0, (r + 1) % p, 4);
  c.recv(nullptr, 0, (r + p - 1) % p, 4);

  const float mine[2] = {static_cast<float>(r), static_cast<float>(r * r)};
  std::vector<float> gathered(2 * p);
  c.all_gather(mine, 2, gathered.data());
  for (std::size_t q = 0; q < p; ++q) {
    EXPECT_EQ(gathered[2 * q], static_cast<float>(q));
    EXPECT_EQ(gathered[2 * q + 1], static_cast<float>(q * q));
  }
  float v[3] = {-1, -1, -1};
  if (r == p - 1) v[0] = 42, v[1] = 43, v[2] = 44;
  c.broadcast(v, 3, p - 1);
  EXPECT_EQ(v[0], 42.0f);
  EXPECT_EQ(v[2], 44.0f);
  c.barrier();

  // Two groups {even} and {odd}, ranked by descending key, as MPI_Comm_split.
  auto sub = c.split(r % 2, p - r);
  EXPECT_EQ(sub->size(), (p + 1 - r % 2) / 2);
  EXPECT_EQ(sub->rank(), (sub->size() - 1) - r / 2);
  float s = static_cast<float>(r);
  sub->all_reduce_sum(&s, 1);
  float expect = 0;
  for (std::size_t q = r % 2; q < p; q += 2) expect += static_cast<float>(q);
  EXPECT_EQ(s, expect);
  if (sub->size() > 1) {
    // Point-to-point within the split, by its own ranks.
    const float t = static_cast<float>(sub->rank());
    sub->send(&t, 1, (sub->rank() + 1) % sub->size(), 0);
    float u = -1;
    sub->recv(&u, 1, (sub->rank() + sub->size() - 1) % sub->size(), 0);
    EXPECT_EQ(u, static_cast<float>((sub->rank() + sub->size() - 1) % sub->size()));
  }
  sub->barrier();
  c.barrier();
}

TEST(MpiCommunicator, DifferentBuildsAreRefusedOnEveryRank) {
  par::MpiCommunicator c;
  const std::string build = c.rank() == 1 ? "dynasparse 9.9.9 simd=other" : "dynasparse 0.1.0 simd=mine";
  const std::string e = error_of([&] { c.require_same_build(build); });
  EXPECT_NE(e.find("dynasparse.parallel: ranks run different dynasparse builds"), std::string::npos) << e;
  EXPECT_NE(e.find("\"dynasparse 9.9.9 simd=other\" on rank 1"), std::string::npos) << e;
  EXPECT_NE(e.find("\"dynasparse 0.1.0 simd=mine\" (rank 0's)"), std::string::npos) << e;
  c.require_same_build("same everywhere");  // the communicator stays usable
  c.barrier();
}

TEST(MpiCommunicator, RecvFromASilentPeerTimesOutNamingRankAndPeer) {
  par::MpiCommunicator c(MPI_COMM_WORLD, kShortTimeout);
  if (c.rank() == 0) {
    const auto t0 = Clock::now();
    const std::string e = error_of([&] {
      float x;
      c.recv(&x, 1, 1, 5);
    });
    // Rank 1 sits in MPI_Barrier, deaf to the probe: to rank 0 it is as good as dead.
    EXPECT_NE(e.find("recv timed out; expected a message from rank 1 within 300 ms, got none (not responding: dead "
                     "or stalled) [rank 0 of " +
                     std::to_string(c.size()) + ", tag 5]"),
              std::string::npos)
        << e;
    EXPECT_LT(seconds_since(t0), 5.0);
    // Broken from now on, at once.
    EXPECT_NE(error_of([&] { c.barrier(); }).find("barrier on a broken communicator"), std::string::npos);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiCommunicator, BarrierTimeoutNamesTheRanksThatNeverCame) {
  par::MpiCommunicator c(MPI_COMM_WORLD, kShortTimeout);
  if (c.rank() == 0) {
    const auto t0 = Clock::now();
    const std::string e = error_of([&] { c.barrier(); });
    std::string missing;
    for (std::size_t r = 1; r < c.size(); ++r) missing += (r > 1 ? ", " : "") + std::to_string(r);
    EXPECT_NE(e.find("barrier timed out; expected all " + std::to_string(c.size()) +
                     " ranks within 300 ms, got no arrival from rank(s) " + missing),
              std::string::npos)
        << e;
    EXPECT_LT(seconds_since(t0), 5.0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiCommunicator, AllReduceWhosePeerNeverPostsTimesOut) {
  par::MpiCommunicator c(MPI_COMM_WORLD, kShortTimeout);
  const std::size_t last = c.size() - 1;
  if (c.rank() != last) {
    std::vector<float> v(100, 1.0f);
    const std::string e = error_of([&] { c.all_reduce_sum(v.data(), v.size()); });
    // Rank 0 sees the silent rank time out; the others may hear rank 0's notice first.
    if (c.rank() == 0) {
      EXPECT_NE(e.find("all_reduce_sum timed out"), std::string::npos) << e;
      EXPECT_NE(e.find("no arrival from rank(s) " + std::to_string(last)), std::string::npos) << e;
    } else {
      EXPECT_NE(e.find("all_reduce_sum"), std::string::npos) << e;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiCommunicator, MismatchedCollectivesAndSizesNameTheRank) {
  {
    par::MpiCommunicator c(MPI_COMM_WORLD, std::chrono::seconds(20));
    std::vector<float> v(c.rank() == 1 ? 5 : 4, 1.0f);
    const std::string e = error_of([&] { c.all_reduce_sum(v.data(), v.size()); });
    if (c.rank() == 0) {
      EXPECT_NE(e.find("ranks passed different sizes to all_reduce_sum; expected 4 floats on every rank, got 5 on rank 1"),
                std::string::npos)
          << e;
    } else {
      EXPECT_NE(e.find("dynasparse.parallel"), std::string::npos) << e;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  {
    par::MpiCommunicator c(MPI_COMM_WORLD, std::chrono::seconds(20));
    float v = 1;
    const std::string e = error_of([&] {
      if (c.rank() == 1) {
        c.broadcast(&v, 1, 0);
      } else {
        c.all_reduce_sum(&v, 1);
      }
    });
    if (c.rank() == 0) {
      EXPECT_NE(e.find("ranks are in different collectives; expected all_reduce_sum (collective #1) on every rank, got "
                       "broadcast (collective #1) on rank 1"),
                std::string::npos)
          << e;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiCommunicator, RecvOfAnotherSizeNamesBothCounts) {
  par::MpiCommunicator c(MPI_COMM_WORLD, std::chrono::seconds(20));
  if (c.rank() == 0) {
    const float v[3] = {1, 2, 3};
    c.send(v, 3, 1, 2);
  } else if (c.rank() == 1) {
    float v[2];
    const std::string e = error_of([&] { c.recv(v, 2, 0, 2); });
    EXPECT_NE(e.find("received message of another size; expected 2 floats, got 3 floats from rank 0"),
              std::string::npos)
        << e;
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiCommunicator, AbortWakesBlockedPeersWithTheReasonBeforeTheTimeout) {
  par::MpiCommunicator c(MPI_COMM_WORLD, std::chrono::seconds(30));
  auto tp = c.split(0, c.rank());  // a split: the notice reaches the whole family
  const auto t0 = Clock::now();
  if (c.rank() == 1) {
    c.abort("rank 1 of the test: out of memory");
  } else {
    const std::string e = error_of([&] {
      float x;
      c.recv(&x, 1, 1, 0);
    });
    EXPECT_NE(e.find("recv on a broken communicator; expected all ranks healthy, got \"rank 1 of the test: out of memory\" "
                     "from rank 1"),
              std::string::npos)
        << e;
    EXPECT_NE(error_of([&] { tp->barrier(); }).find("out of memory"), std::string::npos);
    EXPECT_LT(seconds_since(t0), 10.0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiCommunicator, ARankStuckBehindASilentOneIsNotBlamedForIt) {
  // A chain: rank 0 waits for rank 1, which waits for rank 2, which is deaf (in MPI_Barrier,
  // as a dead rank would be). At its timeout rank 0 finds rank 1 alive and waits on; rank 1
  // finds rank 2 silent and fails, and its notice tells rank 0 who is at fault. With two
  // ranks, 0 and 1 wait for each other: both alive, they fail after the longer wait.
  par::MpiCommunicator c(MPI_COMM_WORLD, kShortTimeout);
  const auto t0 = Clock::now();
  float x = 0;
  if (c.size() >= 3 && c.rank() < 2) {
    const std::string e = error_of([&] { c.recv(&x, 1, c.rank() + 1, 6); });
    const std::string blame = "expected a message from rank 2 within 300 ms, got none (not responding: dead or stalled)";
    if (c.rank() == 1) {
      EXPECT_NE(e.find("recv timed out; " + blame), std::string::npos) << e;
    } else {
      EXPECT_NE(e.find("recv on a broken communicator"), std::string::npos) << e;
      EXPECT_NE(e.find(blame), std::string::npos) << e;
      EXPECT_NE(e.find("\" from rank 1 [rank 0 of"), std::string::npos) << e;
    }
    EXPECT_LT(seconds_since(t0), 10.0);
  } else if (c.size() == 2) {
    const std::string e = error_of([&] { c.recv(&x, 1, 1 - c.rank(), 6); });
    EXPECT_NE(e.find("got none (alive, but waiting elsewhere)"), std::string::npos) << e;
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiCommunicator, ErrorsInASplitNameThePeersWorldRanks) {
  // Pairs {0, 2} and {1, 3}: in the second, rank 1 is world rank 3.
  par::MpiCommunicator c(MPI_COMM_WORLD, kShortTimeout);
  auto pair = c.split(c.rank() % 2, c.rank());
  if (c.size() == 4 && c.rank() == 1) {
    float x = 0;
    const std::string e = error_of([&] { pair->recv(&x, 1, 1, 4); });
    EXPECT_NE(e.find("recv timed out; expected a message from rank 1 (world rank 3) within 300 ms, got none "
                     "(not responding: dead or stalled) [rank 0 of 2, world rank 1, tag 4]"),
              std::string::npos)
        << e;
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiCommunicator, BadArgumentsAreConfigErrors) {
  par::MpiCommunicator c;
  float x = 0;
  EXPECT_THROW(c.send(&x, 1, c.rank(), 0), ds::ConfigError);
  EXPECT_THROW(c.send(&x, 1, c.size(), 0), ds::ConfigError);
  EXPECT_THROW(c.recv(&x, 1, (c.rank() + 1) % c.size(), -1), ds::ConfigError);
  EXPECT_THROW(c.broadcast(&x, 1, c.size()), ds::ConfigError);
  c.barrier();  // nothing was sent or broken
}

}  // namespace
