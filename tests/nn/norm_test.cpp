// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/nn/norm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "dynasparse/nn/embedding.hpp"
#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
namespace nn = dynasparse::nn;
using dynasparse_test::uniform_floats;

TEST(LayerNorm, MatchesTheDoublePrecisionDefinition) {
  const std::size_t m = 5, e = 37;
  auto x = uniform_floats(m * e, -3.0f, 3.0f, 1u);
  for (std::size_t i = 0; i < e; ++i) x[i] += 1000.0f;  // a large mean must not cancel badly
  const auto w = uniform_floats(e, 0.5f, 1.5f, 2u);
  const auto b = uniform_floats(e, -1.0f, 1.0f, 3u);
  const nn::LayerNorm ln(w, b, 1e-5f);
  std::vector<float> y(m * e);
  ln.forward(ds::ConstMatrixView(x.data(), m, e), ds::MatrixView(y.data(), m, e));
  for (std::size_t r = 0; r < m; ++r) {
    double mean = 0.0, var = 0.0;
    for (std::size_t i = 0; i < e; ++i) mean += x[r * e + i];
    mean /= e;
    for (std::size_t i = 0; i < e; ++i) var += (x[r * e + i] - mean) * (x[r * e + i] - mean);
    var /= e;
    for (std::size_t i = 0; i < e; ++i) {
      const double want = (x[r * e + i] - mean) / std::sqrt(var + 1e-5) * w[i] + b[i];
      // Float arithmetic on inputs near 1000: relative 1e-4 of the output scale.
      EXPECT_NEAR(y[r * e + i], want, 2e-4) << r << "," << i;
    }
  }
}

TEST(RMSNorm, MatchesTheDefinitionAndWorksInPlace) {
  const std::size_t m = 3, e = 20;
  auto x = uniform_floats(m * e, -2.0f, 2.0f, 4u);
  const auto w = uniform_floats(e, 0.5f, 1.5f, 5u);
  const auto x0 = x;
  nn::RMSNorm(w, 1e-6f).forward(ds::ConstMatrixView(x.data(), m, e), ds::MatrixView(x.data(), m, e));
  for (std::size_t r = 0; r < m; ++r) {
    double ms = 0.0;
    for (std::size_t i = 0; i < e; ++i) ms += static_cast<double>(x0[r * e + i]) * x0[r * e + i];
    ms /= e;
    for (std::size_t i = 0; i < e; ++i) EXPECT_NEAR(x[r * e + i], x0[r * e + i] / std::sqrt(ms + 1e-6) * w[i], 1e-5);
  }
}

TEST(Norms, BadShapesAndEpsilonsAreRejected) {
  EXPECT_THROW(nn::LayerNorm({1.0f, 1.0f}, {0.0f}, 1e-5f), ds::ShapeError);
  EXPECT_THROW(nn::LayerNorm({1.0f}, {}, 0.0f), ds::ConfigError);
  EXPECT_THROW(nn::RMSNorm({1.0f}, -1.0f), ds::ConfigError);
  std::vector<float> x(6), y(6);
  EXPECT_THROW(nn::RMSNorm({1.0f, 1.0f}).forward(ds::ConstMatrixView(x.data(), 2, 3), ds::MatrixView(y.data(), 2, 3)),
               ds::ShapeError);
}

TEST(Embedding, LooksUpRowsAndRejectsOutOfVocabularyIds) {
  const auto table = uniform_floats(10 * 4, -1.0f, 1.0f, 6u);
  const nn::Embedding emb(ds::ConstMatrixView(table.data(), 10, 4), "embed");
  const std::int32_t ids[] = {3, 0, 9};
  std::vector<float> y(3 * 4);
  emb.forward(ids, 3, ds::MatrixView(y.data(), 3, 4));
  for (std::size_t c = 0; c < 4; ++c) {
    EXPECT_EQ(y[c], table[3 * 4 + c]);
    EXPECT_EQ(y[8 + c], table[9 * 4 + c]);
  }
  const std::int32_t bad[] = {1, 10};
  try {
    emb.forward(bad, 2, ds::MatrixView(y.data(), 2, 4));
    FAIL();
  } catch (const ds::ConfigError& e) {
    EXPECT_STREQ(e.what(), "dynasparse.nn: token id outside the vocabulary; expected 0 <= id < 10, got 10 [embed position 1]");
  }
  const std::int32_t negative[] = {-1};
  EXPECT_THROW(emb.forward(negative, 1, ds::MatrixView(y.data(), 1, 4)), ds::ConfigError);
}

}  // namespace
