// SPDX-License-Identifier: Apache-2.0
// Linear layers per weight format against Eigen's float GEMM, named
// BM_Linear/<format>/<M>x<K>x<N>/threads:<T> (T: threads inside one call).
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "dynasparse/core/build_info.hpp"
#include "dynasparse/core/eigen_interop.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/nn/any_linear.hpp"
#include "dynasparse/nn/linear.hpp"
#include "dynasparse/sparse/group_sparse_f32.hpp"
#include "dynasparse/sparse/group_sparse_i8.hpp"

namespace {

namespace ds = dynasparse;

struct Shape {
  std::size_t m, k, n;
  std::string str() const { return std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n); }
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {{1, 4096, 4096},  {1, 4096, 14336}, {1, 512, 2048},
                                       {128, 512, 2048}, {128, 2048, 512}, {512, 512, 512}};
  return s;
}

// Weights shared by every format of one shape (the large ones take a second to make).
const std::vector<float>& weights(const Shape& s) {
  static std::vector<std::pair<std::string, std::unique_ptr<std::vector<float>>>> cache;
  for (auto& [key, w] : cache) {
    if (key == s.str()) return *w;
  }
  auto w = std::make_unique<std::vector<float>>(s.n * s.k);
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 0.05f);
  for (float& v : *w) v = d(rng);
  cache.emplace_back(s.str(), std::move(w));
  return *cache.back().second;
}

std::vector<float> activations(const Shape& s) {
  std::mt19937 rng(12);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(s.m * s.k);
  for (float& v : x) v = d(rng);
  return x;
}

// Besides the rates, the per-call counters bench/report.py needs for the roofline: ops_per_call
// (2 per multiply-add actually done, so a sparse layer counts only its kept blocks),
// bytes_per_call (weights as stored plus the float input and output: the traffic no
// implementation can avoid) and int8_ops (1 when the multiply-adds are int8, bounded by
// the int8 peak rather than the FP32 one).
void report(benchmark::State& state, const Shape& s, std::size_t weight_bytes, double density = 1.0,
            bool int8 = false) {
  const double calls = static_cast<double>(state.iterations());
  state.counters["ops_per_call"] = 2.0 * static_cast<double>(s.m * s.k * s.n) * density;
  state.counters["bytes_per_call"] =
      static_cast<double>(weight_bytes + (s.m * s.k + s.m * s.n) * sizeof(float));
  state.counters["int8_ops"] = int8 ? 1.0 : 0.0;
  state.counters["GOP/s"] = benchmark::Counter(2.0 * s.m * s.k * s.n * calls, benchmark::Counter::kIsRate,
                                               benchmark::Counter::kIs1000);
  state.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(weight_bytes) * calls,
                                                     benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["weight_MB"] = static_cast<double>(weight_bytes) / 1e6;
  state.SetLabel(std::string(ds::isa_name()) + " int8=" + ds::int8_extension_name());
}

// The baseline: Eigen's own product as a user would write it for nn.Linear weights.
void bm_eigen(benchmark::State& state, Shape s, int threads) {
  ds::set_num_threads(threads);
  Eigen::setNbThreads(threads);
  const auto& wv = weights(s);
  const auto xv = activations(s);
  const ds::RowMajorMatrix<float> w = Eigen::Map<const ds::RowMajorMatrix<float>>(
      wv.data(), static_cast<Eigen::Index>(s.n), static_cast<Eigen::Index>(s.k));
  const ds::RowMajorMatrix<float> a = Eigen::Map<const ds::RowMajorMatrix<float>>(
      xv.data(), static_cast<Eigen::Index>(s.m), static_cast<Eigen::Index>(s.k));
  ds::RowMajorMatrix<float> c(static_cast<Eigen::Index>(s.m), static_cast<Eigen::Index>(s.n));
  for (auto _ : state) {
    c.noalias() = a * w.transpose();
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  report(state, s, s.n * s.k * sizeof(float));
}

template <class Format, class Forward>
void bm_format(benchmark::State& state, Shape s, int threads, Forward forward, bool int8 = false) {
  ds::set_num_threads(threads);
  const auto& wv = weights(s);
  const auto xv = activations(s);
  const Format format(ds::ConstMatrixView(wv.data(), s.n, s.k), {}, "bench");
  std::vector<float> y(s.m * s.n);
  ds::Workspace ws;
  const ds::ConstMatrixView x(xv.data(), s.m, s.k);
  const ds::MatrixView yv(y.data(), s.m, s.n);
  forward(format, x, yv, ws);  // warm the workspace
  for (auto _ : state) {
    forward(format, x, yv, ws);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  report(state, s, format.bytes(), 1.0, int8);
}

// A group-sparse layer pruned (by block norm) to `pct` percent of its blocks.
template <class Format = ds::sparse::GroupSparseF32>
void bm_gsparse(benchmark::State& state, Shape s, int threads, int pct, ds::sparse::BlockShape block) {
  ds::set_num_threads(threads);
  const auto& wv = weights(s);
  const auto xv = activations(s);
  const ds::ConstMatrixView w(wv.data(), s.n, s.k);
  const auto mask = ds::sparse::prune_by_norm(w, {block, pct / 100.0, false});
  const Format format(w, mask, {}, "bench");
  std::vector<float> y(s.m * s.n);
  ds::Workspace ws;
  const ds::ConstMatrixView x(xv.data(), s.m, s.k);
  const ds::MatrixView yv(y.data(), s.m, s.n);
  for (auto _ : state) {
    format.forward(x, yv, ws);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  report(state, s, format.bytes(), format.density(), std::is_same_v<Format, ds::sparse::GroupSparseI8>);
  state.counters["density"] = format.density();
}

// 1x256x256: a decoding step's projection in the demo model, where the per-call costs
// (quantizing the row, dispatch, dequantizing the outputs) weigh most.
const std::vector<Shape>& sparse_shapes() {
  static const std::vector<Shape> s = {
      {1, 256, 256}, {1, 512, 2048}, {1, 4096, 4096}, {128, 512, 2048}, {128, 2048, 512}};
  return s;
}

int register_linear_benchmarks() {
  for (const Shape& s : sparse_shapes()) {
    for (int t : {1, 2}) {
      for (int pct : {0, 30, 50, 70, 90}) {
        const std::string name = "BM_Linear/gsparse_f32@" + std::to_string(pct) + "/" + s.str() +
                                 "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) {
          bm_gsparse(st, s, t, pct, ds::nn::recommended_block_shape);
        })->UseRealTime();
        const std::string name8 = "BM_Linear/gsparse_i8@" + std::to_string(pct) + "/" + s.str() +
                                  "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(name8.c_str(), [=](benchmark::State& st) {
          bm_gsparse<ds::sparse::GroupSparseI8>(st, s, t, pct, ds::nn::recommended_block_shape);
        })->UseRealTime();
      }
    }
  }
  // Block shapes: where each one crosses dense (1 thread).
  for (const Shape& s : {Shape{1, 4096, 4096}, Shape{128, 512, 2048}}) {
    for (ds::sparse::BlockShape b : {ds::sparse::BlockShape{16, 1}, {16, 4}, {32, 1}, {32, 4}, {64, 1}, {64, 4}}) {
      for (int pct : {0, 10, 20, 30, 50, 70}) {
        const std::string name = "BM_SparseBlockShape/" + std::to_string(b.rows) + "x" + std::to_string(b.cols) +
                                 "@" + std::to_string(pct) + "/" + s.str() + "/threads:1";
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) {
          bm_gsparse(st, s, 1, pct, b);
        })->UseRealTime();
        if (b.cols == 4) {
          const std::string name8 = "BM_SparseBlockShape/i8_" + std::to_string(b.rows) + "x4@" + std::to_string(pct) +
                                    "/" + s.str() + "/threads:1";
          benchmark::RegisterBenchmark(name8.c_str(), [=](benchmark::State& st) {
            bm_gsparse<ds::sparse::GroupSparseI8>(st, s, 1, pct, b);
          })->UseRealTime();
        }
      }
    }
  }
  for (const Shape& s : shapes()) {
    for (int t : {1, 2}) {
      const std::string suffix = "/" + s.str() + "/threads:" + std::to_string(t);
      benchmark::RegisterBenchmark(("BM_Linear/eigen_f32" + suffix).c_str(),
                                   [=](benchmark::State& st) { bm_eigen(st, s, t); })
          ->UseRealTime();
      benchmark::RegisterBenchmark(("BM_Linear/dense_f32" + suffix).c_str(), [=](benchmark::State& st) {
        bm_format<ds::nn::DenseF32>(st, s, t, [](const auto& f, auto x, auto y, auto& ws) { f.forward(x, y, ws); });
      })->UseRealTime();
      benchmark::RegisterBenchmark(("BM_Linear/dense_i8" + suffix).c_str(), [=](benchmark::State& st) {
        bm_format<ds::quant::DenseI8>(
            st, s, t, [](const auto& f, auto x, auto y, auto& ws) { f.forward(x, y, ws); }, true);
      })->UseRealTime();
      benchmark::RegisterBenchmark(("BM_Linear/dense_i8_lut" + suffix).c_str(), [=](benchmark::State& st) {
        bm_format<ds::quant::DenseI8>(st, s, t, [](const auto& f, auto x, auto y, auto& ws) {
          f.forward_weight_only(x, y, ws);
        });
      })->UseRealTime();
    }
  }
  return 0;
}

const int linear_registered = register_linear_benchmarks();

}  // namespace
