// SPDX-License-Identifier: Apache-2.0
// FeedForward: up projection, activation, down projection (group-sparse in the seed's design).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/nn/any_linear.hpp"
#include "dynasparse/simd/math.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// Activation between the two projections.
enum class Activation {
  Gelu,  ///< exact (erf) GELU, PyTorch's default
  Silu,  ///< x * sigmoid(x)
  Relu,  ///< max(x, 0)
};

/// "gelu", "silu" or "relu".
inline const char* activation_name(Activation a) noexcept {
  return a == Activation::Gelu ? "gelu" : (a == Activation::Silu ? "silu" : "relu");
}

/// Applies the activation in place to a [rows, cols] view, rows split across threads.
inline void apply_activation(Activation a, MatrixView h) {
  // Rows split across threads for a prefill: exact GELU costs about a nanosecond per
  // element, a tenth of an INT8 up projection's time.
  const std::size_t grain = std::max<std::size_t>(1, parallel_min_quantize / (h.cols() + 1));
  parallel_for(0, h.rows(), grain, [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      float* p = h.row(r);
      switch (a) {
        case Activation::Gelu:
          simd::gelu_f32(p, p, h.cols());
          break;
        case Activation::Silu:
          simd::silu_f32(p, p, h.cols());
          break;
        case Activation::Relu:
          // NaN stays NaN, as in torch.relu (a "> 0 ? x : 0" select would make it 0).
          for (std::size_t i = 0; i < h.cols(); ++i) p[i] = p[i] < 0.0f ? 0.0f : p[i];
          break;
      }
    }
  });
}

/// y = down(act(up(x))): up is Linear(E, F), down is Linear(F, E); each may be any weight
/// format (state_dict `<name>.up.weight`/`.bias`, `<name>.down.weight`/`.bias`).
/// Immutable; forward() may run concurrently with separate Workspaces.
class FeedForward {
 public:
  /// @throws ShapeError if up's outputs differ from down's inputs.
  FeedForward(AnyLinear up, AnyLinear down, Activation act, std::string name = "ffn")
      : name_(std::move(name)), up_(std::move(up)), down_(std::move(down)), act_(act) {
    if (nn::out_features(up_) != nn::in_features(down_)) {
      ::dynasparse::detail::fail<ShapeError>("nn", "feed-forward hidden sizes differ", nn::out_features(up_), nn::in_features(down_),
                               name_ + ".down");
    }
  }
  std::size_t in_features() const noexcept { return nn::in_features(up_); }
  std::size_t hidden() const noexcept { return nn::out_features(up_); }
  std::size_t out_features() const noexcept { return nn::out_features(down_); }
  Activation activation() const noexcept { return act_; }
  const AnyLinear& up() const noexcept { return up_; }
  const AnyLinear& down() const noexcept { return down_; }
  /// Calls fn(up) then fn(down), for per-layer changes (calibration taps, activation alphas).
  template <class Fn>
  void for_each_linear(Fn&& fn) {
    fn(up_);
    fn(down_);
  }
  /// As above, read-only.
  template <class Fn>
  void for_each_linear(Fn&& fn) const {
    fn(up_);
    fn(down_);
  }
  std::size_t bytes() const noexcept { return nn::bytes(up_) + nn::bytes(down_); }

  /// y [M, E_out] = down(act(up(x [M, E_in]))). Scratch: M * F floats from `ws`.
  void forward(ConstMatrixView x, MatrixView y, Workspace& ws) const {
    Workspace::Scope scope(ws);
    MatrixView h(ws.allocate<float>(x.rows() * hidden()), x.rows(), hidden());
    nn::forward(up_, x, h, ws);
    apply_activation(act_, h);
    nn::forward(down_, h, y, ws);
  }

 private:
  std::string name_;
  AnyLinear up_, down_;
  Activation act_;
};

}  // namespace nn
DYNASPARSE_NAMESPACE_END
