// SPDX-License-Identifier: Apache-2.0
// Scalar reference of the group-sparse float product (simd/spmm_f32.hpp).
//
// Contract: for block-rows br in [br0, br1) of a block-CSR matrix with blocks of R outputs x
// C inputs (R <= 64), y[r][R br + i] = bias[R br + i] + sum over stored blocks b of the block-row,
// sum_{c < C, k0 + c < in} x[r][k0 + c] * values[b][c][i], with k0 = col_idx[b] * C; only
// outputs < out are written. Values are stored per block as [c][i] (R outputs contiguous per
// input); with value_blocks, block b's values are values[value_blocks[b]]. Strides in
// elements. Sums run in block order, then c, as the vector kernel's do.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

inline void spmm_f32(const float* x, std::size_t ldx, std::size_t m, std::size_t in,
                     const std::uint32_t* row_ptr, const std::uint32_t* col_idx,
                     const float* values, std::size_t rb, std::size_t c_block, std::size_t br0,
                     std::size_t br1, const float* bias, float* y, std::size_t ldy, std::size_t out,
                     const std::uint32_t* value_blocks = nullptr) noexcept {
  for (std::size_t br = br0; br < br1; ++br) {
    const std::size_t n0 = br * rb, nn = out - n0 < rb ? out - n0 : rb;
    for (std::size_t r = 0; r < m; ++r) {
      float acc[64] = {};  // rb <= 64
      for (std::uint32_t b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
        const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * c_block;
        const std::size_t cn = in - k0 < c_block ? in - k0 : c_block;
        const float* v =
            values + static_cast<std::size_t>(value_blocks ? value_blocks[b] : b) * rb * c_block;
        for (std::size_t c = 0; c < cn; ++c) {
          const float xv = x[r * ldx + k0 + c];
          for (std::size_t i = 0; i < rb; ++i) acc[i] += xv * v[c * rb + i];
        }
      }
      for (std::size_t i = 0; i < nn; ++i) y[r * ldy + n0 + i] = acc[i] + (bias ? bias[n0 + i] : 0.0f);
    }
  }
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
