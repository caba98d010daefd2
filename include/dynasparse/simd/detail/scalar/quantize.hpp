// SPDX-License-Identifier: Apache-2.0
// Scalar references of symmetric int8 row quantization (simd/quantize.hpp).
//
// Contract (bit-exact with the vector kernels):
//   quantize:   q[i] = clamp(nearbyint(x[i] * inv_scale), -127, 127), NaN -> 0, +-inf -> +-127,
//               rounding half to even (as torch.round and Python's round); never -128.
//               inv_scale = 127 / alpha, computed once by the caller.
//   dequantize: y[i] = float(q[i]) * scale, scale = alpha / 127.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

inline std::int8_t quantize_one(float x, float inv_scale) noexcept {
  float v = x * inv_scale;
  if (v != v) return 0;
  v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
  // The default rounding mode is round-to-nearest-even; nothing here changes it.
  return static_cast<std::int8_t>(std::nearbyint(v));
}

inline void quantize_f32s8(const float* x, std::int8_t* q, std::size_t n,
                           float inv_scale) noexcept {
  for (std::size_t i = 0; i < n; ++i) q[i] = quantize_one(x[i], inv_scale);
}

inline void dequantize_s8f32(const std::int8_t* q, float* y, std::size_t n, float scale) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<float>(q[i]) * scale;
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
