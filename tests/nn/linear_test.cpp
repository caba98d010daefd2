// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/nn/linear.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support/random.hpp"
#include <gtest/gtest.h>

#include "dynasparse/core/threading.hpp"

namespace {

namespace ds = dynasparse;
using dynasparse_test::uniform_floats;

// GatedAttention skips closed heads through these; a format that loses them still computes
// the same numbers, only slower, so no numeric test would notice.
static_assert(ds::nn::detail::has_input_groups<ds::nn::DenseF32>::value &&
              ds::nn::detail::has_input_groups<ds::quant::DenseI8>::value &&
              ds::nn::detail::has_output_groups<ds::nn::DenseF32>::value &&
              ds::nn::detail::has_output_groups<ds::quant::DenseI8>::value);

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

TEST(LinearDenseF32, OutputGroupsEqualThoseColumnsOfTheFullProduct) {
  // Groups of 8 outputs (attention heads of head_dim 8) against panels of 16-64 outputs:
  // listed groups are computed exactly as forward() computes them.
  for (std::size_t m : {1u, 5u, 30u}) {
    const std::size_t in = 48, out = 136, group = 8;
    const auto w = uniform_floats(out * in, -1.0f, 1.0f, 41u);
    const auto b = uniform_floats(out, -1.0f, 1.0f, 42u);
    const auto x = uniform_floats(m * in, -1.0f, 1.0f, 43u);
    const ds::nn::DenseF32 layer(ds::ConstMatrixView(w.data(), out, in), b, "q");
    ds::Workspace ws;
    std::vector<float> full(m * out), part(m * out, -7.0f);
    layer.forward(ds::ConstMatrixView(x.data(), m, in), ds::MatrixView(full.data(), m, out), ws);
    const std::vector<std::uint32_t> groups{1, 2, 16};
    layer.forward_output_groups(ds::ConstMatrixView(x.data(), m, in),
                                ds::MatrixView(part.data(), m, out), group, groups.data(),
                                groups.size(), ws);
    for (std::size_t r = 0; r < m; ++r) {
      for (std::uint32_t g : groups) {
        for (std::size_t c = g * group; c < (g + 1) * group; ++c)
          ASSERT_EQ(part[r * out + c], full[r * out + c]) << r << " " << c;
      }
    }
    // The same groups repeated and out of order give the same columns.
    const std::vector<std::uint32_t> shuffled{16, 1, 16, 2, 1, 2, 16};
    std::vector<float> again(m * out, -7.0f);
    layer.forward_output_groups(ds::ConstMatrixView(x.data(), m, in),
                                ds::MatrixView(again.data(), m, out), group, shuffled.data(),
                                shuffled.size(), ws);
    EXPECT_EQ(again, part);
    // Panels holding no listed group are not computed: output 96 shares no panel of 16, 32
    // or 64 outputs with groups 1, 2 and 16, whatever the build's panel height.
    EXPECT_EQ(part[96], -7.0f);
  }
}

TEST(LinearDenseF32, NarrowGroupsGatheredIntoFewerPanelsGiveTheSameColumns) {
  // Heads of 8 outputs, every other one listed: each panel holds a listed group, so only
  // the gathered path computes fewer panels. Enough rows to take it (packed_group_min_rows),
  // with and without bias, at 1 and 2 threads; outputs past a whole panel (out = 200).
  const int saved = ds::num_threads();
  const std::size_t in = 40, out = 200, group = 8;
  const std::size_t m = ds::nn::DenseF32::packed_group_min_rows + 3;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 44u);
  const auto b = uniform_floats(out, -1.0f, 1.0f, 45u);
  const auto x = uniform_floats(m * (in + 2), -1.0f, 1.0f, 46u);
  std::vector<std::uint32_t> groups;
  for (std::uint32_t g = 24; g-- > 0;) {
    if (g % 2 == 1) groups.push_back(g);  // descending: order must not matter
  }
  for (bool with_bias : {true, false}) {
    const ds::nn::DenseF32 layer(ds::ConstMatrixView(w.data(), out, in),
                                 with_bias ? b : std::vector<float>{}, "q");
    for (int threads : {1, 2}) {
      ds::set_num_threads(threads);
      ds::Workspace ws;
      const ds::ConstMatrixView xv(x.data(), m, in, in + 2);
      std::vector<float> full(m * out), part(m * out, -7.0f);
      layer.forward(xv, ds::MatrixView(full.data(), m, out), ws);
      layer.forward_output_groups(xv, ds::MatrixView(part.data(), m, out), group, groups.data(),
                                  groups.size(), ws);
      for (std::size_t r = 0; r < m; ++r) {
        for (std::size_t c = 0; c < out; ++c) {
          if ((c / group) % 2 == 1) {
            ASSERT_EQ(part[r * out + c], full[r * out + c]) << with_bias << " " << r << " " << c;
          } else {
            // Gathered panels hold listed outputs only, so nothing else is written.
            ASSERT_EQ(part[r * out + c], -7.0f) << with_bias << " " << r << " " << c;
          }
        }
      }
    }
  }
  ds::set_num_threads(saved);
}

TEST(LinearDenseF32, InputGroupsEqualTheProductWithTheOtherInputsZeroed) {
  for (std::size_t m : {1u, 3u, 29u}) {
    const std::size_t in = 64, out = 80, group = 8;
    const auto w = uniform_floats(out * in, -1.0f, 1.0f, 51u);
    const auto b = uniform_floats(out, -1.0f, 1.0f, 52u);
    auto x = uniform_floats(m * in, -1.0f, 1.0f, 53u);
    const ds::nn::DenseF32 layer(ds::ConstMatrixView(w.data(), out, in), b, "out");
    const std::vector<std::uint32_t> groups{0, 3, 4, 7};
    // Inputs outside the groups hold NaN: they must not be read.
    auto zeroed = x;
    for (std::size_t r = 0; r < m; ++r) {
      for (std::size_t k = 0; k < in; ++k) {
        const bool listed = std::find(groups.begin(), groups.end(), k / group) != groups.end();
        if (!listed) {
          x[r * in + k] = std::numeric_limits<float>::quiet_NaN();
          zeroed[r * in + k] = 0.0f;
        }
      }
    }
    ds::Workspace ws;
    std::vector<float> want(m * out), got(m * out, -7.0f);
    layer.forward(ds::ConstMatrixView(zeroed.data(), m, in), ds::MatrixView(want.data(), m, out),
                  ws);
    layer.forward_input_groups(ds::ConstMatrixView(x.data(), m, in),
                               ds::MatrixView(got.data(), m, out), group, groups.data(),
                               groups.size(), ws);
    for (std::size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-5f * (1.0f + std::fabs(want[i]))) << i;
    // No groups at all: the bias alone.
    layer.forward_input_groups(ds::ConstMatrixView(x.data(), m, in),
                               ds::MatrixView(got.data(), m, out), group, groups.data(), 0, ws);
    for (std::size_t r = 0; r < m; ++r) {
      for (std::size_t c = 0; c < out; ++c) ASSERT_EQ(got[r * out + c], b[c]);
    }
  }
}

TEST(LinearDenseF32, GroupArgumentsAreChecked) {
  const std::size_t in = 32, out = 32;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 61u);
  const ds::nn::DenseF32 layer(ds::ConstMatrixView(w.data(), out, in), {}, "proj");
  std::vector<float> x(in), y(out);
  ds::Workspace ws;
  const ds::ConstMatrixView xv(x.data(), 1, in);
  const ds::MatrixView yv(y.data(), 1, out);
  const std::vector<std::uint32_t> past{4}, unordered{2, 1}, ok{1};
  EXPECT_THROW(layer.forward_output_groups(xv, yv, 0, ok.data(), 1, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_output_groups(xv, yv, 8, past.data(), 1, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_input_groups(xv, yv, 8, past.data(), 1, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_input_groups(xv, yv, 8, unordered.data(), 2, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_input_groups(xv, yv, 5, ok.data(), 1, ws),
               ds::ConfigError);  // 5 does not divide 32
  // A group size whose product with the index would wrap around.
  EXPECT_THROW(layer.forward_output_groups(xv, yv, std::size_t{1} << 63, ok.data(), 1, ws),
               ds::ConfigError);
  try {
    layer.forward_input_groups(xv, yv, 8, past.data(), 1, ws);
  } catch (const ds::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("proj"), std::string::npos) << e.what();
  }
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
