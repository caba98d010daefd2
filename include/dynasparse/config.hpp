// SPDX-License-Identifier: Apache-2.0
// Feature switches and the versioned inline namespace that makes TUs built with
// different ISA or exception settings fail to link instead of silently mixing.
#pragma once

#include "dynasparse/detail/isa.hpp"
#include "dynasparse/version.hpp"

// Exceptions follow the compiler unless the user turns them off explicitly.
#if defined(DYNASPARSE_NO_EXCEPTIONS)
#define DYNASPARSE_HAS_EXCEPTIONS 0
#elif defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define DYNASPARSE_HAS_EXCEPTIONS 1
#else
#define DYNASPARSE_HAS_EXCEPTIONS 0
#endif

#if DYNASPARSE_HAS_EXCEPTIONS
#define DYNASPARSE_EXC_TAG
#else
#define DYNASPARSE_EXC_TAG _noexc
#endif

#define DYNASPARSE_CONCAT5_(a, b, c, d, e) a##b##c##d##e
#define DYNASPARSE_CONCAT5(a, b, c, d, e) DYNASPARSE_CONCAT5_(a, b, c, d, e)
#define DYNASPARSE_CONCAT7_(a, b, c, d, e, f, g) a##b##c##d##e##f##g
#define DYNASPARSE_CONCAT7(a, b, c, d, e, f, g) DYNASPARSE_CONCAT7_(a, b, c, d, e, f, g)

/// The inline namespace, e.g. `v0_1_avx512bw_avx512vnni`.
#define DYNASPARSE_ABI_NAMESPACE                                                        \
  DYNASPARSE_CONCAT7(v, DYNASPARSE_VERSION_MAJOR, _, DYNASPARSE_VERSION_MINOR,          \
                     DYNASPARSE_CONCAT5(_, DYNASPARSE_ISA_TAG, _, DYNASPARSE_INT8_TAG, ), \
                     DYNASPARSE_EXC_TAG, )

#define DYNASPARSE_NAMESPACE_BEGIN        \
  namespace dynasparse {                  \
  inline namespace DYNASPARSE_ABI_NAMESPACE {
#define DYNASPARSE_NAMESPACE_END \
  }                              \
  }

/// Unrolls the next loop n times (whole, when its trip count is a constant <= n). The
/// register-tiled kernels index arrays of vector accumulators by loop counters: unless those
/// loops are unrolled whole, GCC at -O2 (CMake's RelWithDebInfo) keeps the accumulators in
/// memory and the kernels run 2-3x slower than at -O3.
#define DYNASPARSE_PRAGMA_(x) _Pragma(#x)
#if defined(__GNUC__) || defined(__clang__)
#define DYNASPARSE_UNROLL(n) DYNASPARSE_PRAGMA_(GCC unroll n)
#else
#define DYNASPARSE_UNROLL(n)
#endif

/// Compiled mode. With DYNASPARSE_COMPILED defined (linking the CMake target
/// dynasparse::compiled defines it), model/model.hpp, parallel/shard.hpp and
/// parallel/executor.hpp only declare their classes' members, and src/model.cpp and
/// src/parallel.cpp compile them once for the program. A file that uses Model then compiles
/// in a fraction of the time. Both sides must be built with the same ISA flags: otherwise the
/// inline namespace above differs and the link fails.
#if defined(DYNASPARSE_COMPILED)
#define DYNASPARSE_COMPILED_INLINE
#else
#define DYNASPARSE_COMPILED_INLINE inline
#endif
