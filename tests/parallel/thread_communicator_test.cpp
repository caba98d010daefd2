// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/parallel/thread_communicator.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

namespace ds = dynasparse;
namespace par = dynasparse::parallel;
using std::chrono::milliseconds;

TEST(ThreadCommunicator, AllReduceSumGivesEveryRankTheSameBitsInRankOrder) {
  for (std::size_t n : {1u, 2u, 3u, 4u}) {
    par::ThreadGroup group(n);
    std::vector<std::vector<float>> got(n);
    group.run([&](par::Communicator& c) {
      // 1e8 + r, then -1e8: the order of addition decides the rounding, so a fixed order
      // is visible in the bits.
      std::vector<float> v(37);
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = c.rank() == 0 ? 1e8f : static_cast<float>(c.rank() + i) * 0.1f;
      c.all_reduce_sum(v.data(), v.size());
      got[c.rank()] = v;
    });
    for (std::size_t i = 0; i < 37; ++i) {
      float expect = 1e8f;
      for (std::size_t r = 1; r < n; ++r) expect += static_cast<float>(r + i) * 0.1f;
      EXPECT_EQ(got[0][i], expect) << n << " ranks, element " << i;
      for (std::size_t r = 1; r < n; ++r) EXPECT_EQ(std::memcmp(&got[r][i], &got[0][i], sizeof(float)), 0);
    }
  }
}

TEST(ThreadCommunicator, SendRecvGatherBroadcastAndSplit) {
  par::ThreadGroup group(4);
  std::vector<std::vector<float>> gathered(4), tp_sum(4);
  std::vector<float> bcast(4), ring(4);
  std::vector<std::size_t> sub_rank(4), sub_size(4);
  group.run([&](par::Communicator& c) {
    const std::size_t r = c.rank();
    // Ring: each rank sends to the next, twice with different tags, received in reverse tag order.
    const float a = static_cast<float>(r), b = static_cast<float>(10 + r);
    c.send(&a, 1, (r + 1) % 4, 1);
    c.send(&b, 1, (r + 1) % 4, 2);
    float x = 0, y = 0;
    c.recv(&y, 1, (r + 3) % 4, 2);
    c.recv(&x, 1, (r + 3) % 4, 1);
    ring[r] = x + y;
    const float mine[2] = {static_cast<float>(r), static_cast<float>(r * r)};
    gathered[r].resize(8);
    c.all_gather(mine, 2, gathered[r].data());
    float v = r == 2 ? 42.0f : -1.0f;
    c.broadcast(&v, 1, 2);
    bcast[r] = v;
    // Two groups {0, 2} and {1, 3}, ranked by descending key.
    auto sub = c.split(r % 2, 10 - r);
    sub_rank[r] = sub->rank();
    sub_size[r] = sub->size();
    std::vector<float> s = {static_cast<float>(r)};
    sub->all_reduce_sum(s.data(), 1);
    tp_sum[r] = s;
    c.barrier();
  });
  for (std::size_t r = 0; r < 4; ++r) {
    const std::size_t from = (r + 3) % 4;
    EXPECT_EQ(ring[r], static_cast<float>(from) + static_cast<float>(10 + from));
    EXPECT_EQ(gathered[r], (std::vector<float>{0, 0, 1, 1, 2, 4, 3, 9}));
    EXPECT_EQ(bcast[r], 42.0f);
    EXPECT_EQ(sub_size[r], 2u);
    EXPECT_EQ(sub_rank[r], r < 2 ? 1u : 0u);  // higher old rank, lower key: first
    EXPECT_EQ(tp_sum[r][0], r % 2 == 0 ? 2.0f : 4.0f);
  }
}

TEST(ThreadCommunicator, MissingPeerIsATimeoutErrorNamingIt) {
  par::ThreadGroup group(3, milliseconds(100));
  // Ranks 0 and 1 arrive; rank 2 never does.
  std::string message;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread other([&] {
    try {
      group.communicator(1).barrier();
    } catch (const par::CommError&) {
    }
  });
  try {
    group.communicator(0).barrier();
    ADD_FAILURE() << "barrier returned without rank 2";
  } catch (const par::CommError& e) {
    message = e.what();
  }
  other.join();
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(waited, std::chrono::seconds(5));
  // Either rank may time out first; the message names the missing rank and the operation.
  EXPECT_NE(message.find("dynasparse.parallel: barrier"), std::string::npos) << message;
  // Rank 1 may arrive late under an emulator, so the list may be "1, 2" or "2".
  EXPECT_NE(message.find("no arrival from rank(s) "), std::string::npos) << message;
  EXPECT_NE(message.find("2 [rank "), std::string::npos) << message;
  // The group is broken now: later calls fail at once, quoting the cause.
  try {
    group.communicator(0).barrier();
    ADD_FAILURE() << "a broken communicator accepted a barrier";
  } catch (const par::CommError& e) {
    EXPECT_NE(std::string(e.what()).find("broken communicator"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(group.failure().empty());
}

TEST(ThreadCommunicator, RecvTimesOutNamingThePeerAndTag) {
  par::ThreadGroup group(2, milliseconds(50));
  float x = 0;
  try {
    group.communicator(1).recv(&x, 1, 0, 7);
    ADD_FAILURE() << "recv returned without a message";
  } catch (const par::CommError& e) {
    EXPECT_STREQ(e.what(),
                 "dynasparse.parallel: recv timed out; expected a message from rank 0 within 50 ms, got none "
                 "[rank 1 of 2, tag 7]");
  }
}

TEST(ThreadCommunicator, AFailingRankStopsTheOthersAtOnceWithItsError) {
  par::ThreadGroup group(3, std::chrono::seconds(30));
  const auto t0 = std::chrono::steady_clock::now();
  try {
    group.run([&](par::Communicator& c) {
      if (c.rank() == 1) {
        ds::detail::fail<ds::ConfigError>("test", "rank 1 gives up", "work", "an error", "rank 1");
      }
      float x = 0;
      c.recv(&x, 1, 1);  // would wait 30 s for rank 1
    });
    ADD_FAILURE() << "run() returned";
  } catch (const ds::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 gives up"), std::string::npos);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(ThreadCommunicator, ARankFailingBetweenCollectivesWakesEveryPeerNamingIt) {
  // Two tensor-parallel pairs {0, 1} and {2, 3}; rank 1 fails after a sum and a world
  // barrier. Rank 0 is left in a sum of its pair, ranks 2 and 3 in the next world barrier.
  // With a 20 s timeout, a peer woken by the failure reads "broken communicator"; one that
  // waited it out would read "timed out".
  par::ThreadGroup group(4, std::chrono::seconds(20));
  std::vector<std::string> errors(4);
  try {
    group.run([&](par::Communicator& c) {
      auto tp = c.split(c.rank() / 2, c.rank());
      try {
        std::vector<float> v(8, 1.0f);
        tp->all_reduce_sum(v.data(), v.size());
        c.barrier();  // every rank is past its first sum before rank 1 fails
        if (c.rank() == 1) {
          ds::detail::fail<ds::ShapeError>("test", "rank 1 fails mid-run", "a forward pass", "an error", "rank 1");
        }
        if (c.rank() < 2) tp->all_reduce_sum(v.data(), v.size());
        c.barrier();
      } catch (const ds::Error& e) {
        errors[c.rank()] = e.what();
        throw;
      }
    });
    ADD_FAILURE() << "run() returned";
  } catch (const ds::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 fails mid-run"), std::string::npos) << e.what();
  }
  // Rank 0 waited in the split (its rank 1 is world rank 1); ranks 2 and 3 in the world.
  EXPECT_NE(errors[0].find("all_reduce_sum on a broken communicator; expected all ranks healthy, got "
                           "\"dynasparse.test: rank 1 fails mid-run"),
            std::string::npos)
      << errors[0];
  EXPECT_NE(errors[0].find("\" from world rank 1 [rank 0 of 2]"), std::string::npos) << errors[0];
  for (std::size_t r : {2u, 3u}) {
    EXPECT_NE(errors[r].find("barrier on a broken communicator"), std::string::npos) << errors[r];
    EXPECT_NE(errors[r].find("\" from rank 1 [rank " + std::to_string(r) + " of 4]"), std::string::npos) << errors[r];
  }
}

TEST(ThreadCommunicator, ErrorsInASplitNameThePeersWorldRanks) {
  // Pairs {0, 2} and {1, 3}: the second pair's rank 1 is world rank 3. Rank 1 waits for a
  // message that world rank 3 never sends.
  par::ThreadGroup group(4, milliseconds(100));
  std::string message;
  group.run([&](par::Communicator& c) {
    auto pair = c.split(c.rank() % 2, c.rank());
    if (c.rank() == 1) {
      float x = 0;
      try {
        pair->recv(&x, 1, 1, 4);
      } catch (const par::CommError& e) {
        message = e.what();
      }
    }
  });
  EXPECT_EQ(message,
            "dynasparse.parallel: recv timed out; expected a message from rank 1 (world rank 3) within 100 ms, got "
            "none [rank 0 of 2, world rank 1, tag 4]");
}

TEST(ThreadCommunicator, MismatchedSizesAndBadPeersAreErrors) {
  par::ThreadGroup group(2, std::chrono::seconds(10));
  std::atomic<int> comm_errors{0};
  try {
    group.run([&](par::Communicator& c) {
      std::vector<float> v(c.rank() == 0 ? 3 : 4);
      try {
        c.all_reduce_sum(v.data(), v.size());
      } catch (const par::CommError& e) {
        ++comm_errors;
        throw;
      }
    });
    ADD_FAILURE() << "different sizes were accepted";
  } catch (const par::CommError& e) {
    EXPECT_NE(std::string(e.what()).find("ranks passed different sizes to all_reduce_sum"), std::string::npos) << e.what();
  }
  EXPECT_EQ(comm_errors.load(), 2);  // every rank learns it, none hangs
  par::ThreadGroup g2(2);
  float x = 0;
  EXPECT_THROW(g2.communicator(0).send(&x, 1, 0), ds::ConfigError);
  EXPECT_THROW(g2.communicator(0).send(&x, 1, 2), ds::ConfigError);
  EXPECT_THROW(par::ThreadGroup(0), ds::ConfigError);
  EXPECT_THROW(g2.communicator(0).set_timeout(milliseconds(0)), ds::ConfigError);
}

}  // namespace
