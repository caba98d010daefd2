// SPDX-License-Identifier: Apache-2.0
// AVX2 group-sparse int8 microkernel (no VNNI): MR rows of signed activations against one
// block-row of R outputs (R = 16, 32 or 64) in blocks of R x 4 inputs, exact in s32.
//
// Contract (the scalar reference's, detail/scalar/spmm_int8.hpp, for C = 4): for the stored
// blocks b0 .. b1 - 1 of a block-row, tile[r * R + i] = sum over b, c < 4 of
// a[r * lda + 4 * col_idx[b] + c] * values[b * R * 4 + i * 4 + c]. Activations are the signed
// bytes gemm_prepare_activation_row<I8Avx2> leaves (no shift: the dense AVX2 GEMM reads the
// same buffer), so there is no start value. All four bytes of a block's quad are read: past
// `in`, activations are the row's zero padding and weights the block's zero padding.
//
// A stored block is R outputs x 4 bytes, [i][c], so 32 bytes hold 8 outputs' quads, the
// layout vpmaddubsw + vpmaddwd reduce to one s32 lane per output. The activation quad at
// the block's column is broadcast to every lane; vpabsb gives |a| (u8, |-128| = 128) once
// per row and block, vpsignb moves a's sign onto the weights, vpmaddubsw forms u8 x s8 pair
// sums in s16 (at most 2 * 128 * 127 = 32512 < 32767: never saturates) and vpmaddwd by 1
// adds the two pairs of each output into its s32 lane. Requires weights in [-127, 127]
// (vpsignb wraps -128 where a < 0), the contract of every int8 kernel here; activations may
// be -128. The two-stage widening of the dense several-row kernel does not pay here: its
// activations are widened once per row and chunk, a sparse block's quad once per use.
//
// Accumulator: s32 lanes that wrap mod 2^32, so the result is exact whenever the true sum
// fits in s32 (in * 128 * 127 < 2^31: in <= 131072). Integer sums do not depend on order:
// bit-exact with the scalar reference.
//
// Registers (16 ymm): MR x NV accumulators of 8 outputs, NV weight vectors, the broadcast,
// |a|, the constant 1 and a temporary. One row has its own kernel (spmm_s8s8_s32_row) that
// takes all of R at once (R / 8 accumulators); two rows take up to four vectors, more rows
// two, and five or six rows run as four rows, then the rest, which re-read the block-row
// (from L1 when it fits: 64 x 512 int8 weights do not on Zen 3, whose L1 holds 32 KiB).
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/config.hpp"
#include "dynasparse/simd/detail/x86_avx2_gemm_int8.hpp"

#if DYNASPARSE_HAS_AVX2
#include <immintrin.h>
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::avx2 {

template <std::size_t R, std::size_t MR>
void spmm_s8s8_s32_tile(const std::int8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                        std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                        std::int32_t* tile) noexcept;
/// One row against block-rows [br0, br1): out[(br - br0) * R + i] for output i of block-row
/// br.
template <std::size_t R>
void spmm_s8s8_s32_block_rows(const std::int8_t* a, const std::uint32_t* row_ptr,
                              const std::uint32_t* col_idx, std::size_t br0, std::size_t br1,
                              const std::int8_t* values, std::int32_t* out) noexcept;

#if DYNASPARSE_HAS_AVX2
// MR rows against outputs [o0, o0 + 8 NV) of every block.
template <std::size_t R, std::size_t MR, std::size_t NV>
inline void spmm_rows_maddubs(const std::int8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                              std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                              std::size_t o0, std::int32_t* tile) noexcept {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][NV];
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) acc[r][j] = _mm256_setzero_si256();
  }
  for (std::uint32_t b = b0; b < b1; ++b) {
    const std::int8_t* v = values + static_cast<std::size_t>(b) * R * 4 + o0 * 4;
    const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * 4;
    __m256i w[NV];
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j)
      w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 32 * j));
    DYNASPARSE_UNROLL(12)
    for (std::size_t r = 0; r < MR; ++r) maddubs_quad<NV>(a + r * lda + k0, w, ones, acc[r]);
  }
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + r * R + o0 + 8 * j), acc[r][j]);
    }
  }
}

// One row (decoding): all R outputs at once, in R / 8 accumulators. The loops over vectors
// are unrolled explicitly: GCC 12 at -O2 left the generic kernel's rolled, which kept the
// sums and a copy of every block's weights on the stack (one row at R = 32 and 64 took three
// to four times as long). A block-row of spmm_row_stream_blocks blocks or more is read as
// four streams, one per quarter of its blocks, as the VNNI row kernels do: on Zen 3 (where
// this kernel runs: no VNNI), a 4096 x 4096 layer with every block stored took 1.29 ms
// instead of 1.67 (medians of three; dense_i8 0.79-0.93 ms in the same runs). On Zen 4 the
// same split had measured 10-20% slower from L3, but there the VNNI kernels run instead.
inline constexpr std::uint32_t spmm_row_stream_blocks = 32;

template <std::size_t R>
inline void spmm_s8s8_s32_row(const std::int8_t* a, const std::uint32_t* col_idx, std::uint32_t b0,
                              std::uint32_t b1, const std::int8_t* values,
                              std::int32_t* tile) noexcept {
  constexpr std::size_t nv = R / 8, bytes = R * 4;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[nv];
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < nv; ++j) acc[j] = _mm256_setzero_si256();
  // Pointers, not 32-bit block numbers, whose address arithmetic takes three instructions
  // a block.
  auto block = [&](const std::uint32_t* ci, const std::int8_t* v) {
    __m256i w[nv];
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < nv; ++j)
      w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 32 * j));
    maddubs_quad<nv>(a + static_cast<std::size_t>(*ci) * 4, w, ones, acc);
  };
  const std::uint32_t* ci = col_idx + b0;
  const std::int8_t* v = values + static_cast<std::size_t>(b0) * bytes;
  std::size_t n = b1 - b0;
  if (n >= spmm_row_stream_blocks) {
    const std::size_t q = n / 4, qb = q * bytes;
    for (const std::uint32_t* const end = ci + q; ci != end; ++ci, v += bytes) {
      block(ci, v);
      block(ci + q, v + qb);
      block(ci + 2 * q, v + 2 * qb);
      block(ci + 3 * q, v + 3 * qb);
    }
    ci += 3 * q;
    v += 3 * qb;
    n -= 4 * q;
  }
  for (const std::uint32_t* const end = ci + n; ci != end; ++ci, v += bytes) block(ci, v);
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < nv; ++j)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + 8 * j), acc[j]);
}

// A decoding step's block-rows, a chunk per call, so the row kernel is inlined into the
// loop instead of being dispatched (block size, then rows) for each block-row.
template <std::size_t R>
inline void spmm_s8s8_s32_block_rows(const std::int8_t* a, const std::uint32_t* row_ptr,
                                     const std::uint32_t* col_idx, std::size_t br0, std::size_t br1,
                                     const std::int8_t* values, std::int32_t* out) noexcept {
  for (std::size_t br = br0; br < br1; ++br, out += R)
    spmm_s8s8_s32_row<R>(a, col_idx, row_ptr[br], row_ptr[br + 1], values, out);
}

template <std::size_t R, std::size_t MR>
inline void spmm_s8s8_s32_tile(const std::int8_t* a, std::size_t lda, const std::uint32_t* col_idx,
                               std::uint32_t b0, std::uint32_t b1, const std::int8_t* values,
                               std::int32_t* tile) noexcept {
  static_assert(R == 16 || R == 32 || R == 64, "block rows must be 16, 32 or 64");
  static_assert(MR >= 1, "at least one row");
  if constexpr (MR == 1) {
    spmm_s8s8_s32_row<R>(a, col_idx, b0, b1, values, tile);
  } else if constexpr (MR > 4) {
    constexpr std::size_t h = 4;
    spmm_s8s8_s32_tile<R, h>(a, lda, col_idx, b0, b1, values, tile);
    spmm_s8s8_s32_tile<R, MR - h>(a + h * lda, lda, col_idx, b0, b1, values, tile + h * R);
  } else {
    constexpr std::size_t nv = MR == 2 ? (R / 8 < 4 ? R / 8 : 4) : 2;
    for (std::size_t o0 = 0; o0 < R; o0 += 8 * nv) {
      spmm_rows_maddubs<R, MR, nv>(a, lda, col_idx, b0, b1, values, o0, tile);
    }
  }
}
#endif

}  // namespace simd::detail::avx2
DYNASPARSE_NAMESPACE_END
