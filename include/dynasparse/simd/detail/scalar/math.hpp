// SPDX-License-Identifier: Apache-2.0
// Scalar references of the element-wise activation kernels (simd/math.hpp).
//
// Contract: y[i] = f(x[i]) for i < n; x and y may be the same array (not otherwise
// overlapping). Each f follows the C library (std::exp, std::tanh, std::erfc) so these are the
// accuracy oracle; the vector kernels match them within tests/support/tolerances.hpp.
// Limits: sigmoid(-inf) = 0, sigmoid(+inf) = 1; silu(-inf) = gelu(-inf) = 0 (the
// mathematical limit, where the naive formula gives -inf * 0 = NaN); NaN propagates.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

inline float exp(float x) noexcept { return std::exp(x); }
inline float sigmoid(float x) noexcept { return 1.0f / (1.0f + std::exp(-x)); }
inline float tanh(float x) noexcept { return std::tanh(x); }
inline float silu(float x) noexcept {
  return x == -std::numeric_limits<float>::infinity() ? 0.0f : x * sigmoid(x);
}
/// Exact (erf) GELU, PyTorch's default `approximate='none'`, with 1 + erf(x / sqrt 2) as
/// erfc(-x / sqrt 2): 1 + erf cancels below x = -5 (57% off at -5.5, 0 from -6 on), erfc
/// does not, and the vector kernel computes the same form.
inline float gelu(float x) noexcept {
  constexpr float inv_sqrt2 = 0.70710678118654752440f;
  return x == -std::numeric_limits<float>::infinity() ? 0.0f : 0.5f * x * std::erfc(-x * inv_sqrt2);
}

inline void exp_f32(const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = exp(x[i]);
}
inline void sigmoid_f32(const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]);
}
inline void tanh_f32(const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = tanh(x[i]);
}
inline void silu_f32(const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = silu(x[i]);
}
inline void gelu_f32(const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = gelu(x[i]);
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
