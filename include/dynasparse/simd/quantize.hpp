// SPDX-License-Identifier: Apache-2.0
// Symmetric int8 quantization and dequantization of one row (float <-> int8).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/quantize.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// Smallest max |x| that gets a non-zero int8 grid: below it 127 / alpha would overflow to
/// inf (from about 3.7e-37), so such values quantize to zero, an absolute error under 1e-36.
inline constexpr float min_quant_alpha = 1e-36f;
/// 127 / alpha, or 0 when alpha is below min_quant_alpha (zero included): every value then
/// maps to code 0. NaN alpha gives 0 as well.
inline float inv_scale_for(float alpha) noexcept {
  return alpha >= min_quant_alpha ? 127.0f / alpha : 0.0f;
}

namespace detail {
// Rounds the w lanes of v, floats in [-127, 127], to the nearest integer (ties to even, as
// nearbyint) and stores them as int8 codes. On x86, cvtps2dq rounds in the current mode, as
// nearbyint does (SSE2 has no vector rounding, and xsimd's emulation made the row kernel
// slower than its scalar twin), and two saturating packs narrow the codes exactly (GCC made
// the generic lane loop eight extracts and shifts per vector).
template <class Arch>
inline void store_codes(const xsimd::batch<float, Arch>& v, std::int8_t* q) noexcept {
  constexpr std::size_t w = xsimd::batch<float, Arch>::size;
#if DYNASPARSE_HAS_AVX2
  if constexpr (std::is_base_of_v<xsimd::avx2, Arch> && !std::is_base_of_v<xsimd::avx512f, Arch>) {
    const __m256i t = _mm256_cvtps_epi32(v);
    const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q), _mm_packs_epi16(p16, p16));
    return;
  }
#endif
#if DYNASPARSE_HAS_SSE2
  if constexpr (w == 4 && std::is_base_of_v<xsimd::sse2, Arch>) {
    const __m128i t = _mm_cvtps_epi32(v);
    const __m128i p16 = _mm_packs_epi32(t, t);
    const std::int32_t packed = _mm_cvtsi128_si32(_mm_packs_epi16(p16, p16));
    std::memcpy(q, &packed, sizeof(packed));
    return;
  }
#endif
  alignas(64) std::int32_t r[w];
  xsimd::to_int(xsimd::nearbyint(v)).store_aligned(r);
  // xsimd has no narrowing conversion; this fixed-length int32 -> int8 loop compiles to
  // one (vpmovdb on AVX-512, xtn on NEON).
  for (std::size_t j = 0; j < w; ++j) q[j] = static_cast<std::int8_t>(r[j]);
}

// clamp(v * inv_scale, -127, 127) with NaN lanes 0: the codes before rounding.
template <class Arch>
inline xsimd::batch<float, Arch> scale_and_clamp(
    const xsimd::batch<float, Arch>& x, const xsimd::batch<float, Arch>& inv_scale) noexcept {
  using B = xsimd::batch<float, Arch>;
  B v = x * inv_scale;
  // xsimd 8's operator!= is an ordered compare (false for NaN); isnan is not.
  v = xsimd::select(xsimd::isnan(v), B(0.0f), v);
  return xsimd::min(xsimd::max(v, B(-127.0f)), B(127.0f));
}
}  // namespace detail

/// q[i] = clamp(nearbyint(x[i] * inv_scale), -127, 127); NaN -> 0, +-inf -> +-127; ties to
/// even; never -128, so the result is always safe for the sign-transfer int8 dot kernels.
/// inv_scale = 127 / alpha. Bit-exact with the scalar reference.
template <class Arch = arch>
inline void quantize_f32s8(const float* x, std::int8_t* q, std::size_t n,
                           float inv_scale) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::quantize_f32s8(x, q, n, inv_scale);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size;
    const B vs(inv_scale);
    std::size_t i = 0;
    for (; i + w <= n; i += w) {
      detail::store_codes<Arch>(detail::scale_and_clamp<Arch>(B::load_unaligned(x + i), vs), q + i);
    }
    detail::scalar::quantize_f32s8(x + i, q + i, n - i, inv_scale);
  }
}

namespace detail {
// y[i] = float(q[i]) * (Each ? scale[i] : scale[0]) for i < n, in vectors; returns how many
// elements it did (the caller finishes the tail). With Each, scale[0] is not read unless
// n > 0 (an empty row may come with no scales at all). Intrinsics: xsimd 8 has no widening int8
// load (a version through a lane buffer ran at 0.11x of these), and the plain loop is
// vectorized only at -O3, not at -O2.
template <class Arch, bool Each>
inline std::size_t dequantize_s8f32_vectors(const std::int8_t* q, float* y, std::size_t n, const float* scale) noexcept {
  std::size_t i = 0;
  (void)q, (void)y, (void)n, (void)scale;  // unused on archs with no widening path here (SSE2)
  if constexpr (!is_scalar_arch_v<Arch>) {
#if DYNASPARSE_HAS_AVX512BW
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      const __m512 s = Each ? _mm512_setzero_ps() : _mm512_set1_ps(scale[0]);
      for (; i + 16 <= n; i += 16) {
        const __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i)));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_cvtepi32_ps(v), Each ? _mm512_loadu_ps(scale + i) : s));
      }
    }
#endif
#if DYNASPARSE_HAS_AVX2
    if constexpr (std::is_base_of_v<xsimd::avx2, Arch>) {
      const __m256 s = Each ? _mm256_setzero_ps() : _mm256_set1_ps(scale[0]);
      for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i)));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(v), Each ? _mm256_loadu_ps(scale + i) : s));
      }
    }
#endif
#if DYNASPARSE_HAS_NEON
    if constexpr (std::is_base_of_v<xsimd::neon64, Arch>) {
      const float32x4_t s = vdupq_n_f32(Each ? 0.0f : scale[0]);
      for (; i + 8 <= n; i += 8) {
        const int16x8_t v = vmovl_s8(vld1_s8(q + i));
        const float32x4_t lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(v)));
        const float32x4_t hi = vcvtq_f32_s32(vmovl_high_s16(v));
        vst1q_f32(y + i, vmulq_f32(lo, Each ? vld1q_f32(scale + i) : s));
        vst1q_f32(y + i + 4, vmulq_f32(hi, Each ? vld1q_f32(scale + i + 4) : s));
      }
    }
#endif
  }
  return i;
}
}  // namespace detail

namespace detail {
/// Whether load_s8_f32<Arch> exists: a widening load of one float vector's worth of int8
/// (AVX-512, AVX2, NEON64). Elsewhere callers dequantize into a buffer first.
template <class Arch>
constexpr bool has_load_s8_f32() noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return false;
  } else {
#if DYNASPARSE_HAS_AVX512BW
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) return true;
#endif
#if DYNASPARSE_HAS_AVX2
    if constexpr (std::is_base_of_v<xsimd::avx2, Arch>) return true;
#endif
#if DYNASPARSE_HAS_NEON
    if constexpr (std::is_base_of_v<xsimd::neon64, Arch>) return true;
#endif
    return false;
  }
}

/// float(p[0 .. w)) for the float vector width w of Arch; reads exactly w bytes. Only where
/// has_load_s8_f32<Arch>().
template <class Arch>
inline xsimd::batch<float, Arch> load_s8_f32(const std::int8_t* p) noexcept {
  static_assert(has_load_s8_f32<Arch>(), "no widening int8 load for this arch");
#if DYNASPARSE_HAS_AVX512BW
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
#endif
#if DYNASPARSE_HAS_AVX2
  if constexpr (std::is_base_of_v<xsimd::avx2, Arch>) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
#endif
#if DYNASPARSE_HAS_NEON
  if constexpr (std::is_base_of_v<xsimd::neon64, Arch>) {
    std::int32_t four;
    std::memcpy(&four, p, sizeof four);
    const int16x8_t v = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(four)));
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(v)));
  }
#endif
  (void)p;
  return xsimd::batch<float, Arch>(0.0f);
}
}  // namespace detail

/// y[i] = float(q[i]) * scale (scale = alpha / 127). Bit-exact with the scalar reference.
template <class Arch = arch>
inline void dequantize_s8f32(const std::int8_t* q, float* y, std::size_t n, float scale) noexcept {
  const std::size_t i = detail::dequantize_s8f32_vectors<Arch, false>(q, y, n, &scale);
  detail::scalar::dequantize_s8f32(q + i, y + i, n - i, scale);
}

/// y[i] = float(q[i]) * scales[i]: a row of values with a scale each (the INT8 KV cache's
/// per-token scales). Bit-exact with the plain loop.
template <class Arch = arch>
inline void dequantize_s8f32_each(const std::int8_t* q, const float* scales, float* y, std::size_t n) noexcept {
  std::size_t i = detail::dequantize_s8f32_vectors<Arch, true>(q, y, n, scales);
  for (; i < n; ++i) y[i] = static_cast<float>(q[i]) * scales[i];
}

/// Quantizes `groups` groups of d consecutive values, each on its own grid (the INT8 KV
/// cache's heads of one token): alpha[g] = max_abs_f32 of x[g d, g d + d) (NaN if the group
/// holds NaN) and q[g d + c] = quantize_f32s8 of the group with inv_scale_for(alpha[g]).
/// Bit-exact with those two calls per group. Groups of 8 or 16 values on AVX-512 go 16
/// values to a vector (group maxima by in-register shuffles); groups of up to 16 values that
/// are whole vectors of a narrower ISA (8 or 16 on AVX2, 4, 8 or 16 on NEON and SSE2) go a
/// vector or a few at a time; other groups of up to 16 values take the scalar definitions
/// inline, where calls into the vector kernels for eight values cost more than the work;
/// longer groups take the vector kernels.
template <class Arch = arch>
inline void quantize_groups_f32s8(const float* x, std::size_t groups, std::size_t d, std::int8_t* q,
                                  float* alpha) noexcept {
  std::size_t g = 0;
#if DYNASPARSE_HAS_AVX512BW
  if constexpr (std::is_base_of_v<xsimd::avx512bw, Arch>) {
    if (d == 8 || d == 16) {
      const std::size_t per = 16 / d;  // groups per vector
      const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
      const __m512 num = _mm512_set1_ps(127.0f), least = _mm512_set1_ps(min_quant_alpha);
      const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
      for (; g + per <= groups; g += per) {
        const __m512 v = _mm512_loadu_ps(x + g * d);
        // |x| with NaN lanes zeroed: the maximum of the others, as the reference's
        // comparisons skip NaN; a group holding NaN gets NaN below.
        const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        __m512 m = _mm512_maskz_mov_ps(
            static_cast<__mmask16>(~nan),
            _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), magnitude)));
        m = _mm512_max_ps(m, _mm512_permute_ps(m, 0xB1));        // pairs
        m = _mm512_max_ps(m, _mm512_permute_ps(m, 0x4E));        // quads
        m = _mm512_max_ps(m, _mm512_shuffle_f32x4(m, m, 0xB1));  // eights
        if (d == 16) m = _mm512_max_ps(m, _mm512_shuffle_f32x4(m, m, 0x4E));
        // Each lane now holds its group's maximum; lanes of a group with NaN take NaN.
        const __mmask16 group_nan =
            d == 16 ? (nan != 0 ? 0xFFFF : 0)
                    : static_cast<__mmask16>(((nan & 0x00FF) != 0 ? 0x00FF : 0) |
                                             ((nan & 0xFF00) != 0 ? 0xFF00 : 0));
        m = _mm512_mask_mov_ps(m, group_nan,
                               _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
        // inv_scale_for: 127 / alpha where alpha >= min_quant_alpha (false for NaN), else 0.
        const __mmask16 usable = _mm512_cmp_ps_mask(m, least, _CMP_GE_OQ);
        const __m512 inv = _mm512_maskz_div_ps(usable, num, m);
        __m512 p = _mm512_mul_ps(v, inv);
        p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, p, _CMP_ORD_Q), p);  // NaN -> 0
        p = _mm512_min_ps(_mm512_max_ps(p, lo), hi);
        // cvtps2dq rounds in the current mode (to nearest even), as nearbyint does.
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + g * d),
                         _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(p)));
        alpha[g] = _mm512_cvtss_f32(m);
        if (per == 2) alpha[g + 1] = _mm512_cvtss_f32(_mm512_shuffle_f32x4(m, m, 0x02));
      }
    }
  }
#endif
  if constexpr (!is_scalar_arch_v<Arch>) {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size, most = 16 / w > 0 ? 16 / w : 1;
    // A group in nv whole vectors, its maximum from their lanes (NaN lanes zeroed, as the
    // reference's comparisons skip them). An INT8 KV cache's decoding append quantizes a
    // token's heads this way: on the Zen 1 (AVX2) the scalar loop's byte stores and
    // per-value maxima were most of the append.
    if (d % w == 0 && d <= 16) {
      const std::size_t nv = d / w;
      for (; g < groups; ++g) {
        const float* xg = x + g * d;
        B v[most];
        B m(0.0f);
        auto nan = xsimd::isnan(B(0.0f));
        for (std::size_t k = 0; k < nv; ++k) {
          v[k] = B::load_unaligned(xg + k * w);
          const auto is_nan = xsimd::isnan(v[k]);
          nan = nan || is_nan;
          m = xsimd::max(m, xsimd::select(is_nan, B(0.0f), xsimd::abs(v[k])));
        }
        const float a = xsimd::any(nan) ? std::numeric_limits<float>::quiet_NaN() : detail::hmax(m);
        alpha[g] = a;
        const B inv(inv_scale_for(a));
        for (std::size_t k = 0; k < nv; ++k) {
          detail::store_codes<Arch>(detail::scale_and_clamp<Arch>(v[k], inv), q + g * d + k * w);
        }
      }
    }
  }
  for (; g < groups; ++g) {
    const float* xg = x + g * d;
    if (d <= 16 || is_scalar_arch_v<Arch>) {
      alpha[g] = detail::scalar::max_abs_f32(xg, d);
      detail::scalar::quantize_f32s8(xg, q + g * d, d, inv_scale_for(alpha[g]));
    } else {
      alpha[g] = max_abs_f32<Arch>(xg, d);
      quantize_f32s8<Arch>(xg, q + g * d, d, inv_scale_for(alpha[g]));
    }
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
