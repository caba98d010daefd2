// SPDX-License-Identifier: Apache-2.0
// The only public bridge between TensorView and Eigen: zero-copy maps both ways.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <type_traits>

#include "dynasparse/core/tensor.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// Row-major dynamic Eigen matrix, the layout of every activation and `nn.Linear` weight.
template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Eigen map over a (possibly strided) view; writes through it land in the view's memory.
template <class T>
using EigenMap =
    Eigen::Map<std::conditional_t<std::is_const_v<T>, const RowMajorMatrix<std::remove_const_t<T>>,
                                  RowMajorMatrix<T>>,
               Eigen::Unaligned, Eigen::OuterStride<>>;

/// Maps a view as an Eigen matrix without copying.
template <class T>
inline EigenMap<T> as_eigen(const TensorView<T>& v) {
  return EigenMap<T>(v.data(), static_cast<Eigen::Index>(v.rows()),
                     static_cast<Eigen::Index>(v.cols()),
                     Eigen::OuterStride<>(static_cast<Eigen::Index>(v.stride())));
}

/// Views a row-major Eigen matrix's storage.
template <class T>
inline TensorView<T> as_view(RowMajorMatrix<T>& m) noexcept {
  return TensorView<T>(m.data(), static_cast<std::size_t>(m.rows()),
                       static_cast<std::size_t>(m.cols()));
}

/// Views a row-major Eigen matrix's storage, read-only.
template <class T>
inline TensorView<const T> as_view(const RowMajorMatrix<T>& m) noexcept {
  return TensorView<const T>(m.data(), static_cast<std::size_t>(m.rows()),
                             static_cast<std::size_t>(m.cols()));
}

DYNASPARSE_NAMESPACE_END
