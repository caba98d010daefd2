// SPDX-License-Identifier: Apache-2.0
// Calibration observers: streaming statistics of a tensor's values that choose its alpha.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace quant {

/// How an observer turns what it saw into alpha.
enum class ObserverKind {
  MaxAbs,      ///< largest |x| seen (the seed's rule); exact, never clips
  Percentile,  ///< the given percentile of |x|; clips the rarest outliers
  Entropy,     ///< threshold minimizing KL(P || Q) between the |x| histogram and its
               ///< 128-level quantization (TensorRT's entropy calibration).
               ///< NOTE: Percentile and Entropy resolve the bulk of the distribution
               ///< finely and clip its tail; with large rare outliers the clipped values'
               ///< error can exceed max-abs's total squared error even though every
               ///< value in the bulk is represented more precisely
  Mse,         ///< threshold minimizing the expected squared quantization error (of the
               ///< values themselves, clipping included); never worse than MaxAbs on that
               ///< measure, up to histogram resolution
};

/// Observer settings. `percentile` is in percent (e.g. 99.99) and used by Percentile only.
struct ObserverOptions {
  ObserverKind kind = ObserverKind::MaxAbs;
  double percentile = 99.99;
};

/// Name of an observer kind: "maxabs", "percentile", "entropy", "mse".
inline const char* observer_name(ObserverKind k) noexcept {
  switch (k) {
    case ObserverKind::MaxAbs:
      return "maxabs";
    case ObserverKind::Percentile:
      return "percentile";
    case ObserverKind::Entropy:
      return "entropy";
    case ObserverKind::Mse:
      return "mse";
  }
  return "?";
}

/// Streams values and reports alpha. State is a fixed 2048-bin histogram of |x| whose range
/// doubles (merging bins pairwise) whenever a larger value arrives, so memory does not grow
/// with the data and results depend only on the sequence of values observed (deterministic).
/// Histogram resolution is range / 2048 (range: the smallest power-of-two multiple of the
/// first non-zero max |x| that covers every value). Not thread-safe.
class Observer {
 public:
  static constexpr std::size_t bins = 2048;

  /// @throws ConfigError if the percentile is not in (0, 100].
  explicit Observer(ObserverOptions options = {}) : options_(options) {
    if (options.kind == ObserverKind::Percentile &&
        !(options.percentile > 0.0 && options.percentile <= 100.0)) {
      ::dynasparse::detail::fail<ConfigError>("quant", "percentile out of range", "(0, 100]", options.percentile,
                                "Observer");
    }
  }

  /// Adds n values. @throws FormatError on NaN or Inf (naming `name` and the index), leaving
  /// the observer unchanged.
  void observe(const float* x, std::size_t n, const std::string& name = "activation") {
    float m = 0.0f;
    for (std::size_t i = 0; i < n; ++i) {
      const float a = std::fabs(x[i]);
      if (!(a <= std::numeric_limits<float>::max())) {
        ::dynasparse::detail::fail<FormatError>("quant", "non-finite value in calibration data", "a finite value",
                                  x[i], name + " element " + std::to_string(i));
      }
      m = std::max(m, a);
    }
    max_ = std::max(max_, m);
    count_ += n;
    if (options_.kind == ObserverKind::MaxAbs) return;
    if (m == 0.0f) {
      // Until a non-zero value fixes the range, zeros wait outside the histogram.
      (range_ > 0.0f ? hist_[0] : zeros_) += n;
      return;
    }
    grow_to(m);
    const float inv_width = static_cast<float>(bins) / range_;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t b = static_cast<std::size_t>(std::fabs(x[i]) * inv_width);
      ++hist_[std::min(b, bins - 1)];
    }
  }

  /// Values observed so far.
  std::uint64_t count() const noexcept { return count_; }
  /// Largest |x| observed.
  float max_abs() const noexcept { return max_; }
  /// Bytes of state (constant: independent of how much was observed).
  static constexpr std::size_t state_bytes() noexcept { return sizeof(Observer); }
  const ObserverOptions& options() const noexcept { return options_; }

  /// The chosen alpha (0 if nothing non-zero was observed). Never above max_abs().
  float alpha() const {
    if (max_ == 0.0f || options_.kind == ObserverKind::MaxAbs) return max_;
    const std::vector<double> h = merged();
    float a = max_;
    switch (options_.kind) {
      case ObserverKind::Percentile:
        a = percentile_alpha(h);
        break;
      case ObserverKind::Entropy:
        a = entropy_alpha(h);
        break;
      case ObserverKind::Mse:
        a = mse_alpha(h);
        break;
      case ObserverKind::MaxAbs:
        break;
    }
    return std::min(a, max_);
  }

 private:
  float width() const noexcept { return range_ / static_cast<float>(bins); }

  // Widens the range to cover m by doubling, merging bin pairs at each doubling.
  void grow_to(float m) {
    if (range_ == 0.0f) {
      range_ = m;
      hist_[0] += zeros_;  // zeros seen before the first non-zero value
      zeros_ = 0;
      return;
    }
    while (range_ < m) {
      for (std::size_t b = 0; b < bins / 2; ++b) hist_[b] = hist_[2 * b] + hist_[2 * b + 1];
      std::fill(hist_.begin() + bins / 2, hist_.end(), 0);
      range_ *= 2.0f;
    }
  }

  std::vector<double> merged() const {
    std::vector<double> h(hist_.begin(), hist_.end());
    h[0] += static_cast<double>(zeros_);
    return h;
  }

  float percentile_alpha(const std::vector<double>& h) const {
    double total = 0.0;
    for (double c : h) total += c;
    const double target = total * options_.percentile / 100.0;
    double cum = 0.0;
    for (std::size_t b = 0; b < bins; ++b) {
      if (cum + h[b] >= target && h[b] > 0.0) {
        const double frac = (target - cum) / h[b];
        return static_cast<float>((static_cast<double>(b) + frac) * width());
      }
      cum += h[b];
    }
    return max_;
  }

  // TensorRT's entropy calibration on |x| with 128 levels (0..127).
  float entropy_alpha(const std::vector<double>& h) const {
    constexpr std::size_t levels = 128;
    std::size_t last = bins;
    while (last > 0 && h[last - 1] == 0.0) --last;
    if (last <= levels) return max_;
    double best_kl = std::numeric_limits<double>::infinity();
    std::size_t best = last;
    std::vector<double> p(bins), q(bins);
    for (std::size_t i = levels; i <= last; ++i) {
      double outliers = 0.0;
      for (std::size_t b = i; b < bins; ++b) outliers += h[b];
      for (std::size_t b = 0; b < i; ++b) p[b] = h[b];
      p[i - 1] += outliers;
      // Q: each of the 128 levels spreads its mass evenly over its non-empty bins.
      for (std::size_t l = 0; l < levels; ++l) {
        const std::size_t b0 = l * i / levels, b1 = (l + 1) * i / levels;
        double mass = 0.0;
        std::size_t nonzero = 0;
        for (std::size_t b = b0; b < b1; ++b) {
          mass += h[b];
          nonzero += h[b] > 0.0 ? 1 : 0;
        }
        for (std::size_t b = b0; b < b1; ++b) q[b] = (h[b] > 0.0 && nonzero) ? mass / nonzero : 0.0;
      }
      double sp = 0.0, sq = 0.0;
      for (std::size_t b = 0; b < i; ++b) {
        sp += p[b];
        sq += q[b];
      }
      if (sq == 0.0) continue;
      double kl = 0.0;
      for (std::size_t b = 0; b < i; ++b) {
        if (p[b] <= 0.0) continue;
        const double pb = p[b] / sp;
        // The clipped outliers land where Q may be empty; a small floor keeps KL finite
        // and still penalizes it heavily.
        const double qb = std::max(q[b] / sq, 1e-12);
        kl += pb * std::log(pb / qb);
      }
      if (kl < best_kl) {
        best_kl = kl;
        best = i;
      }
    }
    return static_cast<float>((static_cast<double>(best) + 0.5) * width());
  }

  // Expected squared error of one value drawn uniformly from [lo, hi] after symmetric
  // quantization with step s and clipping at alpha. Exact integration per quantization cell
  // where the bin spans few cells; step^2 / 12 where it spans many (the two agree there).
  static double uniform_bin_error(double lo, double hi, double step, double alpha) {
    const double width = hi - lo;
    double e = 0.0;
    if (hi > alpha) {
      const double a = std::max(lo, alpha);
      e += ((hi - alpha) * (hi - alpha) * (hi - alpha) - (a - alpha) * (a - alpha) * (a - alpha)) / 3.0;
      hi = a;
    }
    if (hi > lo) {
      if (hi - lo > 4.0 * step) {
        e += (hi - lo) * step * step / 12.0;
      } else {
        for (double k = std::floor(lo / step + 0.5); k * step - 0.5 * step < hi; k += 1.0) {
          const double c = k * step;
          const double a = std::max(lo, c - 0.5 * step) - c;
          const double b = std::min(hi, c + 0.5 * step) - c;
          if (b > a) e += (b * b * b - a * a * a) / 3.0;
        }
      }
    }
    return e / width;
  }

  // Threshold minimizing the expected squared quantization error over the histogram
  // (values spread uniformly within each bin), searched over every bin edge and max |x|.
  float mse_alpha(const std::vector<double>& h) const {
    const double w = width();
    std::vector<std::size_t> used;
    for (std::size_t b = 0; b < bins; ++b) {
      if (h[b] > 0.0) used.push_back(b);
    }
    double best_err = std::numeric_limits<double>::infinity();
    double best = max_;
    for (std::size_t k = 1; k <= bins + 1; ++k) {
      const double alpha = k <= bins ? std::min(static_cast<double>(k) * w, static_cast<double>(max_))
                                     : static_cast<double>(max_);
      const double step = alpha / 127.0;
      double err = 0.0;
      for (std::size_t b : used) {
        const double lo = static_cast<double>(b) * w;
        const double hi = std::min(lo + w, std::max(static_cast<double>(max_), lo + 1e-30));
        err += h[b] * uniform_bin_error(lo, hi, step, alpha);
      }
      if (err < best_err) {
        best_err = err;
        best = alpha;
      }
      if (alpha >= max_) break;
    }
    return static_cast<float>(best);
  }

  ObserverOptions options_;
  std::array<std::uint64_t, bins> hist_{};
  float range_ = 0.0f;
  float max_ = 0.0f;
  std::uint64_t count_ = 0;
  std::uint64_t zeros_ = 0;  // all-zero batches seen before the range was known
};

}  // namespace quant
DYNASPARSE_NAMESPACE_END
