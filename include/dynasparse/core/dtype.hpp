// SPDX-License-Identifier: Apache-2.0
// Element types of stored tensors (the safetensors set), their sizes and names, and the
// bit-exact half-precision to float conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <type_traits>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// Element type of a stored tensor. The names match the safetensors `dtype` strings; all
/// are little-endian in files. F16 is IEEE binary16, BF16 the upper half of a binary32.
enum class DType : std::uint8_t { F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL };

/// Every DType, in declaration order (for tests and tables).
inline constexpr DType all_dtypes[] = {DType::F32, DType::F16, DType::BF16, DType::F64,
                                       DType::I8,  DType::U8,  DType::I16,  DType::I32,
                                       DType::I64, DType::BOOL};

/// Bytes per element: 1, 2, 4 or 8.
constexpr std::size_t size_of(DType t) noexcept {
  switch (t) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 0;  // unreachable for valid enumerators
}

/// The safetensors name: "F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL".
constexpr std::string_view dtype_name(DType t) noexcept {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::F64:
      return "F64";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::I16:
      return "I16";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::BOOL:
      return "BOOL";
  }
  return "?";
}

/// The DType named `name` (exact, case-sensitive safetensors spelling), or nullopt.
constexpr std::optional<DType> parse_dtype(std::string_view name) noexcept {
  for (DType t : all_dtypes) {
    if (dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

/// `dtype_of<T>` is the DType stored as C++ type T (float, double, std::int8_t, std::uint8_t,
/// std::int16_t, std::int32_t, std::int64_t, bool). F16 and BF16 have no C++ type: read them
/// as raw bytes or convert them with f16_to_f32() / bf16_to_f32().
template <class T>
struct DTypeOf {};
template <>
struct DTypeOf<float> : std::integral_constant<DType, DType::F32> {};
template <>
struct DTypeOf<double> : std::integral_constant<DType, DType::F64> {};
template <>
struct DTypeOf<std::int8_t> : std::integral_constant<DType, DType::I8> {};
template <>
struct DTypeOf<std::uint8_t> : std::integral_constant<DType, DType::U8> {};
template <>
struct DTypeOf<std::int16_t> : std::integral_constant<DType, DType::I16> {};
template <>
struct DTypeOf<std::int32_t> : std::integral_constant<DType, DType::I32> {};
template <>
struct DTypeOf<std::int64_t> : std::integral_constant<DType, DType::I64> {};
template <>
struct DTypeOf<bool> : std::integral_constant<DType, DType::BOOL> {};

namespace detail {
template <class T, class = void>
struct HasDType : std::false_type {};
template <class T>
struct HasDType<T, std::void_t<decltype(DTypeOf<T>::value)>> : std::true_type {};
}  // namespace detail

/// True when T (cv-qualifiers ignored) has a DType.
template <class T>
inline constexpr bool has_dtype_v = detail::HasDType<std::remove_cv_t<T>>::value;

/// The DType of T (cv-qualifiers ignored); ill-formed if T has none.
template <class T>
inline constexpr DType dtype_of = DTypeOf<std::remove_cv_t<T>>::value;

static_assert(sizeof(float) == 4 && sizeof(double) == 8 && sizeof(bool) == 1,
              "stored tensors assume 4-byte float, 8-byte double and 1-byte bool");

/// IEEE binary16 bits to float, exact for every input: zeros keep their sign, subnormals
/// (down to 2^-24) become normal floats, infinities stay infinite and NaNs stay NaN with
/// their payload shifted into the float's mantissa (quiet bit preserved).
inline float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1Fu;
  std::uint32_t mantissa = h & 0x3FFu;
  std::uint32_t bits;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal: mantissa * 2^-24. Shift the leading one into the implicit-bit position;
    // each shift lowers the exponent by one, starting from that of 2^-14.
    exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// bfloat16 bits to float (exact: bfloat16 is the upper half of a binary32).
inline float bf16_to_f32(std::uint16_t b) noexcept {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

DYNASPARSE_NAMESPACE_END
