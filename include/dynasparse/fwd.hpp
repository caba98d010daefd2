// SPDX-License-Identifier: Apache-2.0
// Forward declarations of the public types (cheap to include in headers of user code).
#pragma once

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
class Error;
class FormatError;
class ShapeError;
class ConfigError;
class UnsupportedError;
template <class T>
class AlignedBuffer;
template <class T>
class TensorView;
class Workspace;
namespace simd {
struct ScalarArch;
}  // namespace simd
DYNASPARSE_NAMESPACE_END
