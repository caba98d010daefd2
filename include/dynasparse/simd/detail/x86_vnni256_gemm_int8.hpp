// SPDX-License-Identifier: Apache-2.0
// 256-bit VNNI int8 GEMM microkernel: C[MR x 16] = A[MR x K] * B[K x 16] with vpdpbusd on
// ymm registers (AVX-VNNI, or AVX512-VNNI with AVX512VL: dpbusd256 in
// x86_vnni_dot_int8.hpp picks the encoding).
//
// Same scheme as the 512-bit kernel (x86_vnni_gemm_int8.hpp), on 16-column panels: vpdpbusd
// adds, to each s32 lane, the four products of unsigned bytes of its first source with
// signed bytes of its second, without intermediate saturation. A row's four consecutive
// activation bytes are broadcast to all lanes, so A is stored shifted, a + 128 in [0, 255],
// and each row's accumulators start at `init` = -128 * (sum of the column's weights), which
// undoes the shift at no cost inside the loop. Exact while K * 255 * 127 < 2^31
// (K <= 66,000); the result is the exact s32 sum, so bit-exact with
// detail/scalar/gemm_int8.hpp.
//
// Layouts (elements are bytes):
//   A: row-major [M, Kp], Kp = K rounded up to 4, padding bytes = 128 (the shifted zero).
//   B: panels of 16 columns; panel p holds, for each group of four k (kq = 0 .. Kp/4 - 1),
//      16 columns x 4 bytes (k-minor): byte (kq * 16 + col) * 4 + t is W[16 p + col][4 kq + t].
//      Columns past N and k past K are 0.
//   C: int32, row-major with stride ldc; a call covering `subs` consecutive panels
//      (panel_stride bytes apart) writes MR x 16 subs values; init advances by 16 per panel.
//
// Tile 6 x 16: 12 accumulators, 2 weight vectors and a broadcast of the 16 ymm registers
// AVX-VNNI has. With one or two rows, four or two panels run at once so that enough
// independent accumulators cover vpdpbusd's latency (the GEMV case).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dynasparse/config.hpp"
#include "dynasparse/simd/detail/x86_vnni_dot_int8.hpp"

#if DYNASPARSE_HAS_AVX512VNNI || DYNASPARSE_HAS_AVXVNNI
#include <immintrin.h>
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::vnni {

/// Columns per packed panel, k per group, rows per microkernel call of the 256-bit kernel.
inline constexpr std::size_t gemm256_nr = 16;
inline constexpr std::size_t gemm256_kgroup = 4;
inline constexpr std::size_t gemm256_mr = 6;

template <std::size_t MR>
void gemm_u8s8_s32_tile_256(const std::uint8_t* a, std::size_t lda, const std::int8_t* panels,
                            std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                            const std::int32_t* init, std::int32_t* c, std::size_t ldc) noexcept;

#if DYNASPARSE_HAS_AVX512VNNI || DYNASPARSE_HAS_AVXVNNI
// MR rows against NP consecutive panels at once.
template <std::size_t MR, std::size_t NP>
inline void gemm_u8s8_s32_panels_256(const std::uint8_t* a, std::size_t lda, const std::int8_t* panels,
                                     std::size_t panel_stride, std::size_t kq_count, const std::int32_t* init,
                                     std::int32_t* c, std::size_t ldc) noexcept {
  constexpr std::size_t nv = 2 * NP;  // 8 columns per vector
  __m256i acc[MR][nv];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < nv; ++j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(init + 8 * j));
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) acc[r][j] = v;
  }
  for (std::size_t kq = 0; kq < kq_count; ++kq) {
    __m256i b[nv];
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < nv; ++j) {
      b[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panels + (j / 2) * panel_stride +
                                                                   kq * (gemm256_nr * gemm256_kgroup) + 32 * (j % 2)));
    }
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      std::int32_t quad;
      std::memcpy(&quad, a + r * lda + kq * gemm256_kgroup, sizeof(quad));
      const __m256i av = _mm256_set1_epi32(quad);
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < nv; ++j) acc[r][j] = dpbusd256(acc[r][j], av, b[j]);
    }
  }
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < nv; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc + 8 * j), acc[r][j]);
  }
}

template <std::size_t MR>
inline void gemm_u8s8_s32_tile_256(const std::uint8_t* a, std::size_t lda, const std::int8_t* panels,
                                   std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                                   const std::int32_t* init, std::int32_t* c, std::size_t ldc) noexcept {
  static_assert(MR >= 1 && MR <= gemm256_mr, "tile rows out of range");
  // Few rows leave vpdpbusd's latency exposed: cover it with more panels at once.
  constexpr std::size_t np = MR == 1 ? 4 : MR == 2 ? 2 : 1;
  std::size_t s = 0;
  for (; s + np <= subs; s += np) {
    gemm_u8s8_s32_panels_256<MR, np>(a, lda, panels + s * panel_stride, panel_stride, kq_count,
                                     init + s * gemm256_nr, c + s * gemm256_nr, ldc);
  }
  for (; s < subs; ++s) {
    gemm_u8s8_s32_panels_256<MR, 1>(a, lda, panels + s * panel_stride, panel_stride, kq_count,
                                    init + s * gemm256_nr, c + s * gemm256_nr, ldc);
  }
}
#endif

}  // namespace simd::detail::vnni
DYNASPARSE_NAMESPACE_END
