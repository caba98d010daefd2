// SPDX-License-Identifier: Apache-2.0
// Scalar reference of the row softmax (simd/softmax.hpp).
//
// Contract: y = exp(x - max(x)) / sum(exp(x - max(x))) over one row of n elements; x and y
// may alias. Max subtraction keeps exp in range for any finite row. As in PyTorch, a row
// containing NaN or +inf, or made only of -inf, gives NaN everywhere. n = 0 does nothing.
#pragma once

#include <cmath>
#include <cstddef>

#include "dynasparse/simd/detail/scalar/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

inline void softmax_f32(const float* x, float* y, std::size_t n) noexcept {
  if (n == 0) return;
  const float m = max_f32(x, n);
  float s = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - m);
    s += y[i];
  }
  const float inv = 1.0f / s;
  for (std::size_t i = 0; i < n; ++i) y[i] *= inv;
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
