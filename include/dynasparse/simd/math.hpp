// SPDX-License-Identifier: Apache-2.0
// Element-wise activations over float arrays: exp, sigmoid, tanh, GELU (erf), SiLU.
#pragma once

#include <cstddef>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/math.hpp"
#include "dynasparse/simd/detail/vec_math.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

// Each kernel: y[i] = f(x[i]) for i < n (elements); x and y may be the same array but must
// not otherwise overlap; no alignment needed. Accuracy against the scalar reference (the C
// library) is stated in tests/support/tolerances.hpp; limits at +-inf and NaN are those of
// simd/detail/scalar/math.hpp.

/// y = exp(x). Overflows to +inf above ~88.72, underflows to 0 below ~-103.
template <class Arch = arch>
inline void exp_f32(const float* x, float* y, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::exp_f32(x, y, n);
  } else {
    detail::map_f32<Arch>(
        x, y, n, [](const auto& v) { return xsimd::exp(v); },
        [](float v) { return detail::scalar::exp(v); });
  }
}

/// y = 1 / (1 + exp(-x)).
template <class Arch = arch>
inline void sigmoid_f32(const float* x, float* y, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::sigmoid_f32(x, y, n);
  } else {
    detail::map_f32<Arch>(
        x, y, n, [](const auto& v) { return detail::vsigmoid(v); },
        [](float v) { return detail::scalar::sigmoid(v); });
  }
}

/// y = tanh(x).
template <class Arch = arch>
inline void tanh_f32(const float* x, float* y, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::tanh_f32(x, y, n);
  } else {
    detail::map_f32<Arch>(
        x, y, n, [](const auto& v) { return xsimd::tanh(v); },
        [](float v) { return detail::scalar::tanh(v); });
  }
}

/// y = x * sigmoid(x) (SiLU / swish); silu(-inf) = 0.
template <class Arch = arch>
inline void silu_f32(const float* x, float* y, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::silu_f32(x, y, n);
  } else {
    detail::map_f32<Arch>(
        x, y, n, [](const auto& v) { return detail::vsilu(v); },
        [](float v) { return detail::scalar::silu(v); });
  }
}

/// y = 0.5 x (1 + erf(x / sqrt 2)), PyTorch's exact GELU; gelu(-inf) = 0.
template <class Arch = arch>
inline void gelu_f32(const float* x, float* y, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::gelu_f32(x, y, n);
  } else {
    detail::map_f32<Arch>(
        x, y, n, [](const auto& v) { return detail::vgelu(v); },
        [](float v) { return detail::scalar::gelu(v); });
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
