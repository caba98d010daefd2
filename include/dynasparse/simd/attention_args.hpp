// SPDX-License-Identifier: Apache-2.0
// The operands of one head's attention, shared by the streaming kernel, its scalar twin and
// the naive (score-materializing) reference.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// One attention head: out[i] = softmax_j(scale * q[i] . k[j] + mask[i, j]) . v for the
/// query rows i selected by `rows`. Lengths and strides are in elements, never bytes.
///
/// Keys and values are given *transposed*, element (c, j) of K at `kt[c * kv_stride + j]`
/// (`[d, lkv]`, row stride kv_stride >= lkv). The kernels vectorize over keys, which keeps
/// every vector full at any head_dim (8 as well as 64), and this is the layout the layer
/// and the KV cache write K and V in anyway (a cache's kv_stride is its capacity).
///
/// Masking follows `torch.nn.MultiheadAttention`: a float `mask` is added to the scaled
/// scores; `bool_mask` and `key_padding` entries that are true add -inf. `causal` keeps key
/// j for query i only if j <= i + lkv - lq (bottom-right aligned: the usual triangle when
/// lq == lkv, and "every cached key up to my position" when decoding); keys it removes are
/// not read at all. A row left with no key (every score -inf) gives NaN, like PyTorch's
/// softmax of an all -inf row; NaN or +inf scores give NaN rows too.
struct AttentionArgs {
  /// Queries `[lq, d]`, row i at `q + i * q_stride`.
  const float* q = nullptr;
  std::size_t q_stride = 0;
  std::size_t lq = 0;
  /// Head dimension.
  std::size_t d = 0;
  /// Float keys and values `[d, lkv]` (attention_f32, attention_naive_f32).
  const float* kt = nullptr;
  const float* vt = nullptr;
  /// INT8 keys and values `[d, lkv]` with one scale per key (attention_s8kv_f32):
  /// k(c, j) = kt_s8[c * kv_stride + j] * k_scale[j], likewise v.
  const std::int8_t* kt_s8 = nullptr;
  const std::int8_t* vt_s8 = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  std::size_t kv_stride = 0;
  std::size_t lkv = 0;
  /// Multiplies q . k (PyTorch: 1 / sqrt(d)).
  float scale = 1.0f;
  /// Optional additive mask `[lq, lkv]`.
  const float* mask = nullptr;
  std::size_t mask_stride = 0;
  /// Optional boolean mask `[lq, lkv]`, true = masked.
  const bool* bool_mask = nullptr;
  std::size_t bool_mask_stride = 0;
  /// Optional key padding `[lkv]`, true = masked.
  const bool* key_padding = nullptr;
  bool causal = false;
  /// Query rows to compute, ascending; null means all of [0, lq). Other rows of `out` are
  /// left untouched (this is how gated heads skip their work).
  const std::uint32_t* rows = nullptr;
  std::size_t num_rows = 0;
  /// Output `[lq, d]`, row i at `out + i * out_stride`.
  float* out = nullptr;
  std::size_t out_stride = 0;

  /// Number of rows the kernel will compute.
  std::size_t row_count() const noexcept { return rows != nullptr ? num_rows : lq; }
  /// Query index of the s-th computed row.
  std::size_t row_at(std::size_t s) const noexcept { return rows != nullptr ? rows[s] : s; }
  /// One past the last key row i may see (keys [0, key_end(i)) are candidates).
  std::size_t key_end(std::size_t i) const noexcept {
    if (!causal) return lkv;
    const std::size_t lim = i + lkv + 1;  // i + lkv - lq + 1, kept non-negative
    return lim <= lq ? 0 : (lim - lq < lkv ? lim - lq : lkv);
  }
};

}  // namespace simd
DYNASPARSE_NAMESPACE_END
