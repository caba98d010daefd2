// SPDX-License-Identifier: Apache-2.0
// The machine's roofs, measured in the same run as the kernels so bench/report.py can give
// every kernel benchmark its percentage of the roof that bounds it:
//   BM_RooflineFmaF32/threads:<T>        peak FP32 FMA rate (counter FLOP/s, 2 per lane-FMA)
//   BM_RooflineDotS8/threads:<T>         peak int8 dot-product rate on the build's int8 path
//                                        (counter OP/s, 2 per int8 multiply-add)
//   BM_RooflineRead/<level>/threads:<T>  streaming read (counter bytes/s) of a buffer sized
//                                        for one memory level: L1, L2 (half the private
//                                        cache per thread), L3 (a quarter of the shared
//                                        cache), DRAM (32x the last-level cache, >= 512 MiB)
//   BM_RooflineCopy/DRAM/threads:<T>     b = a; counter bytes/s counts 2 x 4 B per element
//   BM_RooflineTriad/DRAM/threads:<T>    a = b + s * c; counter bytes/s counts 3 x 4 B
// T is 1 and every hardware thread (the backend's default thread count). Each runs 3 times:
// a roof is a maximum, and bench/report.py keeps the fastest repetition, so a moment when
// another process takes a core does not lower it. Copy and triad
// follow STREAM's accounting: write-allocate traffic is not counted, so they report 3/4
// (triad) and 2/3 (copy) of the bytes the memory really moves.
//
// The compute peaks run independent chains (12, enough to hide a 4-5 cycle latency at two
// issues per cycle) that stay in registers: no loads, so they measure the execution units
// only. NOTE: the int8 peak uses `vpdpbusd` directly, outside simd/detail/: there is no
// library kernel that keeps its operands in registers, and the instruction's throughput,
// not a dot product's, is what the roof is. Paths without a kernel here (AVX2, NEON) fall
// back to a scalar multiply-add chain, and the label says so.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/build_info.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/simd/arch.hpp"

#if DYNASPARSE_HAS_AVX512VNNI || DYNASPARSE_HAS_AVXVNNI
#include <immintrin.h>
#endif

namespace {

namespace ds = dynasparse;
namespace simd = dynasparse::simd;

constexpr std::size_t kChains = 12;
constexpr std::size_t kComputeIters = std::size_t{1} << 16;  // per thread and call: ~0.3 ms

// ---------------------------------------------------------------- FP32 FMA

template <class Arch>
constexpr std::size_t fma_lanes() {
  return simd::lanes_f32<Arch>();
}

// acc = acc * m + c on kChains independent chains; m < 1 and c small keep every value near
// c / (1 - m) = 1, so no denormals or infinities slow a lane down.
template <class Arch>
float fma_chains(std::size_t iters, float m, float c) noexcept {
  if constexpr (simd::is_scalar_arch_v<Arch>) {
    std::array<float, kChains> acc;
    for (std::size_t j = 0; j < kChains; ++j) acc[j] = 1.0f + 0.001f * static_cast<float>(j);
    for (std::size_t i = 0; i < iters; ++i) {
      for (std::size_t j = 0; j < kChains; ++j) acc[j] = acc[j] * m + c;
    }
    float s = 0;
    for (float a : acc) s += a;
    return s;
  } else {
    using B = xsimd::batch<float, Arch>;
    const B vm(m), vc(c);
    std::array<B, kChains> acc;
    for (std::size_t j = 0; j < kChains; ++j) acc[j] = B(1.0f + 0.001f * static_cast<float>(j));
    for (std::size_t i = 0; i < iters; ++i) {
      for (std::size_t j = 0; j < kChains; ++j) acc[j] = xsimd::fma(acc[j], vm, vc);
    }
    B s = acc[0];
    for (std::size_t j = 1; j < kChains; ++j) s += acc[j];
    return xsimd::hadd(s);
  }
}

// ---------------------------------------------------------------- INT8 dot product

// Int8 multiply-adds per chain step of the build's int8 path, and its name.
constexpr std::size_t dot_s8_macs_per_step() {
#if DYNASPARSE_HAS_AVX512VNNI
  return 64;  // one 512-bit vpdpbusd: 16 lanes x 4 products
#elif DYNASPARSE_HAS_AVXVNNI
  return 32;  // one 256-bit vpdpbusd
#else
  return 1;
#endif
}

constexpr const char* dot_s8_kernel_name() {
#if DYNASPARSE_HAS_AVX512VNNI
  return "vpdpbusd zmm";
#elif DYNASPARSE_HAS_AVXVNNI
  return "vpdpbusd ymm (AVX-VNNI)";
#else
  return "scalar multiply-add (no peak kernel for this int8 path)";
#endif
}

std::int32_t dot_s8_chains(std::size_t iters, std::int8_t a, std::int8_t b) noexcept {
#if DYNASPARSE_HAS_AVX512VNNI
  const __m512i u = _mm512_set1_epi8(a), s = _mm512_set1_epi8(b);
  __m512i acc[kChains];  // a C array: std::array drops __m512i's alignment attribute
  for (std::size_t j = 0; j < kChains; ++j) acc[j] = _mm512_set1_epi32(static_cast<int>(j));
  for (std::size_t i = 0; i < iters; ++i) {
    for (std::size_t j = 0; j < kChains; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], u, s);
  }
  __m512i t = acc[0];
  for (std::size_t j = 1; j < kChains; ++j) t = _mm512_add_epi32(t, acc[j]);
  return _mm512_reduce_add_epi32(t);
#elif DYNASPARSE_HAS_AVXVNNI
  const __m256i u = _mm256_set1_epi8(a), s = _mm256_set1_epi8(b);
  __m256i acc[kChains];
  for (std::size_t j = 0; j < kChains; ++j) acc[j] = _mm256_set1_epi32(static_cast<int>(j));
  for (std::size_t i = 0; i < iters; ++i) {
    for (std::size_t j = 0; j < kChains; ++j) acc[j] = _mm256_dpbusd_avx_epi32(acc[j], u, s);
  }
  __m256i t = acc[0];
  for (std::size_t j = 1; j < kChains; ++j) t = _mm256_add_epi32(t, acc[j]);
  alignas(32) std::int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), t);
  std::int32_t r = 0;
  for (std::int32_t v : lanes) r += v;
  return r;
#else
  // Each step multiplies the chain's own low byte, so the compiler cannot hoist the product
  // out of the loop. Unsigned arithmetic: the sums wrap without undefined behaviour.
  (void)a;
  std::array<std::uint32_t, kChains> acc;
  for (std::size_t j = 0; j < kChains; ++j) acc[j] = static_cast<std::uint32_t>(j);
  for (std::size_t i = 0; i < iters; ++i) {
    for (std::size_t j = 0; j < kChains; ++j) {
      acc[j] += static_cast<std::uint32_t>(static_cast<std::int32_t>(static_cast<std::int8_t>(acc[j])) * b);
    }
  }
  std::uint32_t r = 0;
  for (std::uint32_t v : acc) r += v;
  return static_cast<std::int32_t>(r);
#endif
}

// ---------------------------------------------------------------- memory

// One buffer for every memory benchmark, made once: three arrays of `floats_per_array`
// floats each (the DRAM read streams over all three), first touched by the threads in the
// same static split that reads them.
struct Arrays {
  ds::AlignedBuffer<float> buf;
  std::size_t n = 0;  // floats per array
  float* a() { return buf.data(); }
  float* b() { return buf.data() + n; }
  float* c() { return buf.data() + 2 * n; }
};

std::size_t cache_bytes(int level) {
  for (const auto& c : benchmark::CPUInfo::Get().caches) {
    if (c.level == level && c.type != "Instruction") {
      return static_cast<std::size_t>(c.size);
    }
  }
  // Fallbacks when the OS does not say: typical desktop sizes.
  return level == 1 ? 32 * 1024 : level == 2 ? 1024 * 1024 : 32 * 1024 * 1024;
}

std::size_t llc_bytes() {
  std::size_t s = 0;
  for (const auto& c : benchmark::CPUInfo::Get().caches) {
    if (c.type != "Instruction") s = std::max(s, static_cast<std::size_t>(c.size));
  }
  return s ? s : 32 * 1024 * 1024;
}

// Floats per array of the DRAM arrays: 3 arrays together >= 32x the LLC and >= 512 MiB.
std::size_t dram_floats() {
  const std::size_t bytes = std::max<std::size_t>(32 * llc_bytes(), std::size_t{512} << 20) / 3;
  return (bytes / sizeof(float) + 4095) / 4096 * 4096;
}

Arrays& dram_arrays() {
  static Arrays arr = [] {
    Arrays x;
    x.n = dram_floats();
    x.buf = ds::AlignedBuffer<float>(3 * x.n);
    return x;
  }();
  return arr;
}

using FB = std::conditional_t<simd::is_scalar_arch_v<simd::arch>, float, xsimd::batch<float, simd::arch>>;
constexpr std::size_t kW = simd::lanes_f32<simd::arch>();
// Every thread's share of an array is a multiple of this many floats.
constexpr std::size_t kUnit = 8 * kW;

// Calls fn(part, lo, hi) for each of `threads` parts of [0, n) (n a multiple of kUnit), one
// part per thread, in the same static split every time.
template <class Fn>
void split(std::size_t n, int threads, Fn fn) {
  const auto t = static_cast<std::size_t>(threads), units = n / kUnit;
  ds::parallel_for(0, t, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t p = lo; p < hi; ++p) fn(p, units * p / t * kUnit, units * (p + 1) / t * kUnit);
  });
}

void fill(float* x, std::size_t n, int threads, float v) {
  split(n, threads, [&](std::size_t, std::size_t lo, std::size_t hi) { std::fill(x + lo, x + hi, v); });
}

// Templates on the vector type, so that `if constexpr` discards the other kind's branch.
template <class V = FB>
V vload(const float* p) {
  if constexpr (std::is_same_v<V, float>) {
    return *p;
  } else {
    return V::load_aligned(p);
  }
}

template <class V>
void vstore(float* p, V v) {
  if constexpr (std::is_same_v<V, float>) {
    *p = v;
  } else {
    v.store_aligned(p);
  }
}

template <class V>
float vsum(V v) {
  if constexpr (std::is_same_v<V, float>) {
    return v;
  } else {
    return xsimd::hadd(v);
  }
}

// Sum of x[lo, hi) (lo, hi multiples of kUnit), read as four concurrent streams (one per
// quarter, two vectors from each per step): a kernel that walks several rows at once gets
// more misses in flight than one sequential stream, and the roof should be what the memory
// can deliver, not what one stream's prefetcher fetches.
float read_range(const float* x, std::size_t lo, std::size_t hi) noexcept {
  std::array<FB, 8> acc;
  acc.fill(FB(0.0f));
  const std::size_t q = (hi - lo) / (4 * 2 * kW) * (2 * kW);
  const float* s0 = x + lo;
  for (std::size_t i = 0; i < q; i += 2 * kW) {
    for (std::size_t j = 0; j < 4; ++j) {
      acc[2 * j] += vload(s0 + j * q + i);
      acc[2 * j + 1] += vload(s0 + j * q + i + kW);
    }
  }
  for (std::size_t i = lo + 4 * q; i < hi; i += kW) acc[0] += vload(x + i);
  for (std::size_t j = 1; j < 8; ++j) acc[0] += acc[j];
  return vsum(acc[0]);
}

// ---------------------------------------------------------------- benchmarks

void label(benchmark::State& state, const std::string& what) {
  state.SetLabel(what + "; " + ds::isa_name() + " int8=" + ds::int8_extension_name());
}

void bm_fma(benchmark::State& state, int threads) {
  ds::set_num_threads(threads);
  float m = 0.999999f, c = 1e-6f;
  benchmark::DoNotOptimize(m);
  benchmark::DoNotOptimize(c);
  std::vector<float> sink(static_cast<std::size_t>(threads));
  for (auto _ : state) {
    split(static_cast<std::size_t>(threads) * kUnit, threads, [&](std::size_t p, std::size_t, std::size_t) {
      sink[p] = fma_chains<simd::arch>(kComputeIters, m, c);
    });
    benchmark::DoNotOptimize(sink.data());
    benchmark::ClobberMemory();
  }
  const double flop = 2.0 * kChains * fma_lanes<simd::arch>() * kComputeIters * threads;
  state.counters["FLOP/s"] = benchmark::Counter(flop * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  label(state, std::to_string(kChains) + " FMA chains of " + std::to_string(fma_lanes<simd::arch>()) + " lanes");
}

void bm_dot_s8(benchmark::State& state, int threads) {
  ds::set_num_threads(threads);
  std::int8_t a = 3, b = -2;
  benchmark::DoNotOptimize(a);
  benchmark::DoNotOptimize(b);
  std::vector<std::int32_t> sink(static_cast<std::size_t>(threads));
  for (auto _ : state) {
    split(static_cast<std::size_t>(threads) * kUnit, threads, [&](std::size_t p, std::size_t, std::size_t) {
      sink[p] = dot_s8_chains(kComputeIters, a, b);
    });
    benchmark::DoNotOptimize(sink.data());
    benchmark::ClobberMemory();
  }
  const double ops = 2.0 * kChains * dot_s8_macs_per_step() * kComputeIters * threads;
  state.counters["OP/s"] = benchmark::Counter(ops * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  label(state, std::to_string(kChains) + " chains of " + dot_s8_kernel_name());
}

// Buffer bytes of a read level: L1/L2 hold half the private cache per thread, L3 a quarter
// of the shared cache, DRAM the big arrays.
std::size_t read_bytes(const std::string& level, int threads) {
  const auto t = static_cast<std::size_t>(threads);
  if (level == "L1") return cache_bytes(1) / 2 * t;
  if (level == "L2") return cache_bytes(2) / 2 * t;
  // A quarter: on the 2-core KVM guest this was written on, 16 MiB of the 32 MiB L3 already
  // read at 70 GB/s against 97 GB/s at 2-8 MiB (the guest shares the L3 with other cores).
  if (level == "L3") return cache_bytes(3) / 4;
  return 3 * dram_floats() * sizeof(float);
}

void bm_read(benchmark::State& state, const std::string& level, int threads) {
  ds::set_num_threads(threads);
  const std::size_t chunk = kUnit * static_cast<std::size_t>(threads);
  const std::size_t n = read_bytes(level, threads) / sizeof(float) / chunk * chunk;
  ds::AlignedBuffer<float> own;
  float* x;
  if (level == "DRAM") {
    x = dram_arrays().a();
  } else {
    own = ds::AlignedBuffer<float>(n);
    x = own.data();
  }
  fill(x, n, threads, 1.0f);
  std::vector<float> sink(static_cast<std::size_t>(threads));
  // Each thread reads its own share, in the same split every iteration, so a cache-sized
  // share stays in that thread's cache; small shares are read `reps` times per parallel
  // region, so that starting the threads (microseconds) does not count as bandwidth.
  const std::size_t share = n * sizeof(float) / static_cast<std::size_t>(threads);
  const std::size_t reps = std::max<std::size_t>(1, (std::size_t{8} << 20) / share);
  for (auto _ : state) {
    split(n, threads, [&](std::size_t p, std::size_t lo, std::size_t hi) {
      float s = 0;
      for (std::size_t r = 0; r < reps; ++r) {
        s += read_range(x, lo, hi);
        benchmark::ClobberMemory();  // keeps the compiler from merging the repeated reads
      }
      sink[p] = s;
    });
    benchmark::DoNotOptimize(sink.data());
    benchmark::ClobberMemory();
  }
  const double bytes = static_cast<double>(n * sizeof(float) * reps);
  state.counters["bytes/s"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["buffer_MiB"] = static_cast<double>(n * sizeof(float)) / (1 << 20);
  label(state, "streaming read, 4 streams per thread");
}

void bm_copy(benchmark::State& state, bool triad, int threads) {
  ds::set_num_threads(threads);
  Arrays& arr = dram_arrays();
  const std::size_t n = arr.n;
  float *a = arr.a(), *b = arr.b(), *c = arr.c();
  fill(a, n, threads, 1.0f);
  fill(b, n, threads, 2.0f);
  fill(c, n, threads, 0.5f);
  const FB s(0.25f);
  for (auto _ : state) {
    split(n, threads, [&](std::size_t, std::size_t lo, std::size_t hi) {
      if (triad) {
        for (std::size_t i = lo; i < hi; i += kW) vstore(a + i, vload(b + i) + s * vload(c + i));
      } else {
        for (std::size_t i = lo; i < hi; i += kW) vstore(b + i, vload(a + i));
      }
    });
    benchmark::DoNotOptimize(a);
    benchmark::DoNotOptimize(b);
    benchmark::ClobberMemory();
  }
  const double bytes = (triad ? 3.0 : 2.0) * static_cast<double>(n * sizeof(float));
  state.counters["bytes/s"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["buffer_MiB"] = static_cast<double>(n * sizeof(float)) / (1 << 20);
  label(state, triad ? "triad a = b + s * c (STREAM bytes)" : "copy b = a (STREAM bytes)");
}

int register_roofline_benchmarks() {
  ds::set_num_threads(0);
  const int all = ds::num_threads();
  std::vector<int> counts = {1};
  if (all > 1) counts.push_back(all);
  for (int t : counts) {
    const std::string th = "/threads:" + std::to_string(t);
    benchmark::RegisterBenchmark(("BM_RooflineFmaF32" + th).c_str(), [=](benchmark::State& s) { bm_fma(s, t); })
        ->UseRealTime()->Repetitions(3);
    benchmark::RegisterBenchmark(("BM_RooflineDotS8" + th).c_str(), [=](benchmark::State& s) { bm_dot_s8(s, t); })
        ->UseRealTime()->Repetitions(3);
    for (const char* level : {"L1", "L2", "L3", "DRAM"}) {
      const std::string lv = level;
      benchmark::RegisterBenchmark(("BM_RooflineRead/" + lv + th).c_str(),
                                   [=](benchmark::State& s) { bm_read(s, lv, t); })
          ->UseRealTime()->Repetitions(3);
    }
    benchmark::RegisterBenchmark(("BM_RooflineCopy/DRAM" + th).c_str(),
                                 [=](benchmark::State& s) { bm_copy(s, false, t); })
        ->UseRealTime()->Repetitions(3)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("BM_RooflineTriad/DRAM" + th).c_str(),
                                 [=](benchmark::State& s) { bm_copy(s, true, t); })
        ->UseRealTime()->Repetitions(3)->Unit(benchmark::kMillisecond);
  }
  return 0;
}

const int roofline_registered = register_roofline_benchmarks();

}  // namespace
