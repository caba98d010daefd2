// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/softmax.hpp"

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
class SimdSoftmax : public ::testing::Test {};
TYPED_TEST_SUITE(SimdSoftmax, FloatArches, ArchNames);

TYPED_TEST(SimdSoftmax, MatchesScalarReference) {
  for (std::size_t n : kernel_sizes()) {
    const auto x = uniform_floats(n, -20.0f, 20.0f, 5u + static_cast<unsigned>(n));
    std::vector<float> want(n), got(n);
    simd::detail::scalar::softmax_f32(x.data(), want.data(), n);
    simd::softmax_f32<TypeParam>(x.data(), got.data(), n);
    double total = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_NEAR(want[i], got[i], kSoftmaxAbs + kSoftmaxRel * want[i]) << "n=" << n << " i=" << i;
      total += got[i];
    }
    if (n > 0) {
      EXPECT_NEAR(total, 1.0, 1e-5) << "n=" << n;
    }
  }
}

TYPED_TEST(SimdSoftmax, LargeLogitsDoNotOverflow) {
  // Without max subtraction exp(1000) is inf and every output NaN.
  std::vector<float> x = uniform_floats(37, 990.0f, 1000.0f, 3u);
  std::vector<float> want(x.size()), got(x.size());
  simd::detail::scalar::softmax_f32(x.data(), want.data(), x.size());
  simd::softmax_f32<TypeParam>(x.data(), got.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i]));
    EXPECT_NEAR(want[i], got[i], kSoftmaxAbs + kSoftmaxRel * want[i]);
  }
}

TYPED_TEST(SimdSoftmax, AllEqualRowIsUniform) {
  for (std::size_t n : {1u, 16u, 17u, 1000u}) {
    std::vector<float> x(n, 3.25f);
    simd::softmax_f32<TypeParam>(x.data(), x.data(), n);
    for (float v : x) EXPECT_FLOAT_EQ(v, 1.0f / static_cast<float>(n)) << "n=" << n;
  }
}

TYPED_TEST(SimdSoftmax, MinusInfinityEntriesGetZeroWeight) {
  std::vector<float> x = uniform_floats(41, -3.0f, 3.0f, 9u);
  for (std::size_t i = 0; i < x.size(); i += 3) x[i] = -kInf;
  std::vector<float> y(x.size());
  simd::softmax_f32<TypeParam>(x.data(), y.data(), x.size());
  for (std::size_t i = 0; i < x.size(); i += 3) EXPECT_EQ(y[i], 0.0f);
}

TYPED_TEST(SimdSoftmax, DegenerateRowsGiveNaNAsPyTorch) {
  for (float poison : {std::numeric_limits<float>::quiet_NaN(), kInf}) {
    std::vector<float> x = uniform_floats(33, -3.0f, 3.0f, 2u);
    x[20] = poison;
    simd::softmax_f32<TypeParam>(x.data(), x.data(), x.size());
    for (float v : x) EXPECT_TRUE(std::isnan(v)) << "poison " << poison;
  }
  std::vector<float> masked(19, -kInf);
  simd::softmax_f32<TypeParam>(masked.data(), masked.data(), masked.size());
  for (float v : masked) EXPECT_TRUE(std::isnan(v));
}

}  // namespace
