// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/model/sampling.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <vector>

namespace {

namespace ds = dynasparse;

TEST(Sampling, GreedyTakesTheFirstMaximum) {
  const std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
  ds::SplitMix64 rng(1);
  EXPECT_EQ(ds::sample_token(l.data(), l.size(), {}, rng), 1);
}

TEST(Sampling, SameSeedSameTokensAndFrequenciesFollowSoftmax) {
  const std::vector<float> l = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};  // p = 1:2:3:4 / 10
  ds::SamplingOptions o;
  o.temperature = 1.0f;
  ds::SplitMix64 a(42), b(42);
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int t = ds::sample_token(l.data(), l.size(), o, a);
    EXPECT_EQ(t, ds::sample_token(l.data(), l.size(), o, b));
    ++counts[t];
  }
  // Binomial standard deviation at n = 20000 is at most 0.0035; allow 4 of them.
  for (int t = 0; t < 4; ++t) EXPECT_NEAR(counts[t] / static_cast<double>(n), (t + 1) / 10.0, 0.014) << t;
}

TEST(Sampling, TopKAndTopPRestrictTheSupport) {
  const std::vector<float> l = {5.0f, 4.0f, 3.0f, 2.0f, 1.0f};
  ds::SamplingOptions o;
  o.temperature = 2.0f;
  o.top_k = 2;
  ds::SplitMix64 rng(7);
  for (int i = 0; i < 2000; ++i) EXPECT_LT(ds::sample_token(l.data(), l.size(), o, rng), 2);
  o.top_k = 0;
  o.top_p = 0.01f;  // the nucleus is the single most likely token
  for (int i = 0; i < 200; ++i) EXPECT_EQ(ds::sample_token(l.data(), l.size(), o, rng), 0);
}

TEST(Sampling, NaNLogitsAreNeverChosenAndBadOptionsRejected) {
  const std::vector<float> l = {std::numeric_limits<float>::quiet_NaN(), 1.0f, 0.5f};
  ds::SamplingOptions o;
  o.temperature = 1.0f;
  ds::SplitMix64 rng(3);
  for (int i = 0; i < 500; ++i) EXPECT_NE(ds::sample_token(l.data(), l.size(), o, rng), 0);
  o.top_p = 0.0f;
  EXPECT_THROW(ds::validate(o), ds::ConfigError);
  o.top_p = 1.0f;
  o.temperature = -1.0f;
  EXPECT_THROW(ds::validate(o), ds::ConfigError);
}

}  // namespace
