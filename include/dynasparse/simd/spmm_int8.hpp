// SPDX-License-Identifier: Apache-2.0
// Group-sparse int8 product: exact int32 sums of activations times block-CSR int8 weights,
// handed block-row by block-row to the caller's epilogue.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/arm_neon_spmm_int8.hpp"
#include "dynasparse/simd/detail/scalar/spmm_int8.hpp"
#include "dynasparse/simd/detail/x86_avx2_spmm_int8.hpp"
#include "dynasparse/simd/detail/x86_vnni256_spmm_int8.hpp"
#include "dynasparse/simd/detail/x86_vnni_spmm_int8.hpp"
#include "dynasparse/simd/gemm_int8.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// True when I8Arch's sparse kernel reads shifted (a + 128) activations, prepared with
/// gemm_prepare_activation_row, and needs the per-output sums of stored weights: the same
/// layout as the dense GEMM's (activations_shifted_v), so one prepared buffer serves both.
template <class I8Arch>
inline constexpr bool spmm_int8_shifted_v = activations_shifted_v<I8Arch>;

namespace detail {
// Calls kernel(R, MR) with std::integral_constant arguments for a runtime r_block in
// {16, 32, 64} and rows in [1, MR_MAX], so that each microkernel is a fully unrolled
// instance.
template <std::size_t R, std::size_t MR, class Kernel>
inline void spmm_dispatch_rows(std::size_t rows, Kernel& kernel) {
  if constexpr (MR == 1) {
    kernel(std::integral_constant<std::size_t, R>{}, std::integral_constant<std::size_t, 1>{});
  } else if (rows == MR) {
    kernel(std::integral_constant<std::size_t, R>{}, std::integral_constant<std::size_t, MR>{});
  } else {
    spmm_dispatch_rows<R, MR - 1>(rows, kernel);
  }
}

template <std::size_t MR_MAX, class Kernel>
inline void spmm_dispatch(std::size_t r_block, std::size_t rows, Kernel&& kernel) {
  if (r_block == 16) {
    spmm_dispatch_rows<16, MR_MAX>(rows, kernel);
  } else if (r_block == 32) {
    spmm_dispatch_rows<32, MR_MAX>(rows, kernel);
  } else {
    spmm_dispatch_rows<64, MR_MAX>(rows, kernel);
  }
}
}  // namespace detail

/// Rows of x per tile handed to the epilogue.
inline constexpr std::size_t spmm_int8_tile_rows = 6;
/// Outputs of one row the AVX2 and AVX512-VNNI kernels compute per call, and the most an
/// epilogue receives at once (the tile's size: spmm_int8_tile_rows rows of 64).
inline constexpr std::size_t spmm_int8_row_chunk = spmm_int8_tile_rows * 64;

/// For block-rows [br0, br1) of W (blocks of r_block in {16, 32, 64} outputs x 4 inputs,
/// values [block][i][c]) and rows [0, m) of prepared activations a (stride lda bytes,
/// gemm_prepare_activation_row<I8Arch>, padded to a multiple of 4 bytes), computes the exact
/// int32 sums sum_k a[r][k] W[n][k] and calls `epilogue(row0, rows, n0, tile, ld)` with
/// tile[r * ld + i] for output n0 + i (i < ld; outputs past `out` are garbage-free zeros of
/// padding and must be ignored). ld is r_block, or for one row (m == 1) on I8Avx2 and
/// I8Vnni512 a whole number of block-rows, up to spmm_int8_row_chunk outputs, at once.
/// `shift_init[n]` = -128 * (sum of output n's stored weights), padded to whole block-rows:
/// the shifted path starts its accumulators there to undo the activation shift (unshifted
/// paths ignore it). Weights must be in [-127, 127] and zero past `in` in the last
/// block-column. Never allocates.
///
/// Every int8 arch has a register-tiled microkernel (simd/detail/<isa>_spmm_int8.hpp) that
/// reads every stored block's four weight bytes and four activation bytes whole; I8Scalar
/// runs the reference.
template <class I8Arch = int8_arch, class Epilogue>
inline void spmm_s8s8_s32(const std::int8_t* a, std::size_t lda, std::size_t m, std::size_t in,
                          const std::uint32_t* row_ptr, const std::uint32_t* col_idx,
                          const std::int8_t* values, std::size_t r_block, std::size_t br0,
                          std::size_t br1, const std::int32_t* shift_init, Epilogue&& epilogue) {
  constexpr std::size_t mr = spmm_int8_tile_rows;
  alignas(64) std::int32_t tile[mr * 64];
  if constexpr (std::is_same_v<I8Arch, I8Avx2> || std::is_same_v<I8Arch, I8Vnni512>) {
    if (m == 1) {
      // A decoding step: as many block-rows per kernel call as the tile holds.
      const auto rows_of = [&](auto r) {
        constexpr std::size_t R = decltype(r)::value, per_chunk = spmm_int8_row_chunk / R;
        for (std::size_t c0 = br0; c0 < br1; c0 += per_chunk) {
          const std::size_t c1 = std::min(br1, c0 + per_chunk);
          if constexpr (std::is_same_v<I8Arch, I8Avx2>) {
            detail::avx2::spmm_s8s8_s32_block_rows<R>(a, row_ptr, col_idx, c0, c1, values, tile);
          } else {
            detail::vnni::spmm_u8s8_s32_block_rows<R>(reinterpret_cast<const std::uint8_t*>(a),
                                                      row_ptr, col_idx, c0, c1, values, shift_init,
                                                      tile);
          }
          // One epilogue for the chunk's block-rows, whose outputs are contiguous: called
          // per block-row of 16, its dequantization was a loop of one vector (AVX-512) with
          // its setup each time; at once the demo model's linear layers took 5% less time.
          epilogue(std::size_t{0}, std::size_t{1}, c0 * R, static_cast<const std::int32_t*>(tile),
                   (c1 - c0) * R);
        }
      };
      if (r_block == 16) {
        rows_of(std::integral_constant<std::size_t, 16>{});
      } else if (r_block == 32) {
        rows_of(std::integral_constant<std::size_t, 32>{});
      } else {
        rows_of(std::integral_constant<std::size_t, 64>{});
      }
      return;
    }
  }
  for (std::size_t br = br0; br < br1; ++br) {
    const std::uint32_t b0 = row_ptr[br], b1 = row_ptr[br + 1];
    const std::int32_t* init = shift_init + br * r_block;
    for (std::size_t r0 = 0; r0 < m; r0 += mr) {
      const std::size_t rows = m - r0 < mr ? m - r0 : mr;
      const std::int8_t* ar = a + r0 * lda;
      const auto* ur = reinterpret_cast<const std::uint8_t*>(ar);
      if constexpr (std::is_same_v<I8Arch, I8Vnni512>) {
        detail::spmm_dispatch<mr>(r_block, rows, [&](auto r, auto rows_c) {
          detail::vnni::spmm_u8s8_s32_tile<decltype(r)::value, decltype(rows_c)::value>(
              ur, lda, col_idx, b0, b1, values, init, tile);
        });
      } else if constexpr (std::is_same_v<I8Arch, I8Vnni256>) {
        detail::spmm_dispatch<mr>(r_block, rows, [&](auto r, auto rows_c) {
          detail::vnni::spmm_u8s8_s32_tile_256<decltype(r)::value, decltype(rows_c)::value>(
              ur, lda, col_idx, b0, b1, values, init, tile);
        });
      } else if constexpr (std::is_same_v<I8Arch, I8Avx2>) {
        detail::spmm_dispatch<mr>(r_block, rows, [&](auto r, auto rows_c) {
          detail::avx2::spmm_s8s8_s32_tile<decltype(r)::value, decltype(rows_c)::value>(
              ar, lda, col_idx, b0, b1, values, tile);
        });
      } else if constexpr (std::is_same_v<I8Arch, I8NeonDot>) {
        detail::spmm_dispatch<mr>(r_block, rows, [&](auto r, auto rows_c) {
          detail::neon::spmm_s8s8_s32_tile_sdot<decltype(r)::value, decltype(rows_c)::value>(
              ar, lda, col_idx, b0, b1, values, tile);
        });
      } else if constexpr (std::is_same_v<I8Arch, I8Neon>) {
        detail::spmm_dispatch<mr>(r_block, rows, [&](auto r, auto rows_c) {
          detail::neon::spmm_s8s8_s32_tile_smull<decltype(r)::value, decltype(rows_c)::value>(
              ar, lda, col_idx, b0, b1, values, tile);
        });
      } else {
        static_assert(std::is_same_v<I8Arch, I8Scalar>,
                      "spmm_s8s8_s32: no kernel for this int8 arch");
        static_assert(!spmm_int8_shifted_v<I8Arch>,
                      "the scalar reference reads signed activations");
        detail::scalar::spmm_s8s8_s32_block_row(ar, lda, rows, in, row_ptr, col_idx, values,
                                                r_block, 4, br, tile);
      }
      epilogue(r0, rows, br * r_block, static_cast<const std::int32_t*>(tile), r_block);
    }
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
