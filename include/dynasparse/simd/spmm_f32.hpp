// SPDX-License-Identifier: Apache-2.0
// Group-sparse float product: y = x W^T + b for W in block-CSR with blocks of 16 outputs x C
// inputs; time is proportional to the number of stored blocks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/error.hpp"
#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/spmm_f32.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// Block heights (outputs per block) the float group-sparse kernel supports.
inline constexpr std::size_t spmm_block_heights[] = {16, 32, 64};
inline constexpr bool spmm_supports_block_rows(std::size_t r) noexcept { return r == 16 || r == 32 || r == 64; }

namespace detail {

// Accumulator registers a tile may use: three quarters of the vector registers, the rest
// for the weights and the broadcast input.
template <class Arch>
constexpr std::size_t spmm_register_budget() noexcept {
  return vector_registers<Arch>() * 3 / 4;
}

// One register tile: MR rows of x against outputs [o0, o0 + NV w) of one block-row of R
// outputs, all in registers.
template <class Arch, std::size_t R, std::size_t MR, std::size_t NV>
inline void spmm_tile_f32(const float* x, std::size_t ldx, std::size_t in,
                          const std::uint32_t* col_idx, std::uint32_t b_begin, std::uint32_t b_end,
                          const float* values, const std::uint32_t* value_blocks,
                          std::size_t c_block, std::size_t o0, float* out /* MR x R */) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::size_t w = B::size;
  B acc[MR][NV];
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) acc[r][j] = B(0.0f);
  }
  for (std::uint32_t b = b_begin; b < b_end; ++b) {
    const std::size_t k0 = static_cast<std::size_t>(col_idx[b]) * c_block;
    const std::size_t cn = in - k0 < c_block ? in - k0 : c_block;
    const float* v =
        values + static_cast<std::size_t>(value_blocks ? value_blocks[b] : b) * R * c_block + o0;
    auto column = [&](std::size_t c) {
      B wv[NV];
      DYNASPARSE_UNROLL(8)
      for (std::size_t j = 0; j < NV; ++j) {
        wv[j] = B::load_unaligned(v + c * R + j * w);
#if DYNASPARSE_HAS_SSE2
        // Unrolled over a block's four columns, GCC otherwise folds each weight load into
        // every row's FMA: six loads of a vector instead of one, and register copies. Only
        // x86 has FMAs with a memory operand; on AArch64, pinning all of a 64-output
        // block's weights next to its sums would ask for 33 of 32 registers.
        keep_in_register(wv[j]);
#endif
      }
      DYNASPARSE_UNROLL(12)
      for (std::size_t r = 0; r < MR; ++r) {
        const B xb(x[r * ldx + k0 + c]);
        DYNASPARSE_UNROLL(8)
        for (std::size_t j = 0; j < NV; ++j) acc[r][j] = xsimd::fma(xb, wv[j], acc[r][j]);
      }
    };
    if (cn == 4) {
      // The recommended blocks are 4 inputs wide: unrolled, a block costs no loop control.
      column(0);
      column(1);
      column(2);
      column(3);
    } else {
      for (std::size_t c = 0; c < cn; ++c) column(c);
    }
  }
  DYNASPARSE_UNROLL(12)
  for (std::size_t r = 0; r < MR; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < NV; ++j) acc[r][j].store_unaligned(out + r * R + o0 + j * w);
  }
}

// Accumulator sets of the one-row kernel for blocks of R outputs: four where they fit in
// the register budget, fewer where they would not. On AVX2 a 64-output block is eight
// vectors; four sets of them (32 registers of 16) lived on the stack, so every FMA came
// with a load and a store. One set of eight vectors is already eight independent chains.
template <class Arch, std::size_t R>
constexpr std::size_t spmm_row_sets() noexcept {
  constexpr std::size_t nv = R / xsimd::batch<float, Arch>::size;
  constexpr std::size_t budget = spmm_register_budget<Arch>();
  return 4 * nv <= budget ? 4 : (2 * nv <= budget ? 2 : 1);
}

// A single row (decoding): four streams of weights (a0..a3) feed up to four independent
// accumulator sets, which break the FMA dependency chain one row's sum would otherwise be.
template <class Arch, std::size_t R>
inline void spmm_row_f32(const float* x, std::size_t in, const std::uint32_t* col_idx,
                         std::uint32_t b_begin, std::uint32_t b_end, const float* values,
                         const std::uint32_t* value_blocks, std::size_t c_block,
                         float* out) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::size_t w = B::size, nv = R / w, sets = spmm_row_sets<Arch, R>();
  B sums[sets][nv];
  DYNASPARSE_UNROLL(4)
  for (std::size_t k = 0; k < sets; ++k) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < nv; ++j) sums[k][j] = B(0.0f);
  }
  B(&a0)[nv] = sums[0];
  B(&a1)[nv] = sums[1 % sets];
  B(&a2)[nv] = sums[2 % sets];
  B(&a3)[nv] = sums[3 % sets];
  auto step = [&](B (&acc)[nv], const float* v, float xs) {
    const B xb(xs);
    DYNASPARSE_UNROLL(8)
    for (std::size_t j = 0; j < nv; ++j) acc[j] = xsimd::fma(xb, B::load_unaligned(v + j * w), acc[j]);
  };
  // A block's first input and weights; its last block-column may hold fewer than c_block.
  auto inputs_of = [&](std::uint32_t bi) { return static_cast<std::size_t>(col_idx[bi]) * c_block; };
  auto weights_of = [&](std::uint32_t bi) {
    return values + static_cast<std::size_t>(value_blocks ? value_blocks[bi] : bi) * R * c_block;
  };
  auto width = [&](std::size_t k0) { return in - k0 < c_block ? in - k0 : c_block; };
  // Columns [c0, width) of one block into one set of sums.
  auto columns = [&](B (&acc)[nv], const float* v, std::size_t k0, std::size_t c0) {
    for (std::size_t c = c0; c < width(k0); ++c) step(acc, v + c * R, x[k0 + c]);
  };
  std::uint32_t b = b_begin;
  if (static_cast<std::size_t>(b_end - b_begin) * c_block >= 256) {
    // A long block-row is read as four sequential streams, one per quarter of its blocks:
    // with weights streaming from DRAM, one stream per core leaves memory bandwidth idle.
    const std::uint32_t q = (b_end - b_begin) / 4;
    for (std::uint32_t i = 0; i < q; ++i) {
      std::size_t k[4], cn = c_block;
      const float* v[4];
      DYNASPARSE_UNROLL(4)
      for (std::uint32_t s = 0; s < 4; ++s) {
        k[s] = inputs_of(b_begin + i + s * q);
        v[s] = weights_of(b_begin + i + s * q);
        cn = width(k[s]) < cn ? width(k[s]) : cn;
      }
      // Column by column across the four blocks, so consecutive FMAs feed different sums;
      // a partial last block-column finishes alone.
      std::size_t c = 0;
      for (; c < cn; ++c) {
        step(a0, v[0] + c * R, x[k[0] + c]);
        step(a1, v[1] + c * R, x[k[1] + c]);
        step(a2, v[2] + c * R, x[k[2] + c]);
        step(a3, v[3] + c * R, x[k[3] + c]);
      }
      if (c < c_block) {
        columns(a0, v[0], k[0], c);
        columns(a1, v[1], k[1], c);
        columns(a2, v[2], k[2], c);
        columns(a3, v[3], k[3], c);
      }
    }
    b = b_begin + 4 * q;
  } else if (c_block == 1) {
    for (; b + 4 <= b_end; b += 4) {
      step(a0, weights_of(b), x[col_idx[b]]);
      step(a1, weights_of(b + 1), x[col_idx[b + 1]]);
      step(a2, weights_of(b + 2), x[col_idx[b + 2]]);
      step(a3, weights_of(b + 3), x[col_idx[b + 3]]);
    }
  }
  for (; b < b_end; ++b) {
    const std::size_t k0 = inputs_of(b), cn = width(k0);
    const float* v = weights_of(b);
    std::size_t c = 0;
    if (cn >= 256) {
      // A long block (a dense panel) is read as four sequential streams, one per quarter:
      // with weights streaming from DRAM, one stream per core leaves memory bandwidth idle.
      const std::size_t q = cn / 4;
      for (; c < q; ++c) {
        step(a0, v + c * R, x[k0 + c]);
        step(a1, v + (c + q) * R, x[k0 + c + q]);
        step(a2, v + (c + 2 * q) * R, x[k0 + c + 2 * q]);
        step(a3, v + (c + 3 * q) * R, x[k0 + c + 3 * q]);
      }
      c = 4 * q;
    }
    for (; c + 4 <= cn; c += 4) {
      step(a0, v + c * R, x[k0 + c]);
      step(a1, v + (c + 1) * R, x[k0 + c + 1]);
      step(a2, v + (c + 2) * R, x[k0 + c + 2]);
      step(a3, v + (c + 3) * R, x[k0 + c + 3]);
    }
    for (; c < cn; ++c) step(a0, v + c * R, x[k0 + c]);
  }
  DYNASPARSE_UNROLL(8)
  for (std::size_t j = 0; j < nv; ++j) {
    B t = sums[0][j];
    if constexpr (sets == 4) {
      t = (t + sums[1][j]) + (sums[2][j] + sums[3][j]);
    } else if constexpr (sets == 2) {
      t += sums[1][j];
    }
    t.store_unaligned(out + j * w);
  }
}

// Vectors of outputs one register tile covers for blocks of R outputs: all of the block-row
// where 32 registers hold the tile, two on 16-register targets (AVX2). There, a block-row of
// four or more vectors in one tile would leave room for three rows or fewer, and GCC then
// folds the weight loads into every FMA (12 accumulators, 4 weight vectors and a broadcast
// need 17 registers): the tile of 3 x 32 floats ran at 60% of the FMA peak on Zen 3.
template <class Arch, std::size_t R>
constexpr std::size_t spmm_f32_tile_vectors() noexcept {
  constexpr std::size_t nv = R / xsimd::batch<float, Arch>::size;
  return vector_registers<Arch>() >= 32 || nv < 2 ? nv : 2;
}

// Rows of x one register tile holds for blocks of R outputs.
template <class Arch, std::size_t R>
constexpr std::size_t spmm_f32_tile_rows_for() noexcept {
  constexpr std::size_t nv = spmm_f32_tile_vectors<Arch, R>();
  constexpr std::size_t budget = spmm_register_budget<Arch>();
  return budget / nv > 12 ? 12 : (budget / nv < 1 ? 1 : budget / nv);
}

// Calls spmm_tile_f32<Arch, R, rows> for a runtime rows in [1, MR], over every pass of
// tile vectors across the block-row.
template <class Arch, std::size_t R, std::size_t MR>
inline void spmm_tile_rows_f32(std::size_t rows, const float* x, std::size_t ldx, std::size_t in,
                               const std::uint32_t* col_idx, std::uint32_t b0, std::uint32_t b1,
                               const float* values, const std::uint32_t* value_blocks,
                               std::size_t c_block, float* tile) noexcept {
  if constexpr (MR > 1) {
    if (rows < MR) {
      spmm_tile_rows_f32<Arch, R, MR - 1>(rows, x, ldx, in, col_idx, b0, b1, values, value_blocks,
                                          c_block, tile);
      return;
    }
  }
  constexpr std::size_t nv = spmm_f32_tile_vectors<Arch, R>(), w = xsimd::batch<float, Arch>::size;
  for (std::size_t o0 = 0; o0 < R; o0 += nv * w) {
    spmm_tile_f32<Arch, R, MR, nv>(x, ldx, in, col_idx, b0, b1, values, value_blocks, c_block, o0,
                                   tile);
  }
}

template <class Arch, std::size_t R>
inline void spmm_f32_rows(const float* x, std::size_t ldx, std::size_t m, std::size_t in,
                          const std::uint32_t* row_ptr, const std::uint32_t* col_idx,
                          const float* values, const std::uint32_t* value_blocks,
                          std::size_t c_block, std::size_t br0, std::size_t br1, const float* bias,
                          float* y, std::size_t ldy, std::size_t out) noexcept {
  constexpr std::size_t w = xsimd::batch<float, Arch>::size;
  static_assert(R % w == 0, "block height must be a multiple of the vector width");
  constexpr std::size_t mr = spmm_f32_tile_rows_for<Arch, R>();
  alignas(64) float tile[mr * R];
  for (std::size_t br = br0; br < br1; ++br) {
    const std::size_t n0 = br * R, nn = out - n0 < R ? out - n0 : R;
    const std::uint32_t b0 = row_ptr[br], b1 = row_ptr[br + 1];
    std::size_t r0 = 0;
    if (m == 1) {
      spmm_row_f32<Arch, R>(x, in, col_idx, b0, b1, values, value_blocks, c_block, tile);
      r0 = 1;
      for (std::size_t i = 0; i < nn; ++i) y[n0 + i] = tile[i] + (bias ? bias[n0 + i] : 0.0f);
    }
    for (; r0 < m; r0 += mr) {
      const std::size_t rows = m - r0 < mr ? m - r0 : mr;
      spmm_tile_rows_f32<Arch, R, mr>(rows, x + r0 * ldx, ldx, in, col_idx, b0, b1, values,
                                      value_blocks, c_block, tile);
      for (std::size_t r = 0; r < rows; ++r) {
        float* yr = y + (r0 + r) * ldy + n0;
        for (std::size_t i = 0; i < nn; ++i) yr[i] = tile[r * R + i] + (bias ? bias[n0 + i] : 0.0f);
      }
    }
  }
}

}  // namespace detail

/// Rows of x the kernel takes per register tile with blocks of r_block outputs (1 on the
/// scalar path): splitting rows across threads at multiples of it keeps every tile whole.
template <class Arch = arch>
constexpr std::size_t spmm_f32_tile_rows(std::size_t r_block) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return 1;
  } else {
    return r_block == 16 ? detail::spmm_f32_tile_rows_for<Arch, 16>()
                         : r_block == 32 ? detail::spmm_f32_tile_rows_for<Arch, 32>()
                                         : detail::spmm_f32_tile_rows_for<Arch, 64>();
  }
}

/// Computes block-rows [br0, br1) of y [m, out] = x [m, in] W^T + bias (bias may be null),
/// with W in block-CSR with blocks of R outputs x C inputs (R in {16, 32, 64}): row_ptr
/// [block_rows + 1], col_idx [blocks] (block-column indices), values [blocks][C][R] (R
/// consecutive outputs per input column; the last block-row's outputs past `out` and the
/// last block-column's inputs past `in` are ignored). Absent blocks cost nothing. With
/// `value_blocks` (one per stored block), block b's values are values[value_blocks[b]]
/// instead of values[b]: a subset of a matrix's blocks is then multiplied in place, without
/// copying its values (DenseF32::forward_input_groups skips inputs known to be zero). Register
/// tile: up to 12 rows of x against a block-row's R outputs (on 16-register targets, 6 rows
/// against 2 vectors of outputs at a time); one row (decoding) up to four accumulator sets, as
/// registers allow. Matches the scalar reference within float rounding (fused multiply-adds, other
/// summation order for one row): 1e-5 of sum |terms| in the tests.
template <class Arch = arch>
inline void spmm_f32(const float* x, std::size_t ldx, std::size_t m, std::size_t in,
                     const std::uint32_t* row_ptr, const std::uint32_t* col_idx,
                     const float* values, std::size_t r_block, std::size_t c_block, std::size_t br0,
                     std::size_t br1, const float* bias, float* y, std::size_t ldy, std::size_t out,
                     const std::uint32_t* value_blocks = nullptr) noexcept {
  DYNASPARSE_ASSERT(spmm_supports_block_rows(r_block), "unsupported block height");
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::spmm_f32(x, ldx, m, in, row_ptr, col_idx, values, r_block, c_block, br0, br1,
                             bias, y, ldy, out, value_blocks);
  } else {
    switch (r_block) {
      case 16:
        detail::spmm_f32_rows<Arch, 16>(x, ldx, m, in, row_ptr, col_idx, values, value_blocks,
                                        c_block, br0, br1, bias, y, ldy, out);
        break;
      case 32:
        detail::spmm_f32_rows<Arch, 32>(x, ldx, m, in, row_ptr, col_idx, values, value_blocks,
                                        c_block, br0, br1, bias, y, ldy, out);
        break;
      default:
        detail::spmm_f32_rows<Arch, 64>(x, ldx, m, in, row_ptr, col_idx, values, value_blocks,
                                        c_block, br0, br1, bias, y, ldy, out);
        break;
    }
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
