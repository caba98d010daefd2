// SPDX-License-Identifier: Apache-2.0
// DenseF32: the float32 weight format, packed in output panels for a register-tiled kernel.
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
#include "dynasparse/error.hpp"
#include "dynasparse/simd/spmm_f32.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// Weight format of an `nn.Linear(in, out)` in float32, with an optional bias. The weight
/// [out, in] is packed once into panels of panel_rows() outputs x all inputs, each input's
/// outputs consecutive ([panel][in][panel_rows], zero-padded past `out`), so the product is
/// the group-sparse float kernel (simd::spmm_f32) with every block present and one block per
/// panel: a register tile of up to 12 input rows x one panel (6 rows x half a panel on AVX2,
/// whose 16 registers hold no more), weights streamed once per tile and no index overhead. Threads split the panels (parallel_for, dynasparse::num_threads()).
/// Immutable after construction; forward() may run concurrently from many threads.
class DenseF32 {
 public:
  static constexpr const char* format_name = "dense_f32";

  /// Outputs per panel for a layer of `out` outputs: four vectors of the build's float SIMD
  /// width (64 on AVX-512, 32 on AVX2, 16 on SSE/NEON/scalar), halved while a panel would be
  /// mostly padding; always 16, 32 or 64 (the heights spmm_f32 supports).
  static std::size_t panel_rows(std::size_t out) noexcept {
    std::size_t r = 4 * simd::lanes_f32<simd::arch>();
    r = r < 16 ? 16 : (r > 64 ? 64 : r);
    while (r > 16 && out <= r / 2) r /= 2;
    return r;
  }

  /// Copies and packs `weight` [out, in]; `bias` is empty or has `out` values.
  /// @throws ShapeError on a bias of the wrong length; ConfigError if `in` or the panel
  /// count does not fit the kernel's 32-bit indices.
  DenseF32(ConstMatrixView weight, std::vector<float> bias = {}, std::string name = "linear")
      : name_(std::move(name)), in_(weight.cols()), out_(weight.rows()), rows_(panel_rows(out_)),
        panels_((out_ + rows_ - 1) / rows_), weight_(panels_ * rows_ * in_), bias_(std::move(bias)) {
    if (!bias_.empty() && bias_.size() != out_) {
      ::dynasparse::detail::fail<ShapeError>("nn", "bias length", out_, bias_.size(), name_ + ".bias");
    }
    if (panels_ >= 0xffffffffu) {
      ::dynasparse::detail::fail<ConfigError>("nn", "too many output panels for 32-bit indices", "< 2^32", panels_,
                                              name_);
    }
    for (std::size_t p = 0; p < panels_; ++p) {
      float* dst = weight_.data() + p * rows_ * in_;
      for (std::size_t c = 0; c < in_; ++c) {
        for (std::size_t i = 0; i < rows_; ++i) {
          const std::size_t r = p * rows_ + i;
          dst[c * rows_ + i] = r < out_ ? weight(r, c) : 0.0f;
        }
      }
    }
    row_ptr_.resize(panels_ + 1);
    for (std::size_t p = 0; p <= panels_; ++p) row_ptr_[p] = static_cast<std::uint32_t>(p);
    col_idx_.assign(panels_, 0u);
  }

  std::size_t in_features() const noexcept { return in_; }
  std::size_t out_features() const noexcept { return out_; }
  const std::string& name() const noexcept { return name_; }
  /// Bytes held: the packed weights (padding included), indices and bias.
  std::size_t bytes() const noexcept {
    return weight_.bytes() + bias_.size() * sizeof(float) + (row_ptr_.size() + col_idx_.size()) * sizeof(std::uint32_t);
  }
  /// Outputs per packed panel of this layer (panel_rows(out_features())).
  std::size_t panel_height() const noexcept { return rows_; }
  /// The weight [out, in], row-major, unpacked (for saving and inspection).
  std::vector<float> unpack() const {
    std::vector<float> w(out_ * in_);
    for (std::size_t r = 0; r < out_; ++r) {
      for (std::size_t c = 0; c < in_; ++c) w[r * in_ + c] = weight_[(r / rows_) * rows_ * in_ + c * rows_ + r % rows_];
    }
    return w;
  }
  const std::vector<float>& bias() const noexcept { return bias_; }

  /// The outputs of the listed groups only: for each g in groups[0, count), columns
  /// [g * group, (g + 1) * group) of y [M, out] = x W^T + bias (an attention layer's query
  /// heads that some query needs). Other columns of y are left unspecified: outputs sharing
  /// a packed panel with a listed group may be written too. Groups narrower than a panel
  /// (heads of 8 against panels of 64) are gathered into fewer panels first when x has
  /// enough rows to repay the copy (packed_group_min_rows), so the time falls with the
  /// listed outputs, not with the panels they touch. Bit for bit forward()'s values in the
  /// listed columns. @throws ShapeError on mismatched shapes; ConfigError if group is 0 or a
  /// group lies past `out`.
  void forward_output_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                             const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    check_cols(x, in_, "nn", name_, " input");
    check_shape(y, x.rows(), out_, "nn", name_, " output");
    check_feature_groups(group, groups, count, out_, "nn", "output", name_);
    if (x.rows() == 0 || count == 0) return;
    Workspace::Scope scope(ws);
    std::uint32_t* panels = ws.allocate<std::uint32_t>(panels_ + 1);
    const std::size_t np = spans_of_groups(group, groups, count, rows_, panels_, panels);
    if (x.rows() >= packed_group_min_rows && group < rows_) {
      // The listed groups, ascending and once each (out / group fits: group <= out).
      std::uint32_t* listed = ws.allocate<std::uint32_t>(out_ / group);
      const std::size_t nl = spans_of_groups(group, groups, count, group, out_ / group, listed);
      const std::size_t cols = nl * group, packed = (cols + rows_ - 1) / rows_;
      if (packed < np) {
        product_of_gathered(x, y, group, listed, cols, packed, ws);
        return;
      }
    }
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    const std::size_t grain =
        std::max<std::size_t>(1, parallel_min_macs_f32 / (rows_ * in_ * x.rows() + 1));
    parallel_for(0, np, grain, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) {
        simd::spmm_f32(x.data(), x.stride(), x.rows(), in_, row_ptr_.data(), col_idx_.data(),
                       weight_.data(), rows_, in_ == 0 ? 1 : in_, panels[i], panels[i] + 1, bias,
                       y.data(), y.stride(), out_);
      }
    });
  }

  /// Rows of x from which forward_output_groups gathers groups narrower than a panel: the
  /// copy costs about one row's product of the gathered outputs.
  static constexpr std::size_t packed_group_min_rows = 16;

  /// y [M, out] = x W^T + bias reading only the inputs of the listed groups: for each g in
  /// groups[0, count) (ascending), columns [g * group, (g + 1) * group) of x; the others are
  /// taken as zero and never read (an attention layer's heads that no query needs, before
  /// out_proj). Costs count * group / in of forward(). Equals forward() of x with the
  /// skipped inputs zero, up to the order of the sums, when the skipped weights are finite
  /// (forward() would turn 0 * inf into NaN). @throws ShapeError on mismatched shapes;
  /// ConfigError if group is 0 or does not divide `in`, groups are not ascending or lie past
  /// `in`, or the layer has 2^32 blocks of `group` inputs or more.
  void forward_input_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                            const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    check_cols(x, in_, "nn", name_, " input");
    check_shape(y, x.rows(), out_, "nn", name_, " output");
    check_input_groups(group, groups, count, in_, "nn", name_);
    if (x.rows() == 0) return;
    Workspace::Scope scope(ws);
    // The packed panel [in][rows_] is, cut every `group` inputs, a block-row of blocks
    // group x rows_ in input order: block (p, g) sits at block index p * (in / group) + g.
    const std::size_t per_panel = in_ / group;
    if (per_panel != 0 && panels_ > 0xffffffffu / per_panel) {
      ::dynasparse::detail::fail<ConfigError>("nn",
                                              "too many input groups for 32-bit block indices",
                                              "< 2^32 blocks", panels_ * per_panel, name_);
    }
    std::uint32_t* row_ptr = ws.allocate<std::uint32_t>(panels_ + 1);
    std::uint32_t* col_idx = ws.allocate<std::uint32_t>(panels_ * count + 1);
    std::uint32_t* value_blocks = ws.allocate<std::uint32_t>(panels_ * count + 1);
    for (std::size_t p = 0; p <= panels_; ++p) row_ptr[p] = static_cast<std::uint32_t>(p * count);
    for (std::size_t p = 0; p < panels_; ++p) {
      for (std::size_t i = 0; i < count; ++i) {
        col_idx[p * count + i] = groups[i];
        value_blocks[p * count + i] = static_cast<std::uint32_t>(p * per_panel + groups[i]);
      }
    }
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    const std::size_t macs = rows_ * group * count * x.rows() + 1;
    const std::size_t grain = std::max<std::size_t>(1, parallel_min_macs_f32 / macs);
    parallel_for(0, panels_, grain, [&](std::size_t p0, std::size_t p1) {
      simd::spmm_f32(x.data(), x.stride(), x.rows(), in_, row_ptr, col_idx, weight_.data(), rows_,
                     group, p0, p1, bias, y.data(), y.stride(), out_, value_blocks);
    });
  }

  /// y [M, out] = x [M, in] * W^T + bias. x and y may be strided views. Matches a
  /// double-precision sum within float rounding (fused multiply-adds, one fixed order per
  /// output). @throws ShapeError on mismatched shapes.
  void forward(ConstMatrixView x, MatrixView y, Workspace& /*ws*/) const {
    check_cols(x, in_, "nn", name_, " input");
    check_shape(y, x.rows(), out_, "nn", name_, " output");
    if (x.rows() == 0) return;
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    const std::size_t grain = std::max<std::size_t>(1, parallel_min_macs_f32 / (rows_ * in_ * x.rows() + 1));
    parallel_for(0, panels_, grain, [&](std::size_t p0, std::size_t p1) {
      simd::spmm_f32(x.data(), x.stride(), x.rows(), in_, row_ptr_.data(), col_idx_.data(), weight_.data(), rows_,
                     in_ == 0 ? 1 : in_, p0, p1, bias, y.data(), y.stride(), out_);
    });
  }

 private:
  // A run is a head's few outputs (8 floats at head_dim 8): an inline loop, not a memmove
  // call per run (which cost 6% of a gated attention layer at H64).
  static void copy_run(const float* src, std::size_t n, float* dst) noexcept {
    for (std::size_t i = 0; i < n; ++i) dst[i] = src[i];
  }

  // forward_output_groups over `cols` outputs (the groups `listed`, ascending) copied into
  // `packed` panels of the same layout: each thread packs the panels it multiplies, the
  // products land in a [M, cols] scratch and are copied to their columns of y. The packed
  // panel holds a column's weights in forward()'s order, so its sums are forward()'s.
  void product_of_gathered(ConstMatrixView x, MatrixView y, std::size_t group,
                           const std::uint32_t* listed, std::size_t cols, std::size_t packed,
                           Workspace& ws) const {
    // Copies go by runs of gathered columns that are consecutive outputs of one source panel
    // and lie in one packed panel: a group of 8 is one 32-byte copy per input, not 8 loads.
    struct Run {
      std::size_t to, from, len;  // gathered column, output column of y, columns
    };
    const std::size_t m = x.rows();
    Run* runs = ws.allocate<Run>(cols);
    std::size_t* first = ws.allocate<std::size_t>(packed + 1);  // runs of packed panel p
    std::size_t nr = 0;
    for (std::size_t j = 0; j < cols; ++j) {
      const std::size_t from = std::size_t{listed[j / group]} * group + j % group;
      Run* last = nr == 0 ? nullptr : &runs[nr - 1];
      if (last != nullptr && j % rows_ != 0 && from % rows_ != 0 &&
          last->from + last->len == from) {
        ++last->len;
      } else {
        if (j % rows_ == 0) first[j / rows_] = nr;
        runs[nr++] = Run{j, from, 1};
      }
    }
    first[packed] = nr;
    float* w = ws.allocate<float>(packed * rows_ * in_);
    float* b = bias_.empty() ? nullptr : ws.allocate<float>(cols);
    float* tmp = ws.allocate<float>(m * cols);
    if (b != nullptr) {
      for (std::size_t k = 0; k < nr; ++k) {
        std::copy_n(bias_.data() + runs[k].from, runs[k].len, b + runs[k].to);
      }
    }
    const std::size_t grain =
        std::max<std::size_t>(1, parallel_min_macs_f32 / (rows_ * in_ * m + 1));
    parallel_for(0, packed, grain, [&](std::size_t p0, std::size_t p1) {
      for (std::size_t p = p0; p < p1; ++p) {
        float* dst = w + p * rows_ * in_;
        const std::size_t n = std::min(rows_, cols - p * rows_);
        for (std::size_t c = 0; c < in_; ++c) {
          float* d = dst + c * rows_;
          for (std::size_t k = first[p]; k < first[p + 1]; ++k) {
            const std::size_t r = runs[k].from;
            copy_run(weight_.data() + (r / rows_) * rows_ * in_ + c * rows_ + r % rows_,
                     runs[k].len, d + (runs[k].to - p * rows_));
          }
          std::fill(dst + c * rows_ + n, dst + (c + 1) * rows_, 0.0f);
        }
        // row_ptr_/col_idx_ describe one whole-width block per panel, as the packed panels are.
        simd::spmm_f32(x.data(), x.stride(), m, in_, row_ptr_.data(), col_idx_.data(), w, rows_,
                       in_ == 0 ? 1 : in_, p, p + 1, b, tmp, cols, cols);
        for (std::size_t r = 0; r < m; ++r) {
          for (std::size_t k = first[p]; k < first[p + 1]; ++k) {
            copy_run(tmp + r * cols + runs[k].to, runs[k].len, &y(r, runs[k].from));
          }
        }
      }
    });
  }

  std::string name_;
  std::size_t in_ = 0, out_ = 0, rows_ = 16, panels_ = 0;
  AlignedBuffer<float> weight_;
  std::vector<float> bias_;
  std::vector<std::uint32_t> row_ptr_, col_idx_;
};

}  // namespace nn
DYNASPARSE_NAMESPACE_END
