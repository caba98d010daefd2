// SPDX-License-Identifier: Apache-2.0
// DenseF32: the float32 weight format, multiplied with Eigen's GEMM.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/eigen_interop.hpp"
#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/workspace.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// Weight format of an `nn.Linear(in, out)` in float32: weight [out, in] row-major (as
/// PyTorch stores it) and an optional bias. Products go through Eigen's GEMM, which uses
/// Eigen's thread count (dynasparse::set_num_threads sets it). Immutable after construction.
class DenseF32 {
 public:
  static constexpr const char* format_name = "dense_f32";

  /// Copies `weight` [out, in]; `bias` is empty or has `out` values.
  /// @throws ShapeError on a bias of the wrong length.
  DenseF32(ConstMatrixView weight, std::vector<float> bias = {}, std::string name = "linear")
      : name_(std::move(name)), in_(weight.cols()), out_(weight.rows()), weight_(out_ * in_),
        bias_(std::move(bias)) {
    if (!bias_.empty() && bias_.size() != out_) {
      ::dynasparse::detail::fail<ShapeError>("nn", "bias length", out_, bias_.size(), name_ + ".bias");
    }
    for (std::size_t r = 0; r < out_; ++r) {
      for (std::size_t c = 0; c < in_; ++c) weight_[r * in_ + c] = weight(r, c);
    }
  }

  std::size_t in_features() const noexcept { return in_; }
  std::size_t out_features() const noexcept { return out_; }
  const std::string& name() const noexcept { return name_; }
  std::size_t bytes() const noexcept { return weight_.bytes() + bias_.size() * sizeof(float); }
  ConstMatrixView weight() const noexcept { return ConstMatrixView(weight_.data(), out_, in_); }
  const std::vector<float>& bias() const noexcept { return bias_; }

  /// y [M, out] = x [M, in] * W^T + bias. @throws ShapeError on mismatched shapes.
  void forward(ConstMatrixView x, MatrixView y, Workspace& /*ws*/) const {
    check_cols(x, in_, "nn", name_ + " input");
    check_shape(y, x.rows(), out_, "nn", name_ + " output");
    if (x.rows() == 0) return;
    const auto m = static_cast<Eigen::Index>(x.rows());
    // AlignedBuffer storage is 64-byte aligned: telling Eigen lets it use aligned loads.
    const Eigen::Map<const RowMajorMatrix<float>, Eigen::Aligned64> w(weight_.data(), static_cast<Eigen::Index>(out_),
                                                              static_cast<Eigen::Index>(in_));
    if (x.contiguous() && y.contiguous()) {
      // Plain maps let Eigen pick the same kernels as for its own matrices (strided maps
      // cost up to 8% on small products: BM_Linear/dense_f32/1x512x2048).
      Eigen::Map<RowMajorMatrix<float>> ym(y.data(), m, static_cast<Eigen::Index>(out_));
      ym.noalias() = Eigen::Map<const RowMajorMatrix<float>>(x.data(), m, static_cast<Eigen::Index>(in_)) * w.transpose();
      add_bias(ym);
    } else {
      auto ym = as_eigen(y);
      ym.noalias() = as_eigen(x) * w.transpose();
      add_bias(ym);
    }
  }

 private:
  template <class M>
  void add_bias(M& ym) const {
    if (bias_.empty()) return;
    const Eigen::Map<const Eigen::RowVectorXf> b(bias_.data(), static_cast<Eigen::Index>(out_));
    ym.rowwise() += b;
  }

  std::string name_;
  std::size_t in_ = 0, out_ = 0;
  AlignedBuffer<float> weight_;
  std::vector<float> bias_;
};

}  // namespace nn
DYNASPARSE_NAMESPACE_END
