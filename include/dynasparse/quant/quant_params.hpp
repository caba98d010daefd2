// SPDX-License-Identifier: Apache-2.0
// Symmetric int8 quantization parameters: one alpha per tensor, per output channel, or per
// group of K along the input.
//
// The convention, decided once for every int8 kernel: q = clamp(nearbyint(x * 127 / alpha),
// -127, 127), x ~= q * alpha / 127. -128 is never produced, so the int8 dot kernels may move
// the sign of one operand onto the other (|a| x sign(a) b, for the unsigned x signed VNNI and
// AVX2 instructions) exactly, with no +128 shift and no per-column compensation term.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "dynasparse/error.hpp"
#include "dynasparse/simd/quantize.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace quant {

/// How many alphas a weight matrix [rows = out, cols = in] gets.
enum class Granularity {
  PerTensor,   ///< one alpha for the whole matrix (the seed's formula)
  PerChannel,  ///< one alpha per output row (the default for weights)
  PerGroup,    ///< one alpha per row and per group of `group_size` consecutive columns
};

/// Smallest and largest group sizes accepted for Granularity::PerGroup.
inline constexpr std::size_t min_group_size = 32;
inline constexpr std::size_t max_group_size = 256;

/// Alphas of a [rows, cols] matrix. `alpha` holds 1 value (PerTensor), `rows` values
/// (PerChannel), or rows * ceil(cols / group_size) values, row-major (PerGroup). alpha = 0
/// (an all-zero slice) is allowed: it quantizes everything to 0 and dequantizes to exact 0.
struct QuantParams {
  Granularity granularity = Granularity::PerChannel;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::size_t group_size = 0;  ///< PerGroup only
  std::vector<float> alpha;

  /// Groups per row (1 unless PerGroup).
  std::size_t groups_per_row() const noexcept {
    return granularity == Granularity::PerGroup ? (cols + group_size - 1) / group_size : 1;
  }
  /// Alpha that applies to element (r, c).
  float alpha_at(std::size_t r, std::size_t c) const noexcept {
    switch (granularity) {
      case Granularity::PerTensor:
        return alpha[0];
      case Granularity::PerChannel:
        return alpha[r];
      case Granularity::PerGroup:
        return alpha[r * groups_per_row() + c / group_size];
    }
    return alpha[0];
  }
};

/// Multiplier that maps x to the int8 grid: 127 / alpha, or 0 for alpha below
/// simd::min_quant_alpha (zero included), where 127 / alpha would be infinite.
inline float inv_scale_of(float alpha) noexcept { return simd::inv_scale_for(alpha); }
/// Value of one int8 step: alpha / 127.
inline float scale_of(float alpha) noexcept { return alpha / 127.0f; }

/// Checks a QuantParams against its matrix shape. @throws ConfigError naming `name`.
inline void validate(const QuantParams& p, const std::string& name) {
  if (p.granularity == Granularity::PerGroup &&
      (p.group_size < min_group_size || p.group_size > max_group_size)) {
    ::dynasparse::detail::fail<ConfigError>("quant", "group size out of range",
                              std::to_string(min_group_size) + ".." + std::to_string(max_group_size),
                              p.group_size, name);
  }
  std::size_t want = 1;
  if (p.granularity == Granularity::PerChannel) want = p.rows;
  if (p.granularity == Granularity::PerGroup) want = p.rows * p.groups_per_row();
  if (p.alpha.size() != want) {
    ::dynasparse::detail::fail<ConfigError>("quant", "wrong number of alphas", want, p.alpha.size(), name);
  }
  for (float a : p.alpha) {
    if (!(a >= 0.0f) || !std::isfinite(a)) {
      ::dynasparse::detail::fail<ConfigError>("quant", "alpha must be finite and >= 0", ">= 0", a, name);
    }
  }
}

}  // namespace quant
DYNASPARSE_NAMESPACE_END
