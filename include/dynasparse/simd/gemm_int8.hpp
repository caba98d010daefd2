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
#include <utility>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/arm_neon_gemm_int8.hpp"
#include "dynasparse/simd/detail/scalar/gemm_int8.hpp"
#include "dynasparse/simd/detail/x86_avx2_gemm_int8.hpp"
#include "dynasparse/simd/detail/x86_vnni256_gemm_int8.hpp"
#include "dynasparse/simd/detail/x86_vnni_gemm_int8.hpp"
#include "dynasparse/simd/dot_int8.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// How the int8 GEMM of I8Arch packs its weights, prepares its activations and which
/// microkernel runs. Members:
/// - panel_cols: columns per packed weight panel (a divisor of gemm_tile_cols), or 0 for
///   row-major weights and a blocked loop over dot_s8s8_s32 (the scalar path);
/// - k_group: k per packed group (activation rows are padded to a multiple of it);
/// - tile_rows: rows per microkernel call;
/// - shifted_activations: activations are stored as a + 128 (unsigned) and the kernel starts
///   its accumulators at PackedI8Weights::shift_compensation();
/// - offset(cc, t): byte of W[col][k] inside its panel's (k / k_group) block of
///   panel_cols * k_group bytes, for cc = col % panel_cols and t = k % k_group;
/// - tile<MR>(a, lda, panels, panel_stride, subs, k_groups, init, c, ldc): MR rows of
///   prepared activations against `subs` consecutive panels, into c (stride ldc);
/// - optionally tile_spans<MR>(...) (tile() over listed k-group ranges, for
///   gemm_s8s8_s32_kspans) and row_panels(a, units, init, count, k_groups, c) (one row
///   against units of row_panel_cols columns anywhere, at most 8, for gemm_s8s8_s32_panels;
///   row_panel_cols defaults to panel_cols).
template <class I8Arch>
struct GemmI8Traits;

template <>
struct GemmI8Traits<I8Scalar> {
  static constexpr std::size_t panel_cols = 0;
  static constexpr std::size_t k_group = 1;
  static constexpr std::size_t tile_rows = 4;
  static constexpr bool shifted_activations = false;
};

template <>
struct GemmI8Traits<I8Avx2> {
  static constexpr std::size_t panel_cols = detail::avx2::gemm_nr;
  static constexpr std::size_t k_group = detail::avx2::gemm_kgroup;
  static constexpr std::size_t tile_rows = detail::avx2::gemm_mr;
  static constexpr bool shifted_activations = false;
  static constexpr std::size_t offset(std::size_t cc, std::size_t t) noexcept { return cc * k_group + t; }
  template <std::size_t MR>
  static void tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels, std::size_t panel_stride,
                   std::size_t subs, std::size_t k_groups, const std::int32_t*, std::int32_t* c,
                   std::size_t ldc) noexcept {
    detail::avx2::gemm_s8s8_s32_tile<MR>(a, lda, panels, panel_stride, subs, k_groups, c, ldc);
  }
  // tile() over the k groups of `spans` only (gemm_s8s8_s32_kspans), summed in registers.
  template <std::size_t MR>
  static void tile_spans(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                         std::size_t panel_stride, std::size_t subs, const std::uint32_t* spans,
                         std::size_t nspans, std::int32_t* c, std::size_t ldc) noexcept {
    detail::avx2::gemm_s8s8_s32_tile_spans<MR>(a, lda, panels, panel_stride, subs, spans, nspans, c,
                                               ldc);
  }
#if DYNASPARSE_HAS_AVX2
  // One row against `count` panels anywhere in the packed weights (gemm_s8s8_s32_panels).
  static void row_panels(const std::int8_t* a, const std::int8_t* const* panels,
                         const std::int32_t* const*, std::size_t count, std::size_t k_groups,
                         std::int32_t* c) noexcept {
    const std::uint32_t all[2] = {0, static_cast<std::uint32_t>(k_groups)};
    detail::avx2::gemv_s8s8_s32_panels(a, panels, count, all, 1, c);
  }
#endif
};

template <>
struct GemmI8Traits<I8Vnni256> {
  static constexpr std::size_t panel_cols = detail::vnni::gemm256_nr;
  static constexpr std::size_t k_group = detail::vnni::gemm256_kgroup;
  static constexpr std::size_t tile_rows = detail::vnni::gemm256_mr;
  static constexpr bool shifted_activations = true;
  static constexpr std::size_t offset(std::size_t cc, std::size_t t) noexcept { return cc * k_group + t; }
  template <std::size_t MR>
  static void tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels, std::size_t panel_stride,
                   std::size_t subs, std::size_t k_groups, const std::int32_t* init, std::int32_t* c,
                   std::size_t ldc) noexcept {
    detail::vnni::gemm_u8s8_s32_tile_256<MR>(reinterpret_cast<const std::uint8_t*>(a), lda, panels, panel_stride,
                                             subs, k_groups, init, c, ldc);
  }
};

template <>
struct GemmI8Traits<I8Vnni512> {
  static constexpr std::size_t panel_cols = detail::vnni::gemm_nr;
  static constexpr std::size_t k_group = detail::vnni::gemm_kgroup;
  static constexpr std::size_t tile_rows = detail::vnni::gemm_mr;
  static constexpr bool shifted_activations = true;
  static constexpr std::size_t offset(std::size_t cc, std::size_t t) noexcept { return cc * k_group + t; }
  template <std::size_t MR>
  static void tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels, std::size_t panel_stride,
                   std::size_t subs, std::size_t k_groups, const std::int32_t* init, std::int32_t* c,
                   std::size_t ldc) noexcept {
    for (std::size_t s = 0; s < subs; ++s) {
      detail::vnni::gemm_u8s8_s32_tile<MR>(reinterpret_cast<const std::uint8_t*>(a), lda, panels + s * panel_stride,
                                           k_groups, init + s * panel_cols, c + s * panel_cols, ldc);
    }
  }
#if DYNASPARSE_HAS_AVX512VNNI
  // One row against quarters of panels anywhere (gemm_s8s8_s32_panels): a decoding step's
  // query projection then reads the 16-column units of the heads it opens.
  static constexpr std::size_t row_panel_cols = detail::vnni::gemv_unit_cols;
  static void row_panels(const std::int8_t* a, const std::int8_t* const* units,
                         const std::int32_t* const* init, std::size_t count, std::size_t k_groups,
                         std::int32_t* c) noexcept {
    detail::vnni::gemv_u8s8_s32_units(reinterpret_cast<const std::uint8_t*>(a), units, init, count,
                                      k_groups, c);
  }
#endif
  // tile() over the k groups of `spans` only, with start values from the spans' weights, so
  // that A outside them is never read (gemm_s8s8_s32_kspans).
  template <std::size_t MR>
  static void tile_spans(const std::int8_t* a, std::size_t lda, const std::int8_t* panels,
                         std::size_t panel_stride, std::size_t subs, const std::uint32_t* spans,
                         std::size_t nspans, std::int32_t* c, std::size_t ldc) noexcept {
    for (std::size_t s = 0; s < subs; ++s) {
      detail::vnni::gemm_u8s8_s32_tile_spans<MR>(reinterpret_cast<const std::uint8_t*>(a), lda,
                                                 panels + s * panel_stride, spans, nspans,
                                                 c + s * panel_cols, ldc);
    }
  }
};

template <>
struct GemmI8Traits<I8Neon> {
  static constexpr std::size_t panel_cols = detail::neon::gemm_nr;
  static constexpr std::size_t k_group = detail::neon::gemm_kgroup;
  static constexpr std::size_t tile_rows = detail::neon::gemm_mr;
  static constexpr bool shifted_activations = false;
  static constexpr std::size_t offset(std::size_t cc, std::size_t t) noexcept {
    return detail::neon::pack_offset_smull(cc, t);
  }
  template <std::size_t MR>
  static void tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels, std::size_t panel_stride,
                   std::size_t subs, std::size_t k_groups, const std::int32_t*, std::int32_t* c,
                   std::size_t ldc) noexcept {
    detail::neon::gemm_s8s8_s32_tile_smull<MR>(a, lda, panels, panel_stride, subs, k_groups, c, ldc);
  }
};

template <>
struct GemmI8Traits<I8NeonDot> {
  static constexpr std::size_t panel_cols = detail::neon::gemm_nr;
  static constexpr std::size_t k_group = detail::neon::gemm_kgroup;
  static constexpr std::size_t tile_rows = detail::neon::gemm_mr;
  static constexpr bool shifted_activations = false;
  static constexpr std::size_t offset(std::size_t cc, std::size_t t) noexcept {
    return detail::neon::pack_offset_sdot(cc, t);
  }
  template <std::size_t MR>
  static void tile(const std::int8_t* a, std::size_t lda, const std::int8_t* panels, std::size_t panel_stride,
                   std::size_t subs, std::size_t k_groups, const std::int32_t*, std::int32_t* c,
                   std::size_t ldc) noexcept {
    detail::neon::gemm_s8s8_s32_tile_sdot<MR>(a, lda, panels, panel_stride, subs, k_groups, c, ldc);
  }
};

/// True when the GEMM of I8Arch (and every kernel reading gemm_prepare_activation_row's
/// output) takes shifted activations, a + 128 read as unsigned bytes, and needs the
/// -128 * column-sum start values; false when prepared rows are the signed values.
template <class I8Arch>
inline constexpr bool activations_shifted_v = GemmI8Traits<I8Arch>::shifted_activations;

/// Columns of the tiles handed to an epilogue (and of lookup_panel's blocks).
inline constexpr std::size_t gemm_tile_cols = 64;
/// Rows of the tiles handed to an epilogue.
template <class I8Arch>
inline constexpr std::size_t gemm_tile_rows = GemmI8Traits<I8Arch>::tile_rows;
/// Columns at which gemm_s8s8_s32 may start: the packed panel width (8 on AVX2, 64 with
/// AVX-512 VNNI), 8 on the scalar path, whose weights are row-major. The finest granularity
/// at which a product of several rows can leave columns out without computing them (one row
/// can go finer: gemm_list_step).
template <class I8Arch = int8_arch>
inline constexpr std::size_t gemm_column_step =
    GemmI8Traits<I8Arch>::panel_cols != 0 ? GemmI8Traits<I8Arch>::panel_cols : 8;

namespace detail {
// Calls f(std::integral_constant<std::size_t, rows>) for a runtime rows in [1, MR]: the
// microkernels take their row count as a template argument.
template <std::size_t MR, class F>
inline void gemm_with_rows(std::size_t rows, F&& f) noexcept {
  if constexpr (MR == 1) {
    f(std::integral_constant<std::size_t, 1>{});
  } else {
    if (rows == MR) {
      f(std::integral_constant<std::size_t, MR>{});
    } else {
      gemm_with_rows<MR - 1>(rows, std::forward<F>(f));
    }
  }
}

// Whether GemmI8Traits T has a row_panels kernel (one row against gathered panels).
template <class T, class = void>
struct has_row_panels : std::false_type {};
template <class T>
struct has_row_panels<T, std::void_t<decltype(&T::row_panels)>> : std::true_type {};

// GemmI8Traits T's row_panel_cols, or its panel_cols when it has none.
template <class T, class = void>
struct row_panel_cols_of : std::integral_constant<std::size_t, T::panel_cols> {};
template <class T>
struct row_panel_cols_of<T, std::void_t<decltype(T::row_panel_cols)>>
    : std::integral_constant<std::size_t, T::row_panel_cols> {};

// Whether GemmI8Traits T has a tile_spans kernel.
template <class T, class = void>
struct has_tile_spans : std::false_type {};
template <class T>
struct has_tile_spans<T, std::void_t<decltype(&T::template tile_spans<1>)>> : std::true_type {};

}  // namespace detail

/// Columns per listed panel of gemm_s8s8_s32_panels (and of DenseI8::forward_output_groups):
/// gemm_column_step, except 16 with AVX-512 VNNI, whose one-row kernel reads quarters of its
/// 64-column panels.
template <class I8Arch = int8_arch>
inline constexpr std::size_t gemm_list_step =
    detail::has_row_panels<GemmI8Traits<I8Arch>>::value
        ? detail::row_panel_cols_of<GemmI8Traits<I8Arch>>::value
        : gemm_column_step<I8Arch>;

/// An int8 weight matrix W [N, K] (nn.Linear layout, values in [-127, 127]) packed once for
/// the GEMM of I8Arch (GemmI8Traits: panels of panel_cols columns in groups of k_group k,
/// or row-major for the scalar path), with its per-column shift compensation.
/// Move-only in practice (copying copies the bytes).
template <class I8Arch = int8_arch>
class PackedI8Weights {
  using Traits = GemmI8Traits<I8Arch>;
  static constexpr std::size_t nr = Traits::panel_cols, kg = Traits::k_group;
  static_assert(nr == 0 || gemm_tile_cols % nr == 0, "panels must tile the epilogue's columns");

 public:
  PackedI8Weights() = default;
  /// Packs `w` ([n, k] row-major, stride ldw elements).
  PackedI8Weights(const std::int8_t* w, std::size_t n, std::size_t k, std::size_t ldw) : n_(n), k_(k) {
    if constexpr (nr != 0) {
      kp_ = (k + kg - 1) / kg * kg;
      data_.resize_discard((n + nr - 1) / nr * nr * kp_);  // zeroed: padding columns and k
      for (std::size_t col = 0; col < n; ++col) {
        for (std::size_t kk = 0; kk < k; ++kk) data_[index(col, kk)] = w[col * ldw + kk];
      }
    } else {
      kp_ = k;
      data_.resize_discard(n * k);
      for (std::size_t col = 0; col < n; ++col) std::memcpy(data_.data() + col * k, w + col * ldw, k);
    }
    // Padded to whole 64-column tiles so a tile's start values can always be loaded.
    compensation_.resize_discard((n + gemm_tile_cols - 1) / gemm_tile_cols * gemm_tile_cols);
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
  /// 64-column tiles: the start value of the shifted path's accumulators.
  const std::int32_t* shift_compensation() const noexcept { return compensation_.data(); }
  /// Bytes held: packed values plus the shift compensation.
  std::size_t bytes() const noexcept { return data_.bytes() + compensation_.bytes(); }

  /// Writes table[W[c0 + c][k0 + kk] + 128] to out[kk * 64 + c] for kk < kc and c < 64
  /// (columns past n give table[128]): a k-major float block of 64 columns, the layout the
  /// weight-only product streams through. c0 is a multiple of 64; `table` has 256 entries
  /// (a dequantization LUT).
  void lookup_panel(std::size_t c0, std::size_t k0, std::size_t kc, const float* table,
                    float* out) const noexcept {
    constexpr std::size_t tc = gemm_tile_cols;
    if constexpr (nr != 0) {
      const std::size_t panels = (n_ + nr - 1) / nr;
      for (std::size_t s = 0; s < tc / nr; ++s) {
        const std::size_t p = c0 / nr + s;
        if (p >= panels) {
          for (std::size_t kk = 0; kk < kc; ++kk) std::fill(out + kk * tc + s * nr, out + kk * tc + (s + 1) * nr, table[128]);
          continue;
        }
        const std::int8_t* panel = data_.data() + p * nr * kp_;
        for (std::size_t kk = 0; kk < kc; ++kk) {
          const std::size_t k = k0 + kk;
          const std::int8_t* block = panel + (k / kg) * nr * kg;
          const std::size_t t = k % kg;
          float* dst = out + kk * tc + s * nr;
          for (std::size_t cc = 0; cc < nr; ++cc) dst[cc] = table[block[Traits::offset(cc, t)] + 128];
        }
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
  std::int8_t at(std::size_t col, std::size_t kk) const noexcept { return data_[index(col, kk)]; }

 private:
  std::size_t index(std::size_t col, std::size_t kk) const noexcept {
    if constexpr (nr != 0) {
      return (col / nr) * nr * kp_ + (kk / kg) * nr * kg + Traits::offset(col % nr, kk % kg);
    } else {
      return col * kp_ + kk;
    }
  }

  std::size_t n_ = 0, k_ = 0, kp_ = 0;
  AlignedBuffer<std::int8_t> data_;
  AlignedBuffer<std::int32_t> compensation_;
};

/// Bytes per activation row as the GEMM of I8Arch reads it.
template <class I8Arch = int8_arch>
constexpr std::size_t gemm_activation_row_bytes(std::size_t k) noexcept {
  constexpr std::size_t kg = GemmI8Traits<I8Arch>::k_group;
  return (k + kg - 1) / kg * kg;
}

namespace detail {
// out[i] = q[i] ^ 0x80 (int8 to its unsigned shifted code) in whole vectors; returns how many
// bytes it did. Explicit vectors: the plain loop is vectorized only at -O3.
template <class Arch>
inline std::size_t flip_sign_bits(const std::int8_t* q, std::size_t k, std::int8_t* out) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    (void)q, (void)k, (void)out;
    return 0;
  } else {
    using U = xsimd::batch<std::uint8_t, Arch>;
    const U flip(static_cast<std::uint8_t>(0x80u));
    std::size_t i = 0;
    for (; i + U::size <= k; i += U::size) {
      (U::load_unaligned(reinterpret_cast<const std::uint8_t*>(q + i)) ^ flip)
          .store_unaligned(reinterpret_cast<std::uint8_t*>(out + i));
    }
    return i;
  }
}
}  // namespace detail

/// Turns a quantized activation row q[0..k) into the GEMM's layout at `out`
/// (gemm_activation_row_bytes(k) bytes): shifted by +128 (activations_shifted_v) or copied,
/// then padded with zeros (shifted zeros, 128, when shifted) to the k group. In place
/// (out == q) is allowed.
template <class I8Arch = int8_arch>
inline void gemm_prepare_activation_row(const std::int8_t* q, std::size_t k, std::int8_t* out) noexcept {
  const std::size_t kp = gemm_activation_row_bytes<I8Arch>(k);
  if constexpr (activations_shifted_v<I8Arch>) {
    std::size_t i = detail::flip_sign_bits<arch>(q, k, out);
    for (; i < k; ++i) out[i] = static_cast<std::int8_t>(static_cast<std::uint8_t>(q[i]) ^ 0x80u);
    for (; i < kp; ++i) out[i] = static_cast<std::int8_t>(0x80u);  // shifted zero
  } else {
    if (out != q) std::memcpy(out, q, k);
    for (std::size_t i = k; i < kp; ++i) out[i] = 0;
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
    const float inv = finite ? inv_scale_for(alpha) : 0.0f;
    row_scale[r] = finite ? alpha / 127.0f : std::numeric_limits<float>::quiet_NaN();
    quantize_f32s8(row, out + r * lda, k, inv);
    gemm_prepare_activation_row<I8Arch>(out + r * lda, k, out + r * lda);
  }
}

/// gemm_quantize_activations reading only the features in the ranges [spans[2i],
/// spans[2i + 1]) of each row (ascending, disjoint, within k): the row's scale comes from
/// them, they are quantized as there, and every other code is a prepared zero. The result
/// equals gemm_quantize_activations' for x with the other features zero, which are never read.
template <class I8Arch = int8_arch>
inline void gemm_quantize_activation_spans(const float* x, std::size_t ldx, std::size_t m,
                                           std::size_t k, const std::uint32_t* spans,
                                           std::size_t nspans, float static_alpha, std::int8_t* out,
                                           std::size_t lda, float* row_scale) noexcept {
  // Rows up to 4096 features through a zeroed copy holding the spans: one vector run over the
  // row, where an attention head's span of 8 features falls to the scalar definitions of the
  // maximum and the rounding (on the Zen 5, 7 heads of 8 out of 256 features: 126 ns span by
  // span, 32 ns for a whole row).
  constexpr std::size_t staged = 4096;
  if (k <= staged) {
    alignas(64) float buf[staged];
    for (std::size_t r = 0; r < m; ++r) {
      const float* row = x + r * ldx;
      std::fill(buf, buf + k, 0.0f);
      // Element by element: a library copy per span of a few features cost more than it.
      for (std::size_t i = 0; i < nspans; ++i) {
        for (std::size_t j = spans[2 * i]; j < spans[2 * i + 1]; ++j) buf[j] = row[j];
      }
      gemm_quantize_activations<I8Arch>(buf, k, 1, k, static_alpha, out + r * lda, lda,
                                        row_scale + r);
    }
    return;
  }
  for (std::size_t r = 0; r < m; ++r) {
    const float* row = x + r * ldx;
    std::int8_t* q = out + r * lda;
    float max_abs = 0.0f;
    bool finite = true;
    for (std::size_t i = 0; i < nspans; ++i) {
      const float s = max_abs_f32(row + spans[2 * i], spans[2 * i + 1] - spans[2 * i]);
      finite = finite && s <= std::numeric_limits<float>::max();  // false for NaN and inf
      if (s > max_abs) max_abs = s;
    }
    const float alpha = static_alpha > 0.0f ? static_alpha : max_abs;
    const float inv = finite ? inv_scale_for(alpha) : 0.0f;
    row_scale[r] = finite ? alpha / 127.0f : std::numeric_limits<float>::quiet_NaN();
    std::memset(q, 0, k);
    for (std::size_t i = 0; i < nspans; ++i) {
      quantize_f32s8(row + spans[2 * i], q + spans[2 * i], spans[2 * i + 1] - spans[2 * i], inv);
    }
    gemm_prepare_activation_row<I8Arch>(q, k, q);
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
/// gemm_column_step<I8Arch>; tiles run from n0 in steps of gemm_tile_cols. Never allocates;
/// the tile lives on the stack.
template <class I8Arch = int8_arch, class Epilogue>
inline void gemm_s8s8_s32(const std::int8_t* a, std::size_t lda, const PackedI8Weights<I8Arch>& w,
                          std::size_t m, std::size_t n0, std::size_t n1, Epilogue&& epilogue) {
  using Traits = GemmI8Traits<I8Arch>;
  constexpr std::size_t tr = Traits::tile_rows, tc = gemm_tile_cols, nr = Traits::panel_cols;
  alignas(64) std::int32_t tile[tr * tc];
  for (std::size_t c0 = n0; c0 < n1; c0 += tc) {
    const std::size_t cols = std::min(tc, n1 - c0);
    for (std::size_t r0 = 0; r0 < m; r0 += tr) {
      const std::size_t rows = std::min(tr, m - r0);
      if constexpr (nr != 0) {
        // The panels covering the tile's columns (the last tile may need fewer).
        const std::size_t subs = (cols + nr - 1) / nr;
        const std::int8_t* panels = w.data() + (c0 / nr) * nr * w.k_padded();
        detail::gemm_with_rows<tr>(rows, [&](auto mr) {
          Traits::template tile<decltype(mr)::value>(a + r0 * lda, lda, panels, nr * w.k_padded(),
                                                     subs, w.k_padded() / Traits::k_group,
                                                     w.shift_compensation() + c0, tile, tc);
        });
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

/// gemm_s8s8_s32 for the listed column panels only: panels[0, count) (ascending, distinct,
/// each below ceil(w.n() / step)) index runs of step = gemm_list_step<I8Arch> columns, panel p
/// covering columns [p * step, min((p + 1) * step, w.n())). The epilogue gets runs of
/// consecutive listed panels at most gemm_tile_cols wide, with gemm_s8s8_s32's contract, and
/// no other column. One row (a decoding step's query projection over the heads it opens)
/// runs on kernels that gather up to eight listed panels per pass over A, adjacent or not,
/// where the arch has one (AVX2, AVX-512 VNNI); otherwise each run of panels is a
/// gemm_s8s8_s32 call (widened to gemm_column_step where that is coarser). Never allocates.
template <class I8Arch = int8_arch, class Epilogue>
inline void gemm_s8s8_s32_panels(const std::int8_t* a, std::size_t lda,
                                 const PackedI8Weights<I8Arch>& w, std::size_t m,
                                 const std::uint32_t* panels, std::size_t count,
                                 Epilogue&& epilogue) {
  using Traits = GemmI8Traits<I8Arch>;
  constexpr std::size_t step = gemm_list_step<I8Arch>, cs = gemm_column_step<I8Arch>,
                        tc = gemm_tile_cols, per_tile = tc / step;
  static_assert(cs % step == 0 && tc % step == 0, "listed panels split the kernel's panels");
  const std::size_t n = w.n();
  DYNASPARSE_ASSERT(count == 0 || std::size_t{panels[count - 1]} * step < n,
                    "gemm_s8s8_s32_panels: a panel past the weights");
  // Hands the epilogue the listed panels [i, e) that lie in [t0, t0 + cols) of a tile,
  // run by run (runs of adjacent panels, at most a tile wide).
  const auto hand_on = [&](std::size_t i, std::size_t e, std::size_t r0, std::size_t rows,
                           std::size_t t0, const std::int32_t* tile, std::size_t ld) {
    for (std::size_t j = i; j < e;) {
      std::size_t f = j + 1;
      while (f < e && f - j < per_tile && panels[f] == panels[f - 1] + 1) ++f;
      const std::size_t c0 = std::size_t{panels[j]} * step;
      const std::size_t c1 = std::min(std::size_t{panels[f - 1]} * step + step, n);
      epilogue(r0, rows, c0, c1 - c0, tile + (c0 - t0), ld);
      j = f;
    }
  };
  if constexpr (detail::has_row_panels<Traits>::value) {
    if (m == 1) {
      constexpr std::size_t batch = 8;
      alignas(64) std::int32_t tile[batch * step];
      const std::int8_t* ptr[batch];
      const std::int32_t* init[batch];
      for (std::size_t i0 = 0; i0 < count; i0 += batch) {
        const std::size_t nb = std::min(batch, count - i0);
        for (std::size_t j = 0; j < nb; ++j) {
          // Column c0 of the packed layout: its panel, then its place in the panel's k group.
          const std::size_t c0 = std::size_t{panels[i0 + j]} * step;
          ptr[j] = w.data() + c0 / cs * cs * w.k_padded() + c0 % cs * Traits::k_group;
          init[j] = w.shift_compensation() + c0;
        }
        Traits::row_panels(a, ptr, init, nb, w.k_padded() / Traits::k_group, tile);
        // A run of adjacent panels has its sums side by side in the batch's tile.
        for (std::size_t j = 0; j < nb;) {
          std::size_t e = j + 1;
          while (e < nb && panels[i0 + e] == panels[i0 + e - 1] + 1) ++e;
          hand_on(i0 + j, i0 + e, 0, 1, std::size_t{panels[i0 + j]} * step, tile + j * step, tc);
          j = e;
        }
      }
      return;
    }
  }
  // Runs of listed panels in adjacent kernel panels: one gemm_s8s8_s32 call each, whose tiles
  // hand on only the listed panels.
  for (std::size_t i = 0; i < count;) {
    const std::size_t k0 = std::size_t{panels[i]} * step / cs;
    std::size_t k1 = k0 + 1, e = i + 1;
    while (e < count && std::size_t{panels[e]} * step / cs <= k1) {
      k1 = std::size_t{panels[e]} * step / cs + 1;
      ++e;
    }
    std::size_t first = i;  // the first listed panel of the current tile
    gemm_s8s8_s32<I8Arch>(a, lda, w, m, k0 * cs, std::min(k1 * cs, n),
                          [&](std::size_t r0, std::size_t rows, std::size_t t0, std::size_t cols,
                              const std::int32_t* tile, std::size_t ld) {
                            while (first < e && std::size_t{panels[first]} * step < t0) ++first;
                            std::size_t last = first;
                            while (last < e && std::size_t{panels[last]} * step < t0 + cols) ++last;
                            hand_on(first, last, r0, rows, t0, tile, ld);
                          });
    i = e;
  }
}

/// True when gemm_s8s8_s32_kspans of I8Arch reads A inside the spans only (and costs the
/// spans' share of the product); false where it computes every k (VNNI-256, whose start
/// values sum every k of a column), so A must hold prepared zeros outside the spans.
template <class I8Arch = int8_arch>
inline constexpr bool gemm_kspans_skip_v = !GemmI8Traits<I8Arch>::shifted_activations ||
                                           detail::has_tile_spans<GemmI8Traits<I8Arch>>::value;

/// gemm_s8s8_s32 summing only the k in `spans` ranges [spans[2i], spans[2i + 1]) of k
/// groups (GemmI8Traits::k_group bytes; ascending, disjoint, within the padded k), for a
/// product whose activations are zero elsewhere (the heads an attention layer skipped,
/// before out_proj). The sums equal gemm_s8s8_s32's exactly. Where gemm_kspans_skip_v, A
/// outside the spans is never read and costs nothing; elsewhere all of k is computed and A
/// must hold prepared zeros outside the spans.
template <class I8Arch = int8_arch, class Epilogue>
inline void gemm_s8s8_s32_kspans(const std::int8_t* a, std::size_t lda,
                                 const PackedI8Weights<I8Arch>& w, std::size_t m, std::size_t n0,
                                 std::size_t n1, const std::uint32_t* spans, std::size_t nspans,
                                 Epilogue&& epilogue) {
  using Traits = GemmI8Traits<I8Arch>;
  if constexpr (!gemm_kspans_skip_v<I8Arch>) {
    (void)spans, (void)nspans;
    gemm_s8s8_s32<I8Arch>(a, lda, w, m, n0, n1, std::forward<Epilogue>(epilogue));
  } else {
    constexpr std::size_t tr = Traits::tile_rows, tc = gemm_tile_cols, nr = Traits::panel_cols,
                          kg = Traits::k_group;
    alignas(64) std::int32_t tile[tr * tc];
    for (std::size_t c0 = n0; c0 < n1; c0 += tc) {
      const std::size_t cols = std::min(tc, n1 - c0);
      for (std::size_t r0 = 0; r0 < m; r0 += tr) {
        const std::size_t rows = std::min(tr, m - r0);
        if constexpr (nr != 0) {
          const std::size_t subs = (cols + nr - 1) / nr, width = subs * nr;
          const std::int8_t* panels = w.data() + (c0 / nr) * nr * w.k_padded();
          if constexpr (detail::has_tile_spans<Traits>::value) {
            detail::gemm_with_rows<tr>(rows, [&](auto mr) {
              Traits::template tile_spans<decltype(mr)::value>(
                  a + r0 * lda, lda, panels, nr * w.k_padded(), subs, spans, nspans, tile, tc);
            });
          } else {
            alignas(64) std::int32_t part[tr * tc];
            for (std::size_t i = 0; i < nspans; ++i) {
              const std::size_t g0 = spans[2 * i], g1 = spans[2 * i + 1];
              // The first span writes the tile, the others a second one added to it: the
              // kernels start their accumulators at zero.
              std::int32_t* out = i == 0 ? tile : part;
              detail::gemm_with_rows<tr>(rows, [&](auto mr) {
                Traits::template tile<decltype(mr)::value>(
                    a + r0 * lda + g0 * kg, lda, panels + g0 * nr * kg, nr * w.k_padded(), subs,
                    g1 - g0, w.shift_compensation() + c0, out, tc);
              });
              if (i > 0) {
                for (std::size_t r = 0; r < rows; ++r) {
                  for (std::size_t c = 0; c < width; ++c) tile[r * tc + c] += part[r * tc + c];
                }
              }
            }
            if (nspans == 0) {
              for (std::size_t r = 0; r < rows; ++r)
                std::fill(tile + r * tc, tile + r * tc + width, 0);
            }
          }
        } else {
          for (std::size_t r = 0; r < rows; ++r) {
            const std::int8_t* ar = a + (r0 + r) * lda;
            for (std::size_t c = 0; c < cols; ++c) {
              const std::int8_t* wc = w.data() + (c0 + c) * w.k_padded();
              std::int32_t t = 0;
              for (std::size_t i = 0; i < nspans; ++i) {
                t += dot_s8s8_s32<I8Arch>(ar + spans[2 * i], wc + spans[2 * i],
                                          spans[2 * i + 1] - spans[2 * i]);
              }
              tile[r * tc + c] = t;
            }
          }
        }
        epilogue(r0, rows, c0, cols, static_cast<const std::int32_t*>(tile), tc);
      }
    }
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
