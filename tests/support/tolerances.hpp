// SPDX-License-Identifier: Apache-2.0
// Named error budgets of the float kernels against their scalar references, with the reason
// for each. Integer kernels have no budget: they must match bit for bit.
#pragma once

#include <cstddef>
#include <limits>

namespace dynasparse_test {

inline constexpr float kEps = std::numeric_limits<float>::epsilon();  // 1.19e-7
inline constexpr float kInf = std::numeric_limits<float>::infinity();
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// xsimd's exp is a Cody-Waite reduction plus a degree-5 polynomial, documented at 1-2 ulp;
// std::exp is correctly rounded or nearly. Allow 4 ulp relative on normal results, and an
// absolute slack around the subnormal range where relative precision thins out.
inline constexpr float kExpRel = 4 * kEps;
inline constexpr float kExpAbs = 1e-37f;

// simd::detail::vexp_nonpositive (softmax and attention): the same reduction with a
// degree-6 polynomial fitted for relative error, 0.6 ulp measured against double exp with
// FMA; two roundings per step where the arch has no FMA (SSE2) stay within 2 ulp.
inline constexpr float kExpNonpositiveRel = 2 * kEps;

// sigmoid = 1 / (1 + exp(-x)): the exp error plus one rounding for the add and one for the
// divide; SiLU multiplies by x (one more rounding).
inline constexpr float kSigmoidRel = 8 * kEps;
inline constexpr float kSigmoidAbs = 1e-37f;

// xsimd's tanh uses a rational approximation on |x| < 0.625 and an exp-based formula
// beyond; near zero the absolute error dominates.
inline constexpr float kTanhRel = 8 * kEps;
inline constexpr float kTanhAbs = 2 * kEps;

// GELU goes through xsimd's erf (a few ulp) and 1 + erf, which cancels for large negative
// x: there the result is tiny and only an absolute budget is meaningful.
inline constexpr float kGeluRel = 16 * kEps;
inline constexpr float kGeluAbs = 4 * kEps;

// Softmax: exp's 4 ulp, a sum of n terms in another order (relative n * eps at worst, but
// bounded by 1 here because terms are positive and the sum appears once), one divide.
inline constexpr float kSoftmaxRel = 16 * kEps;
inline constexpr float kSoftmaxAbs = 1e-37f;

/// Budget of a sum of n terms taken in another order: each partial sum may round once per
/// addition, so |s - s_ref| <= 2 n eps sum |t_i| (the factor 2 covers both orders).
inline float reordered_sum_budget(std::size_t n, float sum_abs) {
  return 2.0f * static_cast<float>(n + 1) * kEps * sum_abs + std::numeric_limits<float>::denorm_min();
}

}  // namespace dynasparse_test
