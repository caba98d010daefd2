// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/nn/linear.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "dynasparse/core/threading.hpp"

#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
using dynasparse_test::uniform_floats;

TEST(LinearDenseF32, MatchesNnLinearDefinition) {
  const std::size_t m = 5, k = 37, n = 19;
  const auto x = uniform_floats(m * k, -1.0f, 1.0f, 1u);
  const auto w = uniform_floats(n * k, -1.0f, 1.0f, 2u);
  const auto b = uniform_floats(n, -1.0f, 1.0f, 3u);
  const ds::nn::Linear<ds::nn::DenseF32> layer(ds::nn::DenseF32(ds::ConstMatrixView(w.data(), n, k), b));
  EXPECT_EQ(layer.in_features(), k);
  EXPECT_EQ(layer.out_features(), n);
  // Packed panels pad `out` up to the panel height; two 32-bit indices per panel plus one.
  const std::size_t panels = (n + layer.format().panel_height() - 1) / layer.format().panel_height();
  EXPECT_EQ(layer.bytes(), (panels * layer.format().panel_height() * k + n) * sizeof(float) +
                               (2 * panels + 1) * sizeof(std::uint32_t));
  std::vector<float> y(m * n);
  ds::Workspace ws;
  layer.forward(ds::ConstMatrixView(x.data(), m, k), ds::MatrixView(y.data(), m, n), ws);
  for (std::size_t r = 0; r < m; ++r) {
    for (std::size_t j = 0; j < n; ++j) {
      double s = b[j], mag = std::fabs(b[j]);
      for (std::size_t kk = 0; kk < k; ++kk) {
        s += static_cast<double>(x[r * k + kk]) * w[j * k + kk];
        mag += std::fabs(static_cast<double>(x[r * k + kk]) * w[j * k + kk]);
      }
      // Reordered float sums: 1e-5 of the magnitude of the terms.
      EXPECT_NEAR(y[r * n + j], s, 1e-5 * mag) << r << "," << j;
    }
  }
}

// Every register-tile path: one row (decoding), full tiles and remainders, outputs past the
// last full panel, strided input and output views, one thread and several, against a
// double-precision sum (1e-5 of the magnitude of the terms: reordered float sums).
TEST(LinearDenseF32, PackedKernelMatchesDoubleSumsAtEveryShape) {
  struct Case {
    std::size_t m, k, n;
  };
  const int saved = ds::num_threads();
  for (int threads : {1, 3}) {
    ds::set_num_threads(threads);
    for (const Case c : {Case{1, 64, 16}, Case{1, 33, 70}, Case{6, 128, 64}, Case{13, 17, 129}, Case{25, 96, 40},
                         Case{3, 1, 5}, Case{7, 256, 200}, Case{1, 259, 48}, Case{1, 1031, 70}}) {
      const std::size_t ldx = c.k + 3, ldy = c.n + 5;
      const auto x = uniform_floats(c.m * ldx, -1.0f, 1.0f, 11u);
      const auto w = uniform_floats(c.n * c.k, -1.0f, 1.0f, 12u);
      const auto b = uniform_floats(c.n, -1.0f, 1.0f, 13u);
      const ds::nn::DenseF32 layer(ds::ConstMatrixView(w.data(), c.n, c.k), b);
      EXPECT_EQ(layer.unpack(), w);
      std::vector<float> y(c.m * ldy, -7.0f);
      ds::Workspace ws;
      layer.forward(ds::ConstMatrixView(x.data(), c.m, c.k, ldx), ds::MatrixView(y.data(), c.m, c.n, ldy), ws);
      for (std::size_t r = 0; r < c.m; ++r) {
        for (std::size_t j = 0; j < c.n; ++j) {
          double s = b[j], mag = std::fabs(b[j]);
          for (std::size_t kk = 0; kk < c.k; ++kk) {
            s += static_cast<double>(x[r * ldx + kk]) * w[j * c.k + kk];
            mag += std::fabs(static_cast<double>(x[r * ldx + kk]) * w[j * c.k + kk]);
          }
          ASSERT_NEAR(y[r * ldy + j], s, 1e-5 * mag) << c.m << "x" << c.k << "x" << c.n << " at " << r << "," << j;
        }
        // Padding columns of the strided output are left alone.
        for (std::size_t j = c.n; j < ldy; ++j) ASSERT_EQ(y[r * ldy + j], -7.0f);
      }
    }
  }
  ds::set_num_threads(saved);
}

TEST(LinearDenseF32, ShapeErrorsNameTheLayer) {
  std::vector<float> w(4 * 3, 1.0f), x(2 * 5), y(2 * 4);
  const ds::nn::Linear<ds::nn::DenseF32> layer(ds::nn::DenseF32(ds::ConstMatrixView(w.data(), 4, 3), {}, "proj"));
  ds::Workspace ws;
  try {
    layer.forward(ds::ConstMatrixView(x.data(), 2, 5), ds::MatrixView(y.data(), 2, 4), ws);
    FAIL() << "no throw";
  } catch (const ds::ShapeError& e) {
    EXPECT_STREQ(e.what(), "dynasparse.nn: tensor feature size mismatch; expected [2, 3], got [2, 5] [proj input]");
  }
  EXPECT_THROW(ds::nn::DenseF32(ds::ConstMatrixView(w.data(), 4, 3), std::vector<float>(3)), ds::ShapeError);
}

TEST(LinearDenseI8, WrapsTheInt8Format) {
  const std::size_t m = 3, k = 512, n = 512;
  const auto x = uniform_floats(m * k, -1.0f, 1.0f, 4u);
  const auto w = uniform_floats(n * k, -1.0f, 1.0f, 5u);
  const ds::nn::Linear<ds::quant::DenseI8> q(ds::quant::DenseI8(ds::ConstMatrixView(w.data(), n, k)));
  const ds::nn::Linear<ds::nn::DenseF32> f(ds::nn::DenseF32(ds::ConstMatrixView(w.data(), n, k)));
  std::vector<float> yq(m * n), yf(m * n);
  ds::Workspace ws;
  q.forward(ds::ConstMatrixView(x.data(), m, k), ds::MatrixView(yq.data(), m, n), ws);
  f.forward(ds::ConstMatrixView(x.data(), m, k), ds::MatrixView(yf.data(), m, n), ws);
  // |x|, |w| <= 1 and k = 512: the bound of DenseI8 own test is about 2 * 512 / 254.
  for (std::size_t i = 0; i < yq.size(); ++i) EXPECT_NEAR(yq[i], yf[i], 4.1f);
  // int8 values plus column sums and alphas: about a quarter of the float bytes.
  EXPECT_LE(q.bytes() * 100, f.bytes() * 26);
}

}  // namespace
