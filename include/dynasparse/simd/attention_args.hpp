// SPDX-License-Identifier: Apache-2.0
// The operands of one head's attention, shared by the streaming kernel, its scalar twin and
// the naive (score-materializing) reference.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

/// Keys per storage block of a blocked K/V layout (AttentionArgs::kv_block is 0, a
/// multiple of it, or attention_kv_panel_s8 for INT8 panels). It is also the streaming kernel's
/// block, so no kernel block straddles two storage blocks (a kernel block holds whole
/// panels).
inline constexpr std::size_t attention_kv_block = 256;

/// Keys per panel of a paneled float K (AttentionArgs::k_panels): a multiple of every
/// float vector width.
inline constexpr std::size_t attention_k_panel = 16;

/// Keys per panel of paneled INT8 K and V (AttentionArgs::kv_block): the float panel's
/// width, so that both paneled layouts share their addressing.
inline constexpr std::size_t attention_kv_panel_s8 = attention_k_panel;

/// Largest code of a compact INT8 scale (AttentionArgs::k_code): codes 0..14 are steps of
/// 2^(-1/2), code 15 marks a head that held NaN or infinity.
inline constexpr unsigned kv_code_nonfinite = 15;

/// The factor a compact INT8 scale code c stands for: 2^(-c/2) for c in 0..14 (1 down to
/// 2^-7), NaN for kv_code_nonfinite: 2^-floor(c/2), times 2^(-1/2) rounded to float when c
/// is odd (a product without rounding). Vector kernels look the codes up here or build the
/// same bits.
constexpr float kv_code_step_value(unsigned c) noexcept {
  return c >= kv_code_nonfinite
             ? std::numeric_limits<float>::quiet_NaN()
             : ((c & 1u) != 0 ? 0.70710678118654752f : 1.0f) / static_cast<float>(1u << (c >> 1));
}
alignas(64) inline constexpr float kv_code_steps[16] = {
    kv_code_step_value(0),  kv_code_step_value(1),  kv_code_step_value(2),  kv_code_step_value(3),
    kv_code_step_value(4),  kv_code_step_value(5),  kv_code_step_value(6),  kv_code_step_value(7),
    kv_code_step_value(8),  kv_code_step_value(9),  kv_code_step_value(10), kv_code_step_value(11),
    kv_code_step_value(12), kv_code_step_value(13), kv_code_step_value(14), kv_code_step_value(15)};
/// kv_code_steps[c] for a code c in 0..15.
inline float kv_code_step(unsigned c) noexcept { return kv_code_steps[c & 15u]; }

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
  /// Compact INT8 scales (nn::KVDType::I8Compact), or null: the scale of key j is then
  /// k_scale[j] * kv_code_step(c), c the 4-bit code of key j (low nibble of k_code[j / 2]
  /// for even j, high for odd), likewise v. Codes, like scales, are one per key, unblocked.
  const std::uint8_t* k_code = nullptr;
  const std::uint8_t* v_code = nullptr;
  std::size_t kv_stride = 0;
  std::size_t lkv = 0;
  /// Blocked layout (0: not blocked). Keys come in blocks of kv_block, each a `[d, kv_block]`
  /// matrix of row stride kv_stride, blocks kv_block_stride elements apart: element (c, j)
  /// is at kv_index(c, j). A pass over a long cache then reads one stretch of memory per
  /// block for K and one for V (plus the INT8 scales), where the plain layout reads d rows
  /// far apart; hardware prefetchers follow a dozen or so streams and lose the rest, which
  /// halved decoding's read bandwidth at d = 8. Scales stay one per key, unblocked.
  /// attention_naive_f32 reads the plain layout only.
  /// INT8 K and V (attention_s8kv_f32) may also come in panels: kv_block = kv_stride =
  /// attention_kv_panel_s8 (16), kv_block_stride = 16 d, so that element (c, j) is at
  /// (j / 16) * 16 d + c * 16 + j % 16 and a token's d values of a head share the lines of
  /// one 16 d-byte panel (two at d = 8) instead of taking one each: appending a token to a
  /// cache then writes a few lines, which stay in L1 for the next 15 tokens. Float K and V
  /// take 0 or a multiple of attention_kv_block.
  std::size_t kv_block = 0;
  std::size_t kv_block_stride = 0;
  /// Float K in panels of attention_k_panel (16) keys, each `[d, 16]` in one stretch:
  /// element (c, j) of K at k_index(c, j) = (j / 16) * 16 d + c * 16 + j % 16; kv_stride
  /// and the blocks then describe V alone. The scores read K key-major (all d rows of a
  /// few keys at a time), which panels turn into one sequential stream; V is read
  /// row-major, which a block keeps sequential. Paneled K must be readable up to lkv
  /// rounded up to 16. attention_naive_f32 reads the plain layout only.
  bool k_panels = false;
  /// Every row of K and V (float or INT8) may be read up to the end of its block (key
  /// index kv_stride - 1 when not blocked), that end is at least lkv rounded up to 16, and
  /// so are the INT8 scales: the kernel then loads whole vectors at the end of the keys
  /// and discards the lanes past lkv instead of finishing key by key, and INT8 decoding
  /// reads K and V as stored instead of dequantizing them first. What those elements hold
  /// does not matter (NaN included). Buffers laid out with attention_kv_stride(lkv) per
  /// row and the KV cache qualify.
  bool kv_padded = false;
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

  /// Whether INT8 K and V come in panels of attention_kv_panel_s8 keys (see kv_block).
  bool kv_panels_s8() const noexcept { return kv_block == attention_kv_panel_s8; }
  /// Offset of element (c, j) of K or V (and of the INT8 ones) from kt, vt.
  std::size_t kv_index(std::size_t c, std::size_t j) const noexcept {
    const std::size_t at = kv_block == 0 ? j : j / kv_block * kv_block_stride + j % kv_block;
    return at + c * kv_stride;
  }
  /// Offset of element (c, j) of float K from kt (kv_index unless k_panels).
  std::size_t k_index(std::size_t c, std::size_t j) const noexcept {
    if (!k_panels) return kv_index(c, j);
    return j / attention_k_panel * attention_k_panel * d + c * attention_k_panel +
           j % attention_k_panel;
  }
  /// The scale of INT8 key j (k_scale[j], times its code's step when compact).
  float k_scale_at(std::size_t j) const noexcept { return scale_at(k_scale, k_code, j); }
  /// The scale of INT8 value j.
  float v_scale_at(std::size_t j) const noexcept { return scale_at(v_scale, v_code, j); }
  static float scale_at(const float* scale, const std::uint8_t* code, std::size_t j) noexcept {
    if (code == nullptr) return scale[j];
    return kv_code_step((code[j / 2] >> (4 * (j % 2))) & 15u) * scale[j];
  }
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
