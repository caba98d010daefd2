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
// One row (decoding): four accumulator sets take the four quarters of the block-row in step,
// so consecutive vpdpbusd do not wait on each other and the weights are read as four
// sequential streams, which one core needs to keep the memory system busy. The sets are
// named arrays indexed only by unrolled constants so that they stay in registers.
template <std::size_t R>
inline void spmm_u8s8_s32_row(const std::uint8_t* a, const std::uint32_t* col_idx, std::uint32_t b0,
                              std::uint32_t b1, const std::int8_t* values, const std::int32_t* init,
                              std::int32_t* tile) noexcept {
  constexpr std::size_t nv = R / 16;
  __m512i a0[nv], a1[nv], a2[nv], a3[nv];
  DYNASPARSE_UNROLL(4)
  for (std::size_t j = 0; j < nv; ++j) {
    a0[j] = _mm512_loadu_si512(init + 16 * j);
    a1[j] = a2[j] = a3[j] = _mm512_setzero_si512();
  }
  auto step = [&](__m512i(&acc)[nv], std::uint32_t b) {
    const std::int8_t* v = values + static_cast<std::size_t>(b) * R * 4;
    std::int32_t quad;
    std::memcpy(&quad, a + static_cast<std::size_t>(col_idx[b]) * 4, sizeof(quad));
    const __m512i av = _mm512_set1_epi32(quad);
    DYNASPARSE_UNROLL(4)
    for (std::size_t j = 0; j < nv; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], av, _mm512_loadu_si512(v + 64 * j));
  };
  const std::uint32_t q = (b1 - b0) / 4;
  for (std::uint32_t i = 0; i < q; ++i) {
    step(a0, b0 + i);
    step(a1, b0 + i + q);
    step(a2, b0 + i + 2 * q);
    step(a3, b0 + i + 3 * q);
  }
  for (std::uint32_t b = b0 + 4 * q; b < b1; ++b) step(a0, b);
  DYNASPARSE_UNROLL(4)
  for (std::size_t j = 0; j < nv; ++j) {
    const __m512i t = _mm512_add_epi32(_mm512_add_epi32(a0[j], a1[j]), _mm512_add_epi32(a2[j], a3[j]));
    _mm512_storeu_si512(tile + 16 * j, t);
  }
}

template <std::size_t R, std::size_t MR>
inline void spmm_u8s8_s32_tile(const std::uint8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                               std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                               const std::int32_t* init, std::int32_t* tile) noexcept {
  constexpr std::size_t nv = R / 16;
  if constexpr (MR == 1) {
    spmm_u8s8_s32_row<R>(a, col_idx, b0, b1, values, init, tile);
  } else {
    // Every loop over rows and vectors is unrolled whole: GCC otherwise keeps acc in memory
    // (a load and a store around each vpdpbusd).
    __m512i acc[MR][nv];
    DYNASPARSE_UNROLL(4)
    for (std::size_t j = 0; j < nv; ++j) {
      const __m512i v = _mm512_loadu_si512(init + 16 * j);
      DYNASPARSE_UNROLL(8)
      for (std::size_t r = 0; r < MR; ++r) acc[r][j] = v;
    }
    for (std::uint32_t b = b0; b < b1; ++b) {
      const std::int8_t* v = values + static_cast<std::size_t>(b) * R * 4;
      const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * 4;
      __m512i wv[nv];
      DYNASPARSE_UNROLL(4)
      for (std::size_t j = 0; j < nv; ++j) wv[j] = _mm512_loadu_si512(v + 64 * j);
      DYNASPARSE_UNROLL(8)
      for (std::size_t r = 0; r < MR; ++r) {
        std::int32_t quad;
        std::memcpy(&quad, a + r * lda + k0, sizeof(quad));
        const __m512i av = _mm512_set1_epi32(quad);
        DYNASPARSE_UNROLL(4)
        for (std::size_t j = 0; j < nv; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, wv[j]);
      }
    }
    DYNASPARSE_UNROLL(8)
    for (std::size_t r = 0; r < MR; ++r) {
      DYNASPARSE_UNROLL(4)
      for (std::size_t j = 0; j < nv; ++j) _mm512_storeu_si512(tile + r * R + 16 * j, acc[r][j]);
    }
  }
}
#endif

}  // namespace simd::detail::vnni
DYNASPARSE_NAMESPACE_END
