// SPDX-License-Identifier: Apache-2.0
// AArch64 int8 dot products: plain NEON and the ARMv8.2 dotprod extension.
//
// Plain NEON: smull/smlal2 form s16 products of 8 lanes and add the high half's products to
// them (two products per s16 lane: at most 2 * 127 * 127 = 32258, exact for [-127, 127];
// two products of -128 * -128 would wrap, outside the contract), then sadalp pairwise-adds
// into s32 lanes. dotprod: sdot adds four s8 x s8 products into each s32 lane with no
// intermediate narrowing, exact for every int8 input. Accumulator: s32, exact while
// n <= 131072. Bit-exact with detail/scalar/dot_int8.hpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/simd/detail/scalar/dot_int8.hpp"

#if DYNASPARSE_HAS_NEON
#include <arm_neon.h>
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::neon {

std::int32_t dot_s8s8_s32(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept;
std::int32_t dot_s8s8_s32_sdot(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept;

#if DYNASPARSE_HAS_NEON
inline std::int32_t dot_s8s8_s32(const std::int8_t* a, const std::int8_t* b,
                                 std::size_t n) noexcept {
  int32x4_t acc0 = vdupq_n_s32(0), acc1 = vdupq_n_s32(0);
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const int8x16_t a0 = vld1q_s8(a + i), b0 = vld1q_s8(b + i);
    const int8x16_t a1 = vld1q_s8(a + i + 16), b1 = vld1q_s8(b + i + 16);
    acc0 = vpadalq_s16(acc0, vmlal_high_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(b0)), a0, b0));
    acc1 = vpadalq_s16(acc1, vmlal_high_s8(vmull_s8(vget_low_s8(a1), vget_low_s8(b1)), a1, b1));
  }
  for (; i + 16 <= n; i += 16) {
    const int8x16_t a0 = vld1q_s8(a + i), b0 = vld1q_s8(b + i);
    acc0 = vpadalq_s16(acc0, vmlal_high_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(b0)), a0, b0));
  }
  return vaddvq_s32(vaddq_s32(acc0, acc1)) + scalar::dot_s8s8_s32(a + i, b + i, n - i);
}
#endif

#if DYNASPARSE_HAS_NEON_DOTPROD
inline std::int32_t dot_s8s8_s32_sdot(const std::int8_t* a, const std::int8_t* b,
                                      std::size_t n) noexcept {
  int32x4_t acc0 = vdupq_n_s32(0), acc1 = vdupq_n_s32(0);
  int32x4_t acc2 = vdupq_n_s32(0), acc3 = vdupq_n_s32(0);
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = vdotq_s32(acc0, vld1q_s8(a + i), vld1q_s8(b + i));
    acc1 = vdotq_s32(acc1, vld1q_s8(a + i + 16), vld1q_s8(b + i + 16));
    acc2 = vdotq_s32(acc2, vld1q_s8(a + i + 32), vld1q_s8(b + i + 32));
    acc3 = vdotq_s32(acc3, vld1q_s8(a + i + 48), vld1q_s8(b + i + 48));
  }
  for (; i + 16 <= n; i += 16) acc0 = vdotq_s32(acc0, vld1q_s8(a + i), vld1q_s8(b + i));
  const int32x4_t acc = vaddq_s32(vaddq_s32(acc0, acc1), vaddq_s32(acc2, acc3));
  return vaddvq_s32(acc) + scalar::dot_s8s8_s32(a + i, b + i, n - i);
}
#endif

}  // namespace simd::detail::neon
DYNASPARSE_NAMESPACE_END
