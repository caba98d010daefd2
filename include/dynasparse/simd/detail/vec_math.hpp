// SPDX-License-Identifier: Apache-2.0
// Batch-level activation functions on xsimd vectors, shared by the array kernels and by
// fused kernels (attention rows, FFN epilogues). Same limits as detail/scalar/math.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/scalar/math.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail {

/// exp(x) for the arguments of a max-subtracted softmax: x <= 0, -inf (gives 0) or NaN
/// (gives NaN). Within 1 ulp of std::exp on [-87, 0]; results below e^-87 (near the
/// smallest normal float) are flushed to 0. Positive x is outside the contract: skipping
/// xsimd::exp's overflow handling and its general underflow path is what makes this one a
/// fifth shorter, and softmax and attention spend a third of their time in exp.
template <class A>
inline xsimd::batch<float, A> vexp_nonpositive(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  using I = xsimd::batch<std::int32_t, A>;
  // x = n ln2 + f with |f| <= ln2 / 2: ln2 in two parts (Cody-Waite) so that n * ln2_hi is
  // exact for every n in range.
  const B n = xsimd::nearbyint(x * B(1.44269504088896341f));
  B f = xsimd::fnma(n, B(0.693359375f), x);
  f = xsimd::fnma(n, B(-2.12194440e-4f), f);
  // Degree-6 polynomial for exp(f) on [-ln2/2, ln2/2], fitted for relative error (the
  // constant and linear terms fixed at 1).
  B p(0.0013814520789310336f);
  p = xsimd::fma(p, f, B(0.008368710987269878f));
  p = xsimd::fma(p, f, B(0.04166838899254799f));
  p = xsimd::fma(p, f, B(0.1666652113199234f));
  p = xsimd::fma(p, f, B(0.4999999403953552f));
  p = xsimd::fma(p, f, B(1.0f));
  p = xsimd::fma(p, f, B(1.0f));
  // 2^n built in the exponent field; n >= -126 for x >= -87. For NaN x, p is NaN and so is
  // the product, whatever the conversion of n gave; for x < -87 (-inf included) the lanes
  // are replaced by 0.
  const I e = (xsimd::to_int(n) + I(127)) << 23;
  const B r = p * xsimd::bitwise_cast<B>(e);
  return xsimd::select(x < B(-87.0f), B(0.0f), r);
}

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

/// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), with 1 + erf written through erfc: with
/// z = |x| / sqrt 2, erfc(z) = exp(-z^2) Q(z / (1 + z)), Q a degree-12 polynomial fitted to
/// erfc(z) exp(z^2) on [0, 10] (minimax for relative error, coefficients fitted as floats:
/// under 1e-7 in double), and 1 + erf is erfc(z) for x < 0, 2 - erfc(z) otherwise. One
/// branch-free form for every x: no cancellation in the negative tail (1 - erf there), and
/// exp is vexp_nonpositive. Clamping z at 10 keeps z / (1 + z) finite for infinite x, where
/// erfc has flushed to 0 anyway. BM_SimdGelu/simd/4096 on the Zen 5, four interleaved
/// runs: 2144-2280 ns through xsimd::erf (two branches and its general exp), 1718-1854 ns
/// with this.
template <class A>
inline xsimd::batch<float, A> vgelu(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  // min(NaN, 10) may give 10; x's NaN still reaches y through the final product.
  const B z = xsimd::min(xsimd::abs(x) * B(0.70710678118654752440f), B(10.0f));
  const B u = z / (B(1.0f) + z) - B(0.45f);
  B q(-5.832816362e-01f);
  q = xsimd::fma(q, u, B(-4.974055663e-02f));
  q = xsimd::fma(q, u, B(5.538663268e-01f));
  q = xsimd::fma(q, u, B(3.172781765e-01f));
  q = xsimd::fma(q, u, B(-1.308229752e-02f));
  q = xsimd::fma(q, u, B(-2.011722773e-01f));
  q = xsimd::fma(q, u, B(-2.787949145e-01f));
  q = xsimd::fma(q, u, B(-1.587708145e-01f));
  q = xsimd::fma(q, u, B(1.429563910e-01f));
  q = xsimd::fma(q, u, B(4.139576256e-01f));
  q = xsimd::fma(q, u, B(2.202365845e-01f));
  q = xsimd::fma(q, u, B(-1.118042231e+00f));
  q = xsimd::fma(q, u, B(4.828825295e-01f));
  const B c = vexp_nonpositive<A>(-(z * z)) * q;  // erfc(z)
  const B y = B(0.5f) * x * xsimd::select(x < B(0.0f), c, B(2.0f) - c);
  // gelu(-inf) = 0, where the product is -inf * 0.
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
  // In registers, halves folded pairwise where the ISA has the shuffles: a running max over
  // stored lanes is a chain of w - 1 dependent compares (15 on AVX-512) that a decoding head and
  // a quantized row wait on.
#if DYNASPARSE_HAS_AVX512BW
  if constexpr (std::is_base_of_v<xsimd::avx512f, A>) return _mm512_reduce_max_ps(v);
#endif
#if DYNASPARSE_HAS_AVX2
  if constexpr (std::is_base_of_v<xsimd::avx2, A> && !std::is_base_of_v<xsimd::avx512f, A>) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
#endif
#if DYNASPARSE_HAS_NEON
  if constexpr (std::is_base_of_v<xsimd::neon64, A>) return vmaxvq_f32(v);
#endif
  alignas(64) float lanes[xsimd::batch<float, A>::size];
  v.store_aligned(lanes);
  float m = lanes[0];
  for (std::size_t j = 1; j < xsimd::batch<float, A>::size; ++j) m = lanes[j] > m ? lanes[j] : m;
  return m;
}

/// out[c] = (sum of the lanes of acc[c]) * scale for c < D: the D sums reduced together
/// (xsimd::haddp, AVX-512 vectors folded to AVX2 halves first) where D fills a vector,
/// instead of D separate horizontal sums. A decoding attention row ends with eight of them
/// at head_dim 8, a chain of about ten dependent shuffles and adds each.
template <class A, std::size_t D>
inline void hadd_columns(const xsimd::batch<float, A>* acc, float scale, float* out) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
#if DYNASPARSE_HAS_AVX512BW
  if constexpr (std::is_base_of_v<xsimd::avx512f, A> && D == 8) {
    using H = xsimd::batch<float, xsimd::avx2>;
    H half[8];
    for (std::size_t c = 0; c < 8; ++c) {
      // The 64-bit extract is AVX-512F; the 32x8 one would need DQ.
      const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[c]), 1));
      half[c] = H(_mm256_add_ps(_mm512_castps512_ps256(acc[c]), hi));
    }
    (xsimd::haddp(half) * H(scale)).store_unaligned(out);
    return;
  }
#endif
  if constexpr (D % w == 0 && w >= 4) {
    for (std::size_t c = 0; c < D; c += w)
      (xsimd::haddp(acc + c) * B(scale)).store_unaligned(out + c);
  } else {
    for (std::size_t c = 0; c < D; ++c) out[c] = xsimd::hadd(acc[c]) * scale;
  }
}

}  // namespace simd::detail
DYNASPARSE_NAMESPACE_END
