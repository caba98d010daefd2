// SPDX-License-Identifier: Apache-2.0
// Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus), with
// a seeded generator whose results do not depend on the standard library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// Sampling settings. temperature = 0 is greedy (argmax; ties go to the lowest id).
/// top_k = 0 and top_p = 1 disable those filters.
struct SamplingOptions {
  float temperature = 0.0f;
  std::size_t top_k = 0;
  float top_p = 1.0f;
  std::uint64_t seed = 0;
};

/// splitmix64: a tiny, portable, well-mixed generator, so a seed gives the same text on every
/// platform (std::uniform_real_distribution is implementation-defined).
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() noexcept { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  std::uint64_t state_;
};

/// Validates options. @throws ConfigError on a negative or non-finite temperature or top_p
/// outside (0, 1].
inline void validate(const SamplingOptions& o) {
  if (!(o.temperature >= 0.0f) || !std::isfinite(o.temperature)) {
    ::dynasparse::detail::fail<ConfigError>("model", "temperature must be finite and >= 0", ">= 0", o.temperature, "sampling");
  }
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) {
    ::dynasparse::detail::fail<ConfigError>("model", "top_p out of range", "(0, 1]", o.top_p, "sampling");
  }
}

/// Picks a token id from `logits` [n]. Greedy when temperature = 0; otherwise softmax of
/// logits / temperature restricted to the top_k most likely ids, then to the smallest set
/// whose probability reaches top_p, sampled with `rng`. NaN logits are never chosen (an
/// all-NaN row gives id 0). Allocates a scratch vector of n indices when sampling.
inline std::int32_t sample_token(const float* logits, std::size_t n, const SamplingOptions& o, SplitMix64& rng) {
  if (n == 0) ::dynasparse::detail::fail<ShapeError>("model", "empty logits", ">= 1 value", 0, "sampling");
  std::size_t best = 0;
  float best_v = -std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < n; ++i) {
    if (logits[i] > best_v) {
      best_v = logits[i];
      best = i;
    }
  }
  if (o.temperature == 0.0f || std::isinf(best_v) || best_v != best_v) return static_cast<std::int32_t>(best);
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  auto by_logit = [&](std::size_t a, std::size_t b) {
    const float la = logits[a] != logits[a] ? -std::numeric_limits<float>::infinity() : logits[a];
    const float lb = logits[b] != logits[b] ? -std::numeric_limits<float>::infinity() : logits[b];
    return la > lb || (la == lb && a < b);
  };
  std::size_t keep = (o.top_k > 0 && o.top_k < n) ? o.top_k : n;
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(keep), idx.end(), by_logit);
  idx.resize(keep);
  std::vector<double> p(keep);
  double sum = 0.0;
  for (std::size_t j = 0; j < keep; ++j) {
    const float l = logits[idx[j]];
    p[j] = l != l ? 0.0 : std::exp((static_cast<double>(l) - best_v) / o.temperature);
    sum += p[j];
  }
  if (o.top_p < 1.0f) {
    double cum = 0.0;
    std::size_t cut = keep;
    for (std::size_t j = 0; j < keep; ++j) {
      cum += p[j] / sum;
      if (cum >= o.top_p) {
        cut = j + 1;
        break;
      }
    }
    keep = cut;
    sum = 0.0;
    for (std::size_t j = 0; j < keep; ++j) sum += p[j];
  }
  double u = rng.uniform() * sum;
  for (std::size_t j = 0; j < keep; ++j) {
    u -= p[j];
    if (u < 0.0) return static_cast<std::int32_t>(idx[j]);
  }
  return static_cast<std::int32_t>(idx[keep - 1]);
}

DYNASPARSE_NAMESPACE_END
