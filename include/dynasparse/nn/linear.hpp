// SPDX-License-Identifier: Apache-2.0
// Linear<Format>: the one linear layer, templated on its weight format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/nn/dense_f32.hpp"
#include "dynasparse/quant/dense_i8.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

namespace detail {
// Whether T has forward_output_groups / forward_input_groups (a format that can compute a
// subset of its outputs or read a subset of its inputs, or a layer that forwards them).
template <class T, class = void>
struct has_output_groups : std::false_type {};
template <class T>
struct has_output_groups<
    T, std::void_t<decltype(std::declval<const T&>().forward_output_groups(
           std::declval<ConstMatrixView>(), std::declval<MatrixView>(), std::size_t{},
           static_cast<const std::uint32_t*>(nullptr), std::size_t{}, std::declval<Workspace&>()))>>
    : std::true_type {};
template <class T, class = void>
struct has_input_groups : std::false_type {};
template <class T>
struct has_input_groups<
    T, std::void_t<decltype(std::declval<const T&>().forward_input_groups(
           std::declval<ConstMatrixView>(), std::declval<MatrixView>(), std::size_t{},
           static_cast<const std::uint32_t*>(nullptr), std::size_t{}, std::declval<Workspace&>()))>>
    : std::true_type {};
}  // namespace detail

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

  /// forward() for the listed groups of `group` outputs, computing only what the format
  /// needs for them where it can (DenseF32 and quant::DenseI8 by packed panel, the
  /// group-sparse formats by block-row); other formats compute every output. Columns of
  /// unlisted groups are unspecified.
  /// @throws as the format's forward_output_groups or forward().
  void forward_output_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                             const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    if constexpr (detail::has_output_groups<Format>::value) {
      format_.forward_output_groups(x, y, group, groups, count, ws);
    } else {
      format_.forward(x, y, ws);
    }
  }
  /// forward() reading only the listed groups of `group` inputs where the format can
  /// (DenseF32, quant::DenseI8); other formats read every input, so x must be zero outside
  /// the groups.
  /// @throws as the format's forward_input_groups or forward().
  void forward_input_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                            const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    if constexpr (detail::has_input_groups<Format>::value) {
      format_.forward_input_groups(x, y, group, groups, count, ws);
    } else {
      format_.forward(x, y, ws);
    }
  }

 private:
  Format format_;
};

}  // namespace nn
DYNASPARSE_NAMESPACE_END
