// SPDX-License-Identifier: Apache-2.0
// The int8 x int8 -> int32 dot product, on the int8 path the compiler flags allow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/detail/arm_neon_dot_int8.hpp"
#include "dynasparse/simd/detail/scalar/dot_int8.hpp"
#include "dynasparse/simd/detail/x86_avx2_dot_int8.hpp"
#include "dynasparse/simd/detail/x86_vnni_dot_int8.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

namespace detail {
template <class>
inline constexpr bool dependent_false_v = false;
}  // namespace detail

/// sum_i a[i] * b[i] in int32, bit-exact with the scalar loop on every path.
/// Preconditions: a and b hold n elements (no alignment needed); values of b lie in
/// [-127, 127], the symmetric int8 range every quantizer here produces (a may be -128);
/// n <= 131072 so the int32 sum cannot overflow. I8Arch is one of the tags in
/// `compiled_int8_archs` (default: the best one).
template <class I8Arch = int8_arch>
inline std::int32_t dot_s8s8_s32(const std::int8_t* a, const std::int8_t* b,
                                 std::size_t n) noexcept {
  if constexpr (std::is_same_v<I8Arch, I8Scalar>) {
    return detail::scalar::dot_s8s8_s32(a, b, n);
  } else if constexpr (std::is_same_v<I8Arch, I8Avx2>) {
    return detail::avx2::dot_s8s8_s32(a, b, n);
  } else if constexpr (std::is_same_v<I8Arch, I8Vnni256>) {
    return detail::vnni::dot_s8s8_s32_256(a, b, n);
  } else if constexpr (std::is_same_v<I8Arch, I8Vnni512>) {
    return detail::vnni::dot_s8s8_s32_512(a, b, n);
  } else if constexpr (std::is_same_v<I8Arch, I8Neon>) {
    return detail::neon::dot_s8s8_s32(a, b, n);
  } else if constexpr (std::is_same_v<I8Arch, I8NeonDot>) {
    return detail::neon::dot_s8s8_s32_sdot(a, b, n);
  } else {
    static_assert(detail::dependent_false_v<I8Arch>, "dot_s8s8_s32: unknown int8 architecture tag");
    return 0;
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
