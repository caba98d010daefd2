// SPDX-License-Identifier: Apache-2.0
// Scalar references of the float reductions, axpy and the norms' elementwise steps
// (simd/reduce.hpp).
//
// Contract: lengths in elements; n = 0 gives the identity (0 for sums, -inf for max).
// Summation is sequential in index order; vector kernels sum in another order and match
// within a bound proportional to sum(|terms|) (tests/support/tolerances.hpp).
// max_f32 returns NaN if any element is NaN.
#pragma once

#include <cstddef>
#include <limits>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

inline float dot_f32(const float* a, const float* b, std::size_t n) noexcept {
  float s = 0.0f;
  for (std::size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

/// y[i] += alpha * x[i].
inline void axpy_f32(float alpha, const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

/// y[i] = x[i] + c; y may be x.
inline void add_scalar_f32(const float* x, float c, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = x[i] + c;
}

/// y[i] = x[i] * s * w[i] + b[i] (no b when null), left to right (the compiler may fuse
/// the add of b); y may be x.
inline void scale_mul_add_f32(const float* x, float s, const float* w, const float* b, float* y,
                              std::size_t n) noexcept {
  if (b == nullptr) {
    for (std::size_t i = 0; i < n; ++i) y[i] = x[i] * s * w[i];
  } else {
    for (std::size_t i = 0; i < n; ++i) y[i] = x[i] * s * w[i] + b[i];
  }
}

inline float sum_f32(const float* x, std::size_t n) noexcept {
  float s = 0.0f;
  for (std::size_t i = 0; i < n; ++i) s += x[i];
  return s;
}

inline float max_f32(const float* x, std::size_t n) noexcept {
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
  for (std::size_t i = 0; i < n; ++i) {
    nan |= x[i] != x[i];
    m = x[i] > m ? x[i] : m;
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

/// max_i |x[i]|; 0 for n = 0; NaN if any element is NaN (+inf for infinities, naturally).
inline float max_abs_f32(const float* x, std::size_t n) noexcept {
  float m = 0.0f;
  bool nan = false;
  for (std::size_t i = 0; i < n; ++i) {
    const float a = x[i] < 0.0f ? -x[i] : x[i];
    nan |= x[i] != x[i];
    m = a > m ? a : m;
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
