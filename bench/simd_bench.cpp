// SPDX-License-Identifier: Apache-2.0
// Every simd/ primitive against its scalar twin (and, for the int8 dot product, against the
// plain loop as the compiler auto-vectorizes it), named BM_Simd<Op>/<impl>/<n>.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dynasparse/core/build_info.hpp"
#include "dynasparse/simd/dot_int8.hpp"
#include "dynasparse/simd/math.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/simd/reduce.hpp"
#include "dynasparse/simd/softmax.hpp"

namespace {

namespace simd = dynasparse::simd;
namespace ref = dynasparse::simd::detail::scalar;

std::vector<float> floats(std::size_t n, float lo, float hi) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<std::int8_t> int8s(std::size_t n) {
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(d(rng));
  return v;
}

std::string label(const char* impl) {
  const std::string s(impl);
  if (s == "simd") return std::string(simd::arch_name()) + " int8=" + simd::int8_arch_name();
  if (s == "autovec") return std::string("plain loop, compiler-vectorized (") + simd::arch_name() + ")";
  return "scalar reference";
}

// The per-call counters bench/report.py needs for the roofline, for primitives with a plain
// operation count (ops_per_elem > 0): ops_per_call, bytes_per_call (bytes read, each operand
// once: the roofs are read bandwidths, and caches store while they load) and int8_ops.
void roofline_counters(benchmark::State& state, std::size_t n, double ops_per_elem, double bytes_per_elem,
                       bool int8) {
  if (ops_per_elem <= 0) return;
  state.counters["ops_per_call"] = ops_per_elem * static_cast<double>(n);
  state.counters["bytes_per_call"] = bytes_per_elem * static_cast<double>(n);
  state.counters["int8_ops"] = int8 ? 1.0 : 0.0;
}

template <class Fn>
void run_unary(benchmark::State& state, Fn fn, std::size_t n, float lo, float hi, const char* impl,
               double ops_per_elem = 0, double bytes_per_elem = 0) {
  const auto x = floats(n, lo, hi);
  std::vector<float> y(n);
  for (auto _ : state) {
    fn(x.data(), y.data(), n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  roofline_counters(state, n, ops_per_elem, bytes_per_elem, false);
  state.SetLabel(label(impl));
}

// The plain loop a user would write; at -O3 -march=native GCC and Clang vectorize it with
// widening multiplies (vpmovsxbw + vpmaddwd on AVX-512).
std::int32_t autovec_dot_s8(const std::int8_t* a, const std::int8_t* b, std::size_t n) {
  std::int32_t s = 0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<std::int32_t>(a[i]) * b[i];
  return s;
}

template <class Fn>
void run_dot_s8(benchmark::State& state, Fn fn, std::size_t n, const char* impl) {
  const auto a = int8s(n), b = int8s(n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(a.data());
    benchmark::DoNotOptimize(b.data());
    std::int32_t s = fn(a.data(), b.data(), n);
    benchmark::DoNotOptimize(s);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.counters["GOP/s"] = benchmark::Counter(static_cast<double>(2 * n) * state.iterations(),
                                               benchmark::Counter::kIsRate,
                                               benchmark::Counter::kIs1000);
  roofline_counters(state, n, 2.0, 2.0, true);
  state.SetLabel(label(impl));
}

template <class Fn>
void run_dequantize(benchmark::State& state, Fn fn, std::size_t n, const char* impl) {
  const auto q = int8s(n);
  std::vector<float> y(n);
  for (auto _ : state) {
    fn(q.data(), y.data(), n, 0.02f);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.SetLabel(label(impl));
}

using Unary = void (*)(const float*, float*, std::size_t);

void register_unary(const char* op, Unary vec, Unary scalar, float lo, float hi, double ops_per_elem = 0,
                    double bytes_per_elem = 0) {
  for (std::size_t n : {256u, 4096u, 65536u}) {
    benchmark::RegisterBenchmark(
        (std::string("BM_Simd") + op + "/simd/" + std::to_string(n)).c_str(),
        [=](benchmark::State& s) { run_unary(s, vec, n, lo, hi, "simd", ops_per_elem, bytes_per_elem); });
    benchmark::RegisterBenchmark(
        (std::string("BM_Simd") + op + "/scalar/" + std::to_string(n)).c_str(),
        [=](benchmark::State& s) { run_unary(s, scalar, n, lo, hi, "scalar", ops_per_elem, bytes_per_elem); });
  }
}

int register_simd_benchmarks() {
  register_unary("Exp", simd::exp_f32<>, ref::exp_f32, -80.0f, 80.0f);
  register_unary("Sigmoid", simd::sigmoid_f32<>, ref::sigmoid_f32, -10.0f, 10.0f);
  register_unary("Tanh", simd::tanh_f32<>, ref::tanh_f32, -5.0f, 5.0f);
  register_unary("Gelu", simd::gelu_f32<>, ref::gelu_f32, -5.0f, 5.0f);
  register_unary("Silu", simd::silu_f32<>, ref::silu_f32, -10.0f, 10.0f);
  register_unary("Softmax", simd::softmax_f32<>, ref::softmax_f32, -10.0f, 10.0f);
  register_unary(
      "Quantize",
      [](const float* x, float* y, std::size_t n) {
        simd::quantize_f32s8(x, reinterpret_cast<std::int8_t*>(y), n, 25.4f);
      },
      [](const float* x, float* y, std::size_t n) {
        ref::quantize_f32s8(x, reinterpret_cast<std::int8_t*>(y), n, 25.4f);
      },
      -5.0f, 5.0f);
  register_unary(
      "Dot", [](const float* x, float* y, std::size_t n) { y[0] = simd::dot_f32(x, x, n); },
      [](const float* x, float* y, std::size_t n) { y[0] = ref::dot_f32(x, x, n); }, -1.0f, 1.0f, 2.0, 4.0);
  register_unary(
      "Sum", [](const float* x, float* y, std::size_t n) { y[0] = simd::sum_f32(x, n); },
      [](const float* x, float* y, std::size_t n) { y[0] = ref::sum_f32(x, n); }, -1.0f, 1.0f, 1.0, 4.0);
  register_unary(
      "Max", [](const float* x, float* y, std::size_t n) { y[0] = simd::max_f32(x, n); },
      [](const float* x, float* y, std::size_t n) { y[0] = ref::max_f32(x, n); }, -1.0f, 1.0f);
  register_unary(
      "Axpy", [](const float* x, float* y, std::size_t n) { simd::axpy_f32(0.5f, x, y, n); },
      [](const float* x, float* y, std::size_t n) { ref::axpy_f32(0.5f, x, y, n); }, -1.0f, 1.0f, 2.0, 8.0);
  for (std::size_t n : {256u, 4096u, 65536u}) {
    const std::string suffix = "/" + std::to_string(n);
    benchmark::RegisterBenchmark(("BM_SimdDequantize/simd" + suffix).c_str(),
                                 [=](benchmark::State& s) {
                                   run_dequantize(s, simd::dequantize_s8f32<>, n, "simd");
                                 });
    benchmark::RegisterBenchmark(("BM_SimdDequantize/scalar" + suffix).c_str(),
                                 [=](benchmark::State& s) {
                                   run_dequantize(s, ref::dequantize_s8f32, n, "scalar");
                                 });
    benchmark::RegisterBenchmark(("BM_SimdDotS8/simd" + suffix).c_str(), [=](benchmark::State& s) {
      run_dot_s8(s, simd::dot_s8s8_s32<>, n, "simd");
    });
    benchmark::RegisterBenchmark(("BM_SimdDotS8/scalar" + suffix).c_str(), [=](benchmark::State& s) {
      run_dot_s8(s, ref::dot_s8s8_s32, n, "scalar");
    });
    benchmark::RegisterBenchmark(("BM_SimdDotS8/autovec" + suffix).c_str(),
                                 [=](benchmark::State& s) { run_dot_s8(s, autovec_dot_s8, n, "autovec"); });
  }
  benchmark::AddCustomContext("dynasparse", dynasparse::build_info());
  return 0;
}

const int simd_registered = register_simd_benchmarks();

}  // namespace
