// SPDX-License-Identifier: Apache-2.0
// Scalar reference of the int8 dot product (simd/dot_int8.hpp).
//
// Contract: returns sum_i a[i] * b[i] accumulated in int32, exactly. Exact while
// n * 127 * 127 < 2^31, i.e. n <= 131072 for symmetric int8 data.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

inline std::int32_t dot_s8s8_s32(const std::int8_t* a, const std::int8_t* b,
                                 std::size_t n) noexcept {
  std::int32_t s = 0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<std::int32_t>(a[i]) * b[i];
  return s;
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
