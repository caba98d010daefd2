// SPDX-License-Identifier: Apache-2.0
// Scalar reference of the group-sparse int8 product (simd/spmm_int8.hpp).
//
// Contract: for block-rows [br0, br1) of a block-CSR int8 matrix with blocks of R outputs x
// C inputs stored [i][c] (C inputs contiguous per output), and rows [0, m) of signed int8
// activations a (stride lda, at least in elements), writes
// tile[r * R + i] = sum over stored blocks b, c < C, k0 + c < in of a[r][k0 + c] * v[b][i][c]
// exactly in int32, one block-row at a time, and hands each block-row to `epilogue`.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

inline void spmm_s8s8_s32_block_row(const std::int8_t* a, std::size_t lda, std::size_t m, std::size_t in,
                                    const std::uint32_t* row_ptr, const std::uint32_t* col_idx,
                                    const std::int8_t* values, std::size_t rb, std::size_t c_block,
                                    std::size_t br, std::int32_t* tile) noexcept {
  for (std::size_t r = 0; r < m; ++r) {
    std::int32_t* t = tile + r * rb;
    for (std::size_t i = 0; i < rb; ++i) t[i] = 0;
    for (std::uint32_t b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
      const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * c_block;
      const std::size_t cn = in - k0 < c_block ? in - k0 : c_block;
      const std::int8_t* v = values + static_cast<std::size_t>(b) * rb * c_block;
      for (std::size_t i = 0; i < rb; ++i) {
        std::int32_t s = 0;
        for (std::size_t c = 0; c < cn; ++c) s += static_cast<std::int32_t>(a[r * lda + k0 + c]) * v[i * c_block + c];
        t[i] += s;
      }
    }
  }
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
