// SPDX-License-Identifier: Apache-2.0
// First contact: prints how the library was built and how much its SIMD kernels gain over
// their scalar twins on this machine.
#include <dynasparse/dynasparse.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

namespace simd = dynasparse::simd;

// Best of several timed repetitions, in nanoseconds per call: the minimum is the least
// disturbed by other work on a shared machine.
template <class Fn>
double best_ns(Fn fn, int calls_per_rep) {
  double best = 1e300;
  for (int rep = 0; rep < 15; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls_per_rep; ++i) fn();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / calls_per_rep);
  }
  return best;
}

}  // namespace

int main() {
  std::printf("%s\n\n", dynasparse::build_info().c_str());
  constexpr std::size_t n = 4096;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uf(-10.0f, 10.0f);
  std::uniform_int_distribution<int> ui(-127, 127);
  std::vector<float> x(n), y(n);
  std::vector<std::int8_t> a(n), b(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = uf(rng);
    a[i] = static_cast<std::int8_t>(ui(rng));
    b[i] = static_cast<std::int8_t>(ui(rng));
  }
  volatile std::int32_t sink = 0;

  const double soft_simd = best_ns([&] { simd::softmax_f32(x.data(), y.data(), n); }, 200);
  const double soft_ref = best_ns([&] { simd::detail::scalar::softmax_f32(x.data(), y.data(), n); }, 200);
  const double dot_simd = best_ns([&] { sink = simd::dot_s8s8_s32(a.data(), b.data(), n); }, 2000);
  const double dot_ref =
      best_ns([&] { sink = simd::detail::scalar::dot_s8s8_s32(a.data(), b.data(), n); }, 2000);
  const bool same = simd::dot_s8s8_s32(a.data(), b.data(), n) ==
                    simd::detail::scalar::dot_s8s8_s32(a.data(), b.data(), n);

  std::printf("%-28s %12s %12s %9s\n", "kernel (n = 4096)", "simd ns", "scalar ns", "speed-up");
  std::printf("%-28s %12.0f %12.0f %8.1fx\n", "softmax_f32", soft_simd, soft_ref, soft_ref / soft_simd);
  std::printf("%-28s %12.0f %12.0f %8.1fx\n",
              (std::string("dot_s8s8_s32 (") + simd::int8_arch_name() + ")").c_str(), dot_simd,
              dot_ref, dot_ref / dot_simd);
  std::printf("\nint8 dot product bit-exact with the scalar reference: %s\n", same ? "yes" : "NO");
  (void)sink;
  return same ? 0 : 1;
}
