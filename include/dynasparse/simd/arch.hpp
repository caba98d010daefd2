// SPDX-License-Identifier: Apache-2.0
// The SIMD architecture chosen at compile time, the int8 dot-product path, and their names.
#pragma once

#include <cstddef>
#include <type_traits>

#include "dynasparse/config.hpp"

// Included even with DYNASPARSE_FORCE_SCALAR: the vector branches of every kernel must still
// parse (they are discarded by `if constexpr`, not removed by the preprocessor).
#include <xsimd/xsimd.hpp>

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// Architecture tag of the scalar references: every kernel's oracle, tail handler and the
/// path of DYNASPARSE_FORCE_SCALAR builds. Works on any compiler and target.
struct ScalarArch {
  static constexpr const char* name() noexcept { return "scalar"; }
};

/// True for ScalarArch: kernels route it to their simd/detail/scalar/ reference.
template <class Arch>
inline constexpr bool is_scalar_arch_v = std::is_same_v<Arch, ScalarArch>;

#if defined(DYNASPARSE_SIMD_ARCH)
/// The float architecture every kernel uses by default (user override).
using arch = DYNASPARSE_SIMD_ARCH;
#elif defined(DYNASPARSE_FORCE_SCALAR)
using arch = ScalarArch;
#else
/// The float architecture every kernel uses by default: xsimd's best for the compiler flags,
/// or ScalarArch when xsimd finds none.
using arch = std::conditional_t<std::is_same_v<xsimd::default_arch, xsimd::unavailable>,
                                ScalarArch, xsimd::default_arch>;
#endif

/// Float lanes per vector of Arch (1 for ScalarArch).
template <class Arch>
constexpr std::size_t lanes_f32() noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return 1;
  } else {
    return xsimd::batch<float, Arch>::size;
  }
}

/// Vector registers Arch names (x86 before AVX-512 has 16; AVX-512 and AArch64 have 32);
/// kernels size their register tiles by it so that AVX2 builds do not spill.
template <class Arch>
constexpr std::size_t vector_registers() noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return 16;
  } else {
    // Both tags are declared on every target, whether or not it can run them.
    return std::is_base_of_v<xsimd::avx512f, Arch> || std::is_base_of_v<xsimd::neon64, Arch> ? 32
                                                                                             : 16;
  }
}

/// Makes the compiler hold v in a vector register from here on. GCC otherwise folds a
/// loaded vector into every instruction that uses it as a memory operand, so a vector that
/// feeds four FMAs is loaded four times and a register-tiled kernel becomes load-bound.
/// No instruction is emitted.
template <class B>
inline void keep_in_register(B& v) noexcept {
#if defined(DYNASPARSE_VECTOR_REGISTER_CONSTRAINT)
  asm("" : DYNASPARSE_VECTOR_REGISTER_CONSTRAINT(v.data));
#else
  (void)v;
#endif
}

// Int8 dot-product paths. xsimd has no int8 dot product, so these are our own tags; each
// names the instruction family its kernels use.
/// Plain C++ loop; the oracle of the int8 kernels.
struct I8Scalar {
  static constexpr const char* name() noexcept { return "scalar"; }
};
/// AVX2: the dot, GEMM and sparse kernels use `vpsignb` + `vpmaddubsw` + `vpmaddwd`
/// (16-bit pair sums, exact for weights in [-127, 127]).
struct I8Avx2 {
  static constexpr const char* name() noexcept { return "avx2"; }
};
/// 256-bit `vpdpbusd`: AVX-VNNI, or AVX512-VNNI with AVX512VL.
struct I8Vnni256 {
  static constexpr const char* name() noexcept { return "vnni256"; }
};
/// 512-bit `vpdpbusd` (AVX512-VNNI).
struct I8Vnni512 {
  static constexpr const char* name() noexcept { return "avx512vnni"; }
};
/// AArch64 NEON `smull` + `sadalp` (no dot-product extension).
struct I8Neon {
  static constexpr const char* name() noexcept { return "neon"; }
};
/// AArch64 `sdot` (ARMv8.2 dotprod).
struct I8NeonDot {
  static constexpr const char* name() noexcept { return "dotprod"; }
};

/// A list of architecture tags (for tests and benchmarks that run every compiled path).
template <class... Archs>
struct ArchList {};

#if DYNASPARSE_HAS_AVX512VNNI
using int8_arch = I8Vnni512;
using compiled_int8_archs = ArchList<I8Scalar, I8Avx2, I8Vnni256, I8Vnni512>;
#elif DYNASPARSE_HAS_AVXVNNI
using int8_arch = I8Vnni256;
using compiled_int8_archs = ArchList<I8Scalar, I8Avx2, I8Vnni256>;
#elif DYNASPARSE_HAS_AVX2
using int8_arch = I8Avx2;
using compiled_int8_archs = ArchList<I8Scalar, I8Avx2>;
#elif DYNASPARSE_HAS_NEON_DOTPROD
using int8_arch = I8NeonDot;
using compiled_int8_archs = ArchList<I8Scalar, I8Neon, I8NeonDot>;
#elif DYNASPARSE_HAS_NEON
using int8_arch = I8Neon;
using compiled_int8_archs = ArchList<I8Scalar, I8Neon>;
#else
/// The int8 path every int8 kernel uses by default: the best the compiler flags allow.
using int8_arch = I8Scalar;
/// Every int8 path this TU can run, scalar first.
using compiled_int8_archs = ArchList<I8Scalar>;
#endif

/// True where the int8 path has a native 4-way int8 dot product (VNNI, sdot).
inline constexpr bool has_int8_dot = DYNASPARSE_HAS_AVX512VNNI || DYNASPARSE_HAS_AVXVNNI ||
                                     DYNASPARSE_HAS_NEON_DOTPROD;
/// True where ARMv8.6 i8mm (`smmla`) is compiled in.
inline constexpr bool has_int8_mmla = DYNASPARSE_HAS_I8MM;

/// Name of the default float architecture, as build_info() reports it.
constexpr const char* arch_name() noexcept {
#define DYNASPARSE_ARCH_STR_(x) #x
#define DYNASPARSE_ARCH_STR(x) DYNASPARSE_ARCH_STR_(x)
  return DYNASPARSE_ARCH_STR(DYNASPARSE_ISA_TAG);
#undef DYNASPARSE_ARCH_STR
#undef DYNASPARSE_ARCH_STR_
}

/// Name of the default int8 path.
constexpr const char* int8_arch_name() noexcept { return int8_arch::name(); }

}  // namespace simd
DYNASPARSE_NAMESPACE_END
