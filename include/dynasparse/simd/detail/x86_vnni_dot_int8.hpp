// SPDX-License-Identifier: Apache-2.0
// VNNI int8 dot products: 512-bit (AVX512-VNNI) and 256-bit (AVX-VNNI, or AVX512-VNNI+VL).
//
// Instruction: vpdpbusd adds, to each s32 lane, the four products of u8 lanes of its first
// source with the matching s8 lanes of its second, without intermediate saturation. It is
// unsigned x signed, so a's sign moves onto b first: |a| as u8 (|-128| = 128 is still
// exact) and b negated where a < 0 (vpsignb on 256 bits, a masked subtract on 512 bits).
// Contract as for every int8 kernel here: b in [-127, 127] (b = -128 where a < 0 wraps).
// Accumulator: s32, exact while n <= 131072. The 512-bit tail uses masked loads, which read
// no byte past n. Bit-exact with detail/scalar/dot_int8.hpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/simd/detail/scalar/dot_int8.hpp"
#include "dynasparse/simd/detail/x86_avx2_dot_int8.hpp"

#if DYNASPARSE_HAS_AVX512VNNI || DYNASPARSE_HAS_AVXVNNI
#include <immintrin.h>
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::vnni {

std::int32_t dot_s8s8_s32_512(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept;
std::int32_t dot_s8s8_s32_256(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept;

#if DYNASPARSE_HAS_AVX512VNNI || DYNASPARSE_HAS_AVXVNNI
// The same operation has two encodings: EVEX (AVX512-VNNI + VL) and VEX (AVX-VNNI). Prefer
// EVEX when both exist, so the path is exercised on AVX-512 machines without AVX-VNNI.
inline __m256i dpbusd256(__m256i acc, __m256i u, __m256i s) noexcept {
#if DYNASPARSE_HAS_AVX512VNNI
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#endif
}

inline std::int32_t dot_s8s8_s32_256(const std::int8_t* a, const std::int8_t* b,
                                     std::size_t n) noexcept {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const auto* pa = reinterpret_cast<const __m256i*>(a + i);
    const auto* pb = reinterpret_cast<const __m256i*>(b + i);
    const __m256i a0 = _mm256_loadu_si256(pa), a1 = _mm256_loadu_si256(pa + 1);
    acc0 = dpbusd256(acc0, _mm256_abs_epi8(a0), _mm256_sign_epi8(_mm256_loadu_si256(pb), a0));
    acc1 = dpbusd256(acc1, _mm256_abs_epi8(a1), _mm256_sign_epi8(_mm256_loadu_si256(pb + 1), a1));
  }
  for (; i + 32 <= n; i += 32) {
    const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
    acc0 = dpbusd256(acc0, _mm256_abs_epi8(a0), _mm256_sign_epi8(b0, a0));
  }
  return avx2::hsum_s32(_mm256_add_epi32(acc0, acc1)) + scalar::dot_s8s8_s32(a + i, b + i, n - i);
}
#endif

#if DYNASPARSE_HAS_AVX512VNNI
inline __m512i dpbusd512_signed(__m512i acc, __m512i a, __m512i b) noexcept {
  const __mmask64 neg = _mm512_movepi8_mask(a);
  const __m512i sb = _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b);
  return _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(a), sb);
}

inline std::int32_t dot_s8s8_s32_512(const std::int8_t* a, const std::int8_t* b,
                                     std::size_t n) noexcept {
  __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
  __m512i acc2 = _mm512_setzero_si512(), acc3 = _mm512_setzero_si512();
  std::size_t i = 0;
  // Four independent accumulators cover vpdpbusd's latency.
  for (; i + 256 <= n; i += 256) {
    acc0 = dpbusd512_signed(acc0, _mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
    acc1 = dpbusd512_signed(acc1, _mm512_loadu_si512(a + i + 64), _mm512_loadu_si512(b + i + 64));
    acc2 = dpbusd512_signed(acc2, _mm512_loadu_si512(a + i + 128), _mm512_loadu_si512(b + i + 128));
    acc3 = dpbusd512_signed(acc3, _mm512_loadu_si512(a + i + 192), _mm512_loadu_si512(b + i + 192));
  }
  for (; i + 64 <= n; i += 64) {
    acc0 = dpbusd512_signed(acc0, _mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
  }
  if (i < n) {
    const __mmask64 m = _bzhi_u64(~0ULL, static_cast<unsigned>(n - i));
    acc1 = dpbusd512_signed(acc1, _mm512_maskz_loadu_epi8(m, a + i), _mm512_maskz_loadu_epi8(m, b + i));
  }
  return _mm512_reduce_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(acc0, acc1), _mm512_add_epi32(acc2, acc3)));
}
#endif

}  // namespace simd::detail::vnni
DYNASPARSE_NAMESPACE_END
