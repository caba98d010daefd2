// SPDX-License-Identifier: Apache-2.0
// KVCache: the keys and values of past tokens for incremental decoding, in float32 or INT8.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/simd/attention.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// How a `[rows, E]` activation matrix interleaves sequence and batch: `SeqBatch` is
/// PyTorch's default `(L, N, E)` (row = i * N + n), `BatchSeq` is `batch_first=True`
/// `(N, L, E)` (row = n * L + i).
enum class SeqLayout { SeqBatch, BatchSeq };

/// Row of token i of sequence n in a `[L * N, E]` matrix of the given layout.
constexpr std::size_t layout_row(SeqLayout layout, std::size_t n, std::size_t i, std::size_t seq_len,
                                 std::size_t batch) noexcept {
  return layout == SeqLayout::SeqBatch ? i * batch + n : n * seq_len + i;
}

/// Storage type of a KVCache.
enum class KVDType {
  /// float32: exact.
  F32,
  /// Symmetric INT8 with one float scale per (token, head) for K and one for V:
  /// q = round(x * 127 / max|x|) over the head's d values (simd::quantize_f32s8), so every
  /// stored element is within max|x| / 254 of its float value. Attention over it then
  /// differs from float by at most, per head and query,
  ///   max|v| / 254 + max|v| (exp(2 eps) - 1),  eps = |q|_1 max|k| / (254 sqrt(d)),
  /// (values move by max|v| / 254; each score by at most eps, which scales every softmax
  /// weight by a factor within exp(+-2 eps)); tests/nn/gated_attention_test.cpp checks it.
  I8,
  /// INT8 values as in I8, with a two-level scale that costs 8 + num_heads bytes per token
  /// instead of 8 * num_heads: one float per token, shared by the heads (max|x| over the
  /// finite heads / 127), times a 4-bit code per (token, head) for a step of 2^(-c/2), c in
  /// 0..14 (simd::kv_code_step), the finest step that still holds the head's max|x|. At
  /// head_dim 8 a token then takes 26.8% of the float bytes with 64 heads, against 37.5%
  /// for I8; at head_dim 64, 25.2% against 26.6%. The price is precision: a head's step is
  /// up to sqrt(2) times its own max|x| / 127, and heads under 2^-7 of the token's largest
  /// share the step of 2^-7. Every stored element is therefore within
  ///   max(sqrt(2) max|x_head|, 2^-7 max|x_token|) / 254
  /// of its float value (up to float rounding), and the attention bound of I8 holds with
  /// that in place of max|x| / 254. A token whose largest finite value is under
  /// kv_compact_min_alpha (1e-32) stores zeros, an absolute error under that: its finest
  /// steps would be denormal. A head holding NaN or infinity gets code 15 (a NaN scale):
  /// its dequantized values are NaN, the token's other heads are unaffected.
  I8Compact,
};

/// Smallest largest-|x| of a token that I8Compact stores on a grid (see KVDType): from it
/// on, the finest step, max|x| / (127 * 128), and its inverse are normal floats.
inline constexpr float kv_compact_min_alpha = 1e-32f;

/// The keys and values of the tokens seen so far, for `batch` sequences that advance
/// together, `num_heads` heads of `head_dim`, up to `max_len` tokens. All memory is
/// allocated by the constructor (bytes()); append() never allocates.
///
/// Layout: per (sequence, head), the layouts simd::attention_f32 reads (see
/// simd::AttentionArgs), chosen so that one decoding step reads each of K and V as one
/// sequential stream (hardware prefetchers lose track of more than about a dozen streams,
/// and the plain transposed layout makes 2 * head_dim of them):
/// - float V: transposed, `[head_dim, max_len]` with row stride
///   simd::attention_kv_stride(max_len) up to 256 tokens; longer, blocks of 256 tokens, each
///   `[head_dim, 256]` in one stretch (max_len rounded up to a whole block);
/// - float K: as V up to 256 tokens; longer, panels of 16 tokens, `[head_dim, 16]` each
///   (AttentionArgs::k_panels);
/// - INT8 K and V, head_dim <= 8: panels of 16 tokens, `[head_dim, 16]` each, at every
///   length (AttentionArgs::kv_block = simd::attention_kv_panel_s8): appending a token
///   writes the lines of one panel per head (two at head_dim 8), not head_dim lines;
///   wider heads: as float V;
/// - I8: a float scale per (token, head) for K and for V, in a row per head;
/// - I8Compact: a float scale per token for K and for V, in a row per sequence, and the
///   4-bit codes two per byte, in a row per head.
/// Not thread-safe for append(); const members may be used concurrently.
class KVCache {
 public:
  /// @throws ConfigError if any size is zero.
  KVCache(std::size_t batch, std::size_t num_heads, std::size_t head_dim, std::size_t max_len,
          KVDType dtype = KVDType::F32, std::string name = "kv_cache")
      : name_(std::move(name)),
        batch_(batch),
        heads_(num_heads),
        d_(head_dim),
        max_len_(max_len),
        dtype_(dtype) {
    if (batch == 0 || num_heads == 0 || head_dim == 0 || max_len == 0) {
      ::dynasparse::detail::fail<ConfigError>("nn", "kv cache sizes must be positive", "batch, heads, head_dim, max_len > 0",
                                std::to_string(batch) + ", " + std::to_string(num_heads) + ", " +
                                    std::to_string(head_dim) + ", " + std::to_string(max_len),
                                name_);
    }
    constexpr std::size_t kb = simd::attention_kv_block;
    if (dtype_ != KVDType::F32 && d_ <= 8) {
      // Panels: a token's values of a head share a panel's lines (two at d = 8), which stay
      // in L1 from one token to the next. The transposed rows gave each value its own line:
      // 512 lines a layer at 32 heads of 8, and the byte stores into them took 7% of a
      // decoding step of the demo's INT8 model. Only heads of up to 8 values, which the
      // one-pass decoding row reads: wider heads decode through the several-row kernels,
      // not measured on panels.
      constexpr std::size_t p = simd::attention_kv_panel_s8;
      block_ = p;
      stride_ = p;
      block_stride_ = d_ * p;
      head_elems_ = (max_len_ + p - 1) / p * block_stride_;
    } else if (max_len_ > kb) {
      block_ = kb;
      // Float rows of 256 keys are 1 KiB apart and would share cache sets; int8 rows are not.
      stride_ = dtype_ == KVDType::F32 ? simd::attention_kv_stride(kb) : kb;
      block_stride_ = d_ * stride_;
      head_elems_ = (max_len_ + kb - 1) / kb * block_stride_;
    } else {
      stride_ = simd::attention_kv_stride(max_len_);
      head_elems_ = d_ * stride_;
    }
    const std::size_t n = batch_ * heads_ * head_elems_;
    if (dtype_ == KVDType::F32) {
      constexpr std::size_t p = simd::attention_k_panel;
      k_head_elems_ = block_ == 0 ? head_elems_ : (max_len_ + p - 1) / p * p * d_;
      k_.resize_discard(batch_ * heads_ * k_head_elems_);
      v_.resize_discard(n);
    } else {
      k8_.resize_discard(n);
      v8_.resize_discard(n);
      // Rows of scales are padded like the keys: the kernel may read them in whole vectors.
      scale_stride_ = (max_len_ + 15) / 16 * 16;
      const std::size_t rows = dtype_ == KVDType::I8 ? batch_ * heads_ : batch_;
      k_scale_.resize_discard(rows * scale_stride_);
      v_scale_.resize_discard(rows * scale_stride_);
      if (dtype_ == KVDType::I8Compact) {
        k_code_.resize_discard(batch_ * heads_ * scale_stride_ / 2);
        v_code_.resize_discard(batch_ * heads_ * scale_stride_ / 2);
      }
    }
  }

  std::size_t batch() const noexcept { return batch_; }
  std::size_t num_heads() const noexcept { return heads_; }
  std::size_t head_dim() const noexcept { return d_; }
  std::size_t embed_dim() const noexcept { return heads_ * d_; }
  std::size_t max_len() const noexcept { return max_len_; }
  KVDType dtype() const noexcept { return dtype_; }
  const std::string& name() const noexcept { return name_; }
  /// Tokens stored per sequence.
  std::size_t size() const noexcept { return len_; }

  /// Bytes one token of one sequence occupies: K and V of every head, scales included
  /// (F32: 8 * E; I8: 2 * E + 8 * num_heads; I8Compact: 2 * E + 8 + num_heads).
  std::size_t bytes_per_token() const noexcept {
    switch (dtype_) {
      case KVDType::F32:
        return 2 * heads_ * d_ * sizeof(float);
      case KVDType::I8:
        return 2 * heads_ * (d_ + sizeof(float));
      case KVDType::I8Compact:
        break;
    }
    return 2 * (heads_ * d_ + sizeof(float)) + heads_;
  }
  /// Bytes allocated: max_len tokens of every sequence, plus the row padding of
  /// simd::attention_kv_stride (under 2% from a few hundred tokens on; 6% for float
  /// blocks) and, past 256 tokens, the rest of the last block; INT8 K and V in panels
  /// (head_dim <= 8): max_len rounded up to 16 tokens.
  std::size_t bytes() const noexcept {
    return dtype_ == KVDType::F32
               ? (k_.size() + v_.size()) * sizeof(float)
               : 2 * (k8_.size() + k_scale_.size() * sizeof(float) + k_code_.size());
  }

  /// Forgets every token (keeps the memory).
  void clear() noexcept { len_ = 0; }

  /// Keeps the first `len` tokens (rolls back rejected speculative or beam tokens).
  /// @throws ShapeError if len > size().
  void truncate(std::size_t len) {
    if (len > len_) {
      ::dynasparse::detail::fail<ShapeError>("nn", "cannot truncate to more tokens than stored",
                               "<= " + std::to_string(len_) + " tokens", std::to_string(len) + " tokens", name_);
    }
    len_ = len;
  }

  /// Appends `k.rows() / batch()` tokens per sequence: k and v are `[T * batch, E]` in
  /// `layout`. @throws ShapeError if the widths are not E, the row counts differ or are not
  /// a multiple of batch(), or the cache would exceed max_len (message names the cache,
  /// the limit and the length asked for).
  void append(ConstMatrixView k, ConstMatrixView v, SeqLayout layout = SeqLayout::SeqBatch) {
    check_cols(k, embed_dim(), "nn", name_, " keys");
    check_cols(v, embed_dim(), "nn", name_, " values");
    check_shape(v, k.rows(), embed_dim(), "nn", name_, " values");
    if (k.rows() % batch_ != 0) {
      ::dynasparse::detail::fail<ShapeError>("nn", "rows are not a whole number of tokens per sequence",
                               "a multiple of " + std::to_string(batch_), k.rows(), name_ + " keys");
    }
    const std::size_t t = k.rows() / batch_;
    if (t > max_len_ - len_) {
      ::dynasparse::detail::fail<ShapeError>("nn", "sequence beyond the cache's maximum length",
                               "<= " + std::to_string(max_len_) + " tokens",
                               std::to_string(len_ + t) + " tokens", name_);
    }
    // Head by head, token after token: each of a head's d rows is then written in order
    // (a prefill's tokens land next to each other), and heads split across threads when
    // there are enough tokens to pay for it.
    if (dtype_ == KVDType::I8Compact) {
      // A token's heads share its scale, and two tokens share a byte of codes: sequences
      // split across threads, a sequence's tokens do not.
      const std::size_t g =
          std::max<std::size_t>(1, parallel_min_quantize / (2 * t * embed_dim() + 1));
      parallel_for(0, batch_, g, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t n = lo; n < hi; ++n) {
          for (std::size_t i = 0; i < t; ++i) {
            const std::size_t row = layout_row(layout, n, i, t, batch_);
            store_compact(n, len_ + i, k.row(row), k8_.data(), k_scale_.data(), k_code_.data());
            store_compact(n, len_ + i, v.row(row), v8_.data(), v_scale_.data(), v_code_.data());
          }
        }
      });
      len_ += t;
      return;
    }
    if (dtype_ != KVDType::I8Compact && t == 1) {
      // Decoding: every head's K and V of the one token land at the same offset of its
      // rows, computed once instead of per head: 3.6 instead of 5.4 thousand instructions
      // for the 512 float values of the demo model's layer, 0.5-0.6 instead of 0.7-0.8 us.
      if (dtype_ == KVDType::F32) {
        store_token_f32(k, v, layout);
      } else {
        store_token_i8(k, v, layout);
      }
      ++len_;
      return;
    }
    const std::size_t grain = std::max<std::size_t>(1, parallel_min_quantize / (2 * t * d_ + 1));
    parallel_for(0, batch_ * heads_, grain, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t nh = lo; nh < hi; ++nh) {
        const std::size_t n = nh / heads_, h = nh % heads_;
        for (std::size_t i = 0; i < t; ++i) {
          const std::size_t row = layout_row(layout, n, i, t, batch_);
          store(n, h, len_ + i, k.row(row) + h * d_, v.row(row) + h * d_);
        }
      }
    });
    len_ += t;
  }

  /// Points `a` at the K and V of sequence n, head h: kt/vt (F32) or kt_s8/vt_s8 and the
  /// scales (I8; and the codes, I8Compact), d, the layout (kv_stride, kv_block, kv_block_stride,
  /// k_panels, kv_padded) and lkv = size(). For attention layers.
  void bind(std::size_t n, std::size_t h, simd::AttentionArgs& a) const noexcept {
    const std::size_t base = (n * heads_ + h) * head_elems_;
    a.d = d_;  // paneled K's addressing depends on it
    a.kv_stride = stride_;
    a.kv_block = block_;
    a.kv_block_stride = block_stride_;
    a.lkv = len_;
    a.kv_padded = true;
    if (dtype_ == KVDType::F32) {
      a.kt = k_.data() + (n * heads_ + h) * k_head_elems_;
      a.vt = v_.data() + base;
      a.k_panels = block_ != 0;
    } else {
      a.kt_s8 = k8_.data() + base;
      a.vt_s8 = v8_.data() + base;
      const std::size_t row = dtype_ == KVDType::I8 ? n * heads_ + h : n;
      a.k_scale = k_scale_.data() + row * scale_stride_;
      a.v_scale = v_scale_.data() + row * scale_stride_;
      if (dtype_ == KVDType::I8Compact) {
        a.k_code = k_code_.data() + (n * heads_ + h) * scale_stride_ / 2;
        a.v_code = v_code_.data() + (n * heads_ + h) * scale_stride_ / 2;
      }
    }
  }

 private:
  // Where position pos sits in a head's rows of V and of INT8 K and V: blocks of block_ columns
  // block_stride_ apart when blocked.
  std::size_t column_of(std::size_t pos) const noexcept {
    return block_ == 0 ? pos : pos / block_ * block_stride_ + pos % block_;
  }
  // The same in a head's F32 K, and the step between its d values: panels of
  // attention_k_panel keys when blocked.
  std::size_t k_column_of(std::size_t pos) const noexcept {
    constexpr std::size_t p = simd::attention_k_panel;
    return block_ == 0 ? pos : pos / p * p * d_ + pos % p;
  }
  std::size_t k_row_step() const noexcept {
    return block_ == 0 ? stride_ : simd::attention_k_panel;
  }

  // K and V of head h of sequence n at position pos: d values each.
  void store(std::size_t n, std::size_t h, std::size_t pos, const float* k,
             const float* v) noexcept {
    const std::size_t at = column_of(pos);
    const std::size_t base = (n * heads_ + h) * head_elems_ + at;
    if (dtype_ == KVDType::F32) {
      float* kp = k_.data() + (n * heads_ + h) * k_head_elems_;
      const std::size_t kat = k_column_of(pos), ks = k_row_step();
      for (std::size_t c = 0; c < d_; ++c) {
        kp[kat + c * ks] = k[c];
        v_[base + c * stride_] = v[c];
      }
    } else {
      const std::size_t si = (n * heads_ + h) * scale_stride_ + pos;
      k_scale_[si] = quantize_head(k, k8_.data() + base);
      v_scale_[si] = quantize_head(v, v8_.data() + base);
    }
  }

  // F32 K and V of one token per sequence (rows of k and v in `layout`) at position len_:
  // the same values store() writes head by head. Sequences split across threads when a
  // batch is large enough to pay for it.
  void store_token_f32(ConstMatrixView k, ConstMatrixView v, SeqLayout layout) {
    const std::size_t pos = len_;
    const std::size_t at = column_of(pos), kat = k_column_of(pos), ks = k_row_step();
    for_each_sequence(k, v, layout, [&](std::size_t n, const float* kr, const float* vr) {
      float* kp = k_.data() + n * heads_ * k_head_elems_ + kat;
      float* vp = v_.data() + n * heads_ * head_elems_ + at;
      for (std::size_t h = 0; h < heads_; ++h, kp += k_head_elems_, vp += head_elems_) {
        for (std::size_t c = 0; c < d_; ++c) {
          kp[c * ks] = kr[h * d_ + c];
          vp[c * stride_] = vr[h * d_ + c];
        }
      }
    });
  }

  // fn(n, k row, v row) for each sequence n of a one-token append, sequences split across
  // threads when a batch is large enough to pay for it.
  template <class Fn>
  void for_each_sequence(ConstMatrixView k, ConstMatrixView v, SeqLayout layout, Fn&& fn) {
    const std::size_t grain =
        std::max<std::size_t>(1, parallel_min_quantize / (2 * embed_dim() + 1));
    parallel_for(0, batch_, grain, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t n = lo; n < hi; ++n) {
        const std::size_t row = layout_row(layout, n, 0, 1, batch_);
        fn(n, k.row(row), v.row(row));
      }
    });
  }

  // The same for a per-head INT8 cache: each head's values quantized as store() does.
  void store_token_i8(ConstMatrixView k, ConstMatrixView v, SeqLayout layout) {
    const std::size_t pos = len_;
    const std::size_t at = column_of(pos);
    for_each_sequence(k, v, layout, [&](std::size_t n, const float* kr, const float* vr) {
      std::int8_t* kp = k8_.data() + n * heads_ * head_elems_ + at;
      std::int8_t* vp = v8_.data() + n * heads_ * head_elems_ + at;
      float* ksc = k_scale_.data() + n * heads_ * scale_stride_ + pos;
      float* vsc = v_scale_.data() + n * heads_ * scale_stride_ + pos;
      if (d_ > 16) {
        for (std::size_t h = 0; h < heads_; ++h) {
          ksc[h * scale_stride_] = quantize_head(kr + h * d_, kp + h * head_elems_);
          vsc[h * scale_stride_] = quantize_head(vr + h * d_, vp + h * head_elems_);
        }
        return;
      }
      // Small heads a chunk at a time, quantized together (quantize_groups_f32s8: heads of
      // 8 two to an AVX-512 vector, one to an AVX2 vector, two NEON vectors each), then each
      // head's codes to its column. Sizes as locals, as in scatter_column.
      const std::size_t d = d_, heads = heads_, stride = stride_, head_elems = head_elems_,
                        scale_stride = scale_stride_;
      constexpr std::size_t chunk_bytes = 512;
      const std::size_t per = chunk_bytes / d;
      alignas(64) std::int8_t codes[chunk_bytes];
      float alphas[chunk_bytes];
      for (std::size_t h0 = 0; h0 < heads; h0 += per) {
        const std::size_t cnt = std::min(per, heads - h0);
        for (int which = 0; which < 2; ++which) {
          const float* xr = (which == 0 ? kr : vr) + h0 * d;
          std::int8_t* col = (which == 0 ? kp : vp) + h0 * head_elems;
          float* sc = (which == 0 ? ksc : vsc) + h0 * scale_stride;
          simd::quantize_groups_f32s8(xr, cnt, d, codes, alphas);
          const std::int8_t* code = codes;
          for (std::size_t h = 0; h < cnt; ++h, col += head_elems, code += d) {
            scatter_column(code, d, stride, col);
            // An all-zero head stores zeros with scale 0; NaN or inf give a NaN or inf
            // scale (quantize_head).
            sc[h * scale_stride] = alphas[h] == 0.0f ? 0.0f : alphas[h] / 127.0f;
          }
        }
      }
    });
  }

  // The E values x of sequence n at position pos, compact: the token's scale from its
  // finite heads, then each head's code and values.
  void store_compact(std::size_t n, std::size_t pos, const float* x, std::int8_t* q8, float* scale,
                     std::uint8_t* code) const noexcept {
    float amax = 0.0f;
    for (std::size_t h = 0; h < heads_; ++h) {
      const float a = head_max_abs(x + h * d_);
      if (std::isfinite(a)) amax = std::max(amax, a);
    }
    const float base = amax >= kv_compact_min_alpha ? amax / 127.0f : 0.0f;
    // Sizes as locals, as in scatter_column (the code bytes alias members too).
    const std::size_t heads = heads_, d = d_, head_elems = head_elems_, stride = stride_,
                      scale_stride = scale_stride_;
    scale[n * scale_stride + pos] = base;
    const std::size_t at = column_of(pos);
    // Heads a chunk at a time: each head's values times its inverse step into t, then the
    // chunk quantized as one vector run with inverse 1, which gives the bits of quantizing
    // each head with its own (round(x * inv) either way); then the columns. Heads of 8
    // values alone make vector runs of half a vector or less. A head wider than the chunk
    // goes through write_column.
    constexpr std::size_t chunk_floats = 512;
    alignas(64) float t[chunk_floats];
    alignas(64) std::int8_t q[chunk_floats];
    const bool chunked = d <= chunk_floats;
    const std::size_t per = chunked ? chunk_floats / d : 1;
    for (std::size_t h0 = 0; h0 < heads; h0 += per) {
      const std::size_t cnt = std::min(per, heads - h0);
      for (std::size_t h = h0; h < h0 + cnt; ++h) {
        const float* xh = x + h * d;
        const float a = head_max_abs(xh);
        unsigned c = simd::kv_code_nonfinite;
        float inv = 0.0f;  // a non-finite head stores zeros (its NaN scale makes them NaN)
        if (std::isfinite(a)) {
          c = 0;
          if (a > 0.0f && base > 0.0f) {
            // The finest step 2^(-c/2) that still holds a: the steps (and their rounded
            // products) fall with c, so the first c whose next step is too small. A head
            // near the token's largest stops after a step or two; a log2 guess had cost a
            // libm call per head.
            while (c < 14 && simd::kv_code_step(c + 1) * base * 127.0f >= a) ++c;
          }
          const float s = simd::kv_code_step(c) * base;
          inv = s > 0.0f ? 1.0f / s : 0.0f;
        }
        std::uint8_t& byte = code[((n * heads + h) * scale_stride + pos) / 2];
        byte = pos % 2 == 0 ? static_cast<std::uint8_t>((byte & 0xF0u) | c)
                            : static_cast<std::uint8_t>((byte & 0x0Fu) | (c << 4));
        if (!chunked) {
          write_column(xh, inv, q8 + (n * heads + h) * head_elems + at);
        } else {
          float* th = t + (h - h0) * d;
          for (std::size_t e = 0; e < d; ++e) th[e] = xh[e] * inv;
        }
      }
      if (!chunked) continue;
      simd::quantize_f32s8(t, q, cnt * d, 1.0f);
      for (std::size_t h = h0; h < h0 + cnt; ++h) {
        scatter_column(q + (h - h0) * d, d, stride, q8 + (n * heads + h) * head_elems + at);
      }
    }
  }

  // The largest |x| of a head's d values. Up to 16 values, the scalar definition inline,
  // which the vector kernel equals bit for bit: calls into the vector kernels for eight
  // values cost more than the work. A decoding append of 32 heads of 8 (BM_KVAppend, Zen 5)
  // to a per-head INT8 cache took 1.7 us, 1.2 with this and 0.57 with store_token_i8's
  // grouped quantization (0.33 with its sizes as locals); to a compact one 3.6, 2.3 with
  // store_compact's code search and 1.56 with its vector run (a float cache's takes 0.2).
  float head_max_abs(const float* x) const noexcept {
    return d_ <= 16 ? simd::max_abs_f32<simd::ScalarArch>(x, d_) : simd::max_abs_f32(x, d_);
  }

  // Writes n codes down a column of the transposed store, rows `stride` apart. The stride
  // comes by value: an int8 store may alias any member, so a loop reading stride_ (or d_)
  // reloads it after every code (BM_KVAppend i8kv on the Zen 5: 0.54 us a token with the
  // reloads, 0.33 without).
  static void scatter_column(const std::int8_t* q, std::size_t n, std::size_t stride,
                             std::int8_t* column) noexcept {
    for (std::size_t c = 0; c < n; ++c, column += stride) *column = q[c];
  }

  // Quantizes d values with inv_scale into a column of the transposed store. Safe to call
  // from several threads for different columns.
  void write_column(const float* x, float inv, std::int8_t* column) const noexcept {
    alignas(64) std::int8_t q[64];
    const std::size_t d = d_, stride = stride_;
    if (d <= 16) {
      // A few values: the scalar definition inline, which the vector kernel equals bit for
      // bit (see head_max_abs).
      simd::quantize_f32s8<simd::ScalarArch>(x, q, d, inv);
      scatter_column(q, d, stride, column);
      return;
    }
    for (std::size_t c0 = 0; c0 < d; c0 += 64) {
      const std::size_t n = std::min<std::size_t>(64, d - c0);
      simd::quantize_f32s8(x + c0, q, n, inv);
      scatter_column(q, n, stride, column + c0 * stride);
    }
  }

  // Quantizes d values into a column of the transposed store; returns the scale. Safe to
  // call from several threads for different columns.
  float quantize_head(const float* x, std::int8_t* column) const noexcept {
    const float alpha = head_max_abs(x);
    // An all-zero head stores zeros with scale 0. A NaN or infinite head gets a NaN or
    // infinite scale, so its dequantized values are NaN and propagate as float would.
    write_column(x, simd::inv_scale_for(alpha), column);
    return alpha == 0.0f ? 0.0f : alpha / 127.0f;
  }

  std::string name_;
  std::size_t batch_, heads_, d_, max_len_;
  KVDType dtype_;
  // Row stride, keys per block (0: one block), elements between blocks, elements per head.
  std::size_t stride_ = 0, block_ = 0, block_stride_ = 0, head_elems_ = 0;
  std::size_t k_head_elems_ = 0;  // float K's panels per head
  std::size_t scale_stride_ = 0;  // INT8 scales per head
  std::size_t len_ = 0;
  AlignedBuffer<float> k_, v_;
  AlignedBuffer<std::int8_t> k8_, v8_;
  AlignedBuffer<float> k_scale_, v_scale_;
  AlignedBuffer<std::uint8_t> k_code_, v_code_;  // I8Compact: 4-bit codes, two tokens per byte
};

}  // namespace nn
DYNASPARSE_NAMESPACE_END
