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
template <std::size_t R>
void spmm_u8s8_s32_block_rows(const std::uint8_t* a, const std::uint32_t* row_ptr,
                              const std::uint32_t* col_idx, std::size_t br0, std::size_t br1,
                              const std::int8_t* values, const std::int32_t* shift_init,
                              std::int32_t* out) noexcept;

#if DYNASPARSE_HAS_AVX512VNNI
// One row (decoding): consecutive blocks go to 8 / (R / 16) accumulator sets in turn, so
// eight vpdpbusd chains are in flight (four left the unit waiting on its latency), and
// pointers step through the blocks. The sets are indexed only by unrolled constants so
// that they stay in registers.
template <std::size_t R>
inline void spmm_u8s8_s32_row(const std::uint8_t* a, const std::uint32_t* col_idx, std::uint32_t b0,
                              std::uint32_t b1, const std::int8_t* values, const std::int32_t* init,
                              std::int32_t* tile) noexcept {
  constexpr std::size_t nv = R / 16, sets = 8 / nv, bytes = R * 4;
  __m512i acc[sets][nv];
  DYNASPARSE_UNROLL(4)
  for (std::size_t j = 0; j < nv; ++j) {
    acc[0][j] = _mm512_loadu_si512(init + 16 * j);
    DYNASPARSE_UNROLL(8)
    for (std::size_t s = 1; s < sets; ++s) acc[s][j] = _mm512_setzero_si512();
  }
  const auto block = [&](__m512i(&set)[nv], const std::uint32_t* ci, const std::int8_t* v) {
    std::int32_t quad;
    std::memcpy(&quad, a + static_cast<std::size_t>(*ci) * 4, sizeof(quad));
    const __m512i av = _mm512_set1_epi32(quad);
    DYNASPARSE_UNROLL(4)
    for (std::size_t j = 0; j < nv; ++j)
      set[j] = _mm512_dpbusd_epi32(set[j], av, _mm512_loadu_si512(v + 64 * j));
  };
  const std::uint32_t* ci = col_idx + b0;
  const std::uint32_t* const end = col_idx + b1;
  const std::int8_t* v = values + static_cast<std::size_t>(b0) * bytes;
  for (; static_cast<std::size_t>(end - ci) >= sets; ci += sets, v += sets * bytes) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t s = 0; s < sets; ++s) block(acc[s], ci + s, v + s * bytes);
  }
  for (; ci != end; ++ci, v += bytes) block(acc[0], ci, v);
  DYNASPARSE_UNROLL(4)
  for (std::size_t j = 0; j < nv; ++j) {
    __m512i t = acc[0][j];
    DYNASPARSE_UNROLL(8)
    for (std::size_t s = 1; s < sets; ++s) t = _mm512_add_epi32(t, acc[s][j]);
    _mm512_storeu_si512(tile + 16 * j, t);
  }
}

// A decoding step's block-rows [br0, br1), R outputs each written to out in turn, so the
// row kernel is inlined into the loop instead of dispatched for each block-row.
template <std::size_t R>
inline void spmm_u8s8_s32_block_rows(const std::uint8_t* a, const std::uint32_t* row_ptr,
                                     const std::uint32_t* col_idx, std::size_t br0, std::size_t br1,
                                     const std::int8_t* values, const std::int32_t* shift_init,
                                     std::int32_t* out) noexcept {
  for (std::size_t br = br0; br < br1; ++br, out += R)
    spmm_u8s8_s32_row<R>(a, col_idx, row_ptr[br], row_ptr[br + 1], values, shift_init + br * R,
                         out);
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
