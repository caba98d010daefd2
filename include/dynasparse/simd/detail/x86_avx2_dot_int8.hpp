// SPDX-License-Identifier: Apache-2.0
// AVX2 int8 dot product.
//
// Instructions: vpabsb/vpsignb move a's sign onto b (|a| * sign(a)b = a*b), vpmaddubsw
// multiplies u8 x s8 and adds adjacent pairs into s16 (saturating), vpmaddwd by 1 widens
// pairs of s16 into s32. Pair sums are at most 2 * 128 * 127 = 32512 < 32767, so nothing
// saturates for a in [-128, 127] and b in [-127, 127]. b = -128 where a < 0 is outside the
// contract (vpsignb wraps it). Accumulator: s32, exact while n <= 131072. Bit-exact with
// detail/scalar/dot_int8.hpp (integer sums do not depend on order).
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/simd/detail/scalar/dot_int8.hpp"

#if DYNASPARSE_HAS_AVX2
#include <immintrin.h>
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::avx2 {

std::int32_t dot_s8s8_s32(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept;

#if DYNASPARSE_HAS_AVX2
inline __m256i dot32_s8s8(__m256i a, __m256i b, __m256i ones16) noexcept {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(b, a));
  return _mm256_madd_epi16(p16, ones16);
}

inline std::int32_t hsum_s32(__m256i v) noexcept {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline std::int32_t dot_s8s8_s32(const std::int8_t* a, const std::int8_t* b,
                                 std::size_t n) noexcept {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const auto* pa = reinterpret_cast<const __m256i*>(a + i);
    const auto* pb = reinterpret_cast<const __m256i*>(b + i);
    acc0 = _mm256_add_epi32(acc0, dot32_s8s8(_mm256_loadu_si256(pa), _mm256_loadu_si256(pb), ones));
    acc1 = _mm256_add_epi32(acc1,
                            dot32_s8s8(_mm256_loadu_si256(pa + 1), _mm256_loadu_si256(pb + 1), ones));
  }
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_add_epi32(
        acc0, dot32_s8s8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)),
                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i)), ones));
  }
  return hsum_s32(_mm256_add_epi32(acc0, acc1)) + scalar::dot_s8s8_s32(a + i, b + i, n - i);
}
#endif

}  // namespace simd::detail::avx2
DYNASPARSE_NAMESPACE_END
