// SPDX-License-Identifier: Apache-2.0
// AArch64 int8 GEMM microkernels: C[MR x 16] = A[MR x K] * B[K x 16] on 16-column panels,
// with plain NEON (smull/smlal2/sadalp) and with the ARMv8.2 dotprod extension (sdot).
//
// Both read signed activations as they are (no shift, no compensation): the accumulators
// start at zero.
//
// Layouts (elements are bytes):
//   A: row-major [M, Kp], Kp = K rounded up to 4, padding bytes 0.
//   B: panels of 16 columns; panel p holds, for each group of four k (kq = 0 .. Kp/4 - 1),
//      a 64-byte block of 16 columns x 4 k. Columns past N and k past K are 0. Within a
//      block, byte pack_offset_*(cc, t) holds W[16 p + cc][4 kq + t]:
//      - dotprod: cc * 4 + t (k-minor, the VNNI layout): four 16-byte vectors of 4 columns.
//      - plain NEON: four 16-byte vectors of 4 columns; vector g = cc / 4 holds the k pair
//        (t = 0, 1) of its 4 columns in its low 8 bytes and the pair (2, 3) in its high 8
//        bytes, each pair k-minor: (cc / 4) * 16 + (t / 2) * 8 + (cc % 4) * 2 + t % 2.
//   C: int32, row-major with stride ldc; a call covering `subs` consecutive panels
//      (panel_stride bytes apart) writes MR x 16 subs values.
//
// dotprod: `vdotq_lane_s32(acc, b, a, l)` adds to each s32 lane j of acc the four products
// of b's bytes 4j .. 4j+3 with a's bytes 4l .. 4l+3 (one activation quad, picked by lane),
// without intermediate narrowing: exact for every int8 input. 8 activation bytes load once
// per row and serve two k groups. Tile 4 x 16: 16 accumulators, 4 activation and 8 weight
// registers of the 32.
//
// Plain NEON: a row's k quad is loaded and its pairs (a0, a1) and (a2, a3) duplicated into
// every 16-bit lane; `smull` forms the s16 products of (a0, a1) with the low half of a
// weight vector, `smlal2` adds the products of (a2, a3) with its high half, so each s16
// lane holds two products: |a0 w0 + a2 w2| <= 2 * 128 * 127 = 32512 < 32767 for a in
// [-128, 127] and w in [-127, 127] (w = -128 with a = -128 twice would wrap; outside the
// contract, as for the dot kernel). `sadalp` then adds adjacent s16 lanes (the column's
// other k) into its s32 lane. Tile 4 x 16, swept as columns 0-7 then 8-15 so that 8
// accumulators and 8 products stay in registers.
//
// Accumulator: s32, exact while K * 128 * 127 < 2^31 (K <= 131072). Integer sums do not
// depend on order, so both kernels are bit-exact with detail/scalar/gemm_int8.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dynasparse/config.hpp"

#if DYNASPARSE_HAS_NEON
#include <arm_neon.h>
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::neon {

/// Columns per packed panel, k per group and rows per microkernel call (both kernels).
inline constexpr std::size_t gemm_nr = 16;
inline constexpr std::size_t gemm_kgroup = 4;
inline constexpr std::size_t gemm_mr = 4;

/// Byte of W[cc][t] inside a panel's 64-byte block (cc < 16, t < 4), per kernel.
constexpr std::size_t pack_offset_sdot(std::size_t cc, std::size_t t) noexcept { return cc * 4 + t; }
constexpr std::size_t pack_offset_smull(std::size_t cc, std::size_t t) noexcept {
  return (cc / 4) * 16 + (t / 2) * 8 + (cc % 4) * 2 + t % 2;
}

template <std::size_t MR>
void gemm_s8s8_s32_tile_smull(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                              std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                              std::int32_t* c, std::size_t ldc) noexcept;
template <std::size_t MR>
void gemm_s8s8_s32_tile_sdot(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                             std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                             std::int32_t* c, std::size_t ldc) noexcept;

#if DYNASPARSE_HAS_NEON
template <std::size_t MR>
inline void gemm_s8s8_s32_tile_smull(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                                     std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                                     std::int32_t* c, std::size_t ldc) noexcept {
  static_assert(MR >= 1 && MR <= gemm_mr, "tile rows out of range");
  for (std::size_t s = 0; s < subs; ++s) {
    const std::int8_t* panel = panels + s * panel_stride;
    // Columns 0-7, then 8-15: MR x 2 accumulators and MR x 2 products stay in registers.
    for (std::size_t h = 0; h < 2; ++h) {
      int32x4_t acc[MR][2];
      DYNASPARSE_UNROLL(12)
      for (std::size_t r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = vdupq_n_s32(0);
      for (std::size_t kq = 0; kq < kq_count; ++kq) {
        const std::int8_t* b = panel + kq * 64 + 32 * h;
        const int8x16_t w0 = vld1q_s8(b), w1 = vld1q_s8(b + 16);
        DYNASPARSE_UNROLL(12)
        for (std::size_t r = 0; r < MR; ++r) {
          std::int32_t quad;
          std::memcpy(&quad, a + r * lda + kq * 4, sizeof(quad));
          const int16x8_t q16 = vreinterpretq_s16_s32(vdupq_n_s32(quad));
          const int8x16_t a01 = vreinterpretq_s8_s16(vdupq_laneq_s16(q16, 0));
          const int8x16_t a23 = vreinterpretq_s8_s16(vdupq_laneq_s16(q16, 1));
          const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(a01), vget_low_s8(w0)), a23, w0);
          const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(a01), vget_low_s8(w1)), a23, w1);
          acc[r][0] = vpadalq_s16(acc[r][0], p0);
          acc[r][1] = vpadalq_s16(acc[r][1], p1);
        }
      }
      DYNASPARSE_UNROLL(12)
      for (std::size_t r = 0; r < MR; ++r) {
        vst1q_s32(c + r * ldc + s * gemm_nr + 8 * h, acc[r][0]);
        vst1q_s32(c + r * ldc + s * gemm_nr + 8 * h + 4, acc[r][1]);
      }
    }
  }
}
#endif

#if DYNASPARSE_HAS_NEON_DOTPROD
// Group L (0 or 1) of two: activation quad L of each row's 8 loaded bytes against the
// group's four weight vectors.
template <int L, std::size_t MR>
inline void sdot_group_lane(int32x4_t (&acc)[MR][4], const int8x8_t (&av)[MR], const std::int8_t* b) noexcept {
  const int8x16_t b0 = vld1q_s8(b + L * 64), b1 = vld1q_s8(b + L * 64 + 16);
  const int8x16_t b2 = vld1q_s8(b + L * 64 + 32), b3 = vld1q_s8(b + L * 64 + 48);
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    acc[r][0] = vdotq_lane_s32(acc[r][0], b0, av[r], L);
    acc[r][1] = vdotq_lane_s32(acc[r][1], b1, av[r], L);
    acc[r][2] = vdotq_lane_s32(acc[r][2], b2, av[r], L);
    acc[r][3] = vdotq_lane_s32(acc[r][3], b3, av[r], L);
  }
}

template <std::size_t MR>
inline void gemm_s8s8_s32_tile_sdot(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                                    std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                                    std::int32_t* c, std::size_t ldc) noexcept {
  static_assert(MR >= 1 && MR <= gemm_mr, "tile rows out of range");
  for (std::size_t s = 0; s < subs; ++s) {
    const std::int8_t* panel = panels + s * panel_stride;
    int32x4_t acc[MR][4];
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < 4; ++j) acc[r][j] = vdupq_n_s32(0);
    }
    std::size_t kq = 0;
    for (; kq + 2 <= kq_count; kq += 2) {
      int8x8_t av[MR];
      DYNASPARSE_UNROLL(12)
      for (std::size_t r = 0; r < MR; ++r) av[r] = vld1_s8(a + r * lda + kq * 4);
      const std::int8_t* b = panel + kq * 64;
      sdot_group_lane<0, MR>(acc, av, b);
      sdot_group_lane<1, MR>(acc, av, b);
    }
    for (; kq < kq_count; ++kq) {
      const std::int8_t* b = panel + kq * 64;
      const int8x16_t b0 = vld1q_s8(b), b1 = vld1q_s8(b + 16), b2 = vld1q_s8(b + 32), b3 = vld1q_s8(b + 48);
      DYNASPARSE_UNROLL(12)
      for (std::size_t r = 0; r < MR; ++r) {
        std::int32_t quad;
        std::memcpy(&quad, a + r * lda + kq * 4, sizeof(quad));
        const int8x16_t av = vreinterpretq_s8_s32(vdupq_n_s32(quad));
        acc[r][0] = vdotq_s32(acc[r][0], b0, av);
        acc[r][1] = vdotq_s32(acc[r][1], b1, av);
        acc[r][2] = vdotq_s32(acc[r][2], b2, av);
        acc[r][3] = vdotq_s32(acc[r][3], b3, av);
      }
    }
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < 4; ++j) vst1q_s32(c + r * ldc + s * gemm_nr + 4 * j, acc[r][j]);
    }
  }
}
#endif

}  // namespace simd::detail::neon
DYNASPARSE_NAMESPACE_END
