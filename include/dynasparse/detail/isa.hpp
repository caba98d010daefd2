// SPDX-License-Identifier: Apache-2.0
// The one place that reads the compiler's ISA macros; everything else asks DYNASPARSE_HAS_*.
#pragma once

// DYNASPARSE_FORCE_SCALAR turns every vector path off, so the scalar references run
// everywhere (the CI's scalar job, and a debugging aid for users).
#if defined(DYNASPARSE_FORCE_SCALAR)
#define DYNASPARSE_HAS_SSE2 0
#define DYNASPARSE_HAS_AVX2 0
#define DYNASPARSE_HAS_AVX512BW 0
#define DYNASPARSE_HAS_AVX512VNNI 0
#define DYNASPARSE_HAS_AVXVNNI 0
#define DYNASPARSE_HAS_NEON 0
#define DYNASPARSE_HAS_NEON_DOTPROD 0
#define DYNASPARSE_HAS_I8MM 0
#else
#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#define DYNASPARSE_HAS_SSE2 1
#else
#define DYNASPARSE_HAS_SSE2 0
#endif
#if defined(__AVX2__)
#define DYNASPARSE_HAS_AVX2 1
#else
#define DYNASPARSE_HAS_AVX2 0
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define DYNASPARSE_HAS_AVX512BW 1
#else
#define DYNASPARSE_HAS_AVX512BW 0
#endif
#if DYNASPARSE_HAS_AVX512BW && defined(__AVX512VNNI__)
#define DYNASPARSE_HAS_AVX512VNNI 1
#else
#define DYNASPARSE_HAS_AVX512VNNI 0
#endif
#if defined(__AVXVNNI__) && DYNASPARSE_HAS_AVX2
#define DYNASPARSE_HAS_AVXVNNI 1
#else
#define DYNASPARSE_HAS_AVXVNNI 0
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#define DYNASPARSE_HAS_NEON 1
#else
#define DYNASPARSE_HAS_NEON 0
#endif
#if DYNASPARSE_HAS_NEON && defined(__ARM_FEATURE_DOTPROD)
#define DYNASPARSE_HAS_NEON_DOTPROD 1
#else
#define DYNASPARSE_HAS_NEON_DOTPROD 0
#endif
#if DYNASPARSE_HAS_NEON && defined(__ARM_FEATURE_MATMUL_INT8)
#define DYNASPARSE_HAS_I8MM 1
#else
#define DYNASPARSE_HAS_I8MM 0
#endif
#endif

// The float SIMD family as xsimd::default_arch resolves it for these flags; used in the
// inline namespace and in build_info() (simd/arch.hpp checks the two agree).
#if defined(DYNASPARSE_FORCE_SCALAR)
#define DYNASPARSE_ISA_TAG scalar
#elif DYNASPARSE_HAS_AVX512BW
#define DYNASPARSE_ISA_TAG avx512bw
#elif DYNASPARSE_HAS_AVX2 && defined(__FMA__)
#define DYNASPARSE_ISA_TAG avx2
#elif DYNASPARSE_HAS_NEON
#define DYNASPARSE_ISA_TAG neon64
#elif DYNASPARSE_HAS_SSE2
#define DYNASPARSE_ISA_TAG sse2
#else
#define DYNASPARSE_ISA_TAG generic
#endif

// The int8 dot-product extension the int8 kernels use.
#if DYNASPARSE_HAS_AVX512VNNI
#define DYNASPARSE_INT8_TAG avx512vnni
#elif DYNASPARSE_HAS_AVXVNNI
#define DYNASPARSE_INT8_TAG avxvnni
#elif DYNASPARSE_HAS_NEON_DOTPROD
#define DYNASPARSE_INT8_TAG dotprod
#else
#define DYNASPARSE_INT8_TAG none
#endif

// The inline-asm operand constraint naming a vector register, where the compiler takes
// GCC-style asm; simd::keep_in_register uses it. Undefined elsewhere.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DYNASPARSE_VECTOR_REGISTER_CONSTRAINT "+v"
#elif defined(__GNUC__) && defined(__aarch64__)
#define DYNASPARSE_VECTOR_REGISTER_CONSTRAINT "+w"
#endif

// A spin-wait hint (x86 `pause`, AArch64 `yield`): it lets a sibling hyperthread run and
// saves power while a thread polls a flag another core will set. Nothing elsewhere.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DYNASPARSE_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__GNUC__) && defined(__aarch64__)
#define DYNASPARSE_CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define DYNASPARSE_CPU_RELAX() ((void)0)
#endif
