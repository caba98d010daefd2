// SPDX-License-Identifier: Apache-2.0
// AnyLinear: a linear layer whose weight format is chosen at run time (per layer, from a
// file or a conversion), and the sparsify/quantize conversions that choose it.
#pragma once

#include <cstddef>
#include <functional>
#include <sstream>
#include <type_traits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "dynasparse/nn/linear.hpp"
#include "dynasparse/sparse/group_sparse_f32.hpp"
#include "dynasparse/sparse/group_sparse_i8.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// A linear layer in any of the four weight formats, chosen at run time (per layer, from a
/// file or a conversion). The choice is paid once per call (a variant visit), never per
/// element. Same interface as Linear<Format>, so modules templated on their linear type
/// (GatedAttention<AnyLinear>) accept it.
class AnyLinear {
 public:
  using Variant = std::variant<Linear<DenseF32>, Linear<quant::DenseI8>, Linear<sparse::GroupSparseF32>,
                               Linear<sparse::GroupSparseI8>>;

  /// From any Linear<Format> of the four formats.
  template <class Format>
  AnyLinear(Linear<Format> layer) : v_(std::move(layer)) {}  // NOLINT(google-explicit-constructor)

  /// y = x W^T + b through whichever format is held. @throws ShapeError on shapes.
  void forward(ConstMatrixView x, MatrixView y, Workspace& ws) const {
    if (tap_) tap_(x);
    std::visit([&](const auto& l) { l.forward(x, y, ws); }, v_);
  }
  /// Linear::forward_output_groups of the held layer: only the outputs the listed groups
  /// need where the format can skip the others. The tap sees x as in forward().
  void forward_output_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                             const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    if (tap_) tap_(x);
    std::visit([&](const auto& l) { l.forward_output_groups(x, y, group, groups, count, ws); }, v_);
  }
  /// Linear::forward_input_groups of the held layer: x must be zero outside the groups
  /// (formats that cannot skip read every input). The tap sees x as in forward().
  void forward_input_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                            const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    if (tap_) tap_(x);
    std::visit([&](const auto& l) { l.forward_input_groups(x, y, group, groups, count, ws); }, v_);
  }
  /// The layer's name (its state_dict prefix, e.g. "layers.0.ffn.up").
  const std::string& name() const noexcept {
    return std::visit([](const auto& l) -> const std::string& { return l.format().name(); }, v_);
  }
  /// Calls `tap(x)` with every input before the product (calibration observes activations
  /// this way); an empty function removes it. While a tap is set, forward() is only as
  /// thread-safe as the tap.
  void set_tap(std::function<void(ConstMatrixView)> tap) { tap_ = std::move(tap); }
  /// Whether the format quantizes its input (W8A8), and so takes an activation alpha.
  bool quantizes_input() const noexcept {
    return std::holds_alternative<Linear<quant::DenseI8>>(v_) || std::holds_alternative<Linear<sparse::GroupSparseI8>>(v_);
  }
  /// Static activation alpha of an INT8 format (0: dynamic per-row). @throws ConfigError for
  /// a float format (nothing to calibrate) or a negative or non-finite alpha.
  void set_activation_alpha(float alpha) {
    if (auto* d = std::get_if<Linear<quant::DenseI8>>(&v_)) return d->format().set_activation_alpha(alpha);
    if (auto* s = std::get_if<Linear<sparse::GroupSparseI8>>(&v_)) return s->format().set_activation_alpha(alpha);
    ::dynasparse::detail::fail<ConfigError>("nn", "activation alpha for a float layer", "dense_i8|gsparse_i8",
                                            format_name(), name());
  }
  /// The static activation alpha; 0 for dynamic quantization and for float formats.
  float activation_alpha() const noexcept {
    if (auto* d = std::get_if<Linear<quant::DenseI8>>(&v_)) return d->format().activation_alpha();
    if (auto* s = std::get_if<Linear<sparse::GroupSparseI8>>(&v_)) return s->format().activation_alpha();
    return 0.0f;
  }
  std::size_t in_features() const noexcept {
    return std::visit([](const auto& l) { return l.in_features(); }, v_);
  }
  std::size_t out_features() const noexcept {
    return std::visit([](const auto& l) { return l.out_features(); }, v_);
  }
  std::size_t bytes() const noexcept {
    return std::visit([](const auto& l) { return l.bytes(); }, v_);
  }
  /// Fraction of the [out, in] weights stored and multiplied: 1 for the dense formats, the
  /// block density for the group-sparse ones (so 2 * in * out * density() FLOPs per row).
  double density() const noexcept {
    if (auto* f = std::get_if<Linear<sparse::GroupSparseF32>>(&v_)) return f->format().density();
    if (auto* i = std::get_if<Linear<sparse::GroupSparseI8>>(&v_)) return i->format().density();
    return 1.0;
  }
  /// "dense_f32", "dense_i8", "gsparse_f32" or "gsparse_i8".
  const char* format_name() const noexcept {
    return std::visit([](const auto& l) -> const char* { return std::decay_t<decltype(l.format())>::format_name; },
                      v_);
  }
  const Variant& variant() const noexcept { return v_; }
  /// The bias (`out` values), or empty when the layer has none.
  const std::vector<float>& bias() const noexcept {
    return std::visit([](const auto& l) -> const std::vector<float>& { return l.format().bias(); }, v_);
  }
  /// The weight as a dense float matrix `[out, in]`, row-major: what the layer multiplies by
  /// (INT8 values times their channel's alpha / 127; absent blocks zero). For converting a
  /// layer to another format.
  std::vector<float> to_dense() const {
    if (auto* d = std::get_if<Linear<DenseF32>>(&v_)) return d->format().unpack();
    if (auto* s = std::get_if<Linear<sparse::GroupSparseF32>>(&v_)) return s->format().csr().to_dense();
    std::vector<float> w;
    const std::vector<float>* alpha = nullptr;
    if (auto* q = std::get_if<Linear<quant::DenseI8>>(&v_)) {
      const quant::QuantizedMatrix m = q->format().unpack();
      w.assign(m.values.data(), m.values.data() + m.values.size());
      alpha = &q->format().alphas();
    } else {
      const auto& f = std::get<Linear<sparse::GroupSparseI8>>(v_).format();
      w = f.csr().to_dense();
      alpha = &f.alphas();
    }
    const std::size_t in = in_features();
    for (std::size_t r = 0; r < out_features(); ++r) {
      const float s = quant::scale_of((*alpha)[r]);
      for (std::size_t c = 0; c < in; ++c) w[r * in + c] *= s;
    }
    return w;
  }

 private:
  Variant v_;
  std::function<void(ConstMatrixView)> tap_;
};

/// Free-function forms, for code written against either Linear<Format> or AnyLinear.
inline void forward(const AnyLinear& layer, ConstMatrixView x, MatrixView y, Workspace& ws) {
  layer.forward(x, y, ws);
}
inline std::size_t in_features(const AnyLinear& layer) noexcept { return layer.in_features(); }
inline std::size_t out_features(const AnyLinear& layer) noexcept { return layer.out_features(); }
inline std::size_t bytes(const AnyLinear& layer) noexcept { return layer.bytes(); }
inline const char* format_name(const AnyLinear& layer) noexcept { return layer.format_name(); }

/// Sparsity below which a group-sparse layer is not faster than the dense one, per block
/// shape (fraction of blocks removed): the largest crossover measured by
/// BM_SparseBlockShape and BM_Linear/gsparse_* (bench/linear_bench.cpp; README's group-sparsity
/// and block-shape tables) at 1x4096x4096, 128x512x2048 and 128x2048x512 on AVX-512, one
/// thread, against DenseF32's packed kernel (or DenseI8). Shapes not measured: 0.5.
inline double crossover_sparsity(sparse::BlockShape shape, bool int8) noexcept {
  if (int8) return shape.rows == 64 ? 0.05 : 0.10;
  if (shape.rows == 16) return 0.50;
  if (shape.rows == 32) return shape.cols <= 4 ? 0.20 : 0.5;
  if (shape.rows == 64) return shape.cols <= 4 ? 0.10 : 0.5;
  return 0.5;
}

/// The block shape conversions use unless told otherwise: 64 outputs x 4 inputs, the shape
/// with the lowest measured crossover (BM_SparseBlockShape: sparse at least as fast as dense
/// from 10% sparsity in float and from 0% in INT8, at 1x4096x4096 and 128x512x2048). Taller
/// blocks share each activation load among more outputs; the price is coarser pruning (a
/// block is 256 weights), so at a given sparsity a model may lose more accuracy than with
/// 16x4 blocks — which pay off in float only from 50% sparsity at M = 128.
inline constexpr sparse::BlockShape recommended_block_shape{64, 4};

/// Result of a conversion: the layer, and a sentence saying what was done and why.
struct Converted {
  AnyLinear layer;
  std::string note;
};

/// Options of sparsify(): pruning (block shape, by default recommended_block_shape; target;
/// balance) and whether the stored blocks are quantized to INT8 (16x4, 32x4 and 64x4 blocks
/// only).
struct SparsifyOptions {
  sparse::PruneOptions prune{recommended_block_shape, 0.5, false};
  bool int8 = false;
};

/// Prunes `weight` [out, in] to the target by block norm and returns the group-sparse layer,
/// unless the target is below the block shape's measured crossover (crossover_sparsity),
/// where the sparse kernel would be slower: then the layer stays dense (DenseF32, or DenseI8
/// with int8) and the note says so. @throws the errors of prune_by_norm and the formats.
inline Converted sparsify(ConstMatrixView weight, std::vector<float> bias, const SparsifyOptions& opt,
                          const std::string& name) {
  const double cross = crossover_sparsity(opt.prune.shape, opt.int8);
  std::ostringstream note;
  note << name << ": ";
  if (opt.prune.target < cross) {
    note << "kept dense: target sparsity " << opt.prune.target << " is below the " << opt.prune.shape.rows << "x"
         << opt.prune.shape.cols << (opt.int8 ? " int8" : " float") << " crossover " << cross;
    if (opt.int8) return {Linear<quant::DenseI8>(quant::DenseI8(weight, std::move(bias), name)), note.str()};
    return {Linear<DenseF32>(DenseF32(weight, std::move(bias), name)), note.str()};
  }
  const sparse::BlockMask mask = sparse::prune_by_norm(weight, opt.prune, name);
  note << "group-sparse " << opt.prune.shape.rows << "x" << opt.prune.shape.cols << " at sparsity "
       << mask.sparsity() << (opt.int8 ? ", int8" : ", float");
  if (opt.int8) {
    return {Linear<sparse::GroupSparseI8>(sparse::GroupSparseI8(weight, mask, std::move(bias), name)), note.str()};
  }
  return {Linear<sparse::GroupSparseF32>(sparse::GroupSparseF32(weight, mask, std::move(bias), name)), note.str()};
}

}  // namespace nn
DYNASPARSE_NAMESPACE_END
