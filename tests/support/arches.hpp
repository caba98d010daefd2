// SPDX-License-Identifier: Apache-2.0
// GoogleTest type lists of every architecture this build can run, so each kernel is checked
// on all of them: the scalar reference, the default arch, and narrower vector arches the
// same machine supports (AVX2 and SSE2 on an AVX-512 build).
#pragma once

#include <gtest/gtest.h>

#include "dynasparse/simd/arch.hpp"

namespace dynasparse_test {

namespace simd = dynasparse::simd;

#if defined(DYNASPARSE_FORCE_SCALAR)
using FloatArches = ::testing::Types<simd::ScalarArch>;
#elif DYNASPARSE_HAS_AVX512BW
using FloatArches =
    ::testing::Types<simd::ScalarArch, xsimd::avx512bw, xsimd::fma3<xsimd::avx2>, xsimd::sse2>;
#elif DYNASPARSE_HAS_AVX2
using FloatArches = ::testing::Types<simd::ScalarArch, simd::arch, xsimd::sse2>;
#elif DYNASPARSE_HAS_NEON
using FloatArches = ::testing::Types<simd::ScalarArch, xsimd::neon64>;
#elif DYNASPARSE_HAS_SSE2
// The x86-64 baseline build (no -march): its own float path.
using FloatArches = ::testing::Types<simd::ScalarArch, xsimd::sse2>;
#else
using FloatArches = ::testing::Types<simd::ScalarArch>;
#endif

template <class List>
struct ToGtestTypes;
template <class... As>
struct ToGtestTypes<simd::ArchList<As...>> {
  using type = ::testing::Types<As...>;
};

/// Every int8 path compiled into this build.
using Int8Arches = typename ToGtestTypes<simd::compiled_int8_archs>::type;

/// Names typed tests after the arch (`SimdExp/avx512bw.…`).
struct ArchNames {
  template <class A>
  static std::string GetName(int) {
    std::string n = A::name();
    for (char& c : n) {
      if (c == '+') c = '_';
    }
    return n;
  }
};

}  // namespace dynasparse_test
