// SPDX-License-Identifier: Apache-2.0
// The library version; CMake parses the three macros below, so keep their form.
#pragma once

#define DYNASPARSE_VERSION_MAJOR 0
#define DYNASPARSE_VERSION_MINOR 1
#define DYNASPARSE_VERSION_PATCH 0

#define DYNASPARSE_VERSION_STRING_(a, b, c) #a "." #b "." #c
#define DYNASPARSE_VERSION_STRING_X_(a, b, c) DYNASPARSE_VERSION_STRING_(a, b, c)
/// "MAJOR.MINOR.PATCH" as a string literal.
#define DYNASPARSE_VERSION_STRING                                              \
  DYNASPARSE_VERSION_STRING_X_(DYNASPARSE_VERSION_MAJOR, DYNASPARSE_VERSION_MINOR, \
                               DYNASPARSE_VERSION_PATCH)
