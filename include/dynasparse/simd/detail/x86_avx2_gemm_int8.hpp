// SPDX-License-Identifier: Apache-2.0
// AVX2 int8 GEMM microkernels (no VNNI): C[MR x 8 subs] = A[MR x K] * B[K x 8 subs] on
// 8-column panels, exact in s32.
//
// Why not one vpmaddubsw kernel: with a row's activations broadcast, shifted unsigned
// activations (a + 128 <= 255) would saturate vpmaddubsw's s16 pair sums
// (2 * 255 * 127 > 32767), and the sign trick of the dot kernel costs a vpsignb per row and
// weight vector. So there are two kernels on one layout:
//
// - Several rows (MR >= 2): vpmaddwd on s16. Each row's activations are widened to s16
//   (vpmovsxbw) in chunks of gemm_kc bytes into a stack buffer, once per call for all its
//   panels; a k quad of a row is then one vpbroadcastq from memory. A panel is swept twice,
//   columns 0-3 then 4-7: the 16 bytes of a k quad for 4 columns are widened by one
//   vpmovsxbw (shared by the MR rows), and vpmaddwd multiplies s16 x s16 into s32 pair sums:
//   |a0 w0 + a1 w1| <= 2 * 128 * 128, exact for every int8 input (vpmaddwd wraps only for
//   two s16 operands of -32768). vpaddd accumulates. Each accumulator lane holds one
//   column's sum over half of each k quad (k 0-1 or 2-3); the halves are added (vphaddd +
//   vpermq) at the end of each chunk. Tile 8 x 8: 8 accumulators, one weight vector and a
//   broadcast of the 16 ymm registers; per row and 4 columns, 2 instructions per 16
//   products.
// - One row (MR = 1, the GEMV): no widening. The k quad is broadcast as bytes, vpabsb gives
//   |a| (u8; |-128| = 128) once per quad, vpsignb moves a's sign onto the weights, vpmaddubsw
//   forms u8 x s8 pair sums in s16 (at most 2 * 128 * 127 = 32512 < 32767: no saturation),
//   and vpmaddwd by 1 adds the two pairs of each column into its s32 lane. Four panels at
//   a time share the vpabsb. This kernel requires weights in [-127, 127] (vpsignb wraps
//   -128 where a < 0), the contract of every int8 kernel here; activations may be -128.
//
// Layouts (elements are bytes):
//   A: row-major [M, Kp], Kp = K rounded up to 4, padding bytes 0, signed (no shift).
//   B: panels of 8 columns; panel p holds, for each group of four k (kq = 0 .. Kp/4 - 1),
//      8 columns x 4 bytes (k-minor): byte (kq * 8 + col) * 4 + t is W[8 p + col][4 kq + t].
//      Columns past N and k past K are 0.
//   C: int32, row-major with stride ldc; a call covering `subs` consecutive panels
//      (panel_stride bytes apart) writes MR x 8 subs values. Accumulators start at zero.
//
// Accumulator: s32, exact while K * 128 * 128 < 2^31 (K < 131072). Integer sums do not
// depend on order: bit-exact with detail/scalar/gemm_int8.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dynasparse/config.hpp"

#if DYNASPARSE_HAS_AVX2
#include <immintrin.h>
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::avx2 {

/// Columns per packed panel, k per group, rows per microkernel call.
inline constexpr std::size_t gemm_nr = 8;
inline constexpr std::size_t gemm_kgroup = 4;
inline constexpr std::size_t gemm_mr = 8;
/// Activation bytes per row widened at a time by the several-row kernel (a multiple of 16;
/// its stack buffer is gemm_mr * gemm_kc * 2 bytes = 8 KiB).
inline constexpr std::size_t gemm_kc = 512;

template <std::size_t MR>
void gemm_s8s8_s32_tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                        std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                        std::int32_t* c, std::size_t ldc) noexcept;

#if DYNASPARSE_HAS_AVX2
// One row against NV panels with vpmaddubsw (the MR = 1 kernel).
template <std::size_t NV>
inline void gemm_row_maddubs(const std::int8_t* a, const std::int8_t* panels, std::size_t panel_stride,
                             std::size_t kq_count, std::int32_t* c) noexcept {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i* w[NV];
  __m256i acc[NV];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j) {
    w[j] = reinterpret_cast<const __m256i*>(panels + j * panel_stride);
    acc[j] = _mm256_setzero_si256();
  }
  for (std::size_t kq = 0; kq < kq_count; ++kq) {
    std::int32_t quad;
    std::memcpy(&quad, a + kq * gemm_kgroup, sizeof(quad));
    const __m256i av = _mm256_set1_epi32(quad);
    const __m256i ua = _mm256_abs_epi8(av);
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) {
      const __m256i p16 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(_mm256_loadu_si256(w[j] + kq), av));
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p16, ones));
    }
  }
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + j * gemm_nr), acc[j]);
}

template <std::size_t MR>
inline void gemm_s8s8_s32_tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                               std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                               std::int32_t* c, std::size_t ldc) noexcept {
  static_assert(MR >= 1 && MR <= gemm_mr, "tile rows out of range");
  if constexpr (MR == 1) {
    std::size_t s = 0;
    for (; s + 4 <= subs; s += 4) gemm_row_maddubs<4>(a, panels + s * panel_stride, panel_stride, kq_count, c + s * gemm_nr);
    switch (subs - s) {
      case 3: gemm_row_maddubs<3>(a, panels + s * panel_stride, panel_stride, kq_count, c + s * gemm_nr); break;
      case 2: gemm_row_maddubs<2>(a, panels + s * panel_stride, panel_stride, kq_count, c + s * gemm_nr); break;
      case 1: gemm_row_maddubs<1>(a, panels + s * panel_stride, panel_stride, kq_count, c + s * gemm_nr); break;
      default: break;
    }
  } else {
    constexpr std::size_t kc_quads = gemm_kc / gemm_kgroup;
    alignas(32) std::int16_t wide[MR][gemm_kc];
    // At least one pass, so that K = 0 still writes zeros.
    for (std::size_t q0 = 0; q0 == 0 || q0 < kq_count; q0 += kc_quads) {
      const std::size_t qn = kq_count - q0 < kc_quads ? kq_count - q0 : kc_quads;
      const std::size_t bytes = qn * gemm_kgroup;
      DYNASPARSE_UNROLL(12)
      for (std::size_t r = 0; r < MR; ++r) {
        const std::int8_t* src = a + r * lda + q0 * gemm_kgroup;
        std::size_t i = 0;
        for (; i + 16 <= bytes; i += 16) {
          const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
          _mm256_store_si256(reinterpret_cast<__m256i*>(&wide[r][i]), _mm256_cvtepi8_epi16(v));
        }
        for (; i < bytes; ++i) wide[r][i] = src[i];
      }
      for (std::size_t s = 0; s < subs; ++s) {
        const std::int8_t* b = panels + s * panel_stride + q0 * (gemm_nr * gemm_kgroup);
        // Columns 0-3 (h = 0), then 4-7 (h = 1) of the panel, so that one weight vector and
        // MR accumulators stay in registers: lanes (col, k 0-1) and (col, k 2-3).
        __m256i half[2][MR];
        for (std::size_t h = 0; h < 2; ++h) {
          __m256i acc[MR];
          DYNASPARSE_UNROLL(12)
          for (std::size_t r = 0; r < MR; ++r) acc[r] = _mm256_setzero_si256();
          for (std::size_t q = 0; q < qn; ++q) {
            const __m256i w =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + q * 32 + 16 * h)));
            DYNASPARSE_UNROLL(12)
            for (std::size_t r = 0; r < MR; ++r) {
              long long quad;
              std::memcpy(&quad, &wide[r][q * gemm_kgroup], sizeof(quad));
              acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_set1_epi64x(quad), w));
            }
          }
          DYNASPARSE_UNROLL(12)
          for (std::size_t r = 0; r < MR; ++r) half[h][r] = acc[r];
        }
        std::int32_t* cs = c + s * gemm_nr;
        DYNASPARSE_UNROLL(12)
        for (std::size_t r = 0; r < MR; ++r) {
          // hadd gives columns (0 1 4 5 | 2 3 6 7); vpermq restores their order.
          __m256i sum = _mm256_permute4x64_epi64(_mm256_hadd_epi32(half[0][r], half[1][r]), 0xD8);
          auto* dst = reinterpret_cast<__m256i*>(cs + r * ldc);
          if (q0 != 0) sum = _mm256_add_epi32(sum, _mm256_loadu_si256(dst));
          _mm256_storeu_si256(dst, sum);
        }
      }
    }
  }
}
#endif

}  // namespace simd::detail::avx2
DYNASPARSE_NAMESPACE_END
