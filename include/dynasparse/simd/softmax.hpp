// SPDX-License-Identifier: Apache-2.0
// Numerically safe (max-subtracted) softmax of one row.
#pragma once

#include <cstddef>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/softmax.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// y = exp(x - max x) / sum exp(x - max x) over n elements; x and y may alias. Three passes
/// (max; exp and sum; scale). Rows with NaN or +inf, or only -inf, become NaN, as in
/// PyTorch. Matches the scalar reference within tests/support/tolerances.hpp.
template <class Arch = arch>
inline void softmax_f32(const float* x, float* y, std::size_t n) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::softmax_f32(x, y, n);
  } else {
    if (n == 0) return;
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t w = B::size;
    const float m = max_f32<Arch>(x, n);
    const B vm(m);
    B s0(0.0f), s1(0.0f);
    std::size_t i = 0;
    for (; i + 2 * w <= n; i += 2 * w) {
      const B e0 = detail::vexp_nonpositive<Arch>(B::load_unaligned(x + i) - vm);
      const B e1 = detail::vexp_nonpositive<Arch>(B::load_unaligned(x + i + w) - vm);
      e0.store_unaligned(y + i);
      e1.store_unaligned(y + i + w);
      s0 += e0;
      s1 += e1;
    }
    for (; i + w <= n; i += w) {
      const B e = detail::vexp_nonpositive<Arch>(B::load_unaligned(x + i) - vm);
      e.store_unaligned(y + i);
      s0 += e;
    }
    float s = xsimd::hadd(s0 + s1);
    for (; i < n; ++i) {
      y[i] = detail::scalar::exp(x[i] - m);
      s += y[i];
    }
    const float inv = 1.0f / s;
    const std::size_t vec_end = n - n % w;
    for (std::size_t j = 0; j < vec_end; j += w) {
      (B::load_unaligned(y + j) * B(inv)).store_unaligned(y + j);
    }
    for (std::size_t j = vec_end; j < n; ++j) y[j] *= inv;
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
