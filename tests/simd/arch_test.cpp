// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/arch.hpp"

#include <gtest/gtest.h>

#include <string>

#include "dynasparse/core/build_info.hpp"

namespace {

namespace simd = dynasparse::simd;

// The ISA tag (from compiler macros, used in the ABI namespace and build_info) must name the
// architecture xsimd actually chose, or two differently-built TUs could share a namespace.
TEST(SimdArch, TagAgreesWithChosenArchitecture) {
  const std::string tag = simd::arch_name();
  const std::string chosen = simd::arch::name();
  if (tag == "avx512bw") {
    EXPECT_EQ(chosen, "avx512bw");
  } else if (tag == "avx2") {
    EXPECT_EQ(chosen, "fma3+avx2");
  } else if (tag == "neon64") {
    EXPECT_EQ(chosen, "arm64+neon");
  } else if (tag == "scalar") {
    EXPECT_EQ(chosen, "scalar");
  } else {
    EXPECT_EQ(chosen, tag);
  }
}

TEST(SimdArch, BuildInfoNamesArchitectureAndInt8Path) {
  const std::string info = dynasparse::build_info();
  EXPECT_NE(info.find(std::string("simd=") + simd::arch_name()), std::string::npos) << info;
  EXPECT_NE(info.find(std::string("threads=") + dynasparse::threading_backend()), std::string::npos);
  EXPECT_EQ(info.rfind("dynasparse " DYNASPARSE_VERSION_STRING " ", 0), 0u) << info;
#if defined(DYNASPARSE_FORCE_SCALAR)
  EXPECT_NE(info.find("int8=none"), std::string::npos) << info;
  EXPECT_EQ(simd::lanes_f32<simd::arch>(), 1u);
#endif
}

TEST(SimdArch, LanesMatchVectorWidth) {
  EXPECT_EQ(simd::lanes_f32<simd::ScalarArch>(), 1u);
#if DYNASPARSE_HAS_AVX512BW
  EXPECT_EQ(simd::lanes_f32<simd::arch>(), 16u);
#elif DYNASPARSE_HAS_NEON
  EXPECT_EQ(simd::lanes_f32<simd::arch>(), 4u);
#endif
}

}  // namespace
