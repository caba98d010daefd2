// SPDX-License-Identifier: Apache-2.0
// Batch-level activation functions on xsimd vectors, shared by the array kernels and by
// fused kernels (attention rows, FFN epilogues). Same limits as detail/scalar/math.hpp.
#pragma once

#include <cstddef>
#include <limits>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/math.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail {

template <class A>
inline xsimd::batch<float, A> vsigmoid(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  return B(1.0f) / (B(1.0f) + xsimd::exp(-x));
}

template <class A>
inline xsimd::batch<float, A> vsilu(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  const B y = x * vsigmoid(x);
  return xsimd::select(x == B(-std::numeric_limits<float>::infinity()), B(0.0f), y);
}

template <class A>
inline xsimd::batch<float, A> vgelu(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  const B y = B(0.5f) * x * (B(1.0f) + xsimd::erf(x * B(0.70710678118654752440f)));
  return xsimd::select(x == B(-std::numeric_limits<float>::infinity()), B(0.0f), y);
}

/// Applies `vop` to whole vectors of x and the scalar `sop` to the tail.
template <class A, class VecOp, class ScalarOp>
inline void map_f32(const float* x, float* y, std::size_t n, VecOp vop, ScalarOp sop) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
  std::size_t i = 0;
  for (; i + 2 * w <= n; i += 2 * w) {
    const B a = B::load_unaligned(x + i);
    const B b = B::load_unaligned(x + i + w);
    vop(a).store_unaligned(y + i);
    vop(b).store_unaligned(y + i + w);
  }
  for (; i + w <= n; i += w) vop(B::load_unaligned(x + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = sop(x[i]);
}

/// Largest lane; NaN lanes are handled by the caller.
template <class A>
inline float hmax(const xsimd::batch<float, A>& v) noexcept {
  alignas(64) float lanes[xsimd::batch<float, A>::size];
  v.store_aligned(lanes);
  float m = lanes[0];
  for (std::size_t j = 1; j < xsimd::batch<float, A>::size; ++j) m = lanes[j] > m ? lanes[j] : m;
  return m;
}

}  // namespace simd::detail
DYNASPARSE_NAMESPACE_END
