// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/quant/dense_i8.hpp"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "support/random.hpp"
#include <gtest/gtest.h>

#include "dynasparse/core/threading.hpp"

namespace {

namespace ds = dynasparse;
namespace quant = dynasparse::quant;
using dynasparse_test::uniform_floats;

struct Problem {
  std::size_t m, k, n;
  std::vector<float> x, w, b;
  Problem(std::size_t m_, std::size_t k_, std::size_t n_, unsigned seed)
      : m(m_), k(k_), n(n_), x(uniform_floats(m_ * k_, -2.0f, 2.0f, seed)),
        w(uniform_floats(n_ * k_, -0.5f, 0.5f, seed + 1)), b(uniform_floats(n_, -1.0f, 1.0f, seed + 2)) {}
  ds::ConstMatrixView xv() const { return ds::ConstMatrixView(x.data(), m, k); }
  ds::ConstMatrixView wv() const { return ds::ConstMatrixView(w.data(), n, k); }
};

// Float64 reference of x W^T + b.
std::vector<double> reference(const Problem& p) {
  std::vector<double> y(p.m * p.n);
  for (std::size_t r = 0; r < p.m; ++r) {
    for (std::size_t j = 0; j < p.n; ++j) {
      double s = p.b[j];
      for (std::size_t kk = 0; kk < p.k; ++kk) s += static_cast<double>(p.x[r * p.k + kk]) * p.w[j * p.k + kk];
      y[r * p.n + j] = s;
    }
  }
  return y;
}

TEST(DenseI8, W8A8StaysWithinTheQuantizationErrorBound) {
  for (auto [m, k, n] : {std::tuple<std::size_t, std::size_t, std::size_t>{1, 64, 70},
                         {7, 100, 130}, {13, 257, 64}}) {
    const Problem p(m, k, n, static_cast<unsigned>(m + k + n));
    const quant::DenseI8 layer(p.wv(), p.b, "fc");
    std::vector<float> y(m * n);
    ds::Workspace ws;
    layer.forward(p.xv(), ds::MatrixView(y.data(), m, n), ws);
    const auto want = reference(p);
    for (std::size_t r = 0; r < m; ++r) {
      float ax = 0.0f;
      for (std::size_t kk = 0; kk < k; ++kk) ax = std::max(ax, std::fabs(p.x[r * k + kk]));
      for (std::size_t j = 0; j < n; ++j) {
        // |x w - x' w'| <= sum |x| dw + |w| dx + dx dw, with half-step errors
        // dx = alpha_x / 254 and dw = alpha_w / 254.
        const double dx = ax / 254.0, dw = layer.alphas()[j] / 254.0;
        double bound = 0.0;
        for (std::size_t kk = 0; kk < k; ++kk) {
          bound += std::fabs(p.x[r * k + kk]) * dw + std::fabs(p.w[j * k + kk]) * dx + dx * dw;
        }
        EXPECT_NEAR(y[r * n + j], want[r * n + j], bound * 1.001 + 1e-5) << r << "," << j;
      }
    }
  }
}

TEST(DenseI8, MatchesAScalarRecomputationFromItsOwnParts) {
  const Problem p(5, 77, 66, 9u);
  const quant::DenseI8 layer(p.wv(), p.b, "fc");
  std::vector<float> y(p.m * p.n);
  ds::Workspace ws;
  layer.forward(p.xv(), ds::MatrixView(y.data(), p.m, p.n), ws);
  const quant::QuantizedMatrix wq = layer.unpack();
  for (std::size_t r = 0; r < p.m; ++r) {
    float ax = 0.0f;
    for (std::size_t kk = 0; kk < p.k; ++kk) ax = std::max(ax, std::fabs(p.x[r * p.k + kk]));
    std::vector<std::int8_t> xq(p.k);
    ds::simd::detail::scalar::quantize_f32s8(p.x.data() + r * p.k, xq.data(), p.k, quant::inv_scale_of(ax));
    for (std::size_t j = 0; j < p.n; ++j) {
      const std::int32_t acc = ds::simd::detail::scalar::dot_s8s8_s32(xq.data(), wq.row(j), p.k);
      const float want = static_cast<float>(acc) * (quant::scale_of(ax) * quant::scale_of(layer.alphas()[j])) + p.b[j];
      // Same int32 sum; the float epilogue may fuse its multiply-add: 2 ulp.
      EXPECT_NEAR(y[r * p.n + j], want, 2 * std::numeric_limits<float>::epsilon() * (std::fabs(want) + 1.0f));
    }
  }
}

TEST(DenseI8, ThreadCountDoesNotChangeTheResult) {
  const Problem p(9, 130, 200, 4u);
  const quant::DenseI8 layer(p.wv(), p.b, "fc");
  std::vector<float> y1(p.m * p.n), y2(p.m * p.n);
  ds::Workspace ws;
  ds::set_num_threads(1);
  layer.forward(p.xv(), ds::MatrixView(y1.data(), p.m, p.n), ws);
  ds::set_num_threads(2);
  layer.forward(p.xv(), ds::MatrixView(y2.data(), p.m, p.n), ws);
  ds::set_num_threads(0);
  EXPECT_EQ(y1, y2);
}

TEST(DenseI8, OutputGroupsEqualThoseColumnsOfTheFullProductBitForBit) {
  // Groups of 8 outputs (attention heads of head_dim 8) against packed panels of 8 or 64
  // columns, at one and two threads, for one row (decoding) and several; static and dynamic
  // activation scales.
  for (int threads : {1, 2}) {
    ds::set_num_threads(threads);
    for (std::size_t m : {1u, 7u}) {
      const Problem p(m, 72, 200, 61u);
      quant::DenseI8 layer(p.wv(), p.b, "q");
      for (float alpha : {0.0f, 0.5f}) {
        layer.set_activation_alpha(alpha);
        ds::Workspace ws;
        std::vector<float> full(m * p.n), part(m * p.n, -7.0f);
        layer.forward(p.xv(), ds::MatrixView(full.data(), m, p.n), ws);
        const std::vector<std::uint32_t> groups{24, 1, 2, 1};  // any order, repeats allowed
        layer.forward_output_groups(p.xv(), ds::MatrixView(part.data(), m, p.n), 8, groups.data(),
                                    groups.size(), ws);
        for (std::size_t r = 0; r < m; ++r) {
          for (std::uint32_t g : groups) {
            for (std::size_t c = g * 8; c < (g + 1) * 8; ++c)
              ASSERT_EQ(part[r * p.n + c], full[r * p.n + c]) << threads << " " << r << " " << c;
          }
          // Tiles [64, 128) and [128, 192) hold no listed group: left as they were.
          for (std::size_t c = 64; c < 192; ++c) ASSERT_EQ(part[r * p.n + c], -7.0f) << c;
          // Neither is any listed panel without a listed column (8 columns on AVX2 and the
          // scalar path, so groups 0 and 3 inside the first tile stay too; 16 with AVX-512
          // VNNI, so group 3).
          constexpr std::size_t step = ds::simd::gemm_list_step<>;
          for (std::size_t c = 0; c < p.n; ++c) {
            bool listed = false;
            for (std::uint32_t g : groups)
              listed = listed || (g * 8 / step <= c / step && c / step <= (g * 8 + 7) / step);
            if (!listed) {
              ASSERT_EQ(part[r * p.n + c], -7.0f) << "column " << c << ", panels of " << step;
            }
          }
        }
      }
    }
  }
  ds::set_num_threads(0);
  const Problem p(2, 16, 40, 62u);
  const quant::DenseI8 layer(p.wv(), p.b, "q");
  ds::Workspace ws;
  std::vector<float> y(2 * 40);
  const ds::MatrixView yv(y.data(), 2, 40);
  const std::uint32_t past[] = {5}, first[] = {0};
  EXPECT_THROW(layer.forward_output_groups(p.xv(), yv, 8, past, 1, ws),
               ds::ConfigError);  // 40 / 8 = 5 groups
  EXPECT_THROW(layer.forward_output_groups(p.xv(), yv, 0, first, 1, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_output_groups(p.xv(), yv, 41, first, 1, ws), ds::ConfigError);
  EXPECT_THROW(
      layer.forward_output_groups(p.xv(), ds::MatrixView(y.data(), 2, 39), 8, first, 1, ws),
      ds::ShapeError);
}

TEST(DenseI8, OutputGroupsOfOneRowSplitAcrossThreadsStayBitExact) {
  // 4096 inputs make one panel enough work for a thread, so the listed heads of 8 outputs
  // (13 of 25, in runs of two) are split between threads, a run cut where a split falls.
  // The unlisted ones fill whole listing units of 8 or 16 columns, which stay unwritten.
  const Problem p(1, 4096, 200, 71u);
  const quant::DenseI8 layer(p.wv(), p.b, "q");
  std::vector<std::uint32_t> groups;
  for (std::uint32_t g = 0; g < 25; ++g) {
    if (g % 4 < 2) groups.push_back(g);
  }
  constexpr std::size_t step = ds::simd::gemm_list_step<>;
  ds::Workspace ws;
  std::vector<float> full(p.n);
  layer.forward(p.xv(), ds::MatrixView(full.data(), 1, p.n), ws);
  for (int threads : {1, 2}) {
    ds::set_num_threads(threads);
    std::vector<float> part(p.n, -7.0f);
    layer.forward_output_groups(p.xv(), ds::MatrixView(part.data(), 1, p.n), 8, groups.data(),
                                groups.size(), ws);
    for (std::size_t c = 0; c < p.n; ++c) {
      bool unit_listed = false;
      for (std::uint32_t g : groups) unit_listed = unit_listed || g * 8 / step == c / step;
      if (c / 8 % 4 < 2) {
        ASSERT_EQ(part[c], full[c]) << threads << " threads, column " << c;
      } else if (!unit_listed) {
        ASSERT_EQ(part[c], -7.0f) << threads << " threads, column " << c << ", units of " << step;
      }
    }
  }
  ds::set_num_threads(0);
}

TEST(DenseI8, InputGroupsEqualTheFullProductOfZeroedInputsBitForBit) {
  // Heads of 8 inputs (out_proj after head skipping), and groups of 3 and 5, which straddle
  // the kernel's groups of 4 k; the skipped inputs hold NaN, which must never be read. One
  // row (decoding) and several, one and two threads, dynamic and static activation scales.
  for (int threads : {1, 2}) {
    ds::set_num_threads(threads);
    for (std::size_t m : {1u, 6u}) {
      for (auto [group, groups] :
           {std::pair<std::size_t, std::vector<std::uint32_t>>{8, {0, 3, 4, 5, 11}},
            {3, {1, 2, 9, 31}},
            {3, {0, 32}},  // 99 inputs: the last group ends inside the kernel's padded k group
            {5, {0, 19}},
            {8, {}}}) {
        const std::size_t k = group == 5 ? 100 : (group == 3 && groups.size() == 2 ? 99 : 96);
        const Problem p(m, k, 70, 71u + static_cast<unsigned>(group));
        quant::DenseI8 layer(p.wv(), p.b, "out_proj");
        std::vector<float> zeroed(m * k, 0.0f), poisoned(m * k, std::nanf(""));
        for (std::size_t r = 0; r < m; ++r) {
          for (std::uint32_t g : groups) {
            for (std::size_t c = g * group; c < (g + 1) * group; ++c) {
              zeroed[r * k + c] = poisoned[r * k + c] = p.x[r * k + c];
            }
          }
        }
        for (float alpha : {0.0f, 0.75f}) {
          layer.set_activation_alpha(alpha);
          ds::Workspace ws;
          std::vector<float> want(m * p.n), got(m * p.n, -7.0f);
          layer.forward(ds::ConstMatrixView(zeroed.data(), m, k),
                        ds::MatrixView(want.data(), m, p.n), ws);
          layer.forward_input_groups(ds::ConstMatrixView(poisoned.data(), m, k),
                                     ds::MatrixView(got.data(), m, p.n), group, groups.data(),
                                     groups.size(), ws);
          ASSERT_EQ(got, want) << "threads " << threads << " m " << m << " group " << group
                               << " alpha " << alpha;
        }
      }
    }
  }
  ds::set_num_threads(0);
  const Problem p(2, 40, 16, 72u);
  const quant::DenseI8 layer(p.wv(), p.b, "out_proj");
  ds::Workspace ws;
  std::vector<float> y(2 * 16);
  const ds::MatrixView yv(y.data(), 2, 16);
  const std::uint32_t past[] = {5}, first[] = {0}, descending[] = {2, 1};
  EXPECT_THROW(layer.forward_input_groups(p.xv(), yv, 8, past, 1, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_input_groups(p.xv(), yv, 0, first, 1, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_input_groups(p.xv(), yv, 16, first, 1, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_input_groups(p.xv(), yv, 8, descending, 2, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward_input_groups(p.xv(), ds::MatrixView(y.data(), 2, 15), 8, first, 1, ws),
               ds::ShapeError);
}

TEST(DenseI8, UnpackReturnsTheQuantizedWeights) {
  const Problem p(1, 45, 71, 5u);
  const quant::DenseI8 layer(p.wv(), {}, "fc");
  const quant::QuantizedMatrix direct = quant::quantize(p.wv());
  const quant::QuantizedMatrix back = layer.unpack();
  ASSERT_EQ(back.values.size(), direct.values.size());
  for (std::size_t i = 0; i < direct.values.size(); ++i) EXPECT_EQ(back.values[i], direct.values[i]);
  EXPECT_EQ(back.params.alpha, direct.params.alpha);
}

TEST(DenseI8, NonFiniteInputRowGivesNaNRowOnly) {
  Problem p(3, 40, 10, 6u);
  p.x[1 * 40 + 5] = std::numeric_limits<float>::quiet_NaN();
  p.x[2 * 40 + 7] = std::numeric_limits<float>::infinity();
  const quant::DenseI8 layer(p.wv(), p.b, "fc");
  std::vector<float> y(3 * 10);
  ds::Workspace ws;
  layer.forward(p.xv(), ds::MatrixView(y.data(), 3, 10), ws);
  for (std::size_t j = 0; j < 10; ++j) {
    EXPECT_TRUE(std::isfinite(y[j]));
    EXPECT_TRUE(std::isnan(y[10 + j]));
    EXPECT_TRUE(std::isnan(y[20 + j]));
  }
}

TEST(DenseI8, StaticActivationAlphaSaturatesBeyondIt) {
  std::vector<float> w(2 * 4, 1.0f);
  const quant::DenseI8 base(ds::ConstMatrixView(w.data(), 2, 4), {}, "fc");
  quant::DenseI8 layer = base;
  layer.set_activation_alpha(1.0f);
  std::vector<float> x = {2.0f, 2.0f, 2.0f, 2.0f}, y(2);
  ds::Workspace ws;
  layer.forward(ds::ConstMatrixView(x.data(), 1, 4), ds::MatrixView(y.data(), 1, 2), ws);
  EXPECT_FLOAT_EQ(y[0], 4.0f);  // each input clipped to 1
  base.forward(ds::ConstMatrixView(x.data(), 1, 4), ds::MatrixView(y.data(), 1, 2), ws);
  EXPECT_FLOAT_EQ(y[0], 8.0f);  // dynamic: exact for this input
  EXPECT_THROW(layer.set_activation_alpha(-1.0f), ds::ConfigError);
}

TEST(DenseI8, WeightOnlyLutPathMatchesFloatWithinWeightError) {
  const Problem p(4, 90, 100, 7u);
  const quant::DenseI8 layer(p.wv(), p.b, "fc");
  std::vector<float> y(p.m * p.n);
  ds::Workspace ws;
  ds::set_num_threads(2);
  layer.forward_weight_only(p.xv(), ds::MatrixView(y.data(), p.m, p.n), ws);
  ds::set_num_threads(0);
  const auto want = reference(p);
  for (std::size_t r = 0; r < p.m; ++r) {
    for (std::size_t j = 0; j < p.n; ++j) {
      double bound = 0.0;
      for (std::size_t kk = 0; kk < p.k; ++kk) bound += std::fabs(p.x[r * p.k + kk]) * layer.alphas()[j] / 254.0;
      EXPECT_NEAR(y[r * p.n + j], want[r * p.n + j], bound * 1.001 + 1e-5);
    }
  }
}

TEST(DenseI8, BadShapesAndFormatsAreRejected) {
  const Problem p(2, 16, 8, 8u);
  EXPECT_THROW(quant::DenseI8(p.wv(), std::vector<float>(7), "fc"), ds::ShapeError);
  const quant::DenseI8 layer(p.wv(), p.b, "fc");
  std::vector<float> y(2 * 9);
  ds::Workspace ws;
  try {
    layer.forward(p.xv(), ds::MatrixView(y.data(), 2, 9), ws);
    FAIL() << "no throw";
  } catch (const ds::ShapeError& e) {
    EXPECT_STREQ(e.what(), "dynasparse.quant: tensor shape mismatch; expected [2, 8], got [2, 9] [fc output]");
  }
  std::vector<float> wide(8 * 64, 0.1f);
  const auto grouped = quant::quantize(ds::ConstMatrixView(wide.data(), 8, 64), quant::Granularity::PerGroup, 32);
  EXPECT_THROW(quant::DenseI8(grouped, {}, "fc"), ds::UnsupportedError);
  // Already-quantized weights: a value count other than rows * cols, and -128 (outside the
  // symmetric range; the AVX2 kernel's sign transfer would flip it back to -128).
  auto q = quant::quantize(p.wv(), quant::Granularity::PerChannel);
  EXPECT_NO_THROW(quant::DenseI8(q, {}, "fc"));
  auto short_values = q;
  short_values.values.resize_discard(q.values.size() - 1);
  EXPECT_THROW(quant::DenseI8(short_values, {}, "fc"), ds::FormatError);
  auto minus128 = q;
  minus128.values[3] = -128;
  try {
    quant::DenseI8(minus128, {}, "fc");
    ADD_FAILURE() << "-128 accepted";
  } catch (const ds::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("fc element 3"), std::string::npos) << e.what();
  }
}

TEST(DenseI8, ValuesTooSmallForTheInt8GridQuantizeToZeroNotNaN) {
  // max |x| below simd::min_quant_alpha: 127 / alpha would be inf and 0 * inf NaN. The
  // row's codes are zero instead, an absolute error under 1e-36 per product term.
  const std::size_t k = 8, n = 4;
  std::vector<float> w(n * k, 1.0f), x(k, 0.0f);
  x[0] = 2e-37f;
  x[1] = 1e-37f;
  const quant::DenseI8 layer(ds::ConstMatrixView(w.data(), n, k), {}, "fc");
  std::vector<float> y(n, -1.0f);
  ds::Workspace ws;
  layer.forward(ds::ConstMatrixView(x.data(), 1, k), ds::MatrixView(y.data(), 1, n), ws);
  for (float v : y) {
    ASSERT_TRUE(std::isfinite(v));
    EXPECT_LE(std::fabs(v - 3e-37f), 1e-36f);
  }
  EXPECT_EQ(quant::inv_scale_of(1e-37f), 0.0f);
  EXPECT_EQ(quant::inv_scale_of(1.0f), 127.0f);
}

}  // namespace

#include "dynasparse/quant/error_report.hpp"

namespace {

TEST(ErrorReport, MeasuresTheInt8ErrorAgainstFp32) {
  const Problem p(16, 128, 96, 10u);
  const quant::DenseI8 layer(p.wv(), p.b, "fc");
  const quant::ErrorReport w8a8 = quant::error_report(p.wv(), p.b, layer, p.xv());
  const quant::ErrorReport lut = quant::error_report(p.wv(), p.b, layer, p.xv(), true);
  EXPECT_EQ(w8a8.layer, "fc");
  // Uniform data: each operand carries ~0.4% relative rounding noise, so outputs carry
  // about 1%; weight-only has only the weights' share.
  EXPECT_GT(w8a8.relative, 1e-4);
  EXPECT_LT(w8a8.relative, 0.02);
  EXPECT_LT(lut.relative, w8a8.relative);
  EXPECT_GT(w8a8.max_abs, 0.0);
  EXPECT_LT(w8a8.max_abs, 0.05 * w8a8.max_ref);
  // A layer built from other weights shows a large error: the report is not vacuous.
  const Problem other(16, 128, 96, 99u);
  const quant::DenseI8 wrong(other.wv(), p.b, "fc");
  EXPECT_GT(quant::error_report(p.wv(), p.b, wrong, p.xv()).relative, 0.5);
}

}  // namespace
