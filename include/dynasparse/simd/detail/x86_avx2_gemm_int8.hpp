// SPDX-License-Identifier: Apache-2.0
// AVX2 int8 GEMM microkernels (no VNNI): C[MR x 8 subs] = A[MR x K] * B[K x 8 subs] on
// 8-column panels, exact in s32.
//
// A panel's 32 bytes per k quad hold 8 columns' quads, the layout vpmaddubsw + vpmaddwd
// reduce to one s32 lane per column. A row's k quad is broadcast to every lane; vpabsb gives
// |a| (u8; |-128| = 128) once per row and quad, vpsignb moves a's sign onto the weights,
// vpmaddubsw forms u8 x s8 pair sums in s16 (at most 2 * 128 * 127 = 32512 < 32767: never
// saturates) and vpmaddwd by 1 adds the two pairs of each column into its s32 lane. This
// requires weights in [-127, 127] (vpsignb wraps -128 where a < 0), the contract of every
// int8 kernel here; activations may be -128. (Shifted unsigned activations, a + 128 <= 255,
// would save the vpsignb but saturate vpmaddubsw: 2 * 255 * 127 > 32767.)
//
// Registers (16 ymm): up to four rows x two panels of accumulators, the two weight vectors,
// a row's broadcast and |a|, the constant 1 and a temporary; a tile of more rows runs in
// chunks of four that re-read the panels from L1. Measured on Zen 3 (128 x 512 x 2048),
// this beat widening activations and weights to s16 for vpmaddwd (16 products per
// instruction, but a broadcast per row and 4 columns and a widening per weight load): 1.4x.
// One row (the GEMV of a decoding step) has its own kernel, gemv_maddubs, over eight
// panels at a time.
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

template <std::size_t MR>
void gemm_s8s8_s32_tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                        std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                        std::int32_t* c, std::size_t ldc) noexcept;
/// gemm_s8s8_s32_tile summing only the k quads in the ranges [spans[2i], spans[2i + 1])
/// (ascending, disjoint): A outside them is never read.
template <std::size_t MR>
void gemm_s8s8_s32_tile_spans(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                              std::size_t panel_stride, std::size_t subs,
                              const std::uint32_t* spans, std::size_t nspans, std::int32_t* c,
                              std::size_t ldc) noexcept;
/// One row against `count` panels anywhere in the packed weights (panel i at w[i]), over
/// the k quads of `spans`: c receives 8 sums per listed panel, in list order.
void gemv_s8s8_s32_panels(const std::int8_t* a, const std::int8_t* const* w, std::size_t count,
                          const std::uint32_t* spans, std::size_t nspans, std::int32_t* c) noexcept;

#if DYNASPARSE_HAS_AVX2
// acc[j] += the four-byte dot products of a row's activation quad (at `quad`, broadcast)
// with the 8 columns' quads of w[j], j < NV: vpabsb once, then per vector vpsignb,
// vpmaddubsw and vpmaddwd by `ones` (the sign trick above). Shared with the sparse kernel.
template <std::size_t NV>
inline void maddubs_quad(const std::int8_t* quad, const __m256i* w, const __m256i ones,
                         __m256i* acc) noexcept {
  std::int32_t q;
  std::memcpy(&q, quad, sizeof(q));
  const __m256i av = _mm256_set1_epi32(q);
  const __m256i ua = _mm256_abs_epi8(av);
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j) {
    const __m256i p16 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(w[j], av));
    acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p16, ones));
  }
}

// MR rows against NV panels with vpmaddubsw, over the k quads of `spans`.
template <std::size_t MR, std::size_t NV>
inline void gemm_rows_maddubs(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                              std::size_t panel_stride, const std::uint32_t* spans,
                              std::size_t nspans, std::int32_t* c, std::size_t ldc) noexcept {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i* w[NV];
  __m256i acc[MR][NV];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j)
    w[j] = reinterpret_cast<const __m256i*>(panels + j * panel_stride);
  DYNASPARSE_UNROLL(8)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) acc[r][j] = _mm256_setzero_si256();
  }
  for (std::size_t i = 0; i < nspans; ++i) {
    for (std::size_t kq = spans[2 * i]; kq < spans[2 * i + 1]; ++kq) {
      __m256i wv[NV];
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < NV; ++j) wv[j] = _mm256_loadu_si256(w[j] + kq);
      DYNASPARSE_UNROLL(8)
      for (std::size_t r = 0; r < MR; ++r)
        maddubs_quad<NV>(a + r * lda + kq * gemm_kgroup, wv, ones, acc[r]);
    }
  }
  DYNASPARSE_UNROLL(8)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc + j * gemm_nr), acc[r][j]);
    }
  }
}

// One row against NV <= 8 panels, panel j at w[j] (any panels of the packed weights, so a
// product may gather the columns it needs), over the k quads of `spans`: the GEMV of a
// decoding step. Each weight vector is loaded where it is used, so eight panels (a 64-column
// tile's worth) fit the 16 registers: eight sums, the broadcast, |a|, the constant 1 and
// a temporary. A quad's broadcast, vpabsb and loop step then serve eight vectors instead
// of four: 5.6 instructions per 32 multiply-adds instead of 6.75 (the floor is 5: the
// load, vpsignb, vpmaddubsw, vpmaddwd and vpaddd). c receives 8 NV sums, panel by panel.
template <std::size_t NV>
inline void gemv_maddubs(const std::int8_t* a, const std::int8_t* const* w,
                         const std::uint32_t* spans, std::size_t nspans, std::int32_t* c) noexcept {
  static_assert(NV >= 1 && NV <= 8, "one row takes at most eight panels");
  constexpr std::size_t quad_bytes = gemm_nr * gemm_kgroup;
  const __m256i ones = _mm256_set1_epi16(1);
  const std::int8_t* p[NV];
  __m256i acc[NV];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j) {
    p[j] = w[j];
    acc[j] = _mm256_setzero_si256();
  }
  for (std::size_t i = 0; i < nspans; ++i) {
    const std::size_t kq0 = spans[2 * i], kq1 = spans[2 * i + 1];
    const std::int8_t* ap = a + kq0 * gemm_kgroup;
    for (std::size_t o = kq0 * quad_bytes; o != kq1 * quad_bytes;
         o += quad_bytes, ap += gemm_kgroup) {
      std::int32_t q;
      std::memcpy(&q, ap, sizeof(q));
      const __m256i av = _mm256_set1_epi32(q);
      const __m256i ua = _mm256_abs_epi8(av);
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < NV; ++j) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[j] + o));
        const __m256i p16 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(wv, av));
        acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p16, ones));
      }
    }
  }
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + j * gemm_nr), acc[j]);
}

// Eight listed panels at a time. A outside the k quads of `spans` is never read.
inline void gemv_s8s8_s32_panels(const std::int8_t* a, const std::int8_t* const* w,
                                 std::size_t count, const std::uint32_t* spans, std::size_t nspans,
                                 std::int32_t* c) noexcept {
  std::size_t s = 0;
  for (; s + 8 <= count; s += 8) gemv_maddubs<8>(a, w + s, spans, nspans, c + s * gemm_nr);
  if (count - s >= 4) {
    gemv_maddubs<4>(a, w + s, spans, nspans, c + s * gemm_nr);
    s += 4;
  }
  if (count - s >= 2) {
    gemv_maddubs<2>(a, w + s, spans, nspans, c + s * gemm_nr);
    s += 2;
  }
  if (s < count) gemv_maddubs<1>(a, w + s, spans, nspans, c + s * gemm_nr);
}

// MR rows (MR <= 4) against `subs` panels: two at a time (eight for one row), then the rest.
template <std::size_t MR>
inline void gemm_rows_all_panels(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                                 std::size_t panel_stride, std::size_t subs,
                                 const std::uint32_t* spans, std::size_t nspans, std::int32_t* c,
                                 std::size_t ldc) noexcept {
  std::size_t s = 0;
  if constexpr (MR == 1) {
    // The listed-panel GEMV over consecutive panels, eight per call.
    (void)lda, (void)ldc;
    const std::int8_t* w[8];
    for (; s < subs; s += 8) {
      const std::size_t batch = subs - s < 8 ? subs - s : 8;
      for (std::size_t j = 0; j < batch; ++j) w[j] = panels + (s + j) * panel_stride;
      gemv_s8s8_s32_panels(a, w, batch, spans, nspans, c + s * gemm_nr);
    }
  } else {
    for (; s + 2 <= subs; s += 2) {
      gemm_rows_maddubs<MR, 2>(a, lda, panels + s * panel_stride, panel_stride, spans, nspans,
                               c + s * gemm_nr, ldc);
    }
    if (s < subs) {
      gemm_rows_maddubs<MR, 1>(a, lda, panels + s * panel_stride, panel_stride, spans, nspans,
                               c + s * gemm_nr, ldc);
    }
  }
}

template <std::size_t MR>
inline void gemm_s8s8_s32_tile_spans(const std::int8_t* a, std::size_t lda,
                                     const std::int8_t* panels, std::size_t panel_stride,
                                     std::size_t subs, const std::uint32_t* spans,
                                     std::size_t nspans, std::int32_t* c,
                                     std::size_t ldc) noexcept {
  static_assert(MR >= 1 && MR <= gemm_mr, "tile rows out of range");
  constexpr std::size_t chunk = 4;
  if constexpr (MR <= chunk) {
    gemm_rows_all_panels<MR>(a, lda, panels, panel_stride, subs, spans, nspans, c, ldc);
  } else {
    gemm_rows_all_panels<chunk>(a, lda, panels, panel_stride, subs, spans, nspans, c, ldc);
    gemm_rows_all_panels<MR - chunk>(a + chunk * lda, lda, panels, panel_stride, subs, spans,
                                     nspans, c + chunk * ldc, ldc);
  }
}

template <std::size_t MR>
inline void gemm_s8s8_s32_tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                               std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                               std::int32_t* c, std::size_t ldc) noexcept {
  const std::uint32_t all[2] = {0, static_cast<std::uint32_t>(kq_count)};
  gemm_s8s8_s32_tile_spans<MR>(a, lda, panels, panel_stride, subs, all, 1, c, ldc);
}
#endif

}  // namespace simd::detail::avx2
DYNASPARSE_NAMESPACE_END
