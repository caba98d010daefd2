# Options for dynasparse's own tests, benchmarks and examples (never for the library target,
# whose users choose their own flags).

set(DYNASPARSE_ARCH "native" CACHE STRING
  "Target of the tests, benchmarks and examples: native, baseline (x86-64, SSE2), avx2, avxvnni (AVX2 + AVX-VNNI), avx512, armv8, armv8-dotprod, scalar")
set_property(CACHE DYNASPARSE_ARCH PROPERTY STRINGS native baseline avx2 avxvnni avx512 armv8 armv8-dotprod scalar)

if(DYNASPARSE_ARCH STREQUAL "native")
  set(_dynasparse_arch_flags -march=native)
elseif(DYNASPARSE_ARCH STREQUAL "baseline")
  # What an application built without -march gets: SSE2 floats, scalar int8.
  set(_dynasparse_arch_flags -march=x86-64)
elseif(DYNASPARSE_ARCH STREQUAL "avx2")
  set(_dynasparse_arch_flags -march=x86-64-v3)
elseif(DYNASPARSE_ARCH STREQUAL "avxvnni")
  # The VEX-encoded 256-bit VNNI of Alder Lake and Zen 5 without AVX-512: the vnni256 int8 path.
  set(_dynasparse_arch_flags -march=x86-64-v3 -mavxvnni)
elseif(DYNASPARSE_ARCH STREQUAL "avx512")
  set(_dynasparse_arch_flags -march=x86-64-v4 -mavx512vnni)
elseif(DYNASPARSE_ARCH STREQUAL "armv8")
  set(_dynasparse_arch_flags -march=armv8-a)
elseif(DYNASPARSE_ARCH STREQUAL "armv8-dotprod")
  set(_dynasparse_arch_flags -march=armv8.2-a+dotprod)
elseif(DYNASPARSE_ARCH STREQUAL "scalar")
  set(_dynasparse_arch_flags "")
else()
  message(FATAL_ERROR "DYNASPARSE_ARCH: unknown value '${DYNASPARSE_ARCH}'; expected one of "
    "native, baseline, avx2, avxvnni, avx512, armv8, armv8-dotprod, scalar")
endif()

# dynasparse_configure_target(<target> [COMPILED]): arch flags, warnings, scalar forcing;
# COMPILED links dynasparse::compiled (Model's members compiled once) instead of the
# header-only target.
function(dynasparse_configure_target target)
  cmake_parse_arguments(PARSE_ARGV 1 _arg "COMPILED" "" "")
  target_compile_options(${target} PRIVATE ${_dynasparse_arch_flags})
  if(DYNASPARSE_ARCH STREQUAL "scalar")
    target_compile_definitions(${target} PRIVATE DYNASPARSE_FORCE_SCALAR)
  endif()
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    # -Wno-psabi: GCC notes about vector ABI changes across compiler versions are noise for
    # header-only code built with one compiler.
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Werror
      -Wno-psabi)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      # GCC 12's own AVX-512 intrinsic headers trip these (the `__Y = __Y` idiom behind
      # _mm512_undefined_*), and its stringop-overflow check misreads vectorized loops over
      # small heap buffers; both fixed in GCC 13.
      target_compile_options(${target} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized
        -Wno-stringop-overflow)
    endif()
  endif()
  if(_arg_COMPILED)
    target_link_libraries(${target} PRIVATE dynasparse::compiled)
  else()
    target_link_libraries(${target} PRIVATE dynasparse::dynasparse)
  endif()
endfunction()
