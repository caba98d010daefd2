// SPDX-License-Identifier: Apache-2.0
// GroupSparseF32: float weights in block-CSR (blocks of R outputs x C inputs).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/simd/spmm_f32.hpp"
#include "dynasparse/sparse/block_mask.hpp"
#include "dynasparse/sparse/block_csr.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace sparse {

/// Weight format of an `nn.Linear(in, out)` whose weight is group-sparse: R x C blocks
/// (R in {16, 32, 64} outputs, any C inputs) either absent or stored in block-CSR. forward() skips absent
/// blocks, so its time falls with the fraction of stored blocks. Immutable; forward() may run
/// concurrently from many threads.
class GroupSparseF32 {
 public:
  static constexpr const char* format_name = "gsparse_f32";

  /// Keeps the blocks of `mask` from the dense `weight` [out, in]. The mask's block height
  /// must be 16, 32 or 64. @throws ShapeError when mask and weight shapes differ or the bias length is
  /// wrong; UnsupportedError for other block heights.
  GroupSparseF32(ConstMatrixView weight, const BlockMask& mask, std::vector<float> bias = {},
                 std::string name = "linear")
      : name_(std::move(name)), csr_(BlockCsr<float>::from_dense(weight, mask, name_)), bias_(std::move(bias)) {
    check_height();
    check_bias();
  }

  /// From block-CSR parts (as stored in a file). @throws FormatError on a corrupt structure
  /// (see BlockCsr::validate), ShapeError on a bias of the wrong length.
  GroupSparseF32(BlockCsr<float> csr, std::vector<float> bias, std::string name)
      : name_(std::move(name)), csr_(std::move(csr)), bias_(std::move(bias)) {
    csr_.validate(name_);
    check_height();
    check_bias();
  }

  std::size_t in_features() const noexcept { return csr_.in; }
  std::size_t out_features() const noexcept { return csr_.out; }
  const std::string& name() const noexcept { return name_; }
  const BlockCsr<float>& csr() const noexcept { return csr_; }
  const std::vector<float>& bias() const noexcept { return bias_; }
  /// Fraction of blocks stored.
  double density() const noexcept { return csr_.density(); }
  /// Bytes of values, indices and bias.
  std::size_t bytes() const noexcept { return csr_.bytes() + bias_.size() * sizeof(float); }

  /// y [M, out] = x [M, in] W^T + bias; rows of x (or, for few rows, block-rows) split across
  /// num_threads() threads.
  /// @throws ShapeError on mismatched shapes.
  void forward(ConstMatrixView x, MatrixView y, Workspace& /*ws*/) const {
    check_cols(x, csr_.in, "sparse", name_, " input");
    check_shape(y, x.rows(), csr_.out, "sparse", name_, " output");
    if (x.rows() == 0) return;
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    // Keep at least parallel_min_macs_f32 multiply-adds per thread so small layers stay serial.
    csr_.parallel_rows_or_block_rows(
        x.rows(), simd::spmm_f32_tile_rows(csr_.shape.rows), parallel_min_macs_f32,
        [&](std::size_t r0, std::size_t r1, std::size_t br0, std::size_t br1) {
          simd::spmm_f32(x.row(r0), x.stride(), r1 - r0, csr_.in, csr_.row_ptr.data(), csr_.col_idx.data(),
                         csr_.values.data(), csr_.shape.rows, csr_.shape.cols, br0, br1, bias, y.row(r0), y.stride(),
                         csr_.out);
        });
  }

  /// forward() for the outputs of the listed groups only: for each g in groups[0, count),
  /// columns [g * group, (g + 1) * group) of y (an attention layer's query heads that some
  /// query needs), computed by the block-rows that hold them, bit for bit forward()'s values.
  /// Other columns are unspecified (a block-row shared with a listed group is written whole).
  /// Groups in any order, repeats allowed. @throws ShapeError on mismatched shapes;
  /// ConfigError if group is 0 or a group lies past `out`.
  void forward_output_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                             const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    check_cols(x, csr_.in, "sparse", name_, " input");
    check_shape(y, x.rows(), csr_.out, "sparse", name_, " output");
    check_feature_groups(group, groups, count, csr_.out, "sparse", "output", name_);
    const std::size_t m = x.rows();
    if (m == 0 || count == 0) return;
    Workspace::Scope scope(ws);
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    csr_.parallel_group_block_rows(
        group, groups, count, m, parallel_min_macs_f32,
        ws.allocate<std::uint32_t>(csr_.block_rows()), [&](std::size_t br0, std::size_t br1) {
          simd::spmm_f32(x.data(), x.stride(), m, csr_.in, csr_.row_ptr.data(), csr_.col_idx.data(),
                         csr_.values.data(), csr_.shape.rows, csr_.shape.cols, br0, br1, bias,
                         y.data(), y.stride(), csr_.out);
        });
  }

 private:
  void check_height() const {
    if (!simd::spmm_supports_block_rows(csr_.shape.rows)) {
      ::dynasparse::detail::fail<UnsupportedError>("sparse", "block height of the float kernel", "16, 32 or 64",
                                     csr_.shape.rows, name_);
    }
  }
  void check_bias() const {
    if (!bias_.empty() && bias_.size() != csr_.out) {
      ::dynasparse::detail::fail<ShapeError>("sparse", "bias length", csr_.out, bias_.size(), name_ + ".bias");
    }
  }

  std::string name_;
  BlockCsr<float> csr_;
  std::vector<float> bias_;
};

}  // namespace sparse
DYNASPARSE_NAMESPACE_END
