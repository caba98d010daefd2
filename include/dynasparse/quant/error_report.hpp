// SPDX-License-Identifier: Apache-2.0
// How much a layer's INT8 output differs from its FP32 output on a given input batch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "dynasparse/core/eigen_interop.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/quant/dense_i8.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace quant {

/// Error of an INT8 layer's output y8 against the FP32 output y on one batch.
struct ErrorReport {
  std::string layer;
  double relative = 0.0;  ///< ||y8 - y||_F / ||y||_F (0 when y is all zero and y8 equals it)
  double max_abs = 0.0;   ///< max |y8 - y|
  double max_ref = 0.0;   ///< max |y|, to read max_abs against
};

/// Runs `x` [M, in] through the FP32 weights `weight` [out, in] (+ `bias`) and through
/// `layer` (both paths: W8A8 and, if `weight_only`, the LUT path) and reports the error.
/// @throws ShapeError when the shapes disagree.
inline ErrorReport error_report(ConstMatrixView weight, const std::vector<float>& bias,
                                const DenseI8& layer, ConstMatrixView x, bool weight_only = false) {
  check_shape(weight, layer.out_features(), layer.in_features(), "quant", layer.name() + " weight");
  check_cols(x, layer.in_features(), "quant", layer.name() + " input");
  RowMajorMatrix<float> ref = as_eigen(x) * as_eigen(weight).transpose();
  if (!bias.empty()) {
    check_shape(ConstMatrixView(bias.data(), 1, bias.size()), 1, layer.out_features(), "quant",
                layer.name() + " bias");
    for (Eigen::Index r = 0; r < ref.rows(); ++r) {
      for (Eigen::Index c = 0; c < ref.cols(); ++c) ref(r, c) += bias[static_cast<std::size_t>(c)];
    }
  }
  RowMajorMatrix<float> got(ref.rows(), ref.cols());
  Workspace ws;
  if (weight_only) {
    layer.forward_weight_only(x, as_view(got), ws);
  } else {
    layer.forward(x, as_view(got), ws);
  }
  ErrorReport rep;
  rep.layer = layer.name();
  double num = 0.0, den = 0.0;
  for (Eigen::Index i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got.data()[i]) - ref.data()[i];
    num += d * d;
    den += static_cast<double>(ref.data()[i]) * ref.data()[i];
    rep.max_abs = std::max(rep.max_abs, std::fabs(d));
    rep.max_ref = std::max(rep.max_ref, std::fabs(static_cast<double>(ref.data()[i])));
  }
  rep.relative = den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
  return rep;
}

}  // namespace quant
DYNASPARSE_NAMESPACE_END
