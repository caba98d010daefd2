// SPDX-License-Identifier: Apache-2.0
// AVX512-VNNI group-sparse int8 microkernel: MR rows of shifted activations against one
// block-row of R outputs (R = 16, 32 or 64) in blocks of R x 4 inputs.
//
// Each stored block is R outputs x 4 bytes, [i][c]: R / 16 zmm loads give vpdpbusd's signed
// operand for 16 outputs each, and four activation bytes at the block's column broadcast as
// its unsigned operand. Activations are stored shifted (a + 128) exactly as for the dense
// VNNI GEMM (x86_vnni_gemm_int8.hpp); the shift is undone by starting from -128 * (sum of
// the output's stored weights), passed as `init`, the R start values of every row's accumulators. Exact while in * 255 * 127 < 2^31. Rows beyond `in` in the last block must be
// padded (activation byte 128, weight 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dynasparse/config.hpp"

#if DYNASPARSE_HAS_AVX512VNNI
#include <immintrin.h>
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::vnni {

template <std::size_t R, std::size_t MR>
void spmm_u8s8_s32_tile(const std::uint8_t* a, std::size_t lda, const std::uint32_t* col_idx, std::uint32_t b0,
                        std::uint32_t b1, const std::int8_t* values, const std::int32_t* init,
                        std::int32_t* tile) noexcept;

#if DYNASPARSE_HAS_AVX512VNNI
template <std::size_t R, std::size_t MR>
inline void spmm_u8s8_s32_tile(const std::uint8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                               std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                               const std::int32_t* init, std::int32_t* tile) noexcept {
  constexpr std::size_t nv = R / 16;
  // With a single row, alternate two accumulator sets so consecutive blocks do not wait on
  // each other's vpdpbusd.
  constexpr std::size_t sets = MR == 1 ? 2 : 1;
  __m512i acc[sets][MR][nv];
  for (std::size_t j = 0; j < nv; ++j) {
    const __m512i v = _mm512_loadu_si512(init + 16 * j);
    for (std::size_t r = 0; r < MR; ++r) {
      acc[0][r][j] = v;
      if constexpr (sets == 2) acc[sets - 1][r][j] = _mm512_setzero_si512();
    }
  }
  std::uint32_t b = b0;
  for (; b + sets <= b1; b += sets) {
    for (std::size_t s = 0; s < sets; ++s) {
      const std::int8_t* v = values + static_cast<std::size_t>(b + s) * R * 4;
      const std::size_t k0 = static_cast<std::size_t>(col_idx[b + s]) * 4;
      __m512i wv[nv];
      for (std::size_t j = 0; j < nv; ++j) wv[j] = _mm512_loadu_si512(v + 64 * j);
      for (std::size_t r = 0; r < MR; ++r) {
        std::int32_t quad;
        std::memcpy(&quad, a + r * lda + k0, sizeof(quad));
        const __m512i av = _mm512_set1_epi32(quad);
        for (std::size_t j = 0; j < nv; ++j) acc[s][r][j] = _mm512_dpbusd_epi32(acc[s][r][j], av, wv[j]);
      }
    }
  }
  for (; b < b1; ++b) {
    const std::int8_t* v = values + static_cast<std::size_t>(b) * R * 4;
    const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * 4;
    for (std::size_t r = 0; r < MR; ++r) {
      std::int32_t quad;
      std::memcpy(&quad, a + r * lda + k0, sizeof(quad));
      const __m512i av = _mm512_set1_epi32(quad);
      for (std::size_t j = 0; j < nv; ++j) {
        acc[0][r][j] = _mm512_dpbusd_epi32(acc[0][r][j], av, _mm512_loadu_si512(v + 64 * j));
      }
    }
  }
  for (std::size_t r = 0; r < MR; ++r) {
    for (std::size_t j = 0; j < nv; ++j) {
      __m512i t = acc[0][r][j];
      if constexpr (sets == 2) t = _mm512_add_epi32(t, acc[sets - 1][r][j]);
      _mm512_storeu_si512(tile + r * R + 16 * j, t);
    }
  }
}
#endif

}  // namespace simd::detail::vnni
DYNASPARSE_NAMESPACE_END
