// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/nn/feed_forward.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
namespace nn = dynasparse::nn;
using dynasparse_test::uniform_floats;

TEST(FeedForward, ActivationsPropagateNaN) {
  // As torch.relu/gelu/silu: a NaN pre-activation stays NaN, never becomes a finite value.
  for (nn::Activation act : {nn::Activation::Gelu, nn::Activation::Silu, nn::Activation::Relu}) {
    std::vector<float> h{std::nanf(""), -1.0f, 2.0f, 0.0f};
    nn::apply_activation(act, ds::MatrixView(h.data(), 1, h.size()));
    EXPECT_TRUE(std::isnan(h[0])) << nn::activation_name(act);
    if (act == nn::Activation::Relu) {
      EXPECT_EQ(h[1], 0.0f);
      EXPECT_EQ(h[2], 2.0f);
    }
  }
}

TEST(FeedForward, ComposesUpActivationDown) {
  const std::size_t m = 3, e = 16, f = 40;
  const auto wu = uniform_floats(f * e, -0.5f, 0.5f, 1u), bu = uniform_floats(f, -0.5f, 0.5f, 2u);
  const auto wd = uniform_floats(e * f, -0.5f, 0.5f, 3u), bd = uniform_floats(e, -0.5f, 0.5f, 4u);
  const auto x = uniform_floats(m * e, -1.0f, 1.0f, 5u);
  for (nn::Activation act : {nn::Activation::Gelu, nn::Activation::Silu, nn::Activation::Relu}) {
    const nn::FeedForward ffn(nn::Linear<nn::DenseF32>(nn::DenseF32(ds::ConstMatrixView(wu.data(), f, e), bu)),
                              nn::Linear<nn::DenseF32>(nn::DenseF32(ds::ConstMatrixView(wd.data(), e, f), bd)), act);
    std::vector<float> y(m * e);
    ds::Workspace ws;
    ffn.forward(ds::ConstMatrixView(x.data(), m, e), ds::MatrixView(y.data(), m, e), ws);
    for (std::size_t r = 0; r < m; ++r) {
      std::vector<double> h(f);
      for (std::size_t j = 0; j < f; ++j) {
        double s = bu[j];
        for (std::size_t k = 0; k < e; ++k) s += static_cast<double>(x[r * e + k]) * wu[j * e + k];
        h[j] = act == nn::Activation::Gelu ? 0.5 * s * (1.0 + std::erf(s / std::sqrt(2.0)))
               : act == nn::Activation::Silu ? s / (1.0 + std::exp(-s))
                                             : (s > 0 ? s : 0.0);
      }
      for (std::size_t i = 0; i < e; ++i) {
        double s = bd[i];
        for (std::size_t j = 0; j < f; ++j) s += h[j] * wd[i * f + j];
        EXPECT_NEAR(y[r * e + i], s, 1e-5) << nn::activation_name(act);
      }
    }
  }
}

TEST(FeedForward, MismatchedHiddenSizesAreShapeErrors) {
  const auto w = uniform_floats(8 * 4, -1.0f, 1.0f, 6u);
  EXPECT_THROW(nn::FeedForward(nn::Linear<nn::DenseF32>(nn::DenseF32(ds::ConstMatrixView(w.data(), 8, 4))),
                               nn::Linear<nn::DenseF32>(nn::DenseF32(ds::ConstMatrixView(w.data(), 4, 4))),
                               nn::Activation::Gelu),
               ds::ShapeError);
}

}  // namespace
