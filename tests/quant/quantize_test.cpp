// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/quant/quantize.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "dynasparse/quant/lut.hpp"
#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
namespace quant = dynasparse::quant;
using dynasparse_test::uniform_floats;

struct Case {
  quant::Granularity g;
  std::size_t group;
};

TEST(QuantizeWeights, RoundTripErrorIsAtMostHalfAStepForEveryGranularity) {
  for (Case c : {Case{quant::Granularity::PerTensor, 0}, Case{quant::Granularity::PerChannel, 0},
                 Case{quant::Granularity::PerGroup, 32}, Case{quant::Granularity::PerGroup, 64}}) {
    const std::size_t rows = 7, cols = 100;  // 100 is not a multiple of the group
    auto w = uniform_floats(rows * cols, -1.0f, 1.0f, 3u);
    for (std::size_t r = 0; r < rows; ++r) w[r * cols] *= static_cast<float>(r + 1);  // varied ranges
    const ds::ConstMatrixView wv(w.data(), rows, cols);
    const quant::QuantizedMatrix q = quant::quantize(wv, c.g, c.group);
    std::vector<float> back(rows * cols);
    quant::dequantize(q, ds::MatrixView(back.data(), rows, cols));
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t col = 0; col < cols; ++col) {
        const float alpha = q.params.alpha_at(r, col);
        // alpha / 254 is half a step; 1e-6 relative covers the float products.
        EXPECT_LE(std::fabs(back[r * cols + col] - w[r * cols + col]), alpha / 254.0f * (1 + 1e-6f))
            << "granularity " << static_cast<int>(c.g) << " r=" << r << " c=" << col;
        EXPECT_NE(q.row(r)[col], -128);
      }
    }
  }
}

TEST(QuantizeWeights, AlphaCountsFollowGranularity) {
  auto w = uniform_floats(5 * 70, -1.0f, 1.0f, 4u);
  const ds::ConstMatrixView wv(w.data(), 5, 70);
  EXPECT_EQ(quant::max_abs_params(wv, quant::Granularity::PerTensor).alpha.size(), 1u);
  EXPECT_EQ(quant::max_abs_params(wv, quant::Granularity::PerChannel).alpha.size(), 5u);
  EXPECT_EQ(quant::max_abs_params(wv, quant::Granularity::PerGroup, 32).alpha.size(), 15u);
}

TEST(QuantizeWeights, AllZeroChannelQuantizesAndDequantizesToExactZero) {
  std::vector<float> w = uniform_floats(3 * 40, -1.0f, 1.0f, 5u);
  for (std::size_t c = 0; c < 40; ++c) w[40 + c] = 0.0f;
  const ds::ConstMatrixView wv(w.data(), 3, 40);
  const auto q = quant::quantize(wv);
  EXPECT_EQ(q.params.alpha[1], 0.0f);
  std::vector<float> back(w.size(), 1.0f);
  quant::dequantize(q, ds::MatrixView(back.data(), 3, 40));
  for (std::size_t c = 0; c < 40; ++c) {
    EXPECT_EQ(q.row(1)[c], 0);
    EXPECT_EQ(back[40 + c], 0.0f);
    EXPECT_FALSE(std::isnan(back[40 + c]));
  }
}

TEST(QuantizeWeights, NonFiniteWeightIsAFormatErrorNamingTheElement) {
  std::vector<float> w(2 * 8, 0.5f);
  w[8 + 3] = std::numeric_limits<float>::quiet_NaN();
  try {
    quant::quantize(ds::ConstMatrixView(w.data(), 2, 8), quant::Granularity::PerChannel, 0, "fc1.weight");
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_STREQ(e.what(),
                 "dynasparse.quant: non-finite value in weights; expected a finite value, got nan "
                 "[fc1.weight row 1 col 3]");
  }
  w[8 + 3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(quant::quantize(ds::ConstMatrixView(w.data(), 2, 8)), ds::FormatError);
}

TEST(QuantizeWeights, BadParametersAreRejected) {
  std::vector<float> w(4 * 64, 0.5f);
  const ds::ConstMatrixView wv(w.data(), 4, 64);
  EXPECT_THROW(quant::quantize(wv, quant::Granularity::PerGroup, 16), ds::ConfigError);
  EXPECT_THROW(quant::quantize(wv, quant::Granularity::PerGroup, 512), ds::ConfigError);
  quant::QuantParams p = quant::max_abs_params(wv, quant::Granularity::PerChannel);
  p.alpha.pop_back();
  EXPECT_THROW(quant::quantize(wv, p), ds::ConfigError);
  p = quant::max_abs_params(wv, quant::Granularity::PerChannel);
  p.alpha[0] = -1.0f;
  EXPECT_THROW(quant::quantize(wv, p), ds::ConfigError);
  p = quant::max_abs_params(ds::ConstMatrixView(w.data(), 2, 64), quant::Granularity::PerChannel);
  EXPECT_THROW(quant::quantize(wv, p), ds::ShapeError);
}

TEST(QuantizeActivations, DynamicRowsUseEachRowsMaxAbs) {
  std::vector<float> x = {1.0f, -2.0f, 0.5f, 0.0f, 0.0f, 0.0f, 10.0f, 5.0f, -10.0f};
  std::vector<std::int8_t> q(9);
  std::vector<float> scales(3);
  quant::quantize_rows_dynamic(ds::ConstMatrixView(x.data(), 3, 3), q.data(), scales.data());
  EXPECT_FLOAT_EQ(scales[0], 2.0f / 127.0f);
  EXPECT_EQ(scales[1], 0.0f);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 32);  // 0.5 * 63.5 = 31.75 -> 32
  EXPECT_EQ(q[3], 0);
  EXPECT_EQ(q[6], 127);
  EXPECT_EQ(q[8], -127);
  std::vector<std::int8_t> qs(9);
  quant::quantize_rows_static(ds::ConstMatrixView(x.data(), 3, 3), 4.0f, qs.data());
  EXPECT_EQ(qs[6], 127);  // 10 saturates at alpha = 4
  EXPECT_EQ(qs[1], -64);  // -2 * 31.75 = -63.5 -> ties to even: -64
}

TEST(DequantLut, LinearTableEqualsScaleMultiplicationBitForBit) {
  const float scale = 0.0123f;
  const quant::DequantLut lut(scale);
  std::vector<std::int8_t> q(255);
  for (int i = 0; i < 255; ++i) q[static_cast<std::size_t>(i)] = static_cast<std::int8_t>(i - 127);
  std::vector<float> via_lut(q.size()), via_mul(q.size());
  lut.dequantize(q.data(), via_lut.data(), q.size());
  ds::simd::dequantize_s8f32(q.data(), via_mul.data(), q.size(), scale);
  EXPECT_EQ(via_lut, via_mul);
  EXPECT_EQ(lut(-128), -128.0f * scale);
}

TEST(DequantLut, AcceptsANonLinearCodebook) {
  float values[256];
  for (int i = 0; i < 256; ++i) values[i] = static_cast<float>((i - 128) * (i - 128));
  const auto lut = quant::DequantLut::from_values(values);
  EXPECT_EQ(lut(-3), 9.0f);
  EXPECT_EQ(lut(127), 16129.0f);
}

}  // namespace
