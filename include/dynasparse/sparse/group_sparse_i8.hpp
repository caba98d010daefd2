// SPDX-License-Identifier: Apache-2.0
// GroupSparseI8: int8 group-sparse weights (blocks of R outputs x 4 inputs, per-output-channel
// scales) and their W8A8 product.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/simd/gemm_int8.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/simd/spmm_int8.hpp"
#include "dynasparse/sparse/block_csr.hpp"
#include "dynasparse/sparse/block_mask.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace sparse {

/// Weight format of an `nn.Linear(in, out)` that is both group-sparse and INT8: stored
/// blocks of R outputs (16, 32 or 64) x 4 inputs hold symmetric int8 values with one alpha
/// per output channel (max |w| over the channel's stored weights). forward() is W8A8 like
/// quant::DenseI8 (dynamic per-row activation quantization, int32 sums, float scales and
/// bias) and visits only stored blocks. Immutable; forward() may run concurrently.
class GroupSparseI8 {
 public:
  static constexpr const char* format_name = "gsparse_i8";
  /// Inputs per block: one VNNI / sdot group of four bytes.
  static constexpr std::size_t block_cols = 4;

  /// Keeps the blocks of `mask` from `weight` [out, in] and quantizes them. The mask's block
  /// shape must be R x 4 with R in {16, 32, 64}. @throws UnsupportedError for other shapes,
  /// FormatError on NaN/Inf weights, ShapeError on mismatched shapes or bias length,
  /// ConfigError if in > 65536.
  GroupSparseI8(ConstMatrixView weight, const BlockMask& mask, std::vector<float> bias = {},
                std::string name = "linear")
      : name_(std::move(name)), bias_(std::move(bias)) {
    check_shape_supported(mask.shape);
    const BlockCsr<float> f = BlockCsr<float>::from_dense(weight, mask, name_);
    csr_.out = f.out;
    csr_.in = f.in;
    csr_.shape = f.shape;
    csr_.row_ptr = f.row_ptr;
    csr_.col_idx = f.col_idx;
    // Per-channel alpha over the stored weights; absent ones are zero and do not count.
    alpha_.assign(csr_.out, 0.0f);
    const std::size_t rb = csr_.shape.rows, per_block = rb * block_cols;
    for (std::size_t br = 0; br < csr_.block_rows(); ++br) {
      for (std::uint32_t b = csr_.row_ptr[br]; b < csr_.row_ptr[br + 1]; ++b) {
        for (std::size_t i = 0; i < rb && br * rb + i < csr_.out; ++i) {
          for (std::size_t c = 0; c < block_cols; ++c) {
            const float v = f.values[b * per_block + BlockCsr<float>::offset(f.shape, i, c)];
            if (!std::isfinite(v)) {
              ::dynasparse::detail::fail<FormatError>("sparse", "non-finite value in weights", "a finite value", v,
                                        name_ + " row " + std::to_string(br * rb + i));
            }
            alpha_[br * rb + i] = std::max(alpha_[br * rb + i], std::fabs(v));
          }
        }
      }
    }
    csr_.values.resize_discard(f.values.size());
    for (std::size_t br = 0; br < csr_.block_rows(); ++br) {
      for (std::uint32_t b = csr_.row_ptr[br]; b < csr_.row_ptr[br + 1]; ++b) {
        for (std::size_t i = 0; i < rb && br * rb + i < csr_.out; ++i) {
          const float a = alpha_[br * rb + i];
          for (std::size_t c = 0; c < block_cols; ++c) {
            const float v = f.values[b * per_block + BlockCsr<float>::offset(f.shape, i, c)];
            simd::quantize_f32s8(
                &v, &csr_.values[b * per_block + BlockCsr<std::int8_t>::offset(f.shape, i, c)], 1,
                simd::inv_scale_for(a));
          }
        }
      }
    }
    finish();
  }

  /// From stored parts (int8 block-CSR, one alpha per output channel). @throws FormatError
  /// on a corrupt structure or alphas, plus the errors of the other constructor.
  GroupSparseI8(BlockCsr<std::int8_t> csr, std::vector<float> alpha, std::vector<float> bias, std::string name)
      : name_(std::move(name)), csr_(std::move(csr)), alpha_(std::move(alpha)), bias_(std::move(bias)) {
    csr_.validate(name_);
    check_shape_supported(csr_.shape);
    if (alpha_.size() != csr_.out) {
      ::dynasparse::detail::fail<FormatError>("sparse", "alpha count", csr_.out, alpha_.size(), name_ + ".alpha");
    }
    for (float a : alpha_) {
      if (!(a >= 0.0f) || !std::isfinite(a)) {
        ::dynasparse::detail::fail<FormatError>("sparse", "alpha must be finite and >= 0", ">= 0", a, name_ + ".alpha");
      }
    }
    for (std::int8_t v : csr_.values) {
      if (v == -128) ::dynasparse::detail::fail<FormatError>("sparse", "int8 weight outside the symmetric range", "[-127, 127]", -128, name_);
    }
    finish();
  }

  static constexpr std::size_t max_in_features = 65536;

  std::size_t in_features() const noexcept { return csr_.in; }
  std::size_t out_features() const noexcept { return csr_.out; }
  const std::string& name() const noexcept { return name_; }
  const BlockCsr<std::int8_t>& csr() const noexcept { return csr_; }
  const std::vector<float>& alphas() const noexcept { return alpha_; }
  const std::vector<float>& bias() const noexcept { return bias_; }
  double density() const noexcept { return csr_.density(); }
  /// Bytes of int8 values, indices, per-output sums, alphas and bias.
  std::size_t bytes() const noexcept {
    return csr_.bytes() + shift_init_.size() * sizeof(std::int32_t) +
           (alpha_.size() + w_scale_.size() + bias_.size()) * sizeof(float);
  }

  /// Uses a calibrated activation alpha (static quantization) instead of each row's max |x|;
  /// 0 switches back to dynamic. @throws ConfigError on a negative or non-finite alpha.
  void set_activation_alpha(float alpha) {
    if (!(alpha >= 0.0f) || !std::isfinite(alpha)) {
      ::dynasparse::detail::fail<ConfigError>("sparse", "activation alpha must be finite and >= 0", ">= 0", alpha,
                                              name_);
    }
    activation_alpha_ = alpha;
  }
  float activation_alpha() const noexcept { return activation_alpha_; }

  /// y [M, out] = x [M, in] W^T + bias, W8A8 over stored blocks only. Rows of x with NaN or
  /// +-inf give NaN rows. Scratch: M * (in rounded up to 4) + 4 M bytes. @throws ShapeError.
  void forward(ConstMatrixView x, MatrixView y, Workspace& ws) const {
    check_cols(x, csr_.in, "sparse", name_, " input");
    check_shape(y, x.rows(), csr_.out, "sparse", name_, " output");
    const std::size_t m = x.rows();
    if (m == 0) return;
    Workspace::Scope scope(ws);
    const Quantized q = quantize(x, ws);
    // Keep at least parallel_min_macs_i8 multiply-adds per thread so small layers stay serial.
    csr_.parallel_rows_or_block_rows(m, simd::spmm_int8_tile_rows, parallel_min_macs_i8,
                                     [&](std::size_t r0, std::size_t r1, std::size_t br0,
                                         std::size_t br1) { product(q, r0, r1, br0, br1, y); });
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
    const Quantized q = quantize(x, ws);
    csr_.parallel_group_block_rows(
        group, groups, count, m, parallel_min_macs_i8,
        ws.allocate<std::uint32_t>(csr_.block_rows()),
        [&](std::size_t br0, std::size_t br1) { product(q, 0, m, br0, br1, y); });
  }

 private:
  // Activations prepared for the kernels: rows `lda` bytes apart, one scale per row.
  struct Quantized {
    const std::int8_t* a;
    std::size_t lda;
    const float* row_scale;
  };

  // Scratch from ws (the caller's scope): M * (in rounded up to 4) + 4 M bytes.
  Quantized quantize(ConstMatrixView x, Workspace& ws) const {
    const std::size_t m = x.rows();
    const std::size_t lda = simd::gemm_activation_row_bytes(csr_.in);
    // Padding past `in` up to the block's four inputs must read as zero: round up to 4.
    const std::size_t lda4 = std::max(lda, (csr_.in + 3) / 4 * 4);
    std::int8_t* a = ws.allocate<std::int8_t>(m * lda4);
    float* row_scale = ws.allocate<float>(m);
    // Rows are quantized on every thread: at high sparsity this pass is a fifth of the call.
    parallel_for(0, m, std::max<std::size_t>(1, parallel_min_quantize / (csr_.in + 1)), [&](std::size_t r0, std::size_t r1) {
      simd::gemm_quantize_activations(x.row(r0), x.stride(), r1 - r0, csr_.in, activation_alpha_, a + r0 * lda4, lda4,
                                      row_scale + r0);
    });
    return {a, lda4, row_scale};
  }

  // Rows [r0, r1) of y, outputs of block-rows [br0, br1).
  void product(const Quantized& q, std::size_t r0, std::size_t r1, std::size_t br0, std::size_t br1,
               MatrixView y) const {
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    const std::size_t out = csr_.out;
    simd::spmm_s8s8_s32(q.a + r0 * q.lda, q.lda, r1 - r0, csr_.in, csr_.row_ptr.data(),
                        csr_.col_idx.data(), csr_.values.data(), csr_.shape.rows, br0, br1,
                        shift_init_.data(),
                        [&](std::size_t t0, std::size_t rows, std::size_t n0,
                            const std::int32_t* tile, std::size_t ld) {
                          const std::size_t nn = std::min(ld, out - n0);
                          for (std::size_t r = 0; r < rows; ++r) {
                            simd::dequantize_s32f32(
                                tile + r * ld, nn, q.row_scale[r0 + t0 + r], w_scale_.data() + n0,
                                bias ? bias + n0 : nullptr, y.row(r0 + t0 + r) + n0);
                          }
                        });
  }

  void check_shape_supported(BlockShape s) const {
    if (!(s.rows == 16 || s.rows == 32 || s.rows == 64) || s.cols != block_cols) {
      ::dynasparse::detail::fail<UnsupportedError>("sparse", "block shape of the int8 kernel", "16x4, 32x4 or 64x4",
                                     std::to_string(s.rows) + "x" + std::to_string(s.cols), name_);
    }
  }

  void finish() {
    if (!bias_.empty() && bias_.size() != csr_.out) {
      ::dynasparse::detail::fail<ShapeError>("sparse", "bias length", csr_.out, bias_.size(), name_ + ".bias");
    }
    if (csr_.in > max_in_features) {
      ::dynasparse::detail::fail<ConfigError>("sparse", "too many input features for int32 accumulation",
                                "<= " + std::to_string(max_in_features), csr_.in, name_);
    }
    const std::size_t rb = csr_.shape.rows, per_block = rb * block_cols;
    shift_init_.assign(csr_.block_rows() * rb, 0);
    for (std::size_t br = 0; br < csr_.block_rows(); ++br) {
      for (std::uint32_t b = csr_.row_ptr[br]; b < csr_.row_ptr[br + 1]; ++b) {
        for (std::size_t i = 0; i < rb; ++i) {
          for (std::size_t c = 0; c < block_cols; ++c) {
            shift_init_[br * rb + i] -= 128 * csr_.values[b * per_block + i * block_cols + c];
          }
        }
      }
    }
    w_scale_.resize(alpha_.size());
    for (std::size_t n = 0; n < alpha_.size(); ++n) w_scale_[n] = alpha_[n] / 127.0f;
  }

  std::string name_;
  BlockCsr<std::int8_t> csr_;
  std::vector<float> alpha_;
  std::vector<float> bias_;
  std::vector<std::int32_t> shift_init_;  // -128 * stored-weight sum per output, padded
  std::vector<float> w_scale_;            // alpha / 127 per output channel
  float activation_alpha_ = 0.0f;         // 0: dynamic per-row quantization
};

}  // namespace sparse
DYNASPARSE_NAMESPACE_END
