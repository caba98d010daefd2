// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "support/arches.hpp"
#include "support/random.hpp"
#include <gtest/gtest.h>

namespace {

using namespace dynasparse_test;
namespace simd = dynasparse::simd;

template <class Arch>
class SimdQuantize : public ::testing::Test {};
TYPED_TEST_SUITE(SimdQuantize, FloatArches, ArchNames);

TYPED_TEST(SimdQuantize, QuantizeIsBitExactWithReference) {
  for (std::size_t n : kernel_sizes()) {
    const auto x = uniform_floats(n, -6.0f, 6.0f, 11u + static_cast<unsigned>(n));
    const float inv_scale = 127.0f / 5.0f;  // alpha = 5: some values saturate
    std::vector<std::int8_t> want(n), got(n);
    simd::detail::scalar::quantize_f32s8(x.data(), want.data(), n, inv_scale);
    simd::quantize_f32s8<TypeParam>(x.data(), got.data(), n, inv_scale);
    EXPECT_EQ(want, got) << "n=" << n;
    for (std::int8_t q : got) EXPECT_NE(q, -128);
  }
}

TYPED_TEST(SimdQuantize, GroupsAreBitExactWithAMaximumAndAQuantizationEach) {
  // Groups on either side of the AVX-512 path's widths (8 and 16, two or one per vector),
  // an odd count so that a group of 8 is left for the tail, and groups of zeros, NaN, inf,
  // values under min_quant_alpha, negative zeros and exact ties.
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (std::size_t d : {1u, 5u, 8u, 16u, 20u}) {
    for (std::size_t groups : {1u, 2u, 3u, 33u}) {
      auto x = uniform_floats(groups * d, -3.0f, 3.0f, 70u + static_cast<unsigned>(d * groups));
      auto group = [&](std::size_t g) { return x.begin() + static_cast<std::ptrdiff_t>(g * d); };
      if (groups == 33) {
        std::fill(group(0), group(1), 0.0f);
        *(group(1) + d / 2) = nan;
        *(group(2) + d - 1) = inf;
        *(group(3) + d / 3) = -inf;
        std::fill(group(4), group(5), 1e-38f);  // under min_quant_alpha: code 0, alpha kept
        std::fill(group(5), group(6), -0.0f);
        *(group(6)) = 127.0f;  // a grid step of 1: x.5 values tie
        for (std::size_t c = 1; c < d; ++c) *(group(6) + c) = static_cast<float>(c) - 0.5f;
        *(group(7)) = nan;
        *(group(7) + d - 1) = inf;
      }
      std::vector<std::int8_t> want(x.size()), got(x.size(), 99);
      std::vector<float> want_alpha(groups), got_alpha(groups, -1.0f);
      for (std::size_t g = 0; g < groups; ++g) {
        want_alpha[g] = simd::detail::scalar::max_abs_f32(x.data() + g * d, d);
        simd::detail::scalar::quantize_f32s8(x.data() + g * d, want.data() + g * d, d,
                                             simd::inv_scale_for(want_alpha[g]));
      }
      simd::quantize_groups_f32s8<TypeParam>(x.data(), groups, d, got.data(), got_alpha.data());
      EXPECT_EQ(got, want) << "d=" << d << " groups=" << groups;
      for (std::size_t g = 0; g < groups; ++g) {
        if (std::isnan(want_alpha[g])) {
          EXPECT_TRUE(std::isnan(got_alpha[g])) << "d=" << d << " group " << g;
        } else {
          EXPECT_EQ(got_alpha[g], want_alpha[g]) << "d=" << d << " group " << g;
        }
      }
    }
  }
}

TYPED_TEST(SimdQuantize, RoundTripErrorIsAtMostHalfAStep) {
  const float alpha = 3.0f;
  const auto x = uniform_floats(1000, -alpha, alpha, 21u);
  std::vector<std::int8_t> q(x.size());
  std::vector<float> y(x.size());
  simd::quantize_f32s8<TypeParam>(x.data(), q.data(), x.size(), 127.0f / alpha);
  simd::dequantize_s8f32<TypeParam>(q.data(), y.data(), y.size(), alpha / 127.0f);
  // Half a quantization step, alpha / 254, plus float rounding of the two products.
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_LE(std::fabs(x[i] - y[i]), alpha / 254.0f * 1.0001f);
}

TYPED_TEST(SimdQuantize, SaturatesAndMapsNaNToZero) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> pattern = {inf, -inf, std::numeric_limits<float>::quiet_NaN(), 1e30f,
                                      -1e30f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f, 126.5f, -128.0f};
  const std::vector<std::int8_t> expect = {127, -127, 0, 127, -127, 2, 4, -2, -4, 0, 0, 126, -127};
  std::vector<float> x;
  std::vector<std::int8_t> want;
  for (int rep = 0; rep < 6; ++rep) {
    x.insert(x.end(), pattern.begin(), pattern.end());
    want.insert(want.end(), expect.begin(), expect.end());
  }
  std::vector<std::int8_t> got(x.size());
  simd::quantize_f32s8<TypeParam>(x.data(), got.data(), x.size(), 1.0f);
  EXPECT_EQ(got, want);
}

TYPED_TEST(SimdQuantize, DequantizeIsBitExactWithReference) {
  for (std::size_t n : kernel_sizes()) {
    const auto q = uniform_int8(n, -127, 127, 31u + static_cast<unsigned>(n));
    std::vector<float> want(n), got(n);
    simd::detail::scalar::dequantize_s8f32(q.data(), want.data(), n, 0.0371f);
    simd::dequantize_s8f32<TypeParam>(q.data(), got.data(), n, 0.0371f);
    EXPECT_EQ(want, got) << "n=" << n;
  }
}

TYPED_TEST(SimdQuantize, DequantizeWithAScaleEachIsBitExactWithThePlainLoop) {
  for (std::size_t n : kernel_sizes()) {
    const auto q = uniform_int8(n, -128, 127, 41u + static_cast<unsigned>(n));
    const auto scales = uniform_floats(n, 1e-4f, 2.0f, 43u + static_cast<unsigned>(n));
    std::vector<float> want(n), got(n, -1.0f);
    for (std::size_t i = 0; i < n; ++i) want[i] = static_cast<float>(q[i]) * scales[i];
    simd::dequantize_s8f32_each<TypeParam>(q.data(), scales.data(), got.data(), n);
    EXPECT_EQ(want, got) << "n=" << n;
  }
}

TYPED_TEST(SimdQuantize, WideningLoadGivesEveryInt8ValueAndReadsOneVectorOfBytes) {
  if constexpr (simd::detail::has_load_s8_f32<TypeParam>()) {
    constexpr std::size_t w = xsimd::batch<float, TypeParam>::size;
    // Every value from -128 to 127, one vector at a time, from a buffer holding exactly w
    // bytes (ASan would flag a wider read).
    for (int first = -128; first < 128; first += static_cast<int>(w)) {
      std::vector<std::int8_t> q(w);
      for (std::size_t i = 0; i < w; ++i)
        q[i] = static_cast<std::int8_t>(first + static_cast<int>(i));
      alignas(64) float got[64];
      simd::detail::load_s8_f32<TypeParam>(q.data()).store_aligned(got);
      for (std::size_t i = 0; i < w; ++i) {
        EXPECT_EQ(got[i], static_cast<float>(q[i])) << first << "+" << i;
      }
    }
  } else {
    // Only the scalar reference and baseline SSE2 dequantize into a buffer instead.
    EXPECT_TRUE((simd::is_scalar_arch_v<TypeParam> || std::is_same_v<TypeParam, xsimd::sse2>));
  }
}

}  // namespace
