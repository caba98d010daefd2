// SPDX-License-Identifier: Apache-2.0
// Scalar references of the streaming attention kernels (simd/attention.hpp).
//
// Contract: for each selected query row i, out[i, :] = sum_j p_j v_j / sum_j p_j with
// p_j = exp(s_j - max s), s_j = scale * (q_i . k_j) + mask terms (simd/attention_args.hpp).
// Keys are visited in blocks with a running max and sum (online softmax, Milakov and
// Gimelshein 2018; FlashAttention, Dao et al. 2022), so no [lq, lkv] score matrix exists.
// Dot products are sequential over c; the rescaling by exp(m_old - m_new) when the max
// grows rounds differently from a one-pass softmax, within a few ulp of the result.
// A row with no admissible key, or with a NaN or +inf score, gives NaN.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "dynasparse/simd/attention_args.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd::detail::scalar {

/// Keys per block of the streaming loop.
inline constexpr std::size_t attention_block_keys = 128;
static_assert(attention_kv_block % attention_block_keys == 0,
              "a block must not straddle two storage blocks");

/// Floats of scratch the scalar kernels need.
inline constexpr std::size_t attention_scratch_floats(std::size_t d) noexcept {
  return 2 * d + attention_block_keys;
}

/// Adds the mask terms of row i, keys [j0, j0 + n), to s.
inline void add_attention_masks(const AttentionArgs& a, std::size_t i, std::size_t j0,
                                std::size_t n, float* s) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  if (a.mask != nullptr) {
    const float* m = a.mask + i * a.mask_stride + j0;
    for (std::size_t j = 0; j < n; ++j) s[j] += m[j];
  }
  // Adding -inf (rather than assigning it) keeps NaN scores NaN, as PyTorch's masked add.
  if (a.bool_mask != nullptr) {
    const bool* m = a.bool_mask + i * a.bool_mask_stride + j0;
    for (std::size_t j = 0; j < n; ++j) s[j] += m[j] ? ninf : 0.0f;
  }
  if (a.key_padding != nullptr) {
    const bool* m = a.key_padding + j0;
    for (std::size_t j = 0; j < n; ++j) s[j] += m[j] ? ninf : 0.0f;
  }
}

/// Online-softmax state of one row: running max m, running sum l, unnormalized output acc.
/// Folds in scores s[0, n) of keys j0.. with values fetched by `value(c, j)`.
template <class Value>
inline void attention_fold_block(float* s, std::size_t n, std::size_t j0, std::size_t d,
                                 float& m, float& l, float* acc, Value value) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  float mb = ninf;
  bool nan = false;
  for (std::size_t j = 0; j < n; ++j) {
    nan |= s[j] != s[j];
    mb = s[j] > mb ? s[j] : mb;
  }
  const float m_new = (nan || m != m) ? std::numeric_limits<float>::quiet_NaN() : (mb > m ? mb : m);
  if (m_new == ninf) {
    // Nothing admissible yet: zero weights, whose products with the values still count, so
    // a NaN value under a masked key gives NaN as in PyTorch (and the vector kernels).
    for (std::size_t c = 0; c < d; ++c) {
      float v = 0.0f;
      for (std::size_t j = 0; j < n; ++j) v += 0.0f * value(c, j0 + j);
      acc[c] += v;
    }
    return;
  }
  const float alpha = std::exp(m - m_new);  // 0 on the first block (m = -inf)
  float sum = 0.0f;
  for (std::size_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - m_new);
    sum += s[j];
  }
  l = l * alpha + sum;
  for (std::size_t c = 0; c < d; ++c) {
    float v = 0.0f;
    for (std::size_t j = 0; j < n; ++j) v += s[j] * value(c, j0 + j);
    acc[c] = acc[c] * alpha + v;
  }
  m = m_new;
}

template <class Key, class Value>
inline void attention_rows(const AttentionArgs& a, float* scratch, Key key, Value value) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  float* acc = scratch;
  float* s = scratch + a.d;
  float* qs = s + attention_block_keys;
  for (std::size_t r = 0, nr = a.row_count(); r < nr; ++r) {
    const std::size_t i = a.row_at(r);
    const float* q = a.q + i * a.q_stride;
    // Scaled once, like PyTorch's q / sqrt(d) before the product.
    for (std::size_t c = 0; c < a.d; ++c) qs[c] = q[c] * a.scale;
    float m = ninf, l = 0.0f;
    for (std::size_t c = 0; c < a.d; ++c) acc[c] = 0.0f;
    const std::size_t end = a.key_end(i);
    for (std::size_t j0 = 0; j0 < end; j0 += attention_block_keys) {
      const std::size_t n = end - j0 < attention_block_keys ? end - j0 : attention_block_keys;
      for (std::size_t j = 0; j < n; ++j) {
        float dot = 0.0f;
        for (std::size_t c = 0; c < a.d; ++c) dot += qs[c] * key(c, j0 + j);
        s[j] = dot;
      }
      add_attention_masks(a, i, j0, n, s);
      attention_fold_block(s, n, j0, a.d, m, l, acc, value);
    }
    float* o = a.out + i * a.out_stride;
    // l = 0 means no admissible key: 0 / 0 would be NaN too, but say it outright.
    const float inv = l > 0.0f ? 1.0f / l : std::numeric_limits<float>::quiet_NaN();
    for (std::size_t c = 0; c < a.d; ++c) o[c] = acc[c] * inv;
  }
}

/// Streaming attention over float K and V (see simd::attention_f32).
inline void attention_f32(const AttentionArgs& a, float* scratch) noexcept {
  attention_rows(
      a, scratch, [&](std::size_t c, std::size_t j) { return a.kt[a.k_index(c, j)]; },
      [&](std::size_t c, std::size_t j) { return a.vt[a.kv_index(c, j)]; });
}

/// Streaming attention over INT8 K and V with per-key scales (see simd::attention_s8kv_f32).
inline void attention_s8kv_f32(const AttentionArgs& a, float* scratch) noexcept {
  attention_rows(
      a, scratch,
      [&](std::size_t c, std::size_t j) {
        return static_cast<float>(a.kt_s8[a.kv_index(c, j)]) * a.k_scale_at(j);
      },
      [&](std::size_t c, std::size_t j) {
        return static_cast<float>(a.vt_s8[a.kv_index(c, j)]) * a.v_scale_at(j);
      });
}

}  // namespace simd::detail::scalar
DYNASPARSE_NAMESPACE_END
