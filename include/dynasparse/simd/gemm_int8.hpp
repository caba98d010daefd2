// SPDX-License-Identifier: Apache-2.0
// Int8 GEMM kernels: C[M, N] = A[M, K] * W[N, K]^T in int32, on weights packed once for the
// int8 path of the build, with results handed tile by tile to a caller's epilogue.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/gemm_int8.hpp"
#include "dynasparse/simd/detail/x86_vnni_gemm_int8.hpp"
#include "dynasparse/simd/dot_int8.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// True when I8Arch's GEMM uses the packed VNNI panel layout and shifted (a + 128)
/// activations; otherwise weights stay row-major and activations signed, and the GEMM is a
/// blocked loop over dot_s8s8_s32<I8Arch>.
template <class I8Arch>
inline constexpr bool gemm_uses_vnni_panels_v = std::is_same_v<I8Arch, I8Vnni512>;

/// Rows and columns of the tiles handed to an epilogue.
template <class I8Arch>
inline constexpr std::size_t gemm_tile_rows = gemm_uses_vnni_panels_v<I8Arch> ? detail::vnni::gemm_mr : 4;
inline constexpr std::size_t gemm_tile_cols = 64;

/// An int8 weight matrix W [N, K] (nn.Linear layout, values in [-127, 127]) packed once for
/// the GEMM of I8Arch, with its per-column shift compensation (for the shifted-activation
/// path).
/// Move-only in practice (copying copies the bytes).
template <class I8Arch = int8_arch>
class PackedI8Weights {
 public:
  PackedI8Weights() = default;
  /// Packs `w` ([n, k] row-major, stride ldw elements).
  PackedI8Weights(const std::int8_t* w, std::size_t n, std::size_t k, std::size_t ldw) : n_(n), k_(k) {
    if constexpr (gemm_uses_vnni_panels_v<I8Arch>) {
      constexpr std::size_t nr = detail::vnni::gemm_nr, kg = detail::vnni::gemm_kgroup;
      kp_ = (k + kg - 1) / kg * kg;
      const std::size_t panels = (n + nr - 1) / nr;
      data_.resize_discard(panels * nr * kp_);
      for (std::size_t col = 0; col < n; ++col) {
        const std::size_t p = col / nr, cc = col % nr;
        std::int8_t* panel = data_.data() + p * nr * kp_;
        for (std::size_t kk = 0; kk < k; ++kk) {
          panel[((kk / kg) * nr + cc) * kg + kk % kg] = w[col * ldw + kk];
        }
      }
    } else {
      kp_ = k;
      data_.resize_discard(n * k);
      for (std::size_t col = 0; col < n; ++col) std::memcpy(data_.data() + col * k, w + col * ldw, k);
    }
    // Padded to whole 64-column panels so a tile's start values can always be loaded.
    compensation_.resize_discard((n + 63) / 64 * 64);
    for (std::size_t col = 0; col < n; ++col) {
      std::int32_t s = 0;
      for (std::size_t kk = 0; kk < k; ++kk) s += w[col * ldw + kk];
      compensation_[col] = -128 * s;
    }
  }

  std::size_t n() const noexcept { return n_; }
  std::size_t k() const noexcept { return k_; }
  /// K as the kernel reads it (rounded up to its k group).
  std::size_t k_padded() const noexcept { return kp_; }
  const std::int8_t* data() const noexcept { return data_.data(); }
  /// -128 * (sum of column n's weights) for each column n, padded with zeros to whole
  /// 64-column panels: the start value of the shifted path's accumulators.
  const std::int32_t* shift_compensation() const noexcept { return compensation_.data(); }
  /// Bytes held: packed values plus the shift compensation.
  std::size_t bytes() const noexcept { return data_.bytes() + compensation_.bytes(); }

  /// Writes table[W[c0 + c][k0 + kk] + 128] to out[kk * 64 + c] for kk < kc and c < 64
  /// (columns past n give table[128]): a k-major float block of 64 columns, the layout the
  /// weight-only product streams through. `table` has 256 entries (a dequantization LUT).
  void lookup_panel(std::size_t c0, std::size_t k0, std::size_t kc, const float* table,
                    float* out) const noexcept {
    constexpr std::size_t tc = 64;
    if constexpr (gemm_uses_vnni_panels_v<I8Arch>) {
      constexpr std::size_t kg = detail::vnni::gemm_kgroup;
      const std::int8_t* panel = data_.data() + (c0 / tc) * tc * kp_;
      for (std::size_t kk = 0; kk < kc; ++kk) {
        const std::size_t k = k0 + kk;
        const std::int8_t* src = panel + (k / kg) * tc * kg + k % kg;
        float* dst = out + kk * tc;
        for (std::size_t c = 0; c < tc; ++c) dst[c] = table[src[c * kg] + 128];
      }
    } else {
      for (std::size_t c = 0; c < tc; ++c) {
        const bool real = c0 + c < n_;
        const std::int8_t* src = data_.data() + (c0 + c) * kp_ + k0;
        for (std::size_t kk = 0; kk < kc; ++kk) out[kk * tc + c] = table[(real ? src[kk] : 0) + 128];
      }
    }
  }

  /// Element W[col][kk] (for unpacking and tests).
  std::int8_t at(std::size_t col, std::size_t kk) const noexcept {
    if constexpr (gemm_uses_vnni_panels_v<I8Arch>) {
      constexpr std::size_t nr = detail::vnni::gemm_nr, kg = detail::vnni::gemm_kgroup;
      return data_[(col / nr) * nr * kp_ + ((kk / kg) * nr + col % nr) * kg + kk % kg];
    } else {
      return data_[col * kp_ + kk];
    }
  }

 private:
  std::size_t n_ = 0, k_ = 0, kp_ = 0;
  AlignedBuffer<std::int8_t> data_;
  AlignedBuffer<std::int32_t> compensation_;
};

/// Bytes per activation row as the GEMM of I8Arch reads it.
template <class I8Arch = int8_arch>
constexpr std::size_t gemm_activation_row_bytes(std::size_t k) noexcept {
  if constexpr (gemm_uses_vnni_panels_v<I8Arch>) {
    return (k + detail::vnni::gemm_kgroup - 1) / detail::vnni::gemm_kgroup * detail::vnni::gemm_kgroup;
  } else {
    return k;
  }
}

/// Turns a quantized activation row q[0..k) into the GEMM's layout at `out`
/// (gemm_activation_row_bytes(k) bytes): shifted by +128 and zero-padded for VNNI panels,
/// copied otherwise. In place (out == q) is allowed when no padding is needed.
template <class I8Arch = int8_arch>
inline void gemm_prepare_activation_row(const std::int8_t* q, std::size_t k, std::int8_t* out) noexcept {
  if constexpr (gemm_uses_vnni_panels_v<I8Arch>) {
    const std::size_t kp = gemm_activation_row_bytes<I8Arch>(k);
    for (std::size_t i = 0; i < k; ++i) out[i] = static_cast<std::int8_t>(static_cast<std::uint8_t>(q[i]) ^ 0x80u);
    for (std::size_t i = k; i < kp; ++i) out[i] = static_cast<std::int8_t>(0x80u);  // shifted zero
  } else {
    if (out != q) std::memcpy(out, q, k);
  }
}

/// Quantizes float activation rows x [m, k] (stride ldx) into the int8 GEMM's layout at
/// `out` (stride lda = gemm_activation_row_bytes(k)) and writes each row's dequantization
/// step to `row_scale` (alpha / 127). alpha is each row's max |x| (dynamic), or
/// `static_alpha` when it is > 0 (values beyond it saturate). A row containing NaN or +-inf
/// gets row_scale NaN and zero codes, so every output computed from it is NaN rather than
/// silently finite.
template <class I8Arch = int8_arch>
inline void gemm_quantize_activations(const float* x, std::size_t ldx, std::size_t m, std::size_t k,
                                      float static_alpha, std::int8_t* out, std::size_t lda,
                                      float* row_scale) noexcept {
  for (std::size_t r = 0; r < m; ++r) {
    const float* row = x + r * ldx;
    const float max_abs = max_abs_f32(row, k);
    const bool finite = max_abs <= std::numeric_limits<float>::max();  // false for NaN and inf
    const float alpha = static_alpha > 0.0f ? static_alpha : max_abs;
    const float inv = finite && alpha > 0.0f ? 127.0f / alpha : 0.0f;
    row_scale[r] = finite ? alpha / 127.0f : std::numeric_limits<float>::quiet_NaN();
    quantize_f32s8(row, out + r * lda, k, inv);
    gemm_prepare_activation_row<I8Arch>(out + r * lda, k, out + r * lda);
  }
}

/// The int8 products' epilogue for one output row: y[i] = float(t[i]) * (row_scale *
/// col_scale[i]) + bias[i] (bias may be null), i < n. Same arithmetic on every arch (the
/// multiply-add may fuse), so dense and sparse int8 layers built from the same weights give
/// the same floats.
template <class Arch = arch>
inline void dequantize_s32f32(const std::int32_t* t, std::size_t n, float row_scale, const float* col_scale,
                              const float* bias, float* y) noexcept {
  std::size_t i = 0;
  if constexpr (!is_scalar_arch_v<Arch>) {
    using B = xsimd::batch<float, Arch>;
    using BI = xsimd::batch<std::int32_t, Arch>;
    constexpr std::size_t w = B::size;
    const B rs(row_scale);
    for (; i + w <= n; i += w) {
      const B v = xsimd::to_float(BI::load_unaligned(t + i)) * (rs * B::load_unaligned(col_scale + i));
      (bias ? v + B::load_unaligned(bias + i) : v).store_unaligned(y + i);
    }
  }
  for (; i < n; ++i) {
    const float v = static_cast<float>(t[i]) * (row_scale * col_scale[i]);
    y[i] = bias ? v + bias[i] : v;
  }
}

/// Computes C = A * W^T for rows [0, m) and columns [n0, n1) and calls
/// `epilogue(row0, rows, col0, cols, tile, ld)` for each tile, where tile[r * ld + c] is the
/// exact int32 sum for row row0 + r and column col0 + c. A holds prepared rows
/// (gemm_prepare_activation_row) with stride lda bytes. n0 must be a multiple of
/// gemm_tile_cols. Never allocates; the tile lives on the stack.
template <class I8Arch = int8_arch, class Epilogue>
inline void gemm_s8s8_s32(const std::int8_t* a, std::size_t lda, const PackedI8Weights<I8Arch>& w,
                          std::size_t m, std::size_t n0, std::size_t n1, Epilogue&& epilogue) {
  constexpr std::size_t tr = gemm_tile_rows<I8Arch>, tc = gemm_tile_cols;
  alignas(64) std::int32_t tile[tr * tc];
  for (std::size_t c0 = n0; c0 < n1; c0 += tc) {
    const std::size_t cols = std::min(tc, n1 - c0);
    for (std::size_t r0 = 0; r0 < m; r0 += tr) {
      const std::size_t rows = std::min(tr, m - r0);
      if constexpr (gemm_uses_vnni_panels_v<I8Arch>) {
        const auto* ar = reinterpret_cast<const std::uint8_t*>(a + r0 * lda);
        const std::int8_t* panel = w.data() + (c0 / tc) * tc * w.k_padded();
        const std::size_t kq = w.k_padded() / detail::vnni::gemm_kgroup;
        const std::int32_t* init = w.shift_compensation() + c0;
        switch (rows) {
          case 6: detail::vnni::gemm_u8s8_s32_tile<6>(ar, lda, panel, kq, init, tile, tc); break;
          case 5: detail::vnni::gemm_u8s8_s32_tile<5>(ar, lda, panel, kq, init, tile, tc); break;
          case 4: detail::vnni::gemm_u8s8_s32_tile<4>(ar, lda, panel, kq, init, tile, tc); break;
          case 3: detail::vnni::gemm_u8s8_s32_tile<3>(ar, lda, panel, kq, init, tile, tc); break;
          case 2: detail::vnni::gemm_u8s8_s32_tile<2>(ar, lda, panel, kq, init, tile, tc); break;
          default: detail::vnni::gemm_u8s8_s32_tile<1>(ar, lda, panel, kq, init, tile, tc); break;
        }
      } else {
        for (std::size_t r = 0; r < rows; ++r) {
          const std::int8_t* ar = a + (r0 + r) * lda;
          for (std::size_t c = 0; c < cols; ++c) {
            tile[r * tc + c] = dot_s8s8_s32<I8Arch>(ar, w.data() + (c0 + c) * w.k_padded(), w.k());
          }
        }
      }
      epilogue(r0, rows, c0, cols, static_cast<const std::int32_t*>(tile), tc);
    }
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
