// SPDX-License-Identifier: Apache-2.0
// Symmetric int8 quantization and dequantization of one row (float <-> int8).
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/quantize.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

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
    const B vs(inv_scale), lo(-127.0f), hi(127.0f), zero(0.0f);
    alignas(64) std::int32_t r[w];
    std::size_t i = 0;
    for (; i + w <= n; i += w) {
      B v = B::load_unaligned(x + i) * vs;
      // xsimd 8's operator!= is an ordered compare (false for NaN); isnan is not.
      v = xsimd::select(xsimd::isnan(v), zero, v);
      v = xsimd::nearbyint(xsimd::min(xsimd::max(v, lo), hi));
      xsimd::to_int(v).store_aligned(r);
      // xsimd has no narrowing conversion; this fixed-length int32 -> int8 loop compiles to
      // one (vpmovdb on AVX-512, xtn on NEON).
      for (std::size_t j = 0; j < w; ++j) q[i + j] = static_cast<std::int8_t>(r[j]);
    }
    detail::scalar::quantize_f32s8(x + i, q + i, n - i, inv_scale);
  }
}

/// y[i] = float(q[i]) * scale (scale = alpha / 127). Bit-exact with the scalar reference.
template <class Arch = arch>
inline void dequantize_s8f32(const std::int8_t* q, float* y, std::size_t n, float scale) noexcept {
  // Every vector arch shares the reference loop: compilers turn it into the ideal sequence
  // (vpmovsxbd, vcvtdq2ps, vmulps; sxtl, scvtf, fmul on NEON), while xsimd 8 has no widening
  // int8 load to express it with. BM_SimdDequantize measured an xsimd version through a lane
  // buffer at 0.11x of this loop.
  detail::scalar::dequantize_s8f32(q, y, n, scale);
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
