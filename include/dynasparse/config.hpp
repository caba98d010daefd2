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
