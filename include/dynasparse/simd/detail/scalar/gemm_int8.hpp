// SPDX-License-Identifier: Apache-2.0
// Scalar reference of the int8 GEMM (simd/gemm_int8.hpp).
//
// Contract: C[m][n] = sum_k A[m][k] * W[n][k] in int32, exactly (W stored as nn.Linear
// stores weights: [N, K] row-major). Strides in elements. Exact while K * 127 * 127 < 2^31.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/simd/detail/scalar/dot_int8.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

inline void gemm_s8s8_s32(const std::int8_t* a, std::size_t lda, const std::int8_t* w,
                          std::size_t ldw, std::int32_t* c, std::size_t ldc, std::size_t m,
                          std::size_t n, std::size_t k) noexcept {
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) c[i * ldc + j] = dot_s8s8_s32(a + i * lda, w + j * ldw, k);
  }
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
