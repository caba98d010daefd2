// SPDX-License-Identifier: Apache-2.0
// AVX512-VNNI int8 GEMM microkernel: C[MR x 64] += A[MR x K] * B[K x 64] with vpdpbusd.
//
// vpdpbusd multiplies unsigned bytes of its first source by signed bytes of its second, four
// at a time, into int32 lanes without intermediate saturation. A row's four consecutive
// bytes are broadcast to all lanes, so the sign trick of the dot kernel (which needs both
// operands per lane) does not apply; instead A is stored shifted, a + 128 in [1, 255], and
// the driver subtracts 128 * sum_k B[k][n] per column afterwards. Exact while
// K * 255 * 127 < 2^31 (K <= 66,000).
//
// Layouts (elements are bytes):
//   A: row-major [M, Kp], Kp = K rounded up to 4, padding bytes = 128 (the shifted zero).
//   B: panels of 64 columns; panel p holds, for each group of four k (kq = 0 .. Kp/4 - 1),
//      64 columns x 4 bytes (k-minor): byte (kq * 64 + col) * 4 + t is W[p*64 + col][4 kq + t].
//      Columns past N and k past K are 0.
//   C: int32, row-major with stride ldc; each call writes MR x 64 values.
//   init: 64 int32 start values of every row's accumulators (the driver passes
//   -128 * column sums, which undoes the shift at no cost inside the loop).
//
// Two variants: gemm_u8s8_s32_tile_spans sums listed k-group ranges only and makes its own
// start values from those ranges' weights, and gemv_u8s8_s32_units takes one row against
// 16-column quarters of panels (64 bytes of each k group) anywhere in B.
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

/// Columns per packed panel and k per group.
inline constexpr std::size_t gemm_nr = 64;
inline constexpr std::size_t gemm_kgroup = 4;
/// Rows per microkernel call (24 accumulators of 32 zmm registers).
inline constexpr std::size_t gemm_mr = 6;
/// Columns per unit of the one-row kernel: a quarter of a panel, 64 bytes per k group.
inline constexpr std::size_t gemv_unit_cols = 16;

template <std::size_t MR>
void gemm_u8s8_s32_tile(const std::uint8_t* a, std::size_t lda, const std::int8_t* panel,
                        std::size_t kq_count, const std::int32_t* init, std::int32_t* c,
                        std::size_t ldc) noexcept;
void gemv_u8s8_s32_units(const std::uint8_t* a, const std::int8_t* const* w,
                         const std::int32_t* const* init, std::size_t count, std::size_t kq_count,
                         std::int32_t* c) noexcept;
template <std::size_t MR>
void gemm_u8s8_s32_tile_spans(const std::uint8_t* a, std::size_t lda, const std::int8_t* panel,
                              const std::uint32_t* spans, std::size_t nspans, std::int32_t* c,
                              std::size_t ldc) noexcept;

#if DYNASPARSE_HAS_AVX512VNNI
// acc[r] += rows r of A (k groups [kq0, kq1)) times the panel's 64 columns.
template <std::size_t MR>
inline void gemm_u8s8_s32_accumulate(const std::uint8_t* a, std::size_t lda,
                                     const std::int8_t* panel, std::size_t kq0, std::size_t kq1,
                                     __m512i (&acc)[MR][4]) noexcept {
  for (std::size_t kq = kq0; kq < kq1; ++kq) {
    const std::int8_t* b = panel + kq * (gemm_nr * gemm_kgroup);
    const __m512i b0 = _mm512_loadu_si512(b);
    const __m512i b1 = _mm512_loadu_si512(b + 64);
    const __m512i b2 = _mm512_loadu_si512(b + 128);
    const __m512i b3 = _mm512_loadu_si512(b + 192);
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      std::int32_t quad;
      std::memcpy(&quad, a + r * lda + kq * gemm_kgroup, sizeof(quad));
      const __m512i av = _mm512_set1_epi32(quad);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], av, b2);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], av, b3);
    }
  }
}

template <std::size_t MR>
inline void gemm_u8s8_s32_store(const __m512i (&acc)[MR][4], std::int32_t* c,
                                std::size_t ldc) noexcept {
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < 4; ++j) _mm512_storeu_si512(c + r * ldc + 16 * j, acc[r][j]);
  }
}

template <std::size_t MR>
inline void gemm_u8s8_s32_tile(const std::uint8_t* a, std::size_t lda, const std::int8_t* panel,
                               std::size_t kq_count, const std::int32_t* init, std::int32_t* c,
                               std::size_t ldc) noexcept {
  static_assert(MR >= 1 && MR <= gemm_mr, "tile rows out of range");
  __m512i acc[MR][4];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < 4; ++j) {
    const __m512i v = _mm512_loadu_si512(init + 16 * j);
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) acc[r][j] = v;
  }
  gemm_u8s8_s32_accumulate<MR>(a, lda, panel, 0, kq_count, acc);
  gemm_u8s8_s32_store<MR>(acc, c, ldc);
}

// The tile over the k groups in spans [spans[2i], spans[2i + 1]) only (an out_proj reading
// the heads a query uses). The stored shift compensation covers every k, so the start values
// come from the spans instead: -128 * (each column's weights summed over the spans), which
// vpdpbusd with unsigned ones computes from the same panel bytes. A outside the spans is
// never read, and the sums are exact as in the tile.
template <std::size_t MR>
inline void gemm_u8s8_s32_tile_spans(const std::uint8_t* a, std::size_t lda,
                                     const std::int8_t* panel, const std::uint32_t* spans,
                                     std::size_t nspans, std::int32_t* c,
                                     std::size_t ldc) noexcept {
  static_assert(MR >= 1 && MR <= gemm_mr, "tile rows out of range");
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
  for (std::size_t i = 0; i < nspans; ++i) {
    for (std::size_t kq = spans[2 * i]; kq < spans[2 * i + 1]; ++kq) {
      const std::int8_t* b = panel + kq * (gemm_nr * gemm_kgroup);
      DYNASPARSE_UNROLL(4)
      for (std::size_t j = 0; j < 4; ++j)
        sum[j] = _mm512_dpbusd_epi32(sum[j], ones, _mm512_loadu_si512(b + 64 * j));
    }
  }
  __m512i acc[MR][4];
  DYNASPARSE_UNROLL(4)
  for (std::size_t j = 0; j < 4; ++j) {
    const __m512i v = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum[j], 7));
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) acc[r][j] = v;
  }
  for (std::size_t i = 0; i < nspans; ++i)
    gemm_u8s8_s32_accumulate<MR>(a, lda, panel, spans[2 * i], spans[2 * i + 1], acc);
  gemm_u8s8_s32_store<MR>(acc, c, ldc);
}

// One row against NV units of 16 columns anywhere in the packed weights (a decoding step's
// query projection over the heads it opens: with heads of 8 a unit holds two, where a panel
// holds eight). w[j] is the unit's first byte at k group 0; its later groups follow every
// panel block (256 bytes). init[j]: its 16 start values.
template <std::size_t NV>
inline void gemv_u8s8_s32_units(const std::uint8_t* a, const std::int8_t* const* w,
                                const std::int32_t* const* init, std::size_t kq_count,
                                std::int32_t* c) noexcept {
  constexpr std::size_t block = gemm_nr * gemm_kgroup;
  __m512i acc[NV];
  const std::int8_t* p[NV];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j) {
    acc[j] = _mm512_loadu_si512(init[j]);
    p[j] = w[j];
  }
  for (std::size_t kq = 0; kq < kq_count; ++kq) {
    std::int32_t quad;
    std::memcpy(&quad, a + kq * gemm_kgroup, sizeof(quad));
    const __m512i av = _mm512_set1_epi32(quad);
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j)
      acc[j] = _mm512_dpbusd_epi32(acc[j], av, _mm512_loadu_si512(p[j] + kq * block));
  }
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j) _mm512_storeu_si512(c + gemv_unit_cols * j, acc[j]);
}

// count units (any number), eight per pass over A, then four, two and one; unit j's
// sums go to c[16 j, 16 j + 16).
inline void gemv_u8s8_s32_units(const std::uint8_t* a, const std::int8_t* const* w,
                                const std::int32_t* const* init, std::size_t count,
                                std::size_t kq_count, std::int32_t* c) noexcept {
  std::size_t s = 0;
  for (; s + 8 <= count; s += 8)
    gemv_u8s8_s32_units<8>(a, w + s, init + s, kq_count, c + s * gemv_unit_cols);
  if (count - s >= 4) {
    gemv_u8s8_s32_units<4>(a, w + s, init + s, kq_count, c + s * gemv_unit_cols);
    s += 4;
  }
  if (count - s >= 2) {
    gemv_u8s8_s32_units<2>(a, w + s, init + s, kq_count, c + s * gemv_unit_cols);
    s += 2;
  }
  if (s < count) gemv_u8s8_s32_units<1>(a, w + s, init + s, kq_count, c + s * gemv_unit_cols);
}
#endif

}  // namespace simd::detail::vnni
DYNASPARSE_NAMESPACE_END
