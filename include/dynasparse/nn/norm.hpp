// SPDX-License-Identifier: Apache-2.0
// LayerNorm and RMSNorm over the last dimension, with PyTorch's semantics.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// `nn.LayerNorm(E, eps)`: y = (x - mean) / sqrt(var + eps) * weight + bias per row, with the
/// biased (population) variance, as PyTorch computes it. weight and bias have E values
/// (state_dict `<name>.weight`, `<name>.bias`). Immutable; safe to share across threads.
class LayerNorm {
 public:
  /// @throws ShapeError if weight or bias (when not empty) do not have the same size;
  /// ConfigError if eps is not positive and finite.
  LayerNorm(std::vector<float> weight, std::vector<float> bias, float eps = 1e-5f, std::string name = "norm")
      : name_(std::move(name)), weight_(std::move(weight)), bias_(std::move(bias)), eps_(eps) {
    if (!bias_.empty() && bias_.size() != weight_.size()) {
      ::dynasparse::detail::fail<ShapeError>("nn", "layer norm bias length", weight_.size(), bias_.size(), name_ + ".bias");
    }
    if (!(eps_ > 0.0f) || !std::isfinite(eps_)) {
      ::dynasparse::detail::fail<ConfigError>("nn", "norm epsilon must be positive", "> 0", eps_, name_);
    }
  }
  std::size_t features() const noexcept { return weight_.size(); }
  float eps() const noexcept { return eps_; }
  const std::vector<float>& weight() const noexcept { return weight_; }
  const std::vector<float>& bias() const noexcept { return bias_; }

  /// y [M, E] = layer_norm(x [M, E]); y may be x. @throws ShapeError on other widths.
  void forward(ConstMatrixView x, MatrixView y) const {
    const std::size_t e = features();
    check_cols(x, e, "nn", name_, " input");
    check_shape(y, x.rows(), e, "nn", name_, " output");
    for (std::size_t r = 0; r < x.rows(); ++r) {
      const float* xr = x.row(r);
      float* yr = y.row(r);
      // Two passes (mean, then squared deviations) match PyTorch's accuracy; the one-pass
      // E[x^2] - E[x]^2 form cancels badly for large means.
      // The deviations go to y first, so the squared sum is one vectorized dot product
      // (a scalar sum is a chain of E dependent adds: a third of a microsecond at E = 256,
      // which a decoding step pays twice per layer).
      // The elementwise steps are explicit vector kernels: plain loops vectorize at -O3
      // but not at -O2 (RelWithDebInfo), where they took 6% of a decoding step.
      const float mean = simd::sum_f32(xr, e) / static_cast<float>(e);
      simd::add_scalar_f32(xr, -mean, yr, e);
      const float var = simd::dot_f32(yr, yr, e);
      const float inv = 1.0f / std::sqrt(var / static_cast<float>(e) + eps_);
      simd::scale_mul_add_f32(yr, inv, weight_.data(), bias_.empty() ? nullptr : bias_.data(), yr,
                              e);
    }
  }

 private:
  std::string name_;
  std::vector<float> weight_, bias_;
  float eps_;
};

/// RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight per row (as in LLaMA and
/// `torch.nn.RMSNorm`). Immutable; safe to share across threads.
class RMSNorm {
 public:
  /// @throws ConfigError if eps is not positive and finite.
  explicit RMSNorm(std::vector<float> weight, float eps = 1e-6f, std::string name = "norm")
      : name_(std::move(name)), weight_(std::move(weight)), eps_(eps) {
    if (!(eps_ > 0.0f) || !std::isfinite(eps_)) {
      ::dynasparse::detail::fail<ConfigError>("nn", "norm epsilon must be positive", "> 0", eps_, name_);
    }
  }
  std::size_t features() const noexcept { return weight_.size(); }
  float eps() const noexcept { return eps_; }
  const std::vector<float>& weight() const noexcept { return weight_; }

  /// y [M, E] = rms_norm(x [M, E]); y may be x. @throws ShapeError on other widths.
  void forward(ConstMatrixView x, MatrixView y) const {
    const std::size_t e = features();
    check_cols(x, e, "nn", name_, " input");
    check_shape(y, x.rows(), e, "nn", name_, " output");
    for (std::size_t r = 0; r < x.rows(); ++r) {
      const float* xr = x.row(r);
      float* yr = y.row(r);
      const float ms = simd::dot_f32(xr, xr, e) / static_cast<float>(e);
      const float inv = 1.0f / std::sqrt(ms + eps_);
      simd::scale_mul_add_f32(xr, inv, weight_.data(), nullptr, yr, e);
    }
  }

 private:
  std::string name_;
  std::vector<float> weight_;
  float eps_;
};

}  // namespace nn
DYNASPARSE_NAMESPACE_END
