// SPDX-License-Identifier: Apache-2.0
// Linear<Format>: the one linear layer, templated on its weight format.
#pragma once

#include <cstddef>
#include <utility>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/nn/dense_f32.hpp"
#include "dynasparse/quant/dense_i8.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// `nn.Linear` semantics, y = x W^T + b, over any weight format (DenseF32, quant::DenseI8,
/// and the group-sparse formats). Code that knows its format at compile time uses
/// Linear<Format> and pays nothing for the choice. Immutable; forward() is safe to call
/// from many threads, each with its own Workspace.
template <class Format>
class Linear {
 public:
  using format_type = Format;

  explicit Linear(Format format) : format_(std::move(format)) {}

  std::size_t in_features() const noexcept { return format_.in_features(); }
  std::size_t out_features() const noexcept { return format_.out_features(); }
  /// Bytes of weights, scales, indices and bias.
  std::size_t bytes() const noexcept { return format_.bytes(); }
  const Format& format() const noexcept { return format_; }
  Format& format() noexcept { return format_; }

  /// y [M, out] = x [M, in] W^T + b. @throws ShapeError on mismatched shapes.
  void forward(ConstMatrixView x, MatrixView y, Workspace& ws) const { format_.forward(x, y, ws); }

 private:
  Format format_;
};

}  // namespace nn
DYNASPARSE_NAMESPACE_END
