// SPDX-License-Identifier: Apache-2.0
// Float reductions (dot, sum, max), axpy and the norms' elementwise steps over arrays.
#pragma once

#include <cstddef>
#include <limits>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/reduce.hpp"
#include "dynasparse/simd/detail/vec_math.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

// Lengths are in elements; no alignment needed. Sums use four vector accumulators (to hide
// FMA latency), so their rounding differs from the sequential reference by at most
// n * eps * sum(|terms|) (tests/support/tolerances.hpp).

/// sum_i a[i] * b[i]; 0 for n = 0.
template <class Arch = arch>
inline float dot_f32(const float* a, const float* b, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return detail::scalar::dot_f32(a, b, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size;
    B s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
    std::size_t i = 0;
    for (; i + 4 * w <= n; i += 4 * w) {
      s0 = xsimd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), s0);
      s1 = xsimd::fma(B::load_unaligned(a + i + w), B::load_unaligned(b + i + w), s1);
      s2 = xsimd::fma(B::load_unaligned(a + i + 2 * w), B::load_unaligned(b + i + 2 * w), s2);
      s3 = xsimd::fma(B::load_unaligned(a + i + 3 * w), B::load_unaligned(b + i + 3 * w), s3);
    }
    for (; i + w <= n; i += w) s0 = xsimd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), s0);
    return xsimd::hadd((s0 + s1) + (s2 + s3)) + detail::scalar::dot_f32(a + i, b + i, n - i);
  }
}

/// y[i] += alpha * x[i]; x and y must not overlap.
template <class Arch = arch>
inline void axpy_f32(float alpha, const float* x, float* y, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::axpy_f32(alpha, x, y, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size;
    const B va(alpha);
    std::size_t i = 0;
    for (; i + 2 * w <= n; i += 2 * w) {
      xsimd::fma(va, B::load_unaligned(x + i), B::load_unaligned(y + i)).store_unaligned(y + i);
      xsimd::fma(va, B::load_unaligned(x + i + w), B::load_unaligned(y + i + w))
          .store_unaligned(y + i + w);
    }
    for (; i + w <= n; i += w) {
      xsimd::fma(va, B::load_unaligned(x + i), B::load_unaligned(y + i)).store_unaligned(y + i);
    }
    detail::scalar::axpy_f32(alpha, x + i, y + i, n - i);
  }
}

/// y[i] = x[i] + c; y may be x (not otherwise overlapping). Bit-exact with the scalar
/// reference.
template <class Arch = arch>
inline void add_scalar_f32(const float* x, float c, float* y, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::add_scalar_f32(x, c, y, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size;
    const B vc(c);
    std::size_t i = 0;
    for (; i + w <= n; i += w) (B::load_unaligned(x + i) + vc).store_unaligned(y + i);
    detail::scalar::add_scalar_f32(x + i, c, y + i, n - i);
  }
}

/// y[i] = x[i] * s * w[i] + b[i], or without b when b is null: a norm's scale and affine
/// step. Without b the result is bit-exact with the scalar reference (x * s first). With b
/// the add is fused where the target has FMA, so it may differ from the reference by one
/// rounding. y may be x (not otherwise overlapping).
template <class Arch = arch>
inline void scale_mul_add_f32(const float* x, float s, const float* w, const float* b, float* y,
                              std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::scale_mul_add_f32(x, s, w, b, y, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t vw = B::size;
    const B vs(s);
    std::size_t i = 0;
    if (b == nullptr) {
      for (; i + vw <= n; i += vw) {
        (B::load_unaligned(x + i) * vs * B::load_unaligned(w + i)).store_unaligned(y + i);
      }
    } else {
      for (; i + vw <= n; i += vw) {
        xsimd::fma(B::load_unaligned(x + i) * vs, B::load_unaligned(w + i),
                   B::load_unaligned(b + i))
            .store_unaligned(y + i);
      }
    }
    detail::scalar::scale_mul_add_f32(x + i, s, w + i, b == nullptr ? nullptr : b + i, y + i,
                                      n - i);
  }
}

/// sum_i x[i]; 0 for n = 0.
template <class Arch = arch>
inline float sum_f32(const float* x, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return detail::scalar::sum_f32(x, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size;
    B s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
    std::size_t i = 0;
    for (; i + 4 * w <= n; i += 4 * w) {
      s0 += B::load_unaligned(x + i);
      s1 += B::load_unaligned(x + i + w);
      s2 += B::load_unaligned(x + i + 2 * w);
      s3 += B::load_unaligned(x + i + 3 * w);
    }
    for (; i + w <= n; i += w) s0 += B::load_unaligned(x + i);
    return xsimd::hadd((s0 + s1) + (s2 + s3)) + detail::scalar::sum_f32(x + i, n - i);
  }
}

/// max_i x[i]; -inf for n = 0; NaN if any element is NaN. Exact (no rounding involved).
template <class Arch = arch>
inline float max_f32(const float* x, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return detail::scalar::max_f32(x, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size;
    if (n < w) return detail::scalar::max_f32(x, n);
    B m0 = B::load_unaligned(x), m1 = m0;
    // The NaN flag is kept separately because vector max instructions drop NaN depending on
    // operand order. (xsimd 8's operator!= is an ordered compare, so x != x cannot flag it.)
    auto nan = xsimd::isnan(m0);
    std::size_t i = w;
    for (; i + 2 * w <= n; i += 2 * w) {
      const B a = B::load_unaligned(x + i);
      const B b = B::load_unaligned(x + i + w);
      nan = nan || xsimd::isnan(a) || xsimd::isnan(b);
      m0 = xsimd::max(m0, a);
      m1 = xsimd::max(m1, b);
    }
    for (; i + w <= n; i += w) {
      const B a = B::load_unaligned(x + i);
      nan = nan || xsimd::isnan(a);
      m0 = xsimd::max(m0, a);
    }
    if (xsimd::any(nan)) return std::numeric_limits<float>::quiet_NaN();
    const float tail = detail::scalar::max_f32(x + i, n - i);
    const float m = detail::hmax(xsimd::max(m0, m1));
    return (tail != tail || tail > m) ? tail : m;
  }
}

/// max_i |x[i]|; 0 for n = 0; NaN if any element is NaN, +inf if any is infinite. Exact.
template <class Arch = arch>
inline float max_abs_f32(const float* x, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return detail::scalar::max_abs_f32(x, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size;
    B m0(0.0f), m1(0.0f);
    auto nan = xsimd::isnan(m0);
    std::size_t i = 0;
    for (; i + 2 * w <= n; i += 2 * w) {
      const B a = B::load_unaligned(x + i);
      const B b = B::load_unaligned(x + i + w);
      nan = nan || xsimd::isnan(a) || xsimd::isnan(b);
      m0 = xsimd::max(m0, xsimd::abs(a));
      m1 = xsimd::max(m1, xsimd::abs(b));
    }
    for (; i + w <= n; i += w) {
      const B a = B::load_unaligned(x + i);
      nan = nan || xsimd::isnan(a);
      m0 = xsimd::max(m0, xsimd::abs(a));
    }
    if (xsimd::any(nan)) return std::numeric_limits<float>::quiet_NaN();
    const float tail = detail::scalar::max_abs_f32(x + i, n - i);
    const float m = detail::hmax(xsimd::max(m0, m1));
    return (tail != tail || tail > m) ? tail : m;
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
