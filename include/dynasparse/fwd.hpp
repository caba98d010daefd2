// SPDX-License-Identifier: Apache-2.0
// Forward declarations of the public types (cheap to include in headers of user code).
#pragma once

#include <cstdint>

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
enum class DType : std::uint8_t;
namespace simd {
struct ScalarArch;
}  // namespace simd
namespace io {
class SafetensorsFile;
class SafetensorsWriter;
}  // namespace io
namespace quant {
class DenseI8;
class Calibrator;
class Observer;
}  // namespace quant
namespace sparse {
class GroupSparseF32;
class GroupSparseI8;
}  // namespace sparse
class Model;
class Session;
struct ModelConfig;
namespace nn {
class AnyLinear;
class KVCache;
template <class LinearT>
class GatedAttention;
class DenseF32;
template <class Format>
class Linear;
}  // namespace nn
DYNASPARSE_NAMESPACE_END
