// SPDX-License-Identifier: Apache-2.0
// Calibration cost: one observed tensor fed 1000 samples of 128x512 activations (the seed's
// calibration-set size at a typical hidden width), per observer.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "dynasparse/quant/calibrator.hpp"

namespace {

namespace quant = dynasparse::quant;

void BM_QuantCalibrate(benchmark::State& state, quant::ObserverKind kind) {
  constexpr std::size_t samples = 1000, rows = 128, cols = 512;
  // A pool of distinct samples reused cyclically: the observer's cost does not depend on
  // values repeating, and 1000 distinct samples would need 256 MB.
  std::mt19937 rng(5);
  std::student_t_distribution<float> d(4.0f);
  std::vector<std::vector<float>> pool(8, std::vector<float>(rows * cols));
  for (auto& p : pool) {
    for (float& v : p) v = d(rng);
  }
  for (auto _ : state) {
    quant::CalibratorOptions opts;
    opts.observer.kind = kind;
    quant::Calibrator cal(opts);
    cal.run(samples, [&](std::size_t i, quant::Calibrator& c) {
      c.observe("x", dynasparse::ConstMatrixView(pool[i % pool.size()].data(), rows, cols));
    });
    benchmark::DoNotOptimize(cal.alpha("x"));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * samples * rows * cols));
  state.SetLabel(quant::observer_name(kind));
}

BENCHMARK_CAPTURE(BM_QuantCalibrate, maxabs, quant::ObserverKind::MaxAbs)->Name("BM_QuantCalibrate/maxabs/1000x128x512")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_QuantCalibrate, percentile, quant::ObserverKind::Percentile)->Name("BM_QuantCalibrate/percentile/1000x128x512")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_QuantCalibrate, entropy, quant::ObserverKind::Entropy)->Name("BM_QuantCalibrate/entropy/1000x128x512")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_QuantCalibrate, mse, quant::ObserverKind::Mse)->Name("BM_QuantCalibrate/mse/1000x128x512")->Unit(benchmark::kMillisecond);

}  // namespace
