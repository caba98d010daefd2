// SPDX-License-Identifier: Apache-2.0
// Non-owning row-major 2-D views: the currency of every module's forward().
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// A row-major `[rows, cols]` view over memory owned elsewhere; row `r` starts at
/// `data() + r * stride()` (stride in elements, >= cols). Copying a view copies the pointer,
/// never the data; the view must not outlive the memory.
template <class T>
class TensorView {
 public:
  using value_type = std::remove_const_t<T>;

  TensorView() noexcept = default;
  /// A dense view (stride = cols).
  TensorView(T* data, std::size_t rows, std::size_t cols) noexcept
      : data_(data), rows_(rows), cols_(cols), stride_(cols) {}
  /// A strided view. @throws ShapeError if stride < cols.
  TensorView(T* data, std::size_t rows, std::size_t cols, std::size_t stride)
      : data_(data), rows_(rows), cols_(cols), stride_(stride) {
    if (stride < cols) {
      detail::fail<ShapeError>("core", "row stride shorter than a row",
                               ">= " + std::to_string(cols), stride, "TensorView");
    }
  }
  /// A const view of a mutable one.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  TensorView(const TensorView<U>& other) noexcept  // NOLINT(google-explicit-constructor)
      : data_(other.data()), rows_(other.rows()), cols_(other.cols()), stride_(other.stride()) {}

  T* data() const noexcept { return data_; }
  std::size_t rows() const noexcept { return rows_; }
  std::size_t cols() const noexcept { return cols_; }
  std::size_t stride() const noexcept { return stride_; }
  std::size_t size() const noexcept { return rows_ * cols_; }
  bool empty() const noexcept { return rows_ == 0 || cols_ == 0; }
  bool contiguous() const noexcept { return stride_ == cols_ || rows_ <= 1; }

  T* row(std::size_t r) const noexcept { return data_ + r * stride_; }
  T& operator()(std::size_t r, std::size_t c) const noexcept { return data_[r * stride_ + c]; }

  /// Rows [first, first + count) as a view. @throws ShapeError past the end.
  TensorView row_range(std::size_t first, std::size_t count) const {
    if (first > rows_ || count > rows_ - first) {
      detail::fail<ShapeError>("core", "row range outside the view",
                               "<= " + std::to_string(rows_) + " rows",
                               std::to_string(first) + "+" + std::to_string(count), "TensorView");
    }
    return TensorView(data_ + first * stride_, count, cols_, stride_);
  }

  /// Columns [first, first + count) as a strided view. @throws ShapeError past the end.
  TensorView col_range(std::size_t first, std::size_t count) const {
    if (first > cols_ || count > cols_ - first) {
      detail::fail<ShapeError>("core", "column range outside the view",
                               "<= " + std::to_string(cols_) + " columns",
                               std::to_string(first) + "+" + std::to_string(count), "TensorView");
    }
    return TensorView(data_ + first, rows_, count, stride_);
  }

 private:
  T* data_ = nullptr;
  std::size_t rows_ = 0;
  std::size_t cols_ = 0;
  std::size_t stride_ = 0;
};

using MatrixView = TensorView<float>;
using ConstMatrixView = TensorView<const float>;

/// Formats a shape as `[rows, cols]` for error messages.
inline std::string shape_string(std::size_t rows, std::size_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

/// Checks a view's shape. @throws ShapeError naming `name` with both shapes.
template <class T>
inline void check_shape(const TensorView<T>& v, std::size_t rows, std::size_t cols,
                        std::string_view module, std::string_view name) {
  if (v.rows() != rows || v.cols() != cols) {
    detail::fail<ShapeError>(module, "tensor shape mismatch", shape_string(rows, cols),
                             shape_string(v.rows(), v.cols()), name);
  }
}

/// Checks a view's column count (any number of rows). @throws ShapeError naming `name`.
template <class T>
inline void check_cols(const TensorView<T>& v, std::size_t cols, std::string_view module,
                       std::string_view name) {
  if (v.cols() != cols) {
    detail::fail<ShapeError>(module, "tensor feature size mismatch",
                             shape_string(v.rows(), cols), shape_string(v.rows(), v.cols()), name);
  }
}

/// check_shape with the name given in two parts (e.g. a layer's name and " output"), joined
/// only when the check fails: the per-call checks of hot paths then allocate nothing.
template <class T>
inline void check_shape(const TensorView<T>& v, std::size_t rows, std::size_t cols, std::string_view module,
                        std::string_view name, std::string_view suffix) {
  if (v.rows() != rows || v.cols() != cols) check_shape(v, rows, cols, module, std::string(name).append(suffix));
}

/// check_cols with the name given in two parts, joined only when the check fails.
template <class T>
inline void check_cols(const TensorView<T>& v, std::size_t cols, std::string_view module, std::string_view name,
                       std::string_view suffix) {
  if (v.cols() != cols) check_cols(v, cols, module, std::string(name).append(suffix));
}

/// Checks the arguments of a layer's group product (forward_output_groups and
/// forward_input_groups of the dense formats): `group` features per group, positive and at
/// most `width` (the layer's outputs or inputs, named by `side`), and every listed group
/// index below width / group. @throws ConfigError naming the layer `name`.
inline void check_feature_groups(std::size_t group, const std::uint32_t* groups, std::size_t count,
                                 std::size_t width, std::string_view module, std::string_view side,
                                 std::string_view name) {
  if (group == 0) {
    detail::fail<ConfigError>(module, std::string(side) + " group must be positive", "> 0", group,
                              name);
  }
  if (group > width) {
    detail::fail<ConfigError>(module, std::string(side) + " group wider than the layer",
                              "<= " + std::to_string(width), group, name);
  }
  for (std::size_t i = 0; i < count; ++i) {
    if (static_cast<std::size_t>(groups[i]) >= width / group) {  // divides: no overflow
      detail::fail<ConfigError>(module, std::string(side) + " group past the layer's width",
                                "< " + std::to_string(width / group), groups[i], name);
    }
  }
}

/// check_feature_groups for forward_input_groups, which also needs `group` to divide the
/// `width` inputs and the groups ascending (it walks them in input order).
/// @throws ConfigError naming the layer `name`.
inline void check_input_groups(std::size_t group, const std::uint32_t* groups, std::size_t count,
                               std::size_t width, std::string_view module, std::string_view name) {
  check_feature_groups(group, groups, count, width, module, "input", name);
  if (width % group != 0) {
    detail::fail<ConfigError>(module, "input group does not divide the inputs",
                              "a divisor of " + std::to_string(width), group, name);
  }
  for (std::size_t i = 1; i < count; ++i) {
    if (groups[i] <= groups[i - 1]) {
      detail::fail<ConfigError>(module, "input groups not ascending",
                                "> " + std::to_string(groups[i - 1]), groups[i], name);
    }
  }
}

/// The spans of `span` features (a format's panels or tiles, spans of them in all) that hold
/// a feature of a listed group, written to `out` ascending and without repeats, whatever
/// the order of the groups; returns how many. `out` has room for `spans` entries; the
/// groups must have passed check_feature_groups against spans * span or fewer features.
inline std::size_t spans_of_groups(std::size_t group, const std::uint32_t* groups,
                                   std::size_t count, std::size_t span, std::size_t spans,
                                   std::uint32_t* out) noexcept {
  std::fill(out, out + spans, 0u);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t first = std::size_t{groups[i]} * group / span,
                      last = ((std::size_t{groups[i]} + 1) * group - 1) / span;
    for (std::size_t p = first; p <= last; ++p) out[p] = 1;
  }
  // Without a branch: which spans a decoding step's heads touch is close to random, and a
  // mispredicted branch per span cost more than the compaction itself. Writing out[n] after
  // reading out[p] is safe in place, n <= p.
  std::size_t n = 0;
  for (std::size_t p = 0; p < spans; ++p) {
    const bool hit = out[p] != 0;
    out[n] = static_cast<std::uint32_t>(p);
    n += hit ? 1 : 0;
  }
  return n;
}

DYNASPARSE_NAMESPACE_END
