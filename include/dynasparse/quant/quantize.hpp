// SPDX-License-Identifier: Apache-2.0
// Quantizing weight matrices and activation rows to symmetric int8, and back.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/tensor.hpp"
#include "dynasparse/quant/quant_params.hpp"
#include "dynasparse/simd/quantize.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace quant {

/// An int8 matrix [rows, cols], row-major and dense, with the alphas that dequantize it.
struct QuantizedMatrix {
  AlignedBuffer<std::int8_t> values;
  QuantParams params;

  std::size_t rows() const noexcept { return params.rows; }
  std::size_t cols() const noexcept { return params.cols; }
  const std::int8_t* row(std::size_t r) const noexcept { return values.data() + r * params.cols; }
  /// Bytes of values plus alphas.
  std::size_t bytes() const noexcept { return values.bytes() + params.alpha.size() * sizeof(float); }
};

namespace detail {
inline float max_abs_checked(const float* x, std::size_t n, const std::string& name, std::size_t row) {
  float m = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (!std::isfinite(a)) {
      dynasparse::detail::fail<FormatError>(
          "quant", "non-finite value in weights", "a finite value", x[i],
          name + " row " + std::to_string(row) + " col " + std::to_string(i));
    }
    m = std::max(m, a);
  }
  return m;
}
}  // namespace detail

/// Max-abs alphas of a weight matrix `w` [out, in] at the given granularity (group_size
/// used only for PerGroup). @throws FormatError on NaN/Inf in `w` (naming `name`, the row
/// and the column); ConfigError on a bad group size.
inline QuantParams max_abs_params(ConstMatrixView w, Granularity g, std::size_t group_size = 0,
                                  const std::string& name = "weight") {
  QuantParams p;
  p.granularity = g;
  p.rows = w.rows();
  p.cols = w.cols();
  p.group_size = g == Granularity::PerGroup ? group_size : 0;
  if (g == Granularity::PerGroup && (group_size < min_group_size || group_size > max_group_size)) {
    dynasparse::detail::fail<ConfigError>(
        "quant", "group size out of range",
        std::to_string(min_group_size) + ".." + std::to_string(max_group_size), group_size, name);
  }
  const std::size_t step = g == Granularity::PerGroup ? group_size : std::max<std::size_t>(w.cols(), 1);
  for (std::size_t r = 0; r < w.rows(); ++r) {
    for (std::size_t c0 = 0; c0 < std::max<std::size_t>(w.cols(), 1); c0 += step) {
      const std::size_t len = std::min(step, w.cols() - std::min(c0, w.cols()));
      p.alpha.push_back(detail::max_abs_checked(w.row(r) + c0, len, name, r));
    }
  }
  if (g == Granularity::PerTensor) {
    const float m = p.alpha.empty() ? 0.0f : *std::max_element(p.alpha.begin(), p.alpha.end());
    p.alpha.assign(1, m);
  }
  return p;
}

/// Quantizes `w` with the given parameters (which must describe w's shape). Values beyond
/// alpha saturate at +-127. @throws ShapeError / ConfigError on mismatched parameters.
inline QuantizedMatrix quantize(ConstMatrixView w, QuantParams params,
                                const std::string& name = "weight") {
  if (params.rows != w.rows() || params.cols != w.cols()) {
    dynasparse::detail::fail<ShapeError>("quant", "parameters for another shape",
                                         shape_string(w.rows(), w.cols()),
                                         shape_string(params.rows, params.cols), name);
  }
  validate(params, name);
  QuantizedMatrix out;
  out.values.resize_discard(w.rows() * w.cols());
  for (std::size_t r = 0; r < w.rows(); ++r) {
    std::int8_t* q = out.values.data() + r * w.cols();
    const std::size_t step = params.granularity == Granularity::PerGroup ? params.group_size : w.cols();
    for (std::size_t c0 = 0; c0 < w.cols(); c0 += step) {
      const std::size_t len = std::min(step, w.cols() - c0);
      simd::quantize_f32s8(w.row(r) + c0, q + c0, len, inv_scale_of(params.alpha_at(r, c0)));
    }
  }
  out.params = std::move(params);
  return out;
}

/// Max-abs quantization of a weight matrix in one call.
inline QuantizedMatrix quantize(ConstMatrixView w, Granularity g = Granularity::PerChannel,
                                std::size_t group_size = 0, const std::string& name = "weight") {
  return quantize(w, max_abs_params(w, g, group_size, name), name);
}

/// Dequantizes into `out` [rows, cols]. @throws ShapeError on a shape mismatch.
inline void dequantize(const QuantizedMatrix& m, MatrixView out) {
  check_shape(out, m.rows(), m.cols(), "quant", "dequantize output");
  const QuantParams& p = m.params;
  const std::size_t step = p.granularity == Granularity::PerGroup ? p.group_size : p.cols;
  for (std::size_t r = 0; r < m.rows(); ++r) {
    for (std::size_t c0 = 0; c0 < m.cols(); c0 += step) {
      const std::size_t len = std::min(step, m.cols() - c0);
      simd::dequantize_s8f32(m.row(r) + c0, out.row(r) + c0, len, scale_of(p.alpha_at(r, c0)));
    }
  }
}

/// Dynamic per-row activation quantization: alpha of each row is its max |x|; writes the
/// int8 row into q (row-major [rows, cols]) and the row's scale (alpha / 127) into
/// `scales[r]`. NaN in x quantizes to 0 and does not affect alpha (NaN is never a max);
/// +-inf makes that row's alpha infinite, its scale inf and its values 0 or +-127 — callers
/// that must reject non-finite activations check first (checked mode).
inline void quantize_rows_dynamic(ConstMatrixView x, std::int8_t* q, float* scales) noexcept {
  for (std::size_t r = 0; r < x.rows(); ++r) {
    float m = 0.0f;
    const float* row = x.row(r);
    for (std::size_t c = 0; c < x.cols(); ++c) m = std::max(m, std::fabs(row[c]));
    scales[r] = scale_of(m);
    simd::quantize_f32s8(row, q + r * x.cols(), x.cols(), inv_scale_of(m));
  }
}

/// Static activation quantization with a calibrated alpha (saturating beyond it).
inline void quantize_rows_static(ConstMatrixView x, float alpha, std::int8_t* q) noexcept {
  const float inv = inv_scale_of(alpha);
  for (std::size_t r = 0; r < x.rows(); ++r) simd::quantize_f32s8(x.row(r), q + r * x.cols(), x.cols(), inv);
}

}  // namespace quant
DYNASPARSE_NAMESPACE_END
