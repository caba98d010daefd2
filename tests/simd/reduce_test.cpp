// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/reduce.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "support/arches.hpp"
#include "support/random.hpp"
#include "support/tolerances.hpp"

namespace {

using namespace dynasparse_test;
namespace simd = dynasparse::simd;

template <class Arch>
class SimdReduce : public ::testing::Test {};
TYPED_TEST_SUITE(SimdReduce, FloatArches, ArchNames);

TYPED_TEST(SimdReduce, DotMatchesReferenceWithinReorderingBudget) {
  for (std::size_t n : kernel_sizes()) {
    const auto a = uniform_floats(n, -2.0f, 2.0f, 1u + static_cast<unsigned>(n));
    const auto b = uniform_floats(n, -2.0f, 2.0f, 2u + static_cast<unsigned>(n));
    double exact = 0.0, sum_abs = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      exact += static_cast<double>(a[i]) * b[i];
      sum_abs += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    const float budget = reordered_sum_budget(n, static_cast<float>(sum_abs));
    const float got = simd::dot_f32<TypeParam>(a.data(), b.data(), n);
    EXPECT_NEAR(got, simd::detail::scalar::dot_f32(a.data(), b.data(), n), 2 * budget) << n;
    EXPECT_NEAR(got, exact, budget) << "n=" << n;
  }
}

TYPED_TEST(SimdReduce, SumMatchesReferenceWithinReorderingBudget) {
  for (std::size_t n : kernel_sizes()) {
    const auto x = uniform_floats(n, -5.0f, 5.0f, 4u + static_cast<unsigned>(n));
    double exact = 0.0, sum_abs = 0.0;
    for (float v : x) {
      exact += v;
      sum_abs += std::fabs(v);
    }
    const float got = simd::sum_f32<TypeParam>(x.data(), n);
    EXPECT_NEAR(got, exact, reordered_sum_budget(n, static_cast<float>(sum_abs))) << "n=" << n;
  }
}

TYPED_TEST(SimdReduce, AxpyMatchesReference) {
  for (std::size_t n : kernel_sizes()) {
    const auto x = uniform_floats(n, -3.0f, 3.0f, 6u + static_cast<unsigned>(n));
    const auto y0 = uniform_floats(n, -3.0f, 3.0f, 7u + static_cast<unsigned>(n));
    std::vector<float> want = y0, got = y0;
    simd::detail::scalar::axpy_f32(0.75f, x.data(), want.data(), n);
    simd::axpy_f32<TypeParam>(0.75f, x.data(), got.data(), n);
    for (std::size_t i = 0; i < n; ++i) {
      // A fused multiply-add rounds once where the reference rounds twice.
      EXPECT_NEAR(want[i], got[i], 2 * kEps * (std::fabs(0.75f * x[i]) + std::fabs(y0[i])));
    }
  }
}

TYPED_TEST(SimdReduce, AddScalarIsExactlyThePlainSum) {
  for (std::size_t n : kernel_sizes()) {
    const auto x = uniform_floats(n, -3.0f, 3.0f, 11u + static_cast<unsigned>(n));
    std::vector<float> got(n, -1.0f), inplace = x;
    simd::add_scalar_f32<TypeParam>(x.data(), -0.3125f, got.data(), n);
    simd::add_scalar_f32<TypeParam>(inplace.data(), -0.3125f, inplace.data(), n);
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_EQ(got[i], x[i] - 0.3125f) << "n=" << n << " i=" << i;
    EXPECT_EQ(got, inplace) << n;
  }
}

TYPED_TEST(SimdReduce, ScaleMulAddMatchesReference) {
  for (std::size_t n : kernel_sizes()) {
    const auto x = uniform_floats(n, -3.0f, 3.0f, 12u + static_cast<unsigned>(n));
    const auto w = uniform_floats(n, -2.0f, 2.0f, 13u + static_cast<unsigned>(n));
    const auto b = uniform_floats(n, -1.0f, 1.0f, 14u + static_cast<unsigned>(n));
    const float s = 0.7f;
    std::vector<float> want(n), got(n, -1.0f), inplace = x;
    // Without bias the products round as the reference's: bit for bit.
    simd::detail::scalar::scale_mul_add_f32(x.data(), s, w.data(), nullptr, want.data(), n);
    simd::scale_mul_add_f32<TypeParam>(x.data(), s, w.data(), nullptr, got.data(), n);
    EXPECT_EQ(got, want) << "no bias, n=" << n;
    simd::detail::scalar::scale_mul_add_f32(x.data(), s, w.data(), b.data(), want.data(), n);
    simd::scale_mul_add_f32<TypeParam>(x.data(), s, w.data(), b.data(), got.data(), n);
    simd::scale_mul_add_f32<TypeParam>(inplace.data(), s, w.data(), b.data(), inplace.data(), n);
    for (std::size_t i = 0; i < n; ++i) {
      // The bias add is fused: one rounding fewer than the reference.
      const float p = x[i] * s * w[i];
      EXPECT_NEAR(got[i], want[i], 2 * kEps * (std::fabs(p) + std::fabs(b[i])))
          << "n=" << n << " i=" << i;
    }
    EXPECT_EQ(got, inplace) << "in place, n=" << n;
  }
}

TYPED_TEST(SimdReduce, ElementwiseStepsCarryNaNAndInfinityAsTheReference) {
  const float inf = std::numeric_limits<float>::infinity(),
              nan = std::numeric_limits<float>::quiet_NaN();
  // Two vectors and a tail, so every special value lands in a vector lane and in the tail.
  std::vector<float> x = {nan, inf, -inf, 1.0f, 0.0f, -2.0f, 3.0f, nan, inf, 1.0f, 2.0f};
  for (int rep = 0; rep < 2; ++rep) x.insert(x.end(), x.begin(), x.begin() + 11);
  const std::size_t n = x.size();
  std::vector<float> w(n, 1.5f), b(n, 0.25f);
  w[4] = inf;  // 0 * inf = NaN
  b[3] = -inf;
  for (std::size_t i = 11; i < n; ++i) {
    w[i] = w[i % 11];
    b[i] = b[i % 11];
  }
  std::vector<float> want(n), got(n);
  simd::detail::scalar::add_scalar_f32(x.data(), -1.0f, want.data(), n);
  simd::add_scalar_f32<TypeParam>(x.data(), -1.0f, got.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << i;
    } else {
      EXPECT_EQ(got[i], want[i]) << i;
    }
  }
  for (const float* bias :
       {static_cast<const float*>(nullptr), static_cast<const float*>(b.data())}) {
    simd::detail::scalar::scale_mul_add_f32(x.data(), 2.0f, w.data(), bias, want.data(), n);
    simd::scale_mul_add_f32<TypeParam>(x.data(), 2.0f, w.data(), bias, got.data(), n);
    for (std::size_t i = 0; i < n; ++i) {
      if (std::isnan(want[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << i;
      } else {
        EXPECT_EQ(got[i], want[i]) << i;  // exact here: every product and sum is representable
      }
    }
  }
}

TYPED_TEST(SimdReduce, MaxIsExact) {
  for (std::size_t n : kernel_sizes()) {
    auto x = uniform_floats(n, -100.0f, 100.0f, 8u + static_cast<unsigned>(n));
    EXPECT_EQ(simd::max_f32<TypeParam>(x.data(), n), simd::detail::scalar::max_f32(x.data(), n));
    if (n > 0) {
      // The maximum in the last (tail) position must be seen too.
      x[n - 1] = 1000.0f;
      EXPECT_EQ(simd::max_f32<TypeParam>(x.data(), n), 1000.0f) << n;
    }
  }
  EXPECT_EQ(simd::max_f32<TypeParam>(nullptr, 0), -std::numeric_limits<float>::infinity());
}

TYPED_TEST(SimdReduce, MaxPropagatesNaNFromAnyPosition) {
  for (std::size_t n : {1u, 17u, 64u, 131u}) {
    for (std::size_t pos : {std::size_t{0}, n / 2, n - 1}) {
      auto x = uniform_floats(n, -1.0f, 1.0f, 3u);
      x[pos] = std::numeric_limits<float>::quiet_NaN();
      EXPECT_TRUE(std::isnan(simd::max_f32<TypeParam>(x.data(), n))) << n << " " << pos;
    }
  }
}

TYPED_TEST(SimdReduce, MaxAbsIsExactAndFlagsNonFinite) {
  for (std::size_t n : kernel_sizes()) {
    auto x = uniform_floats(n, -100.0f, 100.0f, 9u + static_cast<unsigned>(n));
    EXPECT_EQ(simd::max_abs_f32<TypeParam>(x.data(), n), simd::detail::scalar::max_abs_f32(x.data(), n)) << n;
    if (n > 0) {
      x[n - 1] = -1000.0f;
      EXPECT_EQ(simd::max_abs_f32<TypeParam>(x.data(), n), 1000.0f) << n;
      x[n / 2] = -std::numeric_limits<float>::infinity();
      EXPECT_EQ(simd::max_abs_f32<TypeParam>(x.data(), n), std::numeric_limits<float>::infinity()) << n;
      x[0] = std::numeric_limits<float>::quiet_NaN();
      EXPECT_TRUE(std::isnan(simd::max_abs_f32<TypeParam>(x.data(), n))) << n;
    }
  }
  EXPECT_EQ(simd::max_abs_f32<TypeParam>(nullptr, 0), 0.0f);
}

TYPED_TEST(SimdReduce, EmptyInputsGiveIdentity) {
  EXPECT_EQ(simd::dot_f32<TypeParam>(nullptr, nullptr, 0), 0.0f);
  EXPECT_EQ(simd::sum_f32<TypeParam>(nullptr, 0), 0.0f);
}

}  // namespace
