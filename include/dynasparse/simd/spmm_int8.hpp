// SPDX-License-Identifier: Apache-2.0
// Group-sparse int8 product: exact int32 sums of activations times block-CSR int8 weights,
// handed block-row by block-row to the caller's epilogue.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/spmm_int8.hpp"
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
// The scalar reference (detail/scalar/spmm_int8.hpp) on shifted activations: the bytes are
// read as unsigned (a + 128) and each output starts at init[i] = -128 * (sum of its stored
// weights), so the result is the same exact int32 sum. For shifted paths without a sparse
// microkernel of their own.
inline void spmm_shifted_block_row(const std::int8_t* a, std::size_t lda, std::size_t m, std::size_t in,
                                   const std::uint32_t* row_ptr, const std::uint32_t* col_idx,
                                   const std::int8_t* values, std::size_t rb, std::size_t c_block, std::size_t br,
                                   const std::int32_t* init, std::int32_t* tile) noexcept {
  for (std::size_t r = 0; r < m; ++r) {
    const auto* ar = reinterpret_cast<const std::uint8_t*>(a + r * lda);
    std::int32_t* t = tile + r * rb;
    for (std::size_t i = 0; i < rb; ++i) t[i] = init[i];
    for (std::uint32_t b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
      const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * c_block;
      const std::size_t cn = in - k0 < c_block ? in - k0 : c_block;
      const std::int8_t* v = values + static_cast<std::size_t>(b) * rb * c_block;
      for (std::size_t i = 0; i < rb; ++i) {
        std::int32_t s = 0;
        for (std::size_t c = 0; c < cn; ++c) s += static_cast<std::int32_t>(ar[k0 + c]) * v[i * c_block + c];
        t[i] += s;
      }
    }
  }
}
}  // namespace detail

/// Rows of x per tile handed to the epilogue.
inline constexpr std::size_t spmm_int8_tile_rows = 6;

/// For block-rows [br0, br1) of W (blocks of r_block in {16, 32, 64} outputs x 4 inputs,
/// values [block][i][c]) and rows [0, m) of prepared activations a (stride lda bytes,
/// gemm_prepare_activation_row<I8Arch>), computes the exact int32 sums
/// sum_k a[r][k] W[n][k] and calls `epilogue(row0, rows, n0, tile, ld)` with
/// tile[r * ld + i] for output n0 + i (i < r_block; outputs past `out` are garbage-free
/// zeros of padding and must be ignored). `shift_init[n]` = -128 * (sum of output n's
/// stored weights), padded to whole block-rows: the shifted path starts its accumulators
/// there to undo the activation shift (unshifted paths ignore it). Never allocates.
template <class I8Arch = int8_arch, class Epilogue>
inline void spmm_s8s8_s32(const std::int8_t* a, std::size_t lda, std::size_t m, std::size_t in,
                          const std::uint32_t* row_ptr, const std::uint32_t* col_idx, const std::int8_t* values,
                          std::size_t r_block, std::size_t br0, std::size_t br1, const std::int32_t* shift_init,
                          Epilogue&& epilogue) {
  constexpr std::size_t mr = spmm_int8_tile_rows;
  alignas(64) std::int32_t tile[mr * 64];
  for (std::size_t br = br0; br < br1; ++br) {
    const std::uint32_t b0 = row_ptr[br], b1 = row_ptr[br + 1];
    for (std::size_t r0 = 0; r0 < m; r0 += mr) {
      const std::size_t rows = m - r0 < mr ? m - r0 : mr;
      if constexpr (std::is_same_v<I8Arch, I8Vnni512>) {
        const auto* ar = reinterpret_cast<const std::uint8_t*>(a + r0 * lda);
        const std::int32_t* init = shift_init + br * r_block;
        auto run = [&](auto r_tag) {
          constexpr std::size_t R = decltype(r_tag)::value;
          switch (rows) {
            case 6: detail::vnni::spmm_u8s8_s32_tile<R, 6>(ar, lda, col_idx, b0, b1, values, init, tile); break;
            case 5: detail::vnni::spmm_u8s8_s32_tile<R, 5>(ar, lda, col_idx, b0, b1, values, init, tile); break;
            case 4: detail::vnni::spmm_u8s8_s32_tile<R, 4>(ar, lda, col_idx, b0, b1, values, init, tile); break;
            case 3: detail::vnni::spmm_u8s8_s32_tile<R, 3>(ar, lda, col_idx, b0, b1, values, init, tile); break;
            case 2: detail::vnni::spmm_u8s8_s32_tile<R, 2>(ar, lda, col_idx, b0, b1, values, init, tile); break;
            default: detail::vnni::spmm_u8s8_s32_tile<R, 1>(ar, lda, col_idx, b0, b1, values, init, tile); break;
          }
        };
        if (r_block == 16) {
          run(std::integral_constant<std::size_t, 16>{});
        } else if (r_block == 32) {
          run(std::integral_constant<std::size_t, 32>{});
        } else {
          run(std::integral_constant<std::size_t, 64>{});
        }
      } else if constexpr (spmm_int8_shifted_v<I8Arch>) {
        detail::spmm_shifted_block_row(a + r0 * lda, lda, rows, in, row_ptr, col_idx, values, r_block, 4, br,
                                       shift_init + br * r_block, tile);
      } else {
        detail::scalar::spmm_s8s8_s32_block_row(a + r0 * lda, lda, rows, in, row_ptr, col_idx, values, r_block, 4,
                                                br, tile);
      }
      epilogue(r0, rows, br * r_block, static_cast<const std::int32_t*>(tile), r_block);
    }
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
