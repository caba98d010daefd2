// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/dot_int8.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "support/arches.hpp"
#include "support/random.hpp"

namespace {

using namespace dynasparse_test;
namespace simd = dynasparse::simd;

std::int64_t wide_dot(const std::vector<std::int8_t>& a, const std::vector<std::int8_t>& b) {
  std::int64_t s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<std::int64_t>(a[i]) * b[i];
  return s;
}

template <class I8Arch>
class SimdDotS8 : public ::testing::Test {};
TYPED_TEST_SUITE(SimdDotS8, Int8Arches, ArchNames);

TYPED_TEST(SimdDotS8, BitExactWithScalarAtEdgeSizes) {
  std::vector<std::size_t> sizes = kernel_sizes();
  for (std::size_t extra : {31u, 32u, 33u, 63u, 64u, 65u, 255u, 256u, 257u}) sizes.push_back(extra);
  for (std::size_t n : sizes) {
    const auto a = uniform_int8(n, -127, 127, 40u + static_cast<unsigned>(n));
    const auto b = uniform_int8(n, -127, 127, 41u + static_cast<unsigned>(n));
    const std::int32_t got = simd::dot_s8s8_s32<TypeParam>(a.data(), b.data(), n);
    EXPECT_EQ(got, simd::detail::scalar::dot_s8s8_s32(a.data(), b.data(), n)) << "n=" << n;
    EXPECT_EQ(got, wide_dot(a, b)) << "n=" << n;
  }
}

TYPED_TEST(SimdDotS8, ExtremeValuesAccumulateWithoutSaturation) {
  // Same-sign +-127 maximizes every pairwise 16-bit partial sum of the AVX2 and NEON paths.
  for (int sa : {127, -127}) {
    for (int sb : {127, -127}) {
      const std::size_t n = 4099;
      std::vector<std::int8_t> a(n, static_cast<std::int8_t>(sa)), b(n, static_cast<std::int8_t>(sb));
      EXPECT_EQ(simd::dot_s8s8_s32<TypeParam>(a.data(), b.data(), n),
                static_cast<std::int32_t>(n) * sa * sb);
    }
  }
}

TYPED_TEST(SimdDotS8, MinusOneTwentyEightInFirstOperandIsExact) {
  auto a = uniform_int8(1000, -128, 127, 50u);
  const auto b = uniform_int8(1000, -127, 127, 51u);
  for (std::size_t i = 0; i < a.size(); i += 7) a[i] = -128;
  EXPECT_EQ(simd::dot_s8s8_s32<TypeParam>(a.data(), b.data(), a.size()), wide_dot(a, b));
}

TYPED_TEST(SimdDotS8, LongestExactLengthDoesNotOverflow) {
  const std::size_t n = 131072;  // n * 127 * 127 = 2,114,060,288 < 2^31
  std::vector<std::int8_t> a(n, 127), b(n, 127);
  EXPECT_EQ(simd::dot_s8s8_s32<TypeParam>(a.data(), b.data(), n), 2114060288);
}

TEST(SimdDotS8Default, DefaultPathIsTheBestCompiled) {
  const auto a = uniform_int8(300, -127, 127, 60u);
  const auto b = uniform_int8(300, -127, 127, 61u);
  EXPECT_EQ(simd::dot_s8s8_s32(a.data(), b.data(), a.size()), wide_dot(a, b));
  EXPECT_EQ(simd::has_int8_dot, std::string(simd::int8_arch_name()) == "avx512vnni" ||
                                    std::string(simd::int8_arch_name()) == "vnni256" ||
                                    std::string(simd::int8_arch_name()) == "dotprod");
}

}  // namespace
