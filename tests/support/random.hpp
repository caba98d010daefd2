// SPDX-License-Identifier: Apache-2.0
// Fixed-seed test data.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace dynasparse_test {

inline std::vector<float> uniform_floats(std::size_t n, float lo, float hi, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline std::vector<std::int8_t> uniform_int8(std::size_t n, int lo, int hi, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(d(rng));
  return v;
}

/// The sizes every vector kernel is checked at: empty, one, around vector widths, primes.
inline const std::vector<std::size_t>& kernel_sizes() {
  static const std::vector<std::size_t> sizes = {0, 1, 3, 15, 16, 17, 127, 1000, 4099};
  return sizes;
}

}  // namespace dynasparse_test
