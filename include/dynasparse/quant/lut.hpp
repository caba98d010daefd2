// SPDX-License-Identifier: Apache-2.0
// The 256-entry dequantization lookup table of the weight-only int8 path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace quant {

/// Maps every int8 code to its float value: table[q + 128] = q * scale. For the symmetric
/// linear code this equals scale multiplication bit for bit; the table form is what the
/// weight-only path uses so that a non-linear codebook (any 256 values) can replace it.
/// 1 KiB; cheap to copy.
class DequantLut {
 public:
  DequantLut() noexcept : DequantLut(1.0f) {}
  /// The linear table of a symmetric quantizer with step `scale` (= alpha / 127).
  explicit DequantLut(float scale) noexcept {
    for (int q = -128; q < 128; ++q) table_[q + 128] = static_cast<float>(q) * scale;
  }
  /// A table from any 256 values, indexed by code + 128.
  static DequantLut from_values(const float (&values)[256]) noexcept {
    DequantLut l;
    for (int i = 0; i < 256; ++i) l.table_[i] = values[i];
    return l;
  }

  float operator()(std::int8_t q) const noexcept { return table_[q + 128]; }
  /// y[i] = table[q[i]] for i < n.
  void dequantize(const std::int8_t* q, float* y, std::size_t n) const noexcept {
    for (std::size_t i = 0; i < n; ++i) y[i] = table_[q[i] + 128];
  }
  const float* data() const noexcept { return table_; }

 private:
  float table_[256];
};

}  // namespace quant
DYNASPARSE_NAMESPACE_END
