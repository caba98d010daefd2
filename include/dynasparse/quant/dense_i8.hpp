// SPDX-License-Identifier: Apache-2.0
// DenseI8: the int8 weight format (per-output-channel scales) and its GEMM/GEMV driver.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "dynasparse/core/eigen_interop.hpp"
#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/quant/lut.hpp"
#include "dynasparse/quant/quantize.hpp"
#include "dynasparse/simd/gemm_int8.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace quant {

/// Weight format of an `nn.Linear(in, out)` held as symmetric int8 with one alpha per output
/// channel, packed once at construction for the build's int8 GEMM. Immutable after
/// construction; forward() may run concurrently from many threads, each with its own
/// Workspace.
///
/// Two products:
/// - forward(): W8A8. Each input row is quantized on the fly (dynamic, its own max |x|) or
///   with a calibrated alpha (set_activation_alpha), multiplied in int8 with int32
///   accumulation, then scaled by alpha_row * alpha_channel / 127^2 and biased in float.
/// - forward_weight_only(): weights dequantized through the 256-entry lookup table, float
///   activations and arithmetic (the seed's LUT path; more accurate, less fast).
class DenseI8 {
 public:
  static constexpr const char* format_name = "dense_i8";

  /// Quantizes `weight` [out, in] per output channel (max-abs) and packs it. `bias` is
  /// empty or has `out` values. @throws FormatError on NaN/Inf weights, ShapeError on a
  /// bias of the wrong length, ConfigError if in > 65536 (the int32 accumulation bound).
  DenseI8(ConstMatrixView weight, std::vector<float> bias = {}, std::string name = "linear")
      : DenseI8(quantize(weight, Granularity::PerChannel, 0, name), std::move(bias), std::move(name)) {}

  /// From weights already quantized (e.g. read from a file). PerTensor alphas are spread to
  /// every channel; PerGroup is not supported by the W8A8 kernel. @throws UnsupportedError
  /// for PerGroup; FormatError if the value count is not rows * cols or a value is -128
  /// (outside the symmetric range the kernels' sign tricks rely on); plus the errors of the
  /// other constructor.
  DenseI8(const QuantizedMatrix& q, std::vector<float> bias, std::string name)
      : name_(std::move(name)), in_(q.cols()), out_(q.rows()), bias_(std::move(bias)) {
    validate(q.params, name_);
    if (in_ != 0 && out_ > q.values.size() / in_) {  // no product that could overflow
      dynasparse::detail::fail<FormatError>("quant", "int8 value count", shape_string(out_, in_),
                                            std::to_string(q.values.size()) + " values", name_);
    }
    if (q.values.size() != out_ * in_) {
      dynasparse::detail::fail<FormatError>("quant", "int8 value count", out_ * in_,
                                            q.values.size(), name_);
    }
    for (std::size_t i = 0; i < q.values.size(); ++i) {
      if (q.values[i] == -128) {
        dynasparse::detail::fail<FormatError>("quant", "int8 weight outside the symmetric range",
                                              "[-127, 127]", -128,
                                              name_ + " element " + std::to_string(i));
      }
    }
    if (q.params.granularity == Granularity::PerGroup) {
      dynasparse::detail::fail<UnsupportedError>("quant", "per-group weights in the W8A8 kernel",
                                                 "per-channel or per-tensor alphas", "per-group", name_);
    }
    if (!bias_.empty() && bias_.size() != out_) {
      dynasparse::detail::fail<ShapeError>("quant", "bias length", out_, bias_.size(), name_ + ".bias");
    }
    if (in_ > max_in_features) {
      dynasparse::detail::fail<ConfigError>("quant", "too many input features for int32 accumulation",
                                            "<= " + std::to_string(max_in_features), in_, name_);
    }
    alpha_.resize(out_);
    w_scale_.resize(out_);
    for (std::size_t n = 0; n < out_; ++n) {
      alpha_[n] = q.params.alpha_at(n, 0);
      w_scale_[n] = scale_of(alpha_[n]);
    }
    packed_ = simd::PackedI8Weights<>(q.values.data(), out_, in_, in_);
  }

  /// Largest K the int32 accumulators hold exactly: K * 255 * 127 < 2^31 on the shifted
  /// VNNI path.
  static constexpr std::size_t max_in_features = 65536;

  std::size_t in_features() const noexcept { return in_; }
  std::size_t out_features() const noexcept { return out_; }
  const std::string& name() const noexcept { return name_; }
  /// Weight bytes held: packed int8 values, column sums, alphas, bias.
  std::size_t bytes() const noexcept {
    return packed_.bytes() + (alpha_.size() + w_scale_.size() + bias_.size()) * sizeof(float);
  }
  const std::vector<float>& alphas() const noexcept { return alpha_; }
  const std::vector<float>& bias() const noexcept { return bias_; }

  /// Uses a calibrated activation alpha (static quantization) instead of each row's max |x|;
  /// 0 switches back to dynamic. @throws ConfigError on a negative or non-finite alpha.
  void set_activation_alpha(float alpha) {
    if (!(alpha >= 0.0f) || !std::isfinite(alpha)) {
      dynasparse::detail::fail<ConfigError>("quant", "activation alpha must be finite and >= 0",
                                            ">= 0", alpha, name_);
    }
    activation_alpha_ = alpha;
  }
  float activation_alpha() const noexcept { return activation_alpha_; }

  /// The int8 weights and alphas, unpacked (for saving and inspection).
  QuantizedMatrix unpack() const {
    QuantizedMatrix q;
    q.params.granularity = Granularity::PerChannel;
    q.params.rows = out_;
    q.params.cols = in_;
    q.params.alpha = alpha_;
    q.values.resize_discard(out_ * in_);
    for (std::size_t n = 0; n < out_; ++n) {
      for (std::size_t k = 0; k < in_; ++k) q.values[n * in_ + k] = packed_.at(n, k);
    }
    return q;
  }

  /// y [M, out] = x [M, in] * W^T + bias, W8A8. A row of x containing NaN or +-inf gives a
  /// row of NaN (its scale is meaningless), never a silently finite answer.
  /// Scratch: M * (in rounded up to 4) bytes + 4 M bytes from `ws`. Splits output columns
  /// across num_threads() threads. @throws ShapeError on mismatched shapes.
  void forward(ConstMatrixView x, MatrixView y, Workspace& ws) const {
    check_cols(x, in_, "quant", name_, " input");
    check_shape(y, x.rows(), out_, "quant", name_, " output");
    product(x, y, nullptr, 0, ws);
  }

  /// forward() for the outputs of the listed groups only: for each g in groups[0, count),
  /// columns [g * group, (g + 1) * group) of y, equal to forward()'s bit for bit. The
  /// product runs over the panels (simd::gemm_list_step: 8 columns on AVX2 and the scalar
  /// path, 16 with NEON, AVX-VNNI and AVX-512 VNNI) that hold a listed column, so it costs about
  /// (panels touched) / (all panels) of forward() (several rows on AVX-512 VNNI compute whole
  /// 64-column panels); columns of other panels are not written, the rest of a touched panel
  /// is. Groups may come in any order. (An attention layer's heads that no
  /// query needs, in q_proj.) @throws ShapeError on mismatched shapes; ConfigError if group
  /// is 0 or wider than the layer, or a group lies past it.
  void forward_output_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                             const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    check_cols(x, in_, "quant", name_, " input");
    check_shape(y, x.rows(), out_, "quant", name_, " output");
    check_feature_groups(group, groups, count, out_, "quant", "output", name_);
    if (x.rows() == 0 || count == 0) return;
    Workspace::Scope scope(ws);
    constexpr std::size_t step = simd::gemm_list_step<>;
    const std::size_t units = (out_ + step - 1) / step;
    std::uint32_t* list = ws.allocate<std::uint32_t>(units);
    const std::size_t n = spans_of_groups(group, groups, count, step, units, list);
    product(x, y, list, n, ws);
  }

  /// y [M, out] = x W^T + bias reading only the inputs of the listed groups: for each g in
  /// groups[0, count) (ascending), columns [g * group, (g + 1) * group) of x; the others are
  /// taken as zero and never read (an attention layer's heads that no query needs, before
  /// out_proj). Row scales come from the listed inputs only, so the result equals forward()
  /// of x with the other inputs zero, bit for bit. It does about count * group / in of
  /// forward()'s multiply-adds (groups rounded out to the kernel's k groups) and reads that
  /// share of the weights (AVX-512 VNNI adds a pass over those weights for its start
  /// values), except with AVX-VNNI (256-bit), which still does them all, on zero codes.
  /// @throws ShapeError on mismatched shapes; ConfigError if group is 0 or does not divide
  /// `in`, or groups are not ascending or lie past `in`.
  void forward_input_groups(ConstMatrixView x, MatrixView y, std::size_t group,
                            const std::uint32_t* groups, std::size_t count, Workspace& ws) const {
    check_cols(x, in_, "quant", name_, " input");
    check_shape(y, x.rows(), out_, "quant", name_, " output");
    check_input_groups(group, groups, count, in_, "quant", name_);
    if (x.rows() == 0) return;
    Workspace::Scope scope(ws);
    // The groups as ranges of features, adjacent ones merged, and as ranges of the kernel's
    // k groups (rounded outwards: the codes there outside the groups are zero). in_ <=
    // max_in_features, so every bound fits 32 bits.
    constexpr std::size_t kg = simd::GemmI8Traits<simd::int8_arch>::k_group;
    InputSpans in;
    std::uint32_t* f = ws.allocate<std::uint32_t>(2 * count + 1);
    std::uint32_t* k = ws.allocate<std::uint32_t>(2 * count + 1);
    for (std::size_t i = 0; i < count; ++i) {
      const auto f0 = static_cast<std::uint32_t>(std::size_t{groups[i]} * group);
      const auto f1 = static_cast<std::uint32_t>(f0 + group);
      if (in.features > 0 && f[2 * in.features - 1] == f0) {
        f[2 * in.features - 1] = f1;
      } else {
        f[2 * in.features] = f0;
        f[2 * in.features + 1] = f1;
        ++in.features;
      }
      const auto k0 = static_cast<std::uint32_t>(f0 / kg);
      const auto k1 = static_cast<std::uint32_t>((f1 + kg - 1) / kg);
      if (in.k_groups > 0 && k[2 * in.k_groups - 1] >= k0) {
        k[2 * in.k_groups - 1] = std::max(k[2 * in.k_groups - 1], k1);
      } else {
        k[2 * in.k_groups] = k0;
        k[2 * in.k_groups + 1] = k1;
        ++in.k_groups;
      }
    }
    in.feature_spans = f;
    in.k_spans = k;
    for (std::size_t i = 0; i < in.k_groups; ++i) in.k_read += (k[2 * i + 1] - k[2 * i]) * kg;
    product(x, y, nullptr, 0, ws, &in);
  }

  /// y [M, out] = x [M, in] * dequant(W)^T + bias: the weight-only path. Blocks of 64
  /// output channels x 256 inputs are dequantized through the 256-entry lookup table into
  /// float scratch (64 KiB per thread, in L2) and multiplied in float by every input row;
  /// each channel's scale applies once, after its sum. @throws ShapeError on mismatched
  /// shapes.
  void forward_weight_only(ConstMatrixView x, MatrixView y, Workspace& ws) const {
    check_cols(x, in_, "quant", name_, " input");
    check_shape(y, x.rows(), out_, "quant", name_, " output");
    const std::size_t m = x.rows();
    if (m == 0) return;
    constexpr std::size_t tc = simd::gemm_tile_cols, kc = 256;
    const std::size_t panels = (out_ + tc - 1) / tc;
    const std::size_t threads = static_cast<std::size_t>(num_threads());
    Workspace::Scope scope(ws);
    float* scratch = ws.allocate<float>(threads * (kc * tc + m * tc));
    const DequantLut lut(1.0f);  // codes to floats; each channel's scale applies after the sum
    std::atomic<std::size_t> next_slot{0};
    parallel_for(0, panels, 1, [&](std::size_t p0, std::size_t p1) {
      // parallel_for calls this body at most num_threads() times: each call takes its own
      // slice of the scratch.
      float* wf = scratch + next_slot.fetch_add(1) * (kc * tc + m * tc);
      float* acc = wf + kc * tc;
      for (std::size_t p = p0; p < p1; ++p) {
        std::fill(acc, acc + m * tc, 0.0f);
        for (std::size_t k0 = 0; k0 < in_; k0 += kc) {
          const std::size_t kn = std::min(kc, in_ - k0);
          packed_.lookup_panel(p * tc, k0, kn, lut.data(), wf);
          for (std::size_t r = 0; r < m; ++r) {
            const float* xr = x.row(r) + k0;
            float* ar = acc + r * tc;
            for (std::size_t kk = 0; kk < kn; ++kk) simd::axpy_f32(xr[kk], wf + kk * tc, ar, tc);
          }
        }
        const std::size_t c0 = p * tc, cols = std::min(tc, out_ - c0);
        for (std::size_t r = 0; r < m; ++r) {
          for (std::size_t c = 0; c < cols; ++c) {
            const float v = acc[r * tc + c] * scale_of(alpha_[c0 + c]);
            y(r, c0 + c) = bias_.empty() ? v : v + bias_[c0 + c];
          }
        }
      }
    });
  }

 private:
  // The inputs forward_input_groups reads: ranges of features and of the kernel's k groups
  // ([2i], [2i + 1]), and how many k that is.
  struct InputSpans {
    const std::uint32_t* feature_spans = nullptr;
    std::size_t features = 0;
    const std::uint32_t* k_spans = nullptr;
    std::size_t k_groups = 0;
    std::size_t k_read = 0;
  };

  // y = x W^T + bias over the column panels panels[0, count) (gemm_s8s8_s32_panels), or
  // over every column when panels is null, reading the inputs in `in` (all when null; with
  // `in`, panels must be null). Shapes are checked by the caller.
  void product(ConstMatrixView x, MatrixView y, const std::uint32_t* panels, std::size_t count,
               Workspace& ws, const InputSpans* in = nullptr) const {
    const std::size_t m = x.rows();
    if (m == 0) return;
    Workspace::Scope scope(ws);
    const std::size_t lda = simd::gemm_activation_row_bytes(in_);
    std::int8_t* a = ws.allocate<std::int8_t>(m * lda);
    float* row_scale = ws.allocate<float>(m);
    parallel_for(0, m, std::max<std::size_t>(1, parallel_min_quantize / (in_ + 1)),
                 [&](std::size_t r0, std::size_t r1) {
                   if (in != nullptr) {
                     simd::gemm_quantize_activation_spans(
                         x.row(r0), x.stride(), r1 - r0, in_, in->feature_spans, in->features,
                         activation_alpha_, a + r0 * lda, lda, row_scale + r0);
                   } else {
                     simd::gemm_quantize_activations(x.row(r0), x.stride(), r1 - r0, in_,
                                                     activation_alpha_, a + r0 * lda, lda,
                                                     row_scale + r0);
                   }
                 });
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    constexpr std::size_t tc = simd::gemm_tile_cols;
    const auto epilogue = [&](std::size_t r0, std::size_t rows, std::size_t c0, std::size_t cols,
                              const std::int32_t* tile, std::size_t ld) {
      for (std::size_t r = 0; r < rows; ++r) {
        simd::dequantize_s32f32(tile + r * ld, cols, row_scale[r0 + r], w_scale_.data() + c0,
                                bias ? bias + c0 : nullptr, y.row(r0 + r) + c0);
      }
    };
    // VNNI-256 reads every k, span or not.
    const std::size_t k_read = in != nullptr && simd::gemm_kspans_skip_v<> ? in->k_read : in_;
    const std::size_t grain =
        std::max<std::size_t>(1, parallel_min_macs_i8 / (tc * k_read * m + 1));
    if (in != nullptr) {
      parallel_for(0, (out_ + tc - 1) / tc, grain, [&](std::size_t p0, std::size_t p1) {
        simd::gemm_s8s8_s32_kspans(a, lda, packed_, m, p0 * tc, std::min(p1 * tc, out_),
                                   in->k_spans, in->k_groups, epilogue);
      });
      return;
    }
    if (panels == nullptr) {
      parallel_for(0, (out_ + tc - 1) / tc, grain, [&](std::size_t p0, std::size_t p1) {
        simd::gemm_s8s8_s32(a, lda, packed_, m, p0 * tc, std::min(p1 * tc, out_), epilogue);
      });
      return;
    }
    // The grain above counts tiles; a listed panel is a tile's 1 / (tc / step).
    constexpr std::size_t per_tile = tc / simd::gemm_list_step<>;
    parallel_for(0, count, grain * per_tile, [&](std::size_t i0, std::size_t i1) {
      simd::gemm_s8s8_s32_panels(a, lda, packed_, m, panels + i0, i1 - i0, epilogue);
    });
  }

  std::string name_;
  std::size_t in_ = 0, out_ = 0;
  std::vector<float> bias_;
  std::vector<float> alpha_;
  std::vector<float> w_scale_;  // alpha / 127 per output channel
  simd::PackedI8Weights<> packed_;
  float activation_alpha_ = 0.0f;
};

}  // namespace quant
DYNASPARSE_NAMESPACE_END
