// SPDX-License-Identifier: Apache-2.0
// AArch64 group-sparse int8 microkernels: MR rows of signed activations against one
// block-row of R outputs (R = 16, 32 or 64) in blocks of R x 4 inputs, with plain NEON
// (smull/smlal/sadalp) and with the ARMv8.2 dotprod extension (sdot).
//
// Contract (the scalar reference's, detail/scalar/spmm_int8.hpp, for C = 4): for the stored
// blocks b0 .. b1 - 1 of a block-row, tile[r * R + i] = sum over b, c < 4 of
// a[r * lda + 4 * col_idx[b] + c] * values[b * R * 4 + i * 4 + c]. Activations are the signed
// bytes gemm_prepare_activation_row<I8Neon / I8NeonDot> leaves for the dense GEMM
// (arm_neon_gemm_int8.hpp): no shift, accumulators start at zero. All four bytes of a
// block's quad are read: past `in`, activations are the row's zero padding and weights the
// block's zero padding.
//
// A stored block is R outputs x 4 bytes, [i][c]: one 16-byte vector holds 4 outputs' quads.
//
// dotprod: `vdotq_laneq_s32(acc, w, a, l)` adds to each s32 lane j the four products of w's
// bytes 4j .. 4j+3 (output j's quad) with a's bytes 4l .. 4l+3, without intermediate
// narrowing: exact for every int8 input. The activation quads of up to four rows at the
// block's column are loaded into the lanes of one register and picked by l; one row
// broadcasts its quad and uses `vdotq_s32`, the same sum.
//
// Plain NEON: each row's activation quad is duplicated into every 32-bit lane, and blocks go in
// pairs, b and b + 1. `smull` multiplies the low 8 bytes of block b's weight vector (outputs 0-1,
// four k each) by its activation quad into s16, `smlal` adds the same lanes of block b + 1 (same
// outputs, another four k), so each s16 lane holds two products: |a w + a' w'| <= 2 * 128 * 127 =
// 32512 < 32767 for a in [-128, 127] and w in [-127, 127] (the int8 weight contract; w = -128 with
// a = -128 twice would wrap). `smull2` / `smlal2` do the same for the high 8 bytes (outputs 2-3).
// `sadalp` adds adjacent s16 lanes into s32, leaving [o0 k01, o0 k23, o1 k01, o1 k23] and likewise
// for o2, o3; one `addp` per 4 outputs at the end gives [o0, o1, o2, o3]. A last unpaired block
// takes `smull` alone. Three instructions per 16 multiply-adds, as in the dense kernel.
// One row pairs blocks a quarter of the block-row apart instead (spmm_row_smull).
//
// Accumulator: s32 lanes that wrap mod 2^32, so the result is exact whenever the true sum
// fits in s32 (in * 128 * 127 < 2^31: in <= 131072). Integer sums do not depend on order,
// so both kernels are bit-exact with the scalar reference.
//
// Registers (32 q): dotprod keeps MR x NV accumulators of 4 outputs, NV weight vectors and
// one activation register per four rows: 16 outputs per pass over the blocks for three to
// six rows (24 accumulators at six), 32 for two, all of R for one (spmm_row_sdot). Plain
// NEON keeps two accumulators per 4 outputs, 2 NV weight vectors (two blocks), two
// duplicated activations per row and a product: 8 outputs per pass for two or three rows,
// 16 for one (spmm_row_smull), and four to six rows as two halves.
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

template <std::size_t R, std::size_t MR>
void spmm_s8s8_s32_tile_smull(const std::int8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                              std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                              std::int32_t* tile) noexcept;
template <std::size_t R, std::size_t MR>
void spmm_s8s8_s32_tile_sdot(const std::int8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                             std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                             std::int32_t* tile) noexcept;

#if DYNASPARSE_HAS_NEON
// A row's activation quad at byte k0, in every 32-bit lane.
inline int8x16_t spmm_load_quad(const std::int8_t* row, std::size_t k0) noexcept {
  std::int32_t quad;
  std::memcpy(&quad, row + k0, sizeof(quad));
  return vreinterpretq_s8_s32(vdupq_n_s32(quad));
}

// MR rows against outputs [o0, o0 + 4 NV) of every block.
template <std::size_t R, std::size_t MR, std::size_t NV>
inline void spmm_rows_smull(const std::int8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                            std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                            std::size_t o0, std::int32_t* tile) noexcept {
  // acc[r][j][0]: outputs 4j, 4j + 1; acc[r][j][1]: outputs 4j + 2, 4j + 3 (k pairs apart).
  int32x4_t acc[MR][NV][2];
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) acc[r][j][0] = acc[r][j][1] = vdupq_n_s32(0);
  }
  std::uint32_t b = b0;
  for (; b + 2 <= b1; b += 2) {
    const std::int8_t* v0 = values + static_cast<std::size_t>(b) * R * 4 + o0 * 4;
    const std::int8_t* v1 = v0 + R * 4;
    const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * 4;
    const std::size_t k1 = static_cast<std::size_t>(col_idx[b + 1]) * 4;
    int8x16_t w0[NV], w1[NV];
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) {
      w0[j] = vld1q_s8(v0 + 16 * j);
      w1[j] = vld1q_s8(v1 + 16 * j);
    }
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      const int8x16_t a0 = spmm_load_quad(a + r * lda, k0), a1 = spmm_load_quad(a + r * lda, k1);
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < NV; ++j) {
        const int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(w0[j])),
                                      vget_low_s8(a1), vget_low_s8(w1[j]));
        acc[r][j][0] = vpadalq_s16(acc[r][j][0], lo);
        const int16x8_t hi = vmlal_high_s8(vmull_high_s8(a0, w0[j]), a1, w1[j]);
        acc[r][j][1] = vpadalq_s16(acc[r][j][1], hi);
      }
    }
  }
  if (b < b1) {
    const std::int8_t* v0 = values + static_cast<std::size_t>(b) * R * 4 + o0 * 4;
    const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * 4;
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      const int8x16_t a0 = spmm_load_quad(a + r * lda, k0);
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < NV; ++j) {
        const int8x16_t w = vld1q_s8(v0 + 16 * j);
        acc[r][j][0] = vpadalq_s16(acc[r][j][0], vmull_s8(vget_low_s8(a0), vget_low_s8(w)));
        acc[r][j][1] = vpadalq_s16(acc[r][j][1], vmull_high_s8(a0, w));
      }
    }
  }
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j)
      vst1q_s32(tile + r * R + o0 + 4 * j, vpaddq_s32(acc[r][j][0], acc[r][j][1]));
  }
}

// One row (decoding), outputs [o0, o0 + 4 NV): the four quarters of the block-row are read
// in step, as four sequential streams, which one core needs to keep the memory system busy.
// Blocks i and i + q share one smull/smlal pair of s16 products, blocks i + 2q and i + 3q
// another; both go into the same 2 NV accumulators, each of which takes two sadalp per
// eight multiplies, so one set covers the latency. The sums are two named arrays indexed
// only by unrolled constants: the generic kernel's acc[r][j][h], indexed through loops GCC
// 12 did not unroll at -O2, lived on the stack with a copy of both blocks' weights.
template <std::size_t R, std::size_t NV>
inline void spmm_row_smull(const std::int8_t* a, const std::uint32_t* col_idx, std::uint32_t b0,
                           std::uint32_t b1, const std::int8_t* values, std::size_t o0,
                           std::int32_t* tile) noexcept {
  // lo[j]: outputs 4j, 4j + 1; hi[j]: outputs 4j + 2, 4j + 3 (k pairs apart).
  int32x4_t lo[NV], hi[NV];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j) lo[j] = hi[j] = vdupq_n_s32(0);
  const std::int8_t* vo = values + o0 * 4;
  auto pair = [&](std::size_t b, std::size_t c) {
    const int8x16_t x = spmm_load_quad(a, static_cast<std::size_t>(col_idx[b]) * 4);
    const int8x16_t y = spmm_load_quad(a, static_cast<std::size_t>(col_idx[c]) * 4);
    const std::int8_t* vb = vo + b * R * 4;
    const std::int8_t* vc = vo + c * R * 4;
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) {
      const int8x16_t wb = vld1q_s8(vb + 16 * j), wc = vld1q_s8(vc + 16 * j);
      lo[j] = vpadalq_s16(lo[j], vmlal_s8(vmull_s8(vget_low_s8(x), vget_low_s8(wb)),
                                          vget_low_s8(y), vget_low_s8(wc)));
      hi[j] = vpadalq_s16(hi[j], vmlal_high_s8(vmull_high_s8(x, wb), y, wc));
    }
  };
  // Block indices in size_t: GCC turns them into pointer increments, which it cannot do
  // for a uint32_t sum that might wrap.
  const std::size_t q = (b1 - b0) / 4;
  for (std::size_t b = b0; b < b0 + q; ++b) {
    pair(b, b + q);
    pair(b + 2 * q, b + 3 * q);
  }
  std::size_t b = b0 + 4 * q;
  if (b + 2 <= b1) {
    pair(b, b + 1);
    b += 2;
  }
  if (b < b1) {
    const int8x16_t x = spmm_load_quad(a, static_cast<std::size_t>(col_idx[b]) * 4);
    const std::int8_t* vb = vo + b * R * 4;
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) {
      const int8x16_t w = vld1q_s8(vb + 16 * j);
      lo[j] = vpadalq_s16(lo[j], vmull_s8(vget_low_s8(x), vget_low_s8(w)));
      hi[j] = vpadalq_s16(hi[j], vmull_high_s8(x, w));
    }
  }
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j)
    vst1q_s32(tile + o0 + 4 * j, vpaddq_s32(lo[j], hi[j]));
}

template <std::size_t R, std::size_t MR>
inline void spmm_s8s8_s32_tile_smull(const std::int8_t* a, std::size_t lda,
                                     const std::uint32_t* col_idx, std::uint32_t b0,
                                     std::uint32_t b1, const std::int8_t* values,
                                     std::int32_t* tile) noexcept {
  static_assert(R == 16 || R == 32 || R == 64, "block rows must be 16, 32 or 64");
  static_assert(MR >= 1 && MR <= 6, "tile rows out of range");
  if constexpr (MR > 3) {
    // Four to six rows as two halves: the block-row's weights are read twice (from L1), which
    // costs less than the spills of 24 accumulators beside 2 x 2 weight vectors and the
    // activations the compiler hoists.
    constexpr std::size_t h = MR / 2;
    spmm_s8s8_s32_tile_smull<R, h>(a, lda, col_idx, b0, b1, values, tile);
    spmm_s8s8_s32_tile_smull<R, MR - h>(a + h * lda, lda, col_idx, b0, b1, values, tile + h * R);
  } else if constexpr (MR == 1) {
    // 16 outputs per pass: with 32, GCC 12 hoists the four blocks' weight loads past the 16
    // accumulators and spills.
    constexpr std::size_t nv = 4;
    for (std::size_t o0 = 0; o0 < R; o0 += 4 * nv) {
      spmm_row_smull<R, nv>(a, col_idx, b0, b1, values, o0, tile);
    }
  } else {
    constexpr std::size_t nv = 2;
    for (std::size_t o0 = 0; o0 < R; o0 += 4 * nv) {
      spmm_rows_smull<R, MR, nv>(a, lda, col_idx, b0, b1, values, o0, tile);
    }
  }
}
#endif

#if DYNASPARSE_HAS_NEON_DOTPROD
// vdotq_laneq_s32 and vsetq_lane_s32 need their lane as a constant; a row's lane, r % 4, is
// one once the row loop is unrolled, and the switch folds away.
inline int32x4_t spmm_sdot_lane(int32x4_t acc, int8x16_t w, int8x16_t a,
                                std::size_t lane) noexcept {
  switch (lane) {
    case 0:
      return vdotq_laneq_s32(acc, w, a, 0);
    case 1:
      return vdotq_laneq_s32(acc, w, a, 1);
    case 2:
      return vdotq_laneq_s32(acc, w, a, 2);
    default:
      return vdotq_laneq_s32(acc, w, a, 3);
  }
}

inline int32x4_t spmm_set_quad(int32x4_t v, const std::int8_t* p, std::size_t lane) noexcept {
  std::int32_t quad;
  std::memcpy(&quad, p, sizeof(quad));
  switch (lane) {
    case 0:
      return vsetq_lane_s32(quad, v, 0);
    case 1:
      return vsetq_lane_s32(quad, v, 1);
    case 2:
      return vsetq_lane_s32(quad, v, 2);
    default:
      return vsetq_lane_s32(quad, v, 3);
  }
}

// MR rows against outputs [o0, o0 + 4 NV) of every block, blocks alternating over SETS
// accumulator sets. The activation quads of four rows share one register (row r in lane
// r % 4, picked by sdot's lane index), so six rows need two registers rather than six and
// 24 accumulators fit beside the four weight vectors.
template <std::size_t R, std::size_t MR, std::size_t NV, std::size_t SETS>
inline void spmm_rows_sdot(const std::int8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                           std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                           std::size_t o0, std::int32_t* tile) noexcept {
  constexpr std::size_t packs = (MR + 3) / 4;
  int32x4_t acc[SETS][MR][NV];
  DYNASPARSE_UNROLL(8)
  for (std::size_t s = 0; s < SETS; ++s) {
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < NV; ++j) acc[s][r][j] = vdupq_n_s32(0);
    }
  }
  auto step = [&](std::size_t s, std::uint32_t b) {
    const std::int8_t* v = values + static_cast<std::size_t>(b) * R * 4 + o0 * 4;
    const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * 4;
    int32x4_t pk[packs];
    DYNASPARSE_UNROLL(8)
    for (std::size_t p = 0; p < packs; ++p) pk[p] = vdupq_n_s32(0);
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r)
      pk[r / 4] = spmm_set_quad(pk[r / 4], a + r * lda + k0, r % 4);
    int8x16_t w[NV];
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) w[j] = vld1q_s8(v + 16 * j);
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      const int8x16_t av = vreinterpretq_s8_s32(pk[r / 4]);
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < NV; ++j)
        acc[s][r][j] = spmm_sdot_lane(acc[s][r][j], w[j], av, r % 4);
    }
  };
  std::uint32_t b = b0;
  for (; b + SETS <= b1; b += SETS) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t s = 0; s < SETS; ++s) step(s, b + static_cast<std::uint32_t>(s));
  }
  for (; b < b1; ++b) step(0, b);
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) {
      int32x4_t t = acc[0][r][j];
      for (std::size_t s = 1; s < SETS; ++s) t = vaddq_s32(t, acc[s][r][j]);
      vst1q_s32(tile + r * R + o0 + 4 * j, t);
    }
  }
}

// One row (decoding): all R outputs at once, the four quarters of the block-row read in
// step as four sequential streams, which one core needs to keep the memory system busy. The
// streams feed at least 8 accumulators to cover sdot's latency: two named sets of four at
// R = 16 (streams 0 and 2 share one), one set of 8 or 16 at R = 32 and 64, which leaves room
// for four activations and the weights in 32 registers. The sets are named arrays indexed
// only by unrolled constants: the generic kernel's acc[s][r][j], indexed through loops GCC
// 12 did not unroll at -O2, lived on the stack with a copy of the block's weights.
template <std::size_t R>
inline void spmm_row_sdot(const std::int8_t* a, const std::uint32_t* col_idx, std::uint32_t b0,
                          std::uint32_t b1, const std::int8_t* values,
                          std::int32_t* tile) noexcept {
  constexpr std::size_t nv = R / 4;
  constexpr bool two_sets = nv < 8;
  int32x4_t a0[nv], a1[nv];
  DYNASPARSE_UNROLL(16)
  for (std::size_t j = 0; j < nv; ++j) a0[j] = a1[j] = vdupq_n_s32(0);
  auto step = [&](int32x4_t(&acc)[nv], std::size_t b) {
    const int8x16_t av = spmm_load_quad(a, static_cast<std::size_t>(col_idx[b]) * 4);
    const std::int8_t* v = values + b * R * 4;
    DYNASPARSE_UNROLL(16)
    for (std::size_t j = 0; j < nv; ++j) acc[j] = vdotq_s32(acc[j], vld1q_s8(v + 16 * j), av);
  };
  auto& s1 = two_sets ? a1 : a0;
  // Block indices in size_t: GCC turns them into pointer increments, which it cannot do
  // for a uint32_t sum that might wrap.
  const std::size_t q = (b1 - b0) / 4;
  for (std::size_t b = b0; b < b0 + q; ++b) {
    step(a0, b);
    step(s1, b + q);
    step(a0, b + 2 * q);
    step(s1, b + 3 * q);
  }
  for (std::size_t b = b0 + 4 * q; b < b1; ++b) step(a0, b);
  DYNASPARSE_UNROLL(16)
  for (std::size_t j = 0; j < nv; ++j)
    vst1q_s32(tile + 4 * j, two_sets ? vaddq_s32(a0[j], a1[j]) : a0[j]);
}

template <std::size_t R, std::size_t MR>
inline void spmm_s8s8_s32_tile_sdot(const std::int8_t* a, std::size_t lda,
                                    const std::uint32_t* col_idx, std::uint32_t b0,
                                    std::uint32_t b1, const std::int8_t* values,
                                    std::int32_t* tile) noexcept {
  static_assert(R == 16 || R == 32 || R == 64, "block rows must be 16, 32 or 64");
  static_assert(MR >= 1 && MR <= 6, "tile rows out of range");
  if constexpr (MR == 1) {
    spmm_row_sdot<R>(a, col_idx, b0, b1, values, tile);
  } else {
    constexpr std::size_t nv = MR == 2 ? (R / 4 < 8 ? R / 4 : 8) : 4;
    constexpr std::size_t sets = MR * nv >= 8 ? 1 : 2;
    for (std::size_t o0 = 0; o0 < R; o0 += 4 * nv) {
      spmm_rows_sdot<R, MR, nv, sets>(a, lda, col_idx, b0, b1, values, o0, tile);
    }
  }
}
#endif

}  // namespace simd::detail::neon
DYNASPARSE_NAMESPACE_END
