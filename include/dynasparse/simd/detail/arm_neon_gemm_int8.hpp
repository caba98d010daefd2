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
// dotprod: `vdotq_laneq_s32(acc, b, a, l)` adds to each s32 lane j of acc the four products
// of b's bytes 4j .. 4j+3 with a's bytes 4l .. 4l+3 (one activation quad, picked by lane),
// without intermediate narrowing: exact for every int8 input. 16 activation bytes load once
// per row and serve four k groups. Tile 4 x 16: 16 accumulators, 4 activation and 4 weight
// registers of the 32.
//
// Plain NEON: an activation pair (a0, a1) is duplicated into every 16-bit lane (dup from a
// 16-byte row load), `smull` forms the s16 products with the low half of a weight vector,
// `smlal2` adds the products of the next pair (a2, a3) with its high half, so each s16 lane
// holds two products: |a0 w0 + a2 w2| <= 2 * 128 * 127 = 32512 < 32767 for a in
// [-128, 127] and w in [-127, 127] (w = -128 with a = -128 twice would wrap; outside the
// contract, as for the dot kernel). `sadalp` then adds adjacent s16 lanes (the column's
// other k) into its s32 lane. Tile 4 x 16: 16 accumulators.
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
// One k group of the smull kernel: a01[r] / a23[r] hold row r's pairs (t = 0, 1) and
// (2, 3) in every 16-bit lane; b is the group's 64-byte block.
template <std::size_t MR>
inline void smull_group(int32x4_t (&acc)[MR][4], const int8x16_t (&a01)[MR], const int8x16_t (&a23)[MR],
                        const std::int8_t* b) noexcept {
  for (std::size_t j = 0; j < 4; ++j) {
    const int8x16_t w = vld1q_s8(b + 16 * j);
    const int8x8_t wl = vget_low_s8(w);
    for (std::size_t r = 0; r < MR; ++r) {
      const int16x8_t p = vmlal_high_s8(vmull_s8(vget_low_s8(a01[r]), wl), a23[r], w);
      acc[r][j] = vpadalq_s16(acc[r][j], p);
    }
  }
}

// Group Q (0..3) of four, from 16 activation bytes per row already loaded into av.
template <int Q, std::size_t MR>
inline void smull_group_lane(int32x4_t (&acc)[MR][4], const int16x8_t (&av)[MR], const std::int8_t* b) noexcept {
  int8x16_t a01[MR], a23[MR];
  for (std::size_t r = 0; r < MR; ++r) {
    a01[r] = vreinterpretq_s8_s16(vdupq_laneq_s16(av[r], 2 * Q));
    a23[r] = vreinterpretq_s8_s16(vdupq_laneq_s16(av[r], 2 * Q + 1));
  }
  smull_group<MR>(acc, a01, a23, b + Q * 64);
}

template <std::size_t MR>
inline void gemm_s8s8_s32_tile_smull(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                                     std::size_t panel_stride, std::size_t subs, std::size_t kq_count,
                                     std::int32_t* c, std::size_t ldc) noexcept {
  static_assert(MR >= 1 && MR <= gemm_mr, "tile rows out of range");
  for (std::size_t s = 0; s < subs; ++s) {
    const std::int8_t* panel = panels + s * panel_stride;
    int32x4_t acc[MR][4];
    for (std::size_t r = 0; r < MR; ++r) {
      for (std::size_t j = 0; j < 4; ++j) acc[r][j] = vdupq_n_s32(0);
    }
    std::size_t kq = 0;
    for (; kq + 4 <= kq_count; kq += 4) {
      int16x8_t av[MR];
      for (std::size_t r = 0; r < MR; ++r) av[r] = vreinterpretq_s16_s8(vld1q_s8(a + r * lda + kq * 4));
      const std::int8_t* b = panel + kq * 64;
      smull_group_lane<0, MR>(acc, av, b);
      smull_group_lane<1, MR>(acc, av, b);
      smull_group_lane<2, MR>(acc, av, b);
      smull_group_lane<3, MR>(acc, av, b);
    }
    for (; kq < kq_count; ++kq) {
      int8x16_t a01[MR], a23[MR];
      for (std::size_t r = 0; r < MR; ++r) {
        std::int16_t p[2];
        std::memcpy(p, a + r * lda + kq * 4, sizeof(p));
        a01[r] = vreinterpretq_s8_s16(vdupq_n_s16(p[0]));
        a23[r] = vreinterpretq_s8_s16(vdupq_n_s16(p[1]));
      }
      smull_group<MR>(acc, a01, a23, panel + kq * 64);
    }
    for (std::size_t r = 0; r < MR; ++r) {
      for (std::size_t j = 0; j < 4; ++j) vst1q_s32(c + r * ldc + s * gemm_nr + 4 * j, acc[r][j]);
    }
  }
}
#endif

#if DYNASPARSE_HAS_NEON_DOTPROD
// Group L (0..3) of four: activation quad L of each row's 16 loaded bytes against the
// group's four weight vectors.
template <int L, std::size_t MR>
inline void sdot_group_lane(int32x4_t (&acc)[MR][4], const int8x16_t (&av)[MR], const std::int8_t* b) noexcept {
  const int8x16_t b0 = vld1q_s8(b + L * 64), b1 = vld1q_s8(b + L * 64 + 16);
  const int8x16_t b2 = vld1q_s8(b + L * 64 + 32), b3 = vld1q_s8(b + L * 64 + 48);
  for (std::size_t r = 0; r < MR; ++r) {
    acc[r][0] = vdotq_laneq_s32(acc[r][0], b0, av[r], L);
    acc[r][1] = vdotq_laneq_s32(acc[r][1], b1, av[r], L);
    acc[r][2] = vdotq_laneq_s32(acc[r][2], b2, av[r], L);
    acc[r][3] = vdotq_laneq_s32(acc[r][3], b3, av[r], L);
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
    for (std::size_t r = 0; r < MR; ++r) {
      for (std::size_t j = 0; j < 4; ++j) acc[r][j] = vdupq_n_s32(0);
    }
    std::size_t kq = 0;
    for (; kq + 4 <= kq_count; kq += 4) {
      int8x16_t av[MR];
      for (std::size_t r = 0; r < MR; ++r) av[r] = vld1q_s8(a + r * lda + kq * 4);
      const std::int8_t* b = panel + kq * 64;
      sdot_group_lane<0, MR>(acc, av, b);
      sdot_group_lane<1, MR>(acc, av, b);
      sdot_group_lane<2, MR>(acc, av, b);
      sdot_group_lane<3, MR>(acc, av, b);
    }
    for (; kq < kq_count; ++kq) {
      const std::int8_t* b = panel + kq * 64;
      const int8x16_t b0 = vld1q_s8(b), b1 = vld1q_s8(b + 16), b2 = vld1q_s8(b + 32), b3 = vld1q_s8(b + 48);
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
    for (std::size_t r = 0; r < MR; ++r) {
      for (std::size_t j = 0; j < 4; ++j) vst1q_s32(c + r * ldc + s * gemm_nr + 4 * j, acc[r][j]);
    }
  }
}
#endif

}  // namespace simd::detail::neon
DYNASPARSE_NAMESPACE_END
