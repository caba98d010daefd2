// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/quant/observer.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "dynasparse/quant/calibrator.hpp"
#include "dynasparse/quant/quant_params.hpp"
#include "dynasparse/simd/detail/scalar/quantize.hpp"
#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
namespace quant = dynasparse::quant;

// Mean squared error of quantizing x with alpha and dequantizing (the "output MSE").
double quant_mse(const std::vector<float>& x, float alpha) {
  const float inv = quant::inv_scale_of(alpha), step = quant::scale_of(alpha);
  double e = 0.0;
  for (float v : x) {
    const double back = ds::simd::detail::scalar::quantize_one(v, inv) * static_cast<double>(step);
    e += (back - v) * (back - v);
  }
  return e / static_cast<double>(x.size());
}

std::vector<float> gaussian_with_outliers(std::size_t n, double outlier_fraction, float sigmas) {
  std::mt19937 rng(123);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  const std::size_t outliers = static_cast<std::size_t>(static_cast<double>(n) * outlier_fraction);
  for (std::size_t i = 0; i < outliers; ++i) x[i * (n / outliers)] = (i % 2 ? sigmas : -sigmas);
  return x;
}

std::vector<float> student_t(std::size_t n, float dof) {
  std::mt19937 rng(321);
  std::student_t_distribution<float> d(dof);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

float alpha_of(quant::ObserverKind kind, const std::vector<float>& x, std::size_t chunk = 4096) {
  quant::Observer obs(quant::ObserverOptions{kind, 99.99});
  for (std::size_t i = 0; i < x.size(); i += chunk) obs.observe(x.data() + i, std::min(chunk, x.size() - i));
  return obs.alpha();
}

TEST(Observer, MaxAbsIsExactOnBoundedInput) {
  const auto x = dynasparse_test::uniform_floats(10000, -2.5f, 2.5f, 8u);
  float m = 0.0f;
  for (float v : x) m = std::max(m, std::fabs(v));
  EXPECT_EQ(alpha_of(quant::ObserverKind::MaxAbs, x), m);
}

// Mean squared error over the values with |x| <= bound only: what the bulk of the
// distribution suffers.
double bulk_mse(const std::vector<float>& x, float alpha, float bound) {
  std::vector<float> bulk;
  for (float v : x) {
    if (std::fabs(v) <= bound) bulk.push_back(v);
  }
  return quant_mse(bulk, alpha);
}

TEST(Observer, MseObserverIsNeverWorseThanMaxAbs) {
  // 0.1% of the values at 50 sigma, and Student-t tails: the MSE observer minimizes the
  // total squared error, clipping included, so it can only match or beat max-abs (1%
  // slack for the histogram's resolution).
  for (const auto& x : {gaussian_with_outliers(200000, 0.001, 50.0f), student_t(200000, 2.0f),
                        student_t(200000, 4.0f)}) {
    const double e_max = quant_mse(x, alpha_of(quant::ObserverKind::MaxAbs, x));
    EXPECT_LE(quant_mse(x, alpha_of(quant::ObserverKind::Mse, x)), e_max * 1.01);
  }
  // With moderate tails it is strictly better.
  const auto t4 = student_t(200000, 4.0f);
  EXPECT_LT(quant_mse(t4, alpha_of(quant::ObserverKind::Mse, t4)),
            0.8 * quant_mse(t4, alpha_of(quant::ObserverKind::MaxAbs, t4)));
}

TEST(Observer, ClippingObserversResolveTheBulkBetterThanMaxAbs) {
  // With outliers, max-abs spends the int8 range on them: the bulk (|x| <= 3 sigma) is
  // quantized far more finely by every clipping observer.
  for (const auto& x : {gaussian_with_outliers(200000, 0.001, 50.0f), student_t(200000, 2.0f)}) {
    const double e_max = bulk_mse(x, alpha_of(quant::ObserverKind::MaxAbs, x), 3.0f);
    for (auto kind : {quant::ObserverKind::Percentile, quant::ObserverKind::Entropy, quant::ObserverKind::Mse}) {
      const float a = alpha_of(kind, x);
      if (kind == quant::ObserverKind::Mse) {
        // Under t(2)'s infinite-variance tail any clip costs more than it saves in total,
        // so the MSE observer may rightly settle on max |x| itself.
        EXPECT_LE(bulk_mse(x, a, 3.0f), e_max) << "mse alpha=" << a;
        continue;
      }
      EXPECT_LT(bulk_mse(x, a, 3.0f), e_max) << quant::observer_name(kind) << " alpha=" << a;
      EXPECT_GT(a, 0.0f);
    }
  }
}

TEST(Observer, MseObserverIsNearTheBestThresholdOnGaussianData) {
  // For N(0, 1) and 8-bit symmetric quantization the MSE-optimal clip is about 4 sigma;
  // check the chosen alpha's error is within 5% of the best on a fine grid.
  const auto x = gaussian_with_outliers(100000, 0.0001, 4.0f);
  const float a = alpha_of(quant::ObserverKind::Mse, x);
  double best = std::numeric_limits<double>::infinity();
  for (float t = 1.0f; t <= 6.0f; t += 0.05f) best = std::min(best, quant_mse(x, t));
  EXPECT_LE(quant_mse(x, a), best * 1.05);
}

TEST(Observer, ResultsAreDeterministic) {
  const auto x = student_t(50000, 3.0f);
  for (auto kind : {quant::ObserverKind::MaxAbs, quant::ObserverKind::Percentile,
                    quant::ObserverKind::Entropy, quant::ObserverKind::Mse}) {
    EXPECT_EQ(alpha_of(kind, x, 1000), alpha_of(kind, x, 1000)) << quant::observer_name(kind);
  }
}

TEST(Observer, PercentileTracksTheDistribution) {
  // |U(-1, 1)| is U(0, 1): its 50th percentile is 0.5.
  const auto x = dynasparse_test::uniform_floats(200000, -1.0f, 1.0f, 12u);
  quant::Observer obs(quant::ObserverOptions{quant::ObserverKind::Percentile, 50.0});
  obs.observe(x.data(), x.size());
  EXPECT_NEAR(obs.alpha(), 0.5f, 0.01f);
}

TEST(Observer, GrowingRangeKeepsEarlierValues) {
  // Small values first, then a large one: the range doubles several times and merges bins.
  std::vector<float> small = dynasparse_test::uniform_floats(1000, -0.01f, 0.01f, 13u);
  quant::Observer obs(quant::ObserverOptions{quant::ObserverKind::Percentile, 99.0});
  obs.observe(small.data(), small.size());
  const float big = 100.0f;
  obs.observe(&big, 1);
  EXPECT_EQ(obs.count(), 1001u);
  EXPECT_EQ(obs.max_abs(), 100.0f);
  // 99% of the mass is below 0.01; after merging, the bin width is about 100/2048 = 0.05.
  EXPECT_LT(obs.alpha(), 0.1f);
}

TEST(Observer, ZerosAndNonFiniteInput) {
  quant::Observer obs(quant::ObserverOptions{quant::ObserverKind::Entropy});
  std::vector<float> zeros(100, 0.0f);
  obs.observe(zeros.data(), zeros.size());
  EXPECT_EQ(obs.alpha(), 0.0f);
  std::vector<float> bad = {1.0f, std::numeric_limits<float>::infinity()};
  EXPECT_THROW(obs.observe(bad.data(), bad.size(), "x"), ds::FormatError);
  EXPECT_EQ(obs.count(), 100u);  // unchanged by the rejected batch
  bad[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(obs.observe(bad.data(), bad.size()), ds::FormatError);
  EXPECT_THROW(quant::Observer(quant::ObserverOptions{quant::ObserverKind::Percentile, 0.0}), ds::ConfigError);
  EXPECT_THROW(quant::Observer(quant::ObserverOptions{quant::ObserverKind::Percentile, 101.0}), ds::ConfigError);
}

TEST(Calibrator, ObservesPerTensorReportsProgressAndWarnsOnSmallSets) {
  std::vector<std::pair<std::size_t, std::size_t>> progress;
  std::vector<std::string> warned;
  quant::CalibratorOptions opts;
  opts.observer.kind = quant::ObserverKind::MaxAbs;
  opts.min_samples = 1000;
  opts.progress = [&](std::size_t done, std::size_t total) { progress.emplace_back(done, total); };
  opts.warn = [&](const std::string& w) { warned.push_back(w); };
  quant::Calibrator cal(opts);
  cal.run(10, [](std::size_t i, quant::Calibrator& c) {
    std::vector<float> a(4 * 8, static_cast<float>(i)), b(2 * 3, -2.0f * static_cast<float>(i));
    c.observe("layer0.in", ds::ConstMatrixView(a.data(), 4, 8));
    c.observe("layer1.in", ds::ConstMatrixView(b.data(), 2, 3));
  });
  EXPECT_EQ(cal.alpha("layer0.in"), 9.0f);
  EXPECT_EQ(cal.alpha("layer1.in"), 18.0f);
  EXPECT_EQ(cal.alphas().size(), 2u);
  ASSERT_EQ(progress.size(), 10u);
  EXPECT_EQ(progress.back(), std::make_pair(std::size_t{10}, std::size_t{10}));
  ASSERT_EQ(warned.size(), 1u);
  EXPECT_EQ(warned[0],
            "dynasparse.quant: calibration set smaller than recommended; expected >= 1000 "
            "samples, got 10");
  EXPECT_EQ(cal.warnings(), warned);
  EXPECT_THROW(cal.alpha("layer9.in"), ds::ConfigError);
}

TEST(Calibrator, StateDoesNotGrowWithTheCalibrationSet) {
  // Memory is the observer's fixed histogram, whatever the number of values.
  quant::Calibrator cal;
  std::vector<float> x = dynasparse_test::uniform_floats(128 * 64, -3.0f, 3.0f, 14u);
  for (int i = 0; i < 50; ++i) cal.observe("t", ds::ConstMatrixView(x.data(), 128, 64));
  EXPECT_EQ(cal.observer("t").count(), 50u * 128u * 64u);
  EXPECT_EQ(quant::Observer::state_bytes(), sizeof(quant::Observer));
  EXPECT_LT(quant::Observer::state_bytes(), 20000u);
}

}  // namespace
