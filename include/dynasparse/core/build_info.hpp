// SPDX-License-Identifier: Apache-2.0
// build_info(): one line naming how this TU's copy of the library was compiled.
#pragma once

#include <string>

#include "dynasparse/config.hpp"
#include "dynasparse/core/threading.hpp"

#define DYNASPARSE_STR_(x) #x
#define DYNASPARSE_STR(x) DYNASPARSE_STR_(x)

DYNASPARSE_NAMESPACE_BEGIN

/// Name of the float SIMD path compiled in: "avx512bw", "avx2", "sse2", "neon64", "scalar".
constexpr const char* isa_name() noexcept { return DYNASPARSE_STR(DYNASPARSE_ISA_TAG); }

/// Name of the int8 dot-product extension: "avx512vnni", "avxvnni", "dotprod" or "none".
constexpr const char* int8_extension_name() noexcept {
  return DYNASPARSE_STR(DYNASPARSE_INT8_TAG);
}

/// e.g. `dynasparse 0.1.0 simd=avx512bw int8=avx512vnni threads=pool exceptions=on`.
/// Meant for application logs and bug reports.
inline std::string build_info() {
  std::string s = "dynasparse " DYNASPARSE_VERSION_STRING " simd=";
  s += isa_name();
  s += " int8=";
  s += int8_extension_name();
  s += " threads=";
  s += threading_backend();
  s += DYNASPARSE_HAS_EXCEPTIONS ? " exceptions=on" : " exceptions=off";
  return s;
}

DYNASPARSE_NAMESPACE_END
