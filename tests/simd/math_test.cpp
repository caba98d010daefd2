// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/math.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "dynasparse/simd/detail/vec_math.hpp"
#include "support/arches.hpp"
#include "support/random.hpp"
#include "support/tolerances.hpp"

namespace {

using namespace dynasparse_test;
namespace simd = dynasparse::simd;

// Compares element by element: NaN must match NaN; infinities must match exactly; finite
// values within abs + rel * |ref|.
void expect_close(const std::vector<float>& ref, const std::vector<float>& got,
                  const std::vector<float>& in, float rel, float abs, const std::string& what) {
  ASSERT_EQ(ref.size(), got.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(ref[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " at x=" << in[i] << " got " << got[i];
    } else if (std::isinf(ref[i])) {
      EXPECT_EQ(ref[i], got[i]) << what << " at x=" << in[i];
    } else {
      EXPECT_NEAR(ref[i], got[i], abs + rel * std::fabs(ref[i]))
          << what << " at i=" << i << " x=" << in[i];
    }
  }
}

template <class Arch>
class SimdMath : public ::testing::Test {};
TYPED_TEST_SUITE(SimdMath, FloatArches, ArchNames);

using Kernel = void (*)(const float*, float*, std::size_t);

template <class Arch>
void check_kernel(Kernel kernel, Kernel reference, float lo, float hi, float rel, float abs,
                  const std::string& name) {
  for (std::size_t n : kernel_sizes()) {
    const auto x = uniform_floats(n, lo, hi, 17u + static_cast<unsigned>(n));
    std::vector<float> want(n), got(n, -1.0f);
    reference(x.data(), want.data(), n);
    kernel(x.data(), got.data(), n);
    expect_close(want, got, x, rel, abs, name + " n=" + std::to_string(n));
    // In place gives the same answer as out of place.
    std::vector<float> inplace = x;
    kernel(inplace.data(), inplace.data(), n);
    EXPECT_EQ(got, inplace) << name << " in place, n=" << n;
  }
  // Extremes, padded to two vectors plus a tail so every lane position sees them.
  std::vector<float> x = {kInf, -kInf, kNaN, 88.0f, -88.0f, 0.0f, -0.0f, 1e30f, -1e30f, 88.3f,
                          -103.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 9.0f, -9.0f};
  const std::vector<float> base = x;
  for (int rep = 0; rep < 5; ++rep) x.insert(x.end(), base.begin(), base.end());
  std::vector<float> want(x.size()), got(x.size());
  reference(x.data(), want.data(), x.size());
  kernel(x.data(), got.data(), x.size());
  expect_close(want, got, x, rel, abs, name + " extremes");
}

TYPED_TEST(SimdMath, ExpMatchesStdExp) {
  check_kernel<TypeParam>(simd::exp_f32<TypeParam>, simd::detail::scalar::exp_f32, -87.0f, 88.0f,
                          kExpRel, kExpAbs, "exp");
}

TYPED_TEST(SimdMath, ExpLimits) {
  const std::vector<float> x = {kInf, -kInf, kNaN, 0.0f, 89.0f, -104.0f, kInf, -kInf,
                                kNaN, 0.0f, 89.0f, -104.0f, kInf, -kInf, kNaN, 0.0f, 89.0f};
  std::vector<float> y(x.size());
  simd::exp_f32<TypeParam>(x.data(), y.data(), x.size());
  for (std::size_t i = 0; i < x.size(); i += 6) {
    EXPECT_EQ(y[i], kInf);
    EXPECT_EQ(y[i + 1], 0.0f);
    EXPECT_TRUE(std::isnan(y[i + 2]));
    EXPECT_EQ(y[i + 3], 1.0f);
    EXPECT_EQ(y[i + 4], kInf);
    if (i + 5 < x.size()) {
      EXPECT_EQ(y[i + 5], 0.0f);
    }
  }
}

// The softmax exp: every x <= 0 down to the flush point, and the limits the softmax
// kernels rely on (-inf gives 0 so masked keys weigh nothing; NaN stays NaN).
TYPED_TEST(SimdMath, ExpNonpositiveMatchesStdExp) {
  if constexpr (simd::is_scalar_arch_v<TypeParam>) {
    GTEST_SKIP() << "vector kernels only; the scalar path calls std::exp";
  } else {
    using B = xsimd::batch<float, TypeParam>;
    constexpr std::size_t w = B::size;
    // A dense sweep of [-87, 0] plus both ends and random points.
    std::vector<float> x;
    for (int i = 0; i <= 87 * 1024; ++i) x.push_back(-static_cast<float>(i) / 1024.0f);
    const auto r = uniform_floats(4096, -87.0f, 0.0f, 91u);
    x.insert(x.end(), r.begin(), r.end());
    x.push_back(-0.0f);
    x.push_back(std::nextafter(-87.0f, 0.0f));
    while (x.size() % w != 0) x.push_back(-1.0f);
    std::vector<float> y(x.size());
    for (std::size_t i = 0; i < x.size(); i += w) {
      simd::detail::vexp_nonpositive<TypeParam>(B::load_unaligned(&x[i])).store_unaligned(&y[i]);
    }
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double want = std::exp(static_cast<double>(x[i]));
      ASSERT_NEAR(y[i], want, kExpNonpositiveRel * want) << "x=" << x[i];
    }
    // Limits: -inf, NaN, below the flush point, and zero, in every lane position.
    const float special[] = {-kInf, kNaN, -87.5f, -1e30f, 0.0f, -0.0f};
    for (float v : special) {
      for (std::size_t lane = 0; lane < w; ++lane) {
        alignas(64) float in[16];
        alignas(64) float out[16];
        for (std::size_t k = 0; k < w; ++k) in[k] = -0.5f;
        in[lane] = v;
        simd::detail::vexp_nonpositive<TypeParam>(B::load_aligned(in)).store_aligned(out);
        if (v != v) {
          EXPECT_TRUE(std::isnan(out[lane])) << "lane " << lane;
        } else if (v < -87.0f) {
          EXPECT_EQ(out[lane], 0.0f) << "x=" << v << " lane " << lane;
        } else {
          EXPECT_EQ(out[lane], 1.0f) << "x=" << v << " lane " << lane;
        }
        for (std::size_t k = 0; k < w; ++k) {
          if (k != lane) {
            EXPECT_NEAR(out[k], std::exp(-0.5f), kExpNonpositiveRel) << k;
          }
        }
      }
    }
  }
}

TYPED_TEST(SimdMath, SigmoidMatchesReference) {
  check_kernel<TypeParam>(simd::sigmoid_f32<TypeParam>, simd::detail::scalar::sigmoid_f32, -30.0f,
                          30.0f, kSigmoidRel, kSigmoidAbs, "sigmoid");
}

TYPED_TEST(SimdMath, SigmoidSaturatesAtInfinity) {
  std::vector<float> x(33, kInf), y(33);
  for (std::size_t i = 0; i < x.size(); i += 2) x[i] = -kInf;
  simd::sigmoid_f32<TypeParam>(x.data(), y.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], i % 2 == 0 ? 0.0f : 1.0f) << i;
}

TYPED_TEST(SimdMath, TanhMatchesStdTanh) {
  check_kernel<TypeParam>(simd::tanh_f32<TypeParam>, simd::detail::scalar::tanh_f32, -12.0f, 12.0f,
                          kTanhRel, kTanhAbs, "tanh");
}

TYPED_TEST(SimdMath, SiluMatchesReference) {
  check_kernel<TypeParam>(simd::silu_f32<TypeParam>, simd::detail::scalar::silu_f32, -30.0f, 30.0f,
                          kSigmoidRel, kSigmoidAbs, "silu");
}

TYPED_TEST(SimdMath, GeluMatchesErfReference) {
  check_kernel<TypeParam>(simd::gelu_f32<TypeParam>, simd::detail::scalar::gelu_f32, -10.0f, 10.0f,
                          kGeluRel, kGeluAbs, "gelu");
}

TYPED_TEST(SimdMath, GeluIsWithinItsBudgetOfADoubleReference) {
  // Every 1e-3 over [-10, 10] (beyond, erfc's tail is far under the absolute budget), against
  // 0.5 x erfc(-x / sqrt 2) in double: the float scalar twin carries its own rounding, so
  // this pins the kernel's error, not the difference of two. (Measured on AVX2
  // and AVX-512: at most 0.065 of the budget, near x = -1.4; through xsimd::erf it was 0.17,
  // near x = -5.5. An Abramowitz and Stegun 7.1.26 kernel with one exp reached 0.45.)
  std::vector<float> x;
  for (int i = -10000; i <= 10000; ++i) x.push_back(static_cast<float>(i) * 1e-3f);
  std::vector<float> want(x.size()), got(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    want[i] = static_cast<float>(0.5 * v * std::erfc(-v * 0.70710678118654752440));
  }
  simd::gelu_f32<TypeParam>(x.data(), got.data(), x.size());
  expect_close(want, got, x, kGeluRel, kGeluAbs, "gelu vs double");
}

TEST(SimdMathReference, GeluAndSiluLimitsAreZeroAtMinusInfinity) {
  EXPECT_EQ(simd::detail::scalar::gelu(-kInf), 0.0f);
  EXPECT_EQ(simd::detail::scalar::silu(-kInf), 0.0f);
  EXPECT_EQ(simd::detail::scalar::gelu(kInf), kInf);
  // PyTorch: gelu(1) = 0.8413447, silu(1) = 0.7310586.
  EXPECT_NEAR(simd::detail::scalar::gelu(1.0f), 0.8413447f, 1e-6f);
  EXPECT_NEAR(simd::detail::scalar::silu(1.0f), 0.7310586f, 1e-6f);
}

TYPED_TEST(SimdMath, GeluKeepsItsRelativeAccuracyInTheNegativeTail) {
  // Below x = -5, 1 + erf(x / sqrt 2) cancels to a few ulps of 1 or to 0 (57% off at -5.5,
  // -0 from -6 on), which the absolute budget hides; erfc keeps the values relative. Every
  // kernel, the scalar twin included, within 1e-4 relative of a double reference, so vector
  // lanes and the array's scalar tail agree to that.
  std::vector<float> x;
  for (int i = 0; i < 37; ++i) x.push_back(-5.0f - 0.2f * static_cast<float>(i));  // to -12.2
  std::vector<float> got(x.size());
  simd::gelu_f32<TypeParam>(x.data(), got.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double want = 0.5 * v * std::erfc(-v * 0.70710678118654752440);
    EXPECT_LT(got[i], 0.0f) << "x=" << x[i];
    EXPECT_NEAR(got[i], want, 1e-4 * std::fabs(want)) << "x=" << x[i];
  }
}

}  // namespace
