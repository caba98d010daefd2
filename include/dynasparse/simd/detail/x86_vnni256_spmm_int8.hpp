// SPDX-License-Identifier: Apache-2.0
// 256-bit VNNI group-sparse int8 microkernel: MR rows of shifted activations against one
// block-row of R outputs (R = 16, 32 or 64) in blocks of R x 4 inputs, with vpdpbusd on ymm
// registers (AVX-VNNI, or AVX512-VNNI with AVX512VL: dpbusd256 in x86_vnni_dot_int8.hpp
// picks the encoding, EVEX when both exist).
//
// Contract: for the stored blocks b0 .. b1 - 1 of a block-row, tile[r * R + i] = init[i] +
// sum over b, c < 4 of a[r * lda + 4 * col_idx[b] + c] * values[b * R * 4 + i * 4 + c], with
// a read as unsigned bytes. Activations are stored shifted (a + 128, in [0, 255]) exactly as
// gemm_prepare_activation_row<I8Vnni256> leaves them for the dense 256-bit GEMM
// (x86_vnni256_gemm_int8.hpp); init[i] = -128 * (sum of output i's stored weights) undoes
// the shift, so the tile holds the signed sum of the scalar reference
// (detail/scalar/spmm_int8.hpp). All four bytes of a block's quad are read: past `in`,
// activations are the shifted zero 128 and weights the block's zero padding.
//
// Same scheme as the 512-bit kernel (x86_vnni_spmm_int8.hpp): vpdpbusd adds, to each s32
// lane, the four products of the broadcast activation quad (u8) with one output's four
// weights (s8), without intermediate saturation; 32 bytes of a block are 8 outputs' quads.
//
// Accumulator: s32 lanes that wrap mod 2^32 (vpdpbusd, not the saturating vpdpbusds), so
// the result is exact whenever the true sum fits in s32 (in * 128 * 127 < 2^31); partial
// sums from the shifted start may pass 2^31 and wrap back. Bit-exact with the reference.
//
// Registers (16 ymm): MR x NV accumulators of 8 outputs, NV weight vectors and the
// broadcast. Three to six rows take 16 outputs per pass over the blocks; two rows take more,
// and with fewer than 8 accumulators consecutive blocks alternate between sets of them so
// that vpdpbusd's latency (about 5 cycles, two per cycle) is covered. One row has its own
// kernel (spmm_u8s8_s32_row_256): all of R at once, in 8 accumulators.
//
// Tested with the EVEX encoding (AVX512-VNNI machines list I8Vnni256 among their int8
// paths); the VEX (AVX-VNNI) encoding is compiled (-march=alderlake) but has not run here.
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

template <std::size_t R, std::size_t MR>
void spmm_u8s8_s32_tile_256(const std::uint8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                            std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                            const std::int32_t* init, std::int32_t* tile) noexcept;

#if DYNASPARSE_HAS_AVX512VNNI || DYNASPARSE_HAS_AVXVNNI
// MR rows against outputs [o0, o0 + 8 NV) of every block, blocks alternating over SETS
// accumulator sets.
template <std::size_t R, std::size_t MR, std::size_t NV, std::size_t SETS>
inline void spmm_rows_256(const std::uint8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                          std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                          const std::int32_t* init, std::size_t o0, std::int32_t* tile) noexcept {
  __m256i acc[SETS][MR][NV];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < NV; ++j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(init + o0 + 8 * j));
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      acc[0][r][j] = v;
      for (std::size_t s = 1; s < SETS; ++s) acc[s][r][j] = _mm256_setzero_si256();
    }
  }
  auto step = [&](std::size_t s, std::uint32_t b) {
    const std::int8_t* v = values + static_cast<std::size_t>(b) * R * 4 + o0 * 4;
    const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * 4;
    __m256i w[NV];
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j)
      w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 32 * j));
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) {
      std::int32_t quad;
      std::memcpy(&quad, a + r * lda + k0, sizeof(quad));
      const __m256i av = _mm256_set1_epi32(quad);
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < NV; ++j) acc[s][r][j] = dpbusd256(acc[s][r][j], av, w[j]);
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
      __m256i t = acc[0][r][j];
      for (std::size_t s = 1; s < SETS; ++s) t = _mm256_add_epi32(t, acc[s][r][j]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + r * R + o0 + 8 * j), t);
    }
  }
}

// One row (decoding): the four quarters of the block-row are read in step, as four
// sequential streams, which one core needs to keep the memory system busy (from DRAM, 8192 x
// 8192, about 15% faster than consecutive blocks at R = 32 and 64). The streams feed 8
// accumulators, enough to cover vpdpbusd's latency and few enough for AVX-VNNI's 16
// registers: four sets of two at R = 16, two of four at R = 32 (streams 0 and 2 share one),
// one of eight at R = 64. The sets are named arrays indexed only by unrolled constants: the
// generic kernel's acc[s][r][j], indexed through loops GCC 12 did not unroll at -O2, lived
// on the stack.
template <std::size_t R>
inline void spmm_u8s8_s32_row_256(const std::uint8_t* a, const std::uint32_t* col_idx,
                                  std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                                  const std::int32_t* init, std::int32_t* tile) noexcept {
  constexpr std::size_t nv = R / 8;
  constexpr std::size_t sets = nv >= 8 ? 1 : nv == 4 ? 2 : 4;
  __m256i a0[nv], a1[nv], a2[nv], a3[nv];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < nv; ++j) {
    a0[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(init + 8 * j));
    a1[j] = a2[j] = a3[j] = _mm256_setzero_si256();
  }
  auto step = [&](__m256i(&acc)[nv], std::size_t b) {
    const std::int8_t* v = values + b * R * 4;
    std::int32_t quad;
    std::memcpy(&quad, a + static_cast<std::size_t>(col_idx[b]) * 4, sizeof(quad));
    const __m256i av = _mm256_set1_epi32(quad);
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < nv; ++j) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 32 * j));
      acc[j] = dpbusd256(acc[j], av, w);
    }
  };
  auto& s1 = sets >= 2 ? a1 : a0;
  auto& s2 = sets == 4 ? a2 : a0;
  auto& s3 = sets == 4 ? a3 : s1;
  // Block indices in size_t: GCC turns them into pointer increments, which it cannot do
  // for a uint32_t sum that might wrap.
  const std::size_t q = (b1 - b0) / 4, b4 = b0 + 4 * q;
  for (std::size_t b = b0; b < b0 + q; ++b) {
    step(a0, b);
    step(s1, b + q);
    step(s2, b + 2 * q);
    step(s3, b + 3 * q);
  }
  for (std::size_t b = b4; b < b1; ++b) step(a0, b);
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < nv; ++j) {
    __m256i t = a0[j];
    if constexpr (sets >= 2) t = _mm256_add_epi32(t, a1[j]);
    if constexpr (sets == 4) t = _mm256_add_epi32(t, _mm256_add_epi32(a2[j], a3[j]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + 8 * j), t);
  }
}

template <std::size_t R, std::size_t MR>
inline void spmm_u8s8_s32_tile_256(const std::uint8_t* a, std::size_t lda,
                                   const std::uint32_t* col_idx, std::uint32_t b0, std::uint32_t b1,
                                   const std::int8_t* values, const std::int32_t* init,
                                   std::int32_t* tile) noexcept {
  static_assert(R == 16 || R == 32 || R == 64, "block rows must be 16, 32 or 64");
  static_assert(MR >= 1 && MR <= 6, "tile rows out of range");
  if constexpr (MR == 1) {
    spmm_u8s8_s32_row_256<R>(a, col_idx, b0, b1, values, init, tile);
  } else {
    constexpr std::size_t nv = MR == 2 ? (R / 8 < 4 ? R / 8 : 4) : 2;
    constexpr std::size_t sets = MR * nv >= 8 ? 1 : (8 / (MR * nv) < 4 ? 8 / (MR * nv) : 4);
    for (std::size_t o0 = 0; o0 < R; o0 += 8 * nv) {
      spmm_rows_256<R, MR, nv, sets>(a, lda, col_idx, b0, b1, values, init, o0, tile);
    }
  }
}
#endif

}  // namespace simd::detail::vnni
DYNASPARSE_NAMESPACE_END
