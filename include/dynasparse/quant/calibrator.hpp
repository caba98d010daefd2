// SPDX-License-Identifier: Apache-2.0
// Calibrator: runs a calibration set through user code and keeps one observer per tensor.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/quant/observer.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace quant {

/// Calibration settings. The seed calibrates on 1000 representative samples; fewer than
/// `min_samples` produces a warning (the result is still computed). Calibrate on data
/// like what the model will see in use, not on its training set, which biases the scales.
struct CalibratorOptions {
  ObserverOptions observer;
  std::size_t min_samples = 1000;
  /// Called with (samples done, total) after each sample; empty for none.
  std::function<void(std::size_t, std::size_t)> progress;
  /// Called with each warning as it is raised; warnings are also kept in warnings().
  std::function<void(const std::string&)> warn;
};

/// Collects activation statistics per named tensor and reports alphas. Memory is one
/// Observer (a fixed ~16 KiB histogram) per tensor name, whatever the set's size.
/// Not thread-safe.
class Calibrator {
 public:
  explicit Calibrator(CalibratorOptions options = {}) : options_(std::move(options)) {
    Observer probe(options_.observer);  // validates the observer options up front
    (void)probe;
  }

  /// Adds a tensor's values to the observer named `name` (created on first use).
  /// @throws FormatError on NaN/Inf, naming the tensor.
  void observe(const std::string& name, ConstMatrixView x) {
    auto it = observers_.find(name);
    if (it == observers_.end()) it = observers_.emplace(name, Observer(options_.observer)).first;
    for (std::size_t r = 0; r < x.rows(); ++r) it->second.observe(x.row(r), x.cols(), name);
  }

  /// Runs `fn(i, *this)` for i in [0, samples): the callable runs sample i through the FP32
  /// model and calls observe() for each tensor to calibrate. Reports progress after each
  /// sample; warns first when samples < min_samples.
  template <class Fn>
  void run(std::size_t samples, Fn&& fn) {
    if (samples < options_.min_samples) {
      raise_warning("dynasparse.quant: calibration set smaller than recommended; expected >= " +
                    std::to_string(options_.min_samples) + " samples, got " +
                    std::to_string(samples));
    }
    for (std::size_t i = 0; i < samples; ++i) {
      fn(i, *this);
      if (options_.progress) options_.progress(i + 1, samples);
    }
  }

  /// Alpha of tensor `name`. @throws ConfigError if it was never observed.
  float alpha(const std::string& name) const {
    const auto it = observers_.find(name);
    if (it == observers_.end()) {
      ::dynasparse::detail::fail<ConfigError>("quant", "tensor was not observed during calibration",
                                "an observed tensor name", name, "Calibrator");
    }
    return it->second.alpha();
  }

  /// Every observed tensor's alpha, by name.
  std::map<std::string, float> alphas() const {
    std::map<std::string, float> out;
    for (const auto& [name, obs] : observers_) out.emplace(name, obs.alpha());
    return out;
  }

  const Observer& observer(const std::string& name) const { return observers_.at(name); }
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }

 private:
  void raise_warning(std::string message) {
    if (options_.warn) options_.warn(message);
    warnings_.push_back(std::move(message));
  }

  CalibratorOptions options_;
  std::map<std::string, Observer> observers_;
  std::vector<std::string> warnings_;
};

}  // namespace quant
DYNASPARSE_NAMESPACE_END
